"""job heartbeat: the claim's owner (renewed by its heartbeat), the workers lost on the job
and what it was doing when last heard from

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("workers_lost", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("progress", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("progress")
        batch_op.drop_column("workers_lost")
        batch_op.drop_column("lease_owner")
