"""read path indexes: jobs by sample and by patient

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 21:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Without these, GET /v1/samples/{id} (the sample's latest job), a re-upload of the same
    # bytes, a patient's follow-up job coalescing and the ON DELETE CASCADE from samples and
    # patients each read the whole jobs table, which grows by one row per sample or more.
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_sample_created", ["sample_pk", "created_at"], unique=False)
        batch_op.create_index(
            "ix_jobs_patient_task_status", ["patient_pk", "task", "status"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_patient_task_status")
        batch_op.drop_index("ix_jobs_sample_created")
