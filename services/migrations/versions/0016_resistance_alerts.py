"""resistance alerts that hold: each sent alert keeps its variant, the draw it was about and
when it was withdrawn; one locus and class may be alerted again after a withdrawal, so the
identity is no longer unique by its first detection date

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02 18:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

UNIQUE = "uq_resistance_events_patient_pk_locus_key_drug_class_status_first_detected_date"


def upgrade() -> None:
    # The name as the database stored it (PostgreSQL shortens names past 63 characters).
    (unique,) = [
        constraint["name"]
        for constraint in sa.inspect(op.get_bind()).get_unique_constraints("resistance_events")
        if "first_detected_date" in constraint["column_names"]
    ]
    if unique is None:  # an unnamed constraint: alembic could not drop it either
        raise RuntimeError("the unique constraint on resistance_events has no name")
    with op.batch_alter_table("resistance_events", schema=None) as batch_op:
        batch_op.drop_constraint(unique, type_="unique")
        batch_op.add_column(sa.Column("gene", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("protein_change", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("event_date", sa.Date(), nullable=True))
        batch_op.add_column(sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_resistance_events_patient_locus", ["patient_pk", "locus_key", "drug_class"]
        )
    op.execute("UPDATE resistance_events SET event_date = first_detected_date")


def downgrade() -> None:
    with op.batch_alter_table("resistance_events", schema=None) as batch_op:
        batch_op.drop_index("ix_resistance_events_patient_locus")
        batch_op.drop_column("withdrawn_at")
        batch_op.drop_column("event_date")
        batch_op.drop_column("protein_change")
        batch_op.drop_column("gene")
        batch_op.create_unique_constraint(
            UNIQUE, ["patient_pk", "locus_key", "drug_class", "status", "first_detected_date"]
        )
