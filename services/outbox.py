"""Publishing task messages after commit (the outbox). A row (job, webhook delivery) is written
in the caller's transaction and registered here; once that transaction commits, its message is
sent and the row's `sent_at` stamped. If the broker is down nothing is lost: the periodic sweep
re-sends rows whose message never reached a worker."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import structlog
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from services.db import unit_of_work, utcnow
from services.jobs.broker import get_producer

log = structlog.get_logger(__name__)

_KEY = "ctdna_outbox"

# (task name, row id, model whose sent_at is stamped)
Message = tuple[str, str, Any]

_run_here: ContextVar[bool] = ContextVar("ctdna_outbox_run_here", default=False)


@contextmanager
def run_here() -> Iterator[None]:
    """Within this block nothing is sent: the caller runs the work of its rows itself (the
    demo loader, whose jobs must never queue ahead of real uploads). The rows are stamped as
    sent all the same, so whatever the caller leaves undone (it was stopped) reaches a worker
    through the sweep after `job_resend_after_seconds`."""
    token = _run_here.set(True)
    try:
        yield
    finally:
        _run_here.reset(token)


def after_commit(session: Session, task: str, row_id: str, model: Any) -> None:
    session.info.setdefault(_KEY, []).append((task, row_id, model))


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    # after_commit also fires when a SAVEPOINT is released; only the outermost commit makes
    # the rows visible to a worker. (in_transaction() cannot tell them apart: it is still
    # True inside after_commit of the outermost commit.)
    if session.get_nested_transaction() is not None:
        return
    pending = session.info.pop(_KEY, None)
    if pending:
        publish(pending)


@event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    # A rolled-back SAVEPOINT leaves the outer transaction's messages pending (one whose row
    # was rolled back finds nothing to do); a top-level rollback drops them all.
    if session.get_nested_transaction() is None:
        session.info.pop(_KEY, None)


def publish(messages: Iterable[Message], countdown: float | None = None) -> None:
    """Send each message; stamp the rows whose message the broker accepted (under run_here,
    stamp them without sending)."""
    sent: dict[Any, list[str]] = defaultdict(list)
    if _run_here.get():
        for _, row_id, model in messages:
            sent[model].append(row_id)
        _stamp(sent)
        return
    producer = get_producer()
    for task, row_id, model in messages:
        try:
            producer.send_task(
                task,
                args=[row_id],
                countdown=countdown,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.1},
            )
        except Exception as exc:  # noqa: BLE001  broker down: the sweep will re-send it
            log.warning("outbox.publish_failed", task=task, row_id=row_id, error=str(exc)[:200])
            continue
        sent[model].append(row_id)
    _stamp(sent)


def _stamp(sent: dict[Any, list[str]]) -> None:
    if not sent:
        return
    try:
        with unit_of_work() as session:
            for model, ids in sent.items():
                session.execute(
                    update(model)
                    .where(model.id.in_(ids))
                    .values(sent_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
    except Exception as exc:  # noqa: BLE001  only bookkeeping: a resend is harmless
        log.warning("outbox.stamp_failed", error=str(exc)[:200])
