"""HTTP edge for the audit trail (admins of a site read their own site's rows)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from schemas.audit import AuditEntryRead, AuditList
from services.api.deps import Admin, Page, SessionDep
from services.audit.repository import AuditFilter
from services.audit.service import audit, list_entries

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", response_model=AuditList)
def list_audit(
    principal: Admin,
    session: SessionDep,
    request: Request,
    page: Page,
    patient_id: Annotated[str | None, Query(max_length=128)] = None,
    key_id: Annotated[str | None, Query(max_length=32)] = None,
    route: Annotated[
        str | None, Query(max_length=256, description="Route template: /v1/patients/{patient_id}")
    ] = None,
    status_code: Annotated[
        int | None, Query(ge=100, le=599, description="HTTP status of the answer")
    ] = None,
    outcome: Annotated[
        Literal["allowed", "denied"] | None,
        Query(description="denied: refused with 401, 403 or 404"),
    ] = None,
    since: Annotated[dt.datetime | None, Query(description="Inclusive; UTC if no zone")] = None,
    until: Annotated[dt.datetime | None, Query(description="Exclusive; UTC if no zone")] = None,
) -> AuditList:
    """Who (key id), what (method, route, patient, sample), with what outcome, when and from
    where, newest first, a page at a time (follow `next_cursor`). Refused requests are here
    too, when their key belongs to this site. Reading the trail is itself recorded."""
    where = AuditFilter(
        patient_id=patient_id,
        key_id=key_id,
        route=route,
        status_code=status_code,
        outcome=outcome,
        since=since,
        until=until,
    )
    rows, next_cursor = list_entries(session, principal.site, where, page)
    items = [AuditEntryRead.model_validate(row) for row in rows]
    audit(session, request, principal, patient_id=patient_id)
    return AuditList(items=items, next_cursor=next_cursor)
