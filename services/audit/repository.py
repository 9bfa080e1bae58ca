"""Queries on the audit trail; every query is scoped to a site."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.audit.models import AuditEntry


@dataclass(frozen=True, slots=True)
class AuditFilter:
    patient_id: str | None = None
    key_id: str | None = None
    route: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def search(
    session: Session, site: str, where: AuditFilter, *, before_id: int | None, limit: int
) -> Sequence[AuditEntry]:
    """Newest first; `before_id` is the cursor (the last id of the previous page), stable while
    new rows arrive because ids only grow."""
    stmt = select(AuditEntry).where(AuditEntry.site == site)
    if where.patient_id is not None:
        stmt = stmt.where(AuditEntry.patient_id == where.patient_id)
    if where.key_id is not None:
        stmt = stmt.where(AuditEntry.key_id == where.key_id)
    if where.route is not None:
        stmt = stmt.where(AuditEntry.route == where.route)
    if where.since is not None:
        stmt = stmt.where(AuditEntry.at >= where.since)
    if where.until is not None:
        stmt = stmt.where(AuditEntry.at < where.until)
    if before_id is not None:
        stmt = stmt.where(AuditEntry.id < before_id)
    return session.scalars(stmt.order_by(AuditEntry.id.desc()).limit(limit)).all()
