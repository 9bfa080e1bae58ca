"""alignments: a BAM/CRAM (and its index) kept with a sample; where a variant row's counts come from

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The alignment file is kept content-addressed like the VCF (its sha256 names it under
    # CTDNA_DATA_DIR/uploads), so a change of the tracked set re-counts from the same reads.
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alignment_name", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("alignment_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("alignment_index_sha256", sa.String(length=64), nullable=True)
        )
        batch_op.add_column(sa.Column("alignment_format", sa.String(length=8), nullable=True))
    # Every row stored before this migration came from a VCF's FORMAT counts. On PostgreSQL
    # ADD COLUMN with a constant default rewrites no row; SQLite rebuilds the table.
    with op.batch_alter_table("variants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("evidence", sa.String(length=16), nullable=False, server_default="vcf")
        )


def downgrade() -> None:
    with op.batch_alter_table("variants", schema=None) as batch_op:
        batch_op.drop_column("evidence")
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_column("alignment_format")
        batch_op.drop_column("alignment_index_sha256")
        batch_op.drop_column("alignment_sha256")
        batch_op.drop_column("alignment_name")
