"""Queries on job rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from services.db import utcnow
from services.jobs.models import Job


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def get_for_site(session: Session, job_id: str, site: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.site == site else None


def claim(session: Session, job_id: str, lease: timedelta) -> bool:
    """Atomically take a job: queued, or running under a lease that has expired (its worker
    died). Exactly one of several concurrent claimants wins."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            or_(
                Job.status == "queued",
                (Job.status == "running") & (Job.lease_expires_at < now),
            ),
        )
        .values(
            status="running",
            started_at=now,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def due_for_resend(
    session: Session, *, resend_before: datetime, now: datetime, limit: int = 500
) -> Sequence[Job]:
    """Jobs whose message may never have reached a worker, or whose worker vanished."""
    stmt = (
        select(Job)
        .where(
            or_(
                (Job.status == "queued")
                & or_(Job.sent_at.is_(None), Job.sent_at < resend_before)
                & (Job.created_at < resend_before),
                (Job.status == "running") & (Job.lease_expires_at < now),
            )
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return session.scalars(stmt).all()
