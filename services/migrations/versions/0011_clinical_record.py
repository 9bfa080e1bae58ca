"""clinical record: amendments of issued results, sample retraction, correction details on
the audit trail, the reason a job was queued, per-site settings

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

HAS_DETAIL = sa.text("detail IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "result_amendments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("analysis", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=32), nullable=False),
        sa.Column("sample_id", sa.String(length=128), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("previous", sa.Text(), nullable=False),
        sa.Column("current", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("method_version", sa.String(length=256), nullable=False),
        sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_result_amendments_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_amendments")),
    )
    op.create_index(
        "ix_result_amendments_patient", "result_amendments", ["patient_pk", "id"], unique=False
    )
    op.create_table(
        "site_settings",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False, server_default="UTC"),
        sa.Column(
            "create_patients_on_upload",
            sa.Boolean(),
            nullable=False,
            server_default=sa.false(),
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("site", name=op.f("pk_site_settings")),
    )
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("retracted_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("retraction_reason", sa.String(length=1000), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=1000), nullable=True))
    # A nullable column without a default: on PostgreSQL an ALTER that rewrites no row, so the
    # append-only trigger of 0004 is never fired (SQLite rebuilds the table; it has none).
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("detail", sa.Text(), nullable=True))
    # The corrections of a sample (GET /v1/samples/{id}): few rows among many reads.
    op.create_index(
        "ix_audit_log_site_sample_detail",
        "audit_log",
        ["site", "sample_id"],
        unique=False,
        postgresql_where=HAS_DETAIL,
        sqlite_where=HAS_DETAIL,
    )


def downgrade() -> None:
    op.drop_index("ix_audit_log_site_sample_detail", table_name="audit_log")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("detail")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("reason")
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_column("retraction_reason")
        batch_op.drop_column("retracted_at")
    op.drop_table("site_settings")
    op.drop_index("ix_result_amendments_patient", table_name="result_amendments")
    op.drop_table("result_amendments")
