"""Audit rows, written in the same unit of work as the access they record (or, for a refused
request, in one of their own), and read back by admins of the same site."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import Request
from sqlalchemy import Table, insert
from sqlalchemy.orm import Session

from services.audit import repository
from services.audit.models import AuditEntry
from services.audit.repository import AuditFilter
from services.auth.service import Principal
from services.db import utcnow
from services.pagination import PageRequest

# A declarative class's __table__ is typed as FromClause; it is the Table the class maps.
_INSERT = insert(cast(Table, AuditEntry.__table__))

# The routes that read or write patient data (or manage the keys that do): every one of them
# calls audit() when it serves a request, and a request of theirs refused with one of
# DENIED_STATUSES is recorded by audit_denied().
AUDITED_ROUTES = (
    "/v1/patients",
    "/v1/samples",
    "/v1/jobs",
    "/v1/audit",
    "/v1/keys",
    "/v1/exports",
    "/v1/webhook-endpoints",
    "/v1/webhook-events",
    "/v1/webhook-deliveries",
    "/ui/patients",
)
DENIED_STATUSES = frozenset({401, 403, 404})


def is_audited(route_path: str) -> bool:
    return route_path.startswith(AUDITED_ROUTES)


def audit(
    session: Session,
    request: Request,
    principal: Principal,
    *,
    patient_id: str | None = None,
    sample_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record an access being served. The row commits with the access it records, so its
    status is the route's success status. `detail`: what a correction changed and why."""
    row = allowed_row(request, principal, patient_id=patient_id, sample_id=sample_id)
    if detail is not None:
        row["detail"] = json.dumps(detail, default=str, separators=(",", ":"))
    session.connection().execute(_INSERT, row)


def allowed_row(
    request: Request,
    principal: Principal,
    *,
    patient_id: str | None = None,
    sample_id: str | None = None,
) -> dict[str, object]:
    """The audit row of an access being served (for a caller that writes it in the same
    statement as its read)."""
    route = request.scope.get("route")
    return _row(
        request,
        site=principal.site,
        key_id=principal.key_id,
        patient_id=patient_id,
        sample_id=sample_id,
        status_code=getattr(route, "status_code", None) or 200,
        outcome="allowed",
    )


def audit_denied(
    session: Session,
    request: Request,
    *,
    status_code: int,
    site: str | None,
    key_id: str | None,
) -> None:
    """Record a refused request: the patient and sample it named (in its path, or the
    patient_id it filtered on), who asked if the key is known, and from where."""
    params = request.path_params
    patient_id = params.get("patient_id") or request.query_params.get("patient_id")
    _write(
        session,
        request,
        site=site,
        key_id=key_id,
        patient_id=patient_id or None,
        sample_id=str(params["sample_id"]) if params.get("sample_id") else None,
        status_code=status_code,
        outcome="denied",
    )


def _write(
    session: Session,
    request: Request,
    *,
    site: str | None,
    key_id: str | None,
    patient_id: str | None,
    sample_id: str | None,
    status_code: int,
    outcome: str,
) -> None:
    # A prebuilt Core INSERT on the caller's connection, in its transaction: the row commits
    # with the access it records, without the ORM's per-object bookkeeping on every read.
    session.connection().execute(
        _INSERT,
        _row(
            request,
            site=site,
            key_id=key_id,
            patient_id=patient_id,
            sample_id=sample_id,
            status_code=status_code,
            outcome=outcome,
        ),
    )


def _row(
    request: Request,
    *,
    site: str | None,
    key_id: str | None,
    patient_id: str | None,
    sample_id: str | None,
    status_code: int,
    outcome: str,
) -> dict[str, object]:
    route = request.scope.get("route")
    return {
        "at": utcnow(),
        "site": site,
        "key_id": key_id,
        "method": request.method,
        "route": _text(getattr(route, "path", request.url.path), 256),
        "patient_id": _text(patient_id, 128),
        "sample_id": _text(sample_id, 128),
        "status_code": status_code,
        "outcome": outcome,
        "client": _text(request.client.host, 64) if request.client else None,
    }


def _text(value: str | None, length: int) -> str | None:
    # Whatever a refused request named, its row must be writable: PostgreSQL text holds no NUL.
    return value[:length].replace("\x00", "\N{REPLACEMENT CHARACTER}") if value else value


def list_entries(
    session: Session, site: str, where: AuditFilter, page: PageRequest
) -> tuple[list[AuditEntry], str | None]:
    """One page, newest first, and the cursor of the next page (None on the last)."""
    where = replace(where, since=_as_utc(where.since), until=_as_utc(where.until))
    return repository.search(session, site, where, page)


def _as_utc(value: datetime | None) -> datetime | None:
    # A filter without a zone means UTC, the zone every row is stored in.
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def corrections_of(session: Session, site: str, sample_id: str) -> list[AuditEntry]:
    """The rows of the corrections made to a sample (those with a detail), oldest first."""
    return repository.corrections(session, site, sample_id)
