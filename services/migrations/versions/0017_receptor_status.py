"""receptor_status events: the specimen tested, its site, ER, PR, HER2 IHC and ISH, nullable
columns of patient_events (empty for every other event type)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = (
    ("specimen", 16),
    ("specimen_site", 128),
    ("er", 16),
    ("pr", 16),
    ("her2_ihc", 16),
    ("her2_ish", 16),
)


def upgrade() -> None:
    with op.batch_alter_table("patient_events", schema=None) as batch_op:
        for name, length in COLUMNS:
            batch_op.add_column(sa.Column(name, sa.String(length=length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patient_events", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
