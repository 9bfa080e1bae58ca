"""Job rows: the outbox of background work. A row is written in the same transaction as the
change that needs it; the message is sent after commit, and the sweep re-sends what was never
picked up or whose worker vanished (lease expired)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UtcDateTime, utcnow


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_sent", "status", "sent_at"),
        # a sample's latest job (GET /v1/samples/{id}, re-uploads) and the cascade on delete
        Index("ix_jobs_sample_created", "sample_pk", "created_at"),
        # a patient's queued follow-up jobs (coalescing) and the cascade on delete
        Index("ix_jobs_patient_task_status", "patient_pk", "task", "status"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    task: Mapped[str] = mapped_column(String(64))
    sample_pk: Mapped[int | None] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"))
    patient_pk: Mapped[int | None] = mapped_column(ForeignKey("patients.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # An ingest that stored its rows and left the patient's analyses to a later queued ingest
    # of the same patient (which finishes it): still "running", under its lease.
    stored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Why the job was queued (a new sample, a correction, a new background...): the reason an
    # amendment of a result it causes carries.
    reason: Mapped[str | None] = mapped_column(String(1000))
    # Who holds the claim: its heartbeat renews the lease only while it is still theirs.
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    # Claims whose worker vanished (killed, out of memory, hard time limit) before an answer;
    # past CTDNA_JOB_MAX_ATTEMPTS the job fails with what it was doing (`progress`).
    workers_lost: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    progress: Mapped[str | None] = mapped_column(String(256))
