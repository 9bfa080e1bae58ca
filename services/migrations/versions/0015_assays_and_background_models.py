"""assays and background models: the assay a sample was run on, a tissue's tumour purity, each
fit of an assay's background model, and an index for the per-patient sample counts

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("assay", sa.String(length=64), nullable=False, server_default="default")
        )
        batch_op.add_column(sa.Column("tumor_purity", sa.Float(), nullable=True))
        batch_op.create_index(
            "ix_samples_site_assay_type", ["site", "assay", "sample_type"], unique=False
        )
        # the per-patient counts of the list pages (processed, failed, retracted draws)
        batch_op.create_index("ix_samples_patient_status", ["patient_pk", "status"], unique=False)
    op.create_table(
        "background_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("assay", sa.String(length=64), nullable=False),
        sa.Column("n_samples", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("fitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_background_models")),
    )
    op.create_index(
        "ix_background_models_scope_assay", "background_models", ["scope", "assay", "id"]
    )
    # MRD patient statuses are lowercase from rule mrd-3 on (positive, positive_unconfirmed,
    # negative, indeterminate, not_applicable); the bodies follow at the next recompute.
    op.execute("UPDATE patient_analyses SET status = lower(status) WHERE kind = 'mrd'")


def downgrade() -> None:
    op.execute(
        "UPDATE patient_analyses SET status = upper(status) WHERE kind = 'mrd' "
        "AND status <> 'positive_unconfirmed'"
    )
    op.drop_index("ix_background_models_scope_assay", table_name="background_models")
    op.drop_table("background_models")
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_patient_status")
        batch_op.drop_index("ix_samples_site_assay_type")
        batch_op.drop_column("tumor_purity")
        batch_op.drop_column("assay")
