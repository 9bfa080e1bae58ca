"""Idempotency-Key (draft-ietf-httpapi-idempotency-key-header): the first request with a key
is recorded as in flight, its answer is stored when it ends, and a retry with the same key and
the same content gets that answer again without the effect being repeated; the same key with
other content is refused. Keys are per API key and expire after `idempotency_ttl_hours`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete
from sqlalchemy.orm import Session

from services.config import get_settings
from services.db import unit_of_work, utcnow
from services.idempotency.models import IdempotentRequest

# A request still marked in flight after this long died with its process (between its own
# commit and the recording of its answer, or before): a retry may take the key over.
IN_FLIGHT_STALE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Begin:
    """What to do with a request: run it (`started`), answer it from the store (`replay`),
    or refuse it (`in_flight`: 409, `mismatch`: 422)."""

    outcome: Literal["started", "replay", "in_flight", "mismatch"]
    status_code: int | None = None
    content_type: str | None = None
    body: bytes | None = None


def begin(
    session: Session,
    *,
    key_id: str,
    idempotency_key: str,
    method: str,
    path: str,
    fingerprint: str,
    now: datetime,
    ttl: timedelta,
) -> Begin:
    row = session.get(IdempotentRequest, (key_id, idempotency_key), with_for_update=True)
    if row is not None and row.created_at < now - ttl:
        session.delete(row)
        session.flush()
        row = None
    if row is None:
        session.add(
            IdempotentRequest(
                key_id=key_id,
                idempotency_key=idempotency_key,
                method=method,
                path=path[:512],
                fingerprint=fingerprint,
                created_at=now,
            )
        )
        session.flush()
        return Begin("started")
    if row.fingerprint != fingerprint:
        return Begin("mismatch")
    if row.status_code is None:
        if row.created_at < now - IN_FLIGHT_STALE:
            row.created_at = now
            return Begin("started")
        return Begin("in_flight")
    return Begin("replay", row.status_code, row.content_type, row.response_body)


def complete(
    session: Session,
    *,
    key_id: str,
    idempotency_key: str,
    status_code: int,
    content_type: str | None,
    body: bytes,
    now: datetime,
) -> None:
    row = session.get(IdempotentRequest, (key_id, idempotency_key), with_for_update=True)
    if row is None or row.status_code is not None:
        return
    row.status_code = status_code
    row.content_type = content_type
    row.response_body = body
    row.completed_at = now


def abandon(session: Session, *, key_id: str, idempotency_key: str) -> None:
    """Forget an in-flight key whose request ended without an answer worth keeping (a server
    error, a dropped connection), so that a retry runs it."""
    session.execute(
        delete(IdempotentRequest).where(
            IdempotentRequest.key_id == key_id,
            IdempotentRequest.idempotency_key == idempotency_key,
            IdempotentRequest.status_code.is_(None),
        )
    )


def purge_expired() -> int:
    """Forget keys past their window (run by the periodic sweep)."""
    before = utcnow() - timedelta(hours=get_settings().idempotency_ttl_hours)
    with unit_of_work() as session:
        result = session.execute(
            delete(IdempotentRequest).where(IdempotentRequest.created_at < before)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
