"""patients.recompute (a patient's analyses, coalesced: on a new background, on request) and
patients.clones (the clone fit, coalesced, after ingests)."""

from __future__ import annotations

from collections.abc import Callable

import structlog
from celery.exceptions import SoftTimeLimitExceeded

from services.analysis.service import CLONES_TASK, RECOMPUTE_TASK, run_clones, run_recompute
from services.config import get_settings
from services.jobs.service import Heartbeat, fail
from workers.celery_app import app

log = structlog.get_logger(__name__)


def _bounded(run: Callable[[str], str], job_id: str) -> str:
    """Run under a heartbeat; a run stopped by its time limit fails its job."""
    try:
        with Heartbeat(job_id):
            return run(job_id)
    except SoftTimeLimitExceeded:
        seconds = get_settings().task_time_limit_seconds
        log.warning("analysis.time_limit", job_id=job_id)
        fail(job_id, f"stopped after the {seconds:g}-second time limit")
        return "failed"


@app.task(  # type: ignore[untyped-decorator]  # celery ships no type information
    name=RECOMPUTE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def recompute_patient(job_id: str) -> str:
    return _bounded(run_recompute, job_id)


@app.task(  # type: ignore[untyped-decorator]  # celery ships no type information
    name=CLONES_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def fit_patient_clones(job_id: str) -> str:
    return _bounded(run_clones, job_id)
