"""webhooks.deliver: one signed attempt of one webhook delivery."""

from __future__ import annotations

from services.alerts.service import DELIVER_TASK, deliver
from workers.celery_app import app


@app.task(  # type: ignore[untyped-decorator]  # celery ships no type information
    name=DELIVER_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver_webhook(delivery_id: str) -> str:
    return deliver(delivery_id)
