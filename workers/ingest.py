"""samples.ingest: parse one stored upload into variant rows."""

from __future__ import annotations

import random

import structlog
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from services.analysis import service as analysis
from services.config import get_settings
from services.jobs.service import INGEST_TASK, Heartbeat, release
from services.samples import ingest
from workers.celery_app import app

log = structlog.get_logger(__name__)


@app.task(  # type: ignore[untyped-decorator]  # celery ships no type information
    name=INGEST_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=8,
    default_retry_delay=2,
)
def ingest_sample(self: Task, job_id: str) -> str:
    if self.request.retries:
        # A retry after the database went away: the hand-back below may have failed with it,
        # leaving the job held under this task's lease; give it back so the retry can claim it.
        release(job_id)
    try:
        with Heartbeat(job_id):
            outcome = ingest.run(job_id)
        analysis.release_deferred_clones()
        return outcome
    except OperationalError as exc:
        # The database went away: transient. Hand the job back and retry with jittered backoff.
        release(job_id)
        retries = self.request.retries
        countdown = min(60, 2**retries) * random.uniform(0.5, 1.5)
        raise self.retry(exc=exc, countdown=countdown) from exc
    except SoftTimeLimitExceeded:
        log.warning("ingest.time_limit", job_id=job_id)
        ingest.fail_stopped(job_id, get_settings().task_time_limit_seconds)
        return "failed"
    except Exception as exc:
        # A bug, not a bad file (bad files are VcfError, handled inside): record it on the job
        # so nothing hangs, keep the worker alive, and leave the traceback in the log.
        log.exception("ingest.unexpected_error", job_id=job_id)
        ingest.fail_unexpected(job_id, exc)
        return "failed"
