"""Background work through the outbox: a job row is written in the caller's transaction and
its message is published only after that transaction commits. If publishing fails (broker
down) nothing is lost: the sweep re-sends every job that was never picked up.

Work is bounded. A task holds its job under a lease that its `Heartbeat` renews while it runs,
so a job whose worker died (SIGKILL, out of memory, a host gone) is put back in the queue by
the sweep soon after its lease runs out, while a long honest task keeps its job. A job whose
workers vanished `job_max_attempts` times is failed with what it was doing when last heard
from, instead of being handed to the next worker forever."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from contextvars import ContextVar
from datetime import timedelta
from types import TracebackType

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


def _lease() -> timedelta:
    return timedelta(seconds=get_settings().job_lease_seconds)


HEARTBEAT_MAX_SECONDS = 2.0

# What a task reports it is doing: text, or a callable the heartbeat asks when it beats (so a
# loop over millions of records pays nothing per record).
Progress = str | Callable[[], str]
_heartbeat: ContextVar[Heartbeat | None] = ContextVar("ctdna_job_heartbeat", default=None)


class Heartbeat:
    """Renews the lease of the job the current task claimed, every third of the lease (at most
    HEARTBEAT_MAX_SECONDS apart), from a thread of its own, until the task ends; and records
    what the task reports doing (`report_progress`). Use it around one task run:
    `with Heartbeat(job_id): run(job_id)`. The claim made inside it names it as the lease's
    owner, so a beat never renews a lease that another worker has taken over since."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.owner = uuid.uuid4().hex
        self.progress: Progress | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)
        self._token: object | None = None

    def __enter__(self) -> Heartbeat:
        self._token = _heartbeat.set(self)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        _heartbeat.reset(self._token)  # type: ignore[arg-type]

    def describe(self) -> str | None:
        progress = self.progress
        if callable(progress):
            try:
                return progress()
            except Exception:  # noqa: BLE001  a report must never stop the beat
                return None
        return progress

    def _run(self) -> None:
        # A third of the lease, and often enough that `progress` says where a task is.
        interval = min(get_settings().job_lease_seconds / 3, HEARTBEAT_MAX_SECONDS)
        while not self._stop.wait(interval):
            try:
                with unit_of_work() as session:
                    repository.renew(session, self.job_id, self.owner, _lease(), self.describe())
            except Exception as exc:  # noqa: BLE001  the database is down: the lease decides
                log.warning("job.heartbeat_failed", job_id=self.job_id, error=str(exc)[:200])


def report_progress(progress: Progress) -> None:
    """Say what the current task is doing ("reading line 1200 of x.vcf"), for the heartbeat
    to record, and for the failure reason should its worker vanish."""
    heartbeat = _heartbeat.get()
    if heartbeat is not None:
        heartbeat.progress = progress


def claim(session: Session, job_id: str) -> bool:
    heartbeat = _heartbeat.get()
    owner = heartbeat.owner if heartbeat is not None else uuid.uuid4().hex
    return repository.claim(session, job_id, _lease(), owner)


def release(job_id: str) -> None:
    """Give a claimed job back to the queue after a transient failure, so the retry can claim
    it at once instead of waiting for the lease to expire. Best effort: if the database is
    the thing that failed, the lease and the sweep cover it."""
    try:
        with unit_of_work() as session:
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "running")
                .values(status="queued", lease_expires_at=None, lease_owner=None)
                .execution_options(synchronize_session=False)
            )
    except Exception as exc:  # noqa: BLE001  best effort: the lease and the sweep cover it
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


def samples_with_queued_ingest(session: Session, sample_pks: Sequence[int]) -> set[int]:
    """Those of the samples whose ingest waits for a worker (not yet started)."""
    return repository.samples_with_queued(session, sample_pks, INGEST_TASK)


def awaiting_analysis(session: Session, patient_pk: int) -> bool:
    """Whether ingests of the patient stored their rows and wait for its analyses."""
    return bool(repository.awaiting_analysis(session, patient_pk, INGEST_TASK))


