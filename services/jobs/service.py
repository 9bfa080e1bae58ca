"""Background work through the outbox: a job row is written in the caller's transaction and
its message is published only after that transaction commits. If publishing fails (broker
down) nothing is lost: the sweep re-sends every job that was never picked up."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import timedelta

import structlog
from sqlalchemy import update
from sqlalchemy.orm import Session

from services import outbox
from services.config import get_settings
from services.db import unit_of_work, utcnow
from services.jobs import repository
from services.jobs.models import Job

log = structlog.get_logger(__name__)

INGEST_TASK = "samples.ingest"
SWEEP_TASK = "jobs.sweep"
REASON_CHARS = 1000


def add_reason(job: Job, reason: str) -> None:
    """Note one more reason on a queued job (coalesced requests: one job, every reason)."""
    known = job.reason.split("; ") if job.reason else []
    if reason not in known:
        job.reason = "; ".join([*known, reason])[:REASON_CHARS]


def reasons_awaiting(session: Session, patient_pk: int) -> list[str]:
    """The reasons of the patient's ingests that wait for its analyses."""
    return [
        job.reason
        for job in repository.awaiting_analysis(session, patient_pk, INGEST_TASK)
        if job.reason
    ]


def create_job(
    session: Session,
    *,
    task: str,
    site: str,
    sample_pk: int | None = None,
    patient_pk: int | None = None,
    reason: str | None = None,
) -> Job:
    job = Job(
        id=str(uuid.uuid4()),
        task=task,
        site=site,
        sample_pk=sample_pk,
        patient_pk=patient_pk,
        status="queued",
        attempts=0,
        created_at=utcnow(),
        reason=reason[:REASON_CHARS] if reason else None,
    )
    session.add(job)
    session.flush()
    outbox.after_commit(session, task, job.id, Job)
    return job


def claim(session: Session, job_id: str) -> bool:
    return repository.claim(session, job_id, timedelta(seconds=get_settings().job_lease_seconds))


def release(job_id: str) -> None:
    """Give a claimed job back to the queue after a transient failure, so the retry can claim
    it at once instead of waiting for the lease to expire. Best effort: if the database is
    the thing that failed, the lease and the sweep cover it."""
    try:
        with unit_of_work() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(status="queued", lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
    except Exception as exc:  # noqa: BLE001
        log.warning("job.release_failed", job_id=job_id, error=str(exc)[:200])


def ingests_waiting(session: Session) -> bool:
    """Whether any sample waits for a worker (background work yields to it)."""
    return repository.any_queued(session, INGEST_TASK)


def ingest_queued_outside(session: Session, patient_pks: Collection[int]) -> bool:
    """Whether a sample of a patient other than these waits for a worker (the demo loader
    waits for it: real uploads come first)."""
    return repository.ingest_queued_outside(session, patient_pks, INGEST_TASK)


def ingest_queued_for_patient(session: Session, patient_pk: int) -> bool:
    """Whether another sample of the patient waits for an ingest worker."""
    return repository.ingest_queued_for_patient(session, patient_pk, INGEST_TASK)


def awaiting_analysis(session: Session, patient_pk: int) -> bool:
    """Whether ingests of the patient stored their rows and wait for its analyses."""
    return bool(repository.awaiting_analysis(session, patient_pk, INGEST_TASK))


def defer(job: Job) -> None:
    """Give a claimed job back to the queue without a message: the sweep re-sends it after
    `job_resend_after_seconds`."""
    job.status = "queued"
    job.lease_expires_at = None
    job.sent_at = utcnow()


def resend_deferred(task: str) -> int:
    """Send again, now, the deferred jobs of `task` (queued after an attempt) instead of
    leaving them to the sweep: called when the work they yielded to is done."""
    with unit_of_work() as session:
        due = repository.deferred(session, task)
    if due:
        outbox.publish((task, job_id, Job) for job_id in due)
    return len(due)


def finish(session: Session, job: Job, *, error: str | None = None) -> None:
    job.status = "failed" if error else "succeeded"
    job.error = error
    job.finished_at = utcnow()
    job.lease_expires_at = None
    job.stored_at = None


def await_analysis(job: Job) -> None:
    """The ingest stored its rows; a later ingest of the same patient recomputes the analyses
    and finishes it. It stays running under a renewed lease: should that later ingest never
    finish it, the lease expires and the sweep runs this one again, whole."""
    now = utcnow()
    job.stored_at = now
    job.lease_expires_at = now + timedelta(seconds=get_settings().job_lease_seconds)


def finish_awaiting(session: Session, patient_pk: int) -> int:
    """Finish the patient's ingests that waited for the analyses just recomputed."""
    waiting = repository.awaiting_analysis(session, patient_pk, INGEST_TASK)
    for job in waiting:
        finish(session, job)
    return len(waiting)


def sweep() -> int:
    """Re-send jobs never picked up (lost message, broker restarted without persistence) and
    jobs whose worker died mid-task. Duplicates are harmless: a task claims its job
    atomically and does nothing when it cannot."""
    settings = get_settings()
    now = utcnow()
    with unit_of_work() as session:
        due = [
            (job.id, job.task)
            for job in repository.due_for_resend(
                session,
                resend_before=now - timedelta(seconds=settings.job_resend_after_seconds),
                now=now,
            )
        ]
    if due:
        log.info("jobs.sweep_resend", count=len(due))
        outbox.publish((task, job_id, Job) for job_id, task in due)
    return len(due)
