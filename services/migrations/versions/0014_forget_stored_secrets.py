"""forget stored secrets: answers kept for an Idempotency-Key replay no longer hold secrets
(services/api/idempotency.py); those kept before are deleted

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 15:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A deleted key only means that a retry within the window runs again: a second key or
    # endpoint, never a secret shown twice.
    op.execute(
        "DELETE FROM idempotency_keys WHERE path = '/v1/keys' OR path LIKE '/v1/keys/%' "
        "OR path LIKE '/v1/webhook-endpoints%'"
    )


def downgrade() -> None:
    pass
