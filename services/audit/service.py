"""Audit rows, written in the same unit of work as the access they record."""

from __future__ import annotations

from fastapi import Request
from sqlalchemy.orm import Session

from services.audit.models import AuditEntry
from services.auth.service import Principal
from services.db import utcnow


def audit(
    session: Session,
    request: Request,
    principal: Principal,
    *,
    patient_id: str | None = None,
    sample_id: str | None = None,
) -> None:
    route = request.scope.get("route")
    session.add(
        AuditEntry(
            at=utcnow(),
            site=principal.site,
            key_id=principal.key_id,
            method=request.method,
            route=getattr(route, "path", request.url.path)[:256],
            patient_id=patient_id,
            sample_id=sample_id,
            client=request.client.host if request.client else None,
        )
    )