def defer(job: Job) -> None:
    """Give a claimed job back to the queue without a message: the sweep re-sends it after
    `job_resend_after_seconds`."""
    job.status = "queued"
    job.lease_expires_at = None
    job.lease_owner = None
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
    job.lease_owner = None
    job.stored_at = None


def await_analysis(job: Job) -> None:
    """The ingest stored its rows; a later ingest of the same patient recomputes the analyses
    and finishes it. It stays running under a renewed lease: should that later ingest never
    finish it, the lease expires and the sweep runs this one again, whole."""
    now = utcnow()
    job.stored_at = now
    job.lease_expires_at = now + timedelta(seconds=get_settings().job_await_seconds)


def finish_awaiting(session: Session, patient_pk: int) -> int:
    """Finish the patient's ingests that waited for the analyses just recomputed."""
    waiting = repository.awaiting_analysis(session, patient_pk, INGEST_TASK)
    for job in waiting:
        finish(session, job)
    return len(waiting)


def fail(job_id: str, error: str, on_failed: Callable[[Session, Job], None] | None = None) -> None:
    """Fail a job that is not finished (a task stopped by its time limit), with `on_failed`
    doing what its task does on failure in the same transaction."""
    with unit_of_work() as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status in ("succeeded", "failed"):
            return
        finish(session, job, error=error)
        if on_failed is not None:
            on_failed(session, job)


def doing(job: Job) -> str:
    """What the job was doing when last heard from, for a failure reason."""
    return job.progress or "starting"


# What each task does when its job fails for want of a worker (an ingest marks its sample
# failed and alerts), given by the caller of `sweep`.
OnFailed = Mapping[str, Callable[[Session, Job], None]]


def sweep(on_exhausted: OnFailed | None = None) -> int:
    """Re-send jobs never picked up (lost message, broker restarted without persistence), put
    back in the queue the jobs whose worker vanished (lease expired) and re-send them at once,
    and fail those whose workers vanished `job_max_attempts` times. Duplicates are harmless:
    a task claims its job atomically and does nothing when it cannot. Returns the jobs sent."""
    settings = get_settings()
    now = utcnow()
    with unit_of_work() as session:
        taken_over = take_over_expired(session, on_exhausted or {})
        due = [
            (job.id, job.task)
            for job in repository.due_for_resend(
                session, resend_before=now - timedelta(seconds=settings.job_resend_after_seconds)
            )
        ]
        due += [(job.id, job.task) for job in taken_over if job.status == "queued"]
    if due:
        log.info("jobs.sweep_resend", count=len(due))
        outbox.publish((task, job_id, Job) for job_id, task in dict(due).items())
    return len(dict(due))


def take_over_expired(session: Session, on_exhausted: OnFailed) -> list[Job]:
    """The running jobs whose lease ran out: back to the queue (counting a lost worker, unless
    the job had finished its own work and only waited for a later ingest's analyses), or
    failed once `job_max_attempts` workers were lost on it."""
    cap = get_settings().job_max_attempts
    jobs = list(repository.expired(session, utcnow()))
    for job in jobs:
        if job.stored_at is None:
            job.workers_lost += 1
        if job.workers_lost >= cap:
            times = "once" if job.workers_lost == 1 else f"{job.workers_lost} times"
            error = (
                f"worker lost {times} while {doing(job)} (killed, out of memory or past its "
                "time limit); not retried again"
            )
            log.warning("job.exhausted", job_id=job.id, task=job.task, error=error)
            finish(session, job, error=error)
            handler = on_exhausted.get(job.task)
            if handler is not None:
                handler(session, job)
            continue
        log.warning("job.worker_lost", job_id=job.id, task=job.task, lost=job.workers_lost)
        job.status = "queued"
        job.lease_expires_at = None
        job.lease_owner = None
        job.stored_at = None
    session.flush()
    return jobs
