"""Audit rows, written in the same unit of work as the access they record, and read back by
admins of the same site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy import insert
from sqlalchemy.orm import Session

from services.audit import repository
from services.audit.models import AuditEntry
from services.audit.repository import AuditFilter
from services.auth.service import Principal
from services.db import utcnow
from services.errors import InvalidInput

_INSERT = insert(AuditEntry.__table__)


def audit(
    session: Session,
    request: Request,
    principal: Principal,
    *,
    patient_id: str | None = None,
    sample_id: str | None = None,
) -> None:
    route = request.scope.get("route")
    # A prebuilt Core INSERT on the caller's connection, in its transaction: the row commits
    # with the access it records, without the ORM's per-object bookkeeping on every read.
    session.connection().execute(
        _INSERT,
        {
            "at": utcnow(),
            "site": principal.site,
            "key_id": principal.key_id,
            "method": request.method,
            "route": getattr(route, "path", request.url.path)[:256],
            "patient_id": patient_id,
            "sample_id": sample_id,
            "status_code": None,
            "client": request.client.host if request.client else None,
        },
    )


def list_entries(
    session: Session, site: str, where: AuditFilter, *, cursor: str | None, limit: int
) -> tuple[Sequence[AuditEntry], str | None]:
    """One page, newest first, and the cursor of the next page (None on the last)."""
    if cursor is not None and not cursor.isdigit():
        raise InvalidInput("cursor must be the next_cursor of a previous page")
    where = replace(where, since=_as_utc(where.since), until=_as_utc(where.until))
    rows = repository.search(
        session, site, where, before_id=int(cursor) if cursor else None, limit=limit + 1
    )
    page = rows[:limit]
    return page, (str(page[-1].id) if len(rows) > limit else None)


def _as_utc(value: datetime | None) -> datetime | None:
    # A filter without a zone means UTC, the zone every row is stored in.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value
