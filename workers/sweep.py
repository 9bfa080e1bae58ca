"""jobs.sweep: re-send outbox jobs that were never picked up or whose worker died."""

from __future__ import annotations

from services.jobs.service import SWEEP_TASK, sweep
from workers.celery_app import app


@app.task(name=SWEEP_TASK, acks_late=True, ignore_result=True)
def sweep_jobs() -> int:
    return sweep()
