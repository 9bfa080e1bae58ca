"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:11:21.869480
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_site"), ["site"], unique=False)

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("route", sa.String(length=256), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=True),
        sa.Column("sample_id", sa.String(length=128), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_site_at", ["site", "at"], unique=False)

    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("site", "patient_id", name=op.f("uq_patients_site_patient_id")),
    )
    op.create_table(
        "patient_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("event_date", sa.Date(), nullable=False),
        sa.Column("drug", sa.String(length=128), nullable=True),
        sa.Column("drug_class", sa.String(length=32), nullable=True),
        sa.Column("note", sa.String(length=1000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_patient_events_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient_events")),
    )
    with op.batch_alter_table("patient_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_patient_events_patient_date", ["patient_pk", "event_date"], unique=False
        )

    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("sample_id", sa.String(length=128), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("collection_date", sa.Date(), nullable=False),
        sa.Column("sample_type", sa.String(length=16), nullable=False),
        sa.Column("genome_build", sa.String(length=8), nullable=True),
        sa.Column("tumor_sample", sa.String(length=256), nullable=True),
        sa.Column("normal_sample", sa.String(length=256), nullable=True),
        sa.Column("plasma_ml", sa.Float(), nullable=True),
        sa.Column("cfdna_ng_per_ml", sa.Float(), nullable=True),
        sa.Column("file_name", sa.String(length=512), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detected_build", sa.String(length=8), nullable=True),
        sa.Column("build_source", sa.String(length=32), nullable=True),
        sa.Column("resolved_tumor_sample", sa.String(length=256), nullable=True),
        sa.Column("resolved_normal_sample", sa.String(length=256), nullable=True),
        sa.Column("records_read", sa.BigInteger(), nullable=True),
        sa.Column("alleles_skipped", sa.BigInteger(), nullable=True),
        sa.Column("variant_count", sa.BigInteger(), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_samples_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_samples")),
        sa.UniqueConstraint("site", "sample_id", name=op.f("uq_samples_site_sample_id")),
    )
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.create_index(
            "ix_samples_patient_date", ["patient_pk", "collection_date"], unique=False
        )
        batch_op.create_index(
            "ix_samples_patient_sha256", ["patient_pk", "file_sha256"], unique=False
        )

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=64), nullable=False),
        sa.Column("sample_pk", sa.Integer(), nullable=True),
        sa.Column("patient_pk", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_jobs_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sample_pk"],
            ["samples.id"],
            name=op.f("fk_jobs_sample_pk_samples"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_status_sent", ["status", "sent_at"], unique=False)

    op.create_table(
        "tracked_variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_pk", sa.Integer(), nullable=False),
        sa.Column("locus_key", sa.String(length=2200), nullable=False),
        sa.Column("gene", sa.String(length=32), nullable=True),
        sa.Column("protein_change", sa.String(length=128), nullable=True),
        sa.Column("tumor_af", sa.Float(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("source_sample_pk", sa.Integer(), nullable=True),
        sa.Column("kept", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"],
            ["patients.id"],
            name=op.f("fk_tracked_variants_patient_pk_patients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_sample_pk"],
            ["samples.id"],
            name=op.f("fk_tracked_variants_source_sample_pk_samples"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_variants")),
        sa.UniqueConstraint(
            "patient_pk", "locus_key", name=op.f("uq_tracked_variants_patient_pk_locus_key")
        ),
    )
    op.create_table(
        "variants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sample_pk", sa.Integer(), nullable=False),
        sa.Column("chrom", sa.String(length=64), nullable=False),
        sa.Column("pos", sa.Integer(), nullable=False),
        sa.Column("ref", sa.String(length=1024), nullable=False),
        sa.Column("alt", sa.String(length=1024), nullable=False),
        sa.Column("build", sa.String(length=8), nullable=False),
        sa.Column("locus_key", sa.String(length=2200), nullable=True),
        sa.Column("gene", sa.String(length=32), nullable=True),
        sa.Column("protein_change", sa.String(length=128), nullable=True),
        sa.Column("filter", sa.String(length=256), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("detected", sa.Boolean(), nullable=False),
        sa.Column("alt_reads", sa.Integer(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=True),
        sa.Column("vaf", sa.Float(), nullable=True),
        sa.Column("quantitative", sa.Boolean(), nullable=False),
        sa.Column("normal_alt_reads", sa.Integer(), nullable=True),
        sa.Column("normal_depth", sa.Integer(), nullable=True),
        sa.Column("hotspot", sa.Boolean(), nullable=False),
        sa.Column("in_monitored_gene", sa.Boolean(), nullable=False),
        sa.Column("tracked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sample_pk"],
            ["samples.id"],
            name=op.f("fk_variants_sample_pk_samples"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variants")),
        sa.UniqueConstraint(
            "sample_pk",
            "chrom",
            "pos",
            "ref",
            "alt",
            name=op.f("uq_variants_sample_pk_chrom_pos_ref_alt"),
        ),
    )
    with op.batch_alter_table("variants", schema=None) as batch_op:
        batch_op.create_index("ix_variants_locus_key", ["locus_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("variants", schema=None) as batch_op:
        batch_op.drop_index("ix_variants_locus_key")

    op.drop_table("variants")
    op.drop_table("tracked_variants")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_status_sent")

    op.drop_table("jobs")
    with op.batch_alter_table("samples", schema=None) as batch_op:
        batch_op.drop_index("ix_samples_patient_sha256")
        batch_op.drop_index("ix_samples_patient_date")

    op.drop_table("samples")
    with op.batch_alter_table("patient_events", schema=None) as batch_op:
        batch_op.drop_index("ix_patient_events_patient_date")

    op.drop_table("patient_events")
    op.drop_table("patients")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_site_at")

    op.drop_table("audit_log")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_site"))

    op.drop_table("api_keys")
