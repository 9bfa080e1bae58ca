"""Queries on job rows."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, case, func, or_, select, update
from sqlalchemy.orm import Session

from services.db import utcnow
from services.jobs.models import Job
from services.patients.models import Patient
from services.samples.models import Sample


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id)


def get_for_site(session: Session, job_id: str, site: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.site == site else None


def subject(session: Session, job: Job) -> tuple[str | None, str | None]:
    """The (patient_id, sample_id) a job works on, for its answer and its audit row."""
    sample = session.get(Sample, job.sample_pk) if job.sample_pk is not None else None
    patient_pk = sample.patient_pk if sample is not None else job.patient_pk
    patient = session.get(Patient, patient_pk) if patient_pk is not None else None
    return (
        patient.patient_id if patient is not None else None,
        sample.sample_id if sample is not None else None,
    )


def claim(session: Session, job_id: str, lease: timedelta, owner: str) -> bool:
    """Atomically take a queued job for `owner`. Exactly one of several concurrent claimants
    wins. A job whose worker vanished is first put back in the queue by the sweep, which
    counts the loss (`take_over_expired`)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(
            status="running",
            started_at=now,
            lease_expires_at=now + lease,
            lease_owner=owner,
            attempts=Job.attempts + 1,
            stored_at=None,
            progress=None,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def renew(
    session: Session, job_id: str, owner: str, lease: timedelta, progress: str | None
) -> bool:
    """Extend the lease of a job `owner` still holds (and say what it is doing); False when
    the job is no longer theirs (finished, given back, taken over)."""
    now = utcnow()
    values: dict[str, Any] = {"lease_expires_at": now + lease}
    if progress is not None:
        values["progress"] = progress[:256]
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == "running",
            Job.lease_owner == owner,
            Job.stored_at.is_(None),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


def expired(session: Session, now: datetime, limit: int = 500) -> Sequence[Job]:
    """Running jobs whose lease ran out, locked (others sweeping at once skip them)."""
    return session.scalars(
        select(Job)
        .where(Job.status == "running", Job.lease_expires_at < now)
        .order_by(Job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def any_queued(session: Session, task: str) -> bool:
    return (
        session.scalar(select(Job.id).where(Job.task == task, Job.status == "queued").limit(1))
        is not None
    )


def ingest_queued_outside(session: Session, patient_pks: Collection[int], task: str) -> bool:
    """Whether a sample of a patient not in `patient_pks` waits for an ingest worker."""
    return (
        session.scalar(
            select(Job.id)
            .join(Sample, Sample.id == Job.sample_pk)
            .where(Job.task == task, Job.status == "queued", Sample.patient_pk.not_in(patient_pks))
            .limit(1)
        )
        is not None
    )


def ingest_queued_for_patient(session: Session, patient_pk: int, task: str) -> bool:
    """Whether a sample of the patient waits for an ingest worker."""
    return (
        session.scalar(
            select(Job.id)
            .join(Sample, Sample.id == Job.sample_pk)
            .where(Sample.patient_pk == patient_pk, Job.task == task, Job.status == "queued")
            .limit(1)
        )
        is not None
    )


def samples_with_queued(session: Session, sample_pks: Sequence[int], task: str) -> set[int]:
    if not sample_pks:
        return set()
    return set(
        session.scalars(
            select(Job.sample_pk).where(
                Job.sample_pk.in_(sample_pks), Job.task == task, Job.status == "queued"
            )
        )
    )


def awaiting_analysis(session: Session, patient_pk: int, task: str) -> Sequence[Job]:
    """The patient's ingests that stored their rows and wait for its analyses."""
    return session.scalars(
        select(Job)
        .join(Sample, Sample.id == Job.sample_pk)
        .where(
            Sample.patient_pk == patient_pk,
            Job.task == task,
            Job.status == "running",
            Job.stored_at.is_not(None),
        )
        # A waiting job that the sweep handed to another worker (its lease ran out) is that
        # worker's to finish: skipped here, never waited for (no lock-order deadlock).
        .with_for_update(of=Job, skip_locked=True)
    ).all()


def deferred(session: Session, task: str, limit: int = 500) -> Sequence[str]:
    """Ids of the jobs of `task` given back to the queue after an attempt."""
    return session.scalars(
        select(Job.id)
        .where(Job.task == task, Job.status == "queued", Job.attempts > 0)
        .order_by(Job.created_at)
        .limit(limit)
    ).all()


def due_for_resend(session: Session, *, resend_before: datetime, limit: int = 500) -> Sequence[Job]:
    """Queued jobs whose message may never have reached a worker."""
    stmt = (
        select(Job)
        .where(
            Job.status == "queued",
            or_(Job.sent_at.is_(None), Job.sent_at < resend_before),
            Job.created_at < resend_before,
        )
        .order_by(Job.created_at)
        .limit(limit)
    )
    return session.scalars(stmt).all()


def counts_by_status(session: Session, *, finished_since: datetime) -> Sequence[Row[Any]]:
    """Per (task, status): rows, attempts summed, and rows finished since `finished_since`.
    One grouped scan; the metrics endpoint calls it at most every few seconds."""
    recent = case((Job.finished_at >= finished_since, 1), else_=0)
    stmt = select(
        Job.task,
        Job.status,
        func.count().label("n"),
        func.coalesce(func.sum(Job.attempts), 0).label("attempts"),
        func.coalesce(func.sum(recent), 0).label("recent"),
    ).group_by(Job.task, Job.status)
    return session.execute(stmt).all()


def oldest_queued_at(session: Session) -> datetime | None:
    return session.scalar(select(func.min(Job.created_at)).where(Job.status == "queued"))


def duration_histogram(
    session: Session, task: str, bounds: Sequence[float]
) -> tuple[list[int], int, float]:
    """Cumulative counts of finished jobs of `task` whose last attempt took at most each bound
    (seconds, from claim to finish), their number and the summed seconds."""
    seconds = _seconds_between(session, Job.started_at, Job.finished_at)
    stmt = select(
        *(func.coalesce(func.sum(case((seconds <= b, 1), else_=0)), 0) for b in bounds),
        func.count(),
        func.coalesce(func.sum(seconds), 0.0),
    ).where(Job.task == task, Job.finished_at.is_not(None), Job.started_at.is_not(None))
    row = session.execute(stmt).one()
    return [int(n) for n in row[: len(bounds)]], int(row[-2]), float(row[-1])


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0
