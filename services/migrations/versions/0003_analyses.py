"""analyses

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 20:41:11.265396
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patient_analyses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_patient_analyses_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_analyses")),
        sa.UniqueConstraint("patient_pk", "kind", name=op.f("uq_patient_analyses_patient_pk_kind")),
    )
    op.create_table(
        "resistance_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("locus_key", sa.String(length=2200), nullable=False),
        sa.Column("drug_class", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("first_detected_date", sa.Date(), nullable=False),
        sa.Column("sample_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_resistance_events_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_resistance_events")),
        sa.UniqueConstraint(
            "patient_pk",
            "locus_key",
            "drug_class",
            "status",
            "first_detected_date",
            name=op.f(
                "uq_resistance_events_patient_pk_locus_key_drug_class_status_first_detected_date"
            ),
        ),
    )


def downgrade() -> None:
    op.drop_table("resistance_events")
    op.drop_table("patient_analyses")
