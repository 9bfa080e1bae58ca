"""jobs.sweep: re-send outbox rows (jobs, webhook deliveries) that were never picked up, take
over the jobs whose worker died (failing those that lost too many), re-send the deliveries
whose retry is due; forget expired idempotency keys and web-view sessions."""

from __future__ import annotations

from services.alerts.service import sweep_due
from services.auth.service import purge_sessions
from services.db import unit_of_work
from services.idempotency.service import purge_expired
from services.jobs.service import INGEST_TASK, SWEEP_TASK, sweep
from services.samples.ingest import failed as ingest_failed
from workers.celery_app import app


@app.task(  # type: ignore[untyped-decorator]  # celery ships no type information
    name=SWEEP_TASK,
    acks_late=True,
    ignore_result=True,
)
def sweep_outbox() -> dict[str, int]:
    with unit_of_work() as session:
        sessions = purge_sessions(session)
    return {
        "jobs": sweep(on_exhausted={INGEST_TASK: ingest_failed}),
        "webhook_deliveries": sweep_due(),
        "idempotency_keys_expired": purge_expired(),
        "ui_sessions_expired": sessions,
    }
