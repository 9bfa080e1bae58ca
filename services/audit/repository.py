"""Queries on the audit trail; every query is scoped to a site."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.audit.models import AuditEntry
from services.pagination import Keyset, PageRequest

# Newest first by id: ids only grow, so a walk is stable while new rows arrive (they land
# before the first page, never inside the walk).
ENTRIES = Keyset("audit", (AuditEntry.id,), descending=True)


@dataclass(frozen=True, slots=True)
class AuditFilter:
    patient_id: str | None = None
    key_id: str | None = None
    route: str | None = None
    status_code: int | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def search(
    session: Session, site: str, where: AuditFilter, page: PageRequest
) -> tuple[list[AuditEntry], str | None]:
    """One page of the site's rows that match, newest first, and the next page's cursor."""
    stmt = select(AuditEntry).where(AuditEntry.site == site)
    for column, value in (
        (AuditEntry.patient_id, where.patient_id),
        (AuditEntry.key_id, where.key_id),
        (AuditEntry.route, where.route),
        (AuditEntry.status_code, where.status_code),
        (AuditEntry.outcome, where.outcome),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if where.since is not None:
        stmt = stmt.where(AuditEntry.at >= where.since)
    if where.until is not None:
        stmt = stmt.where(AuditEntry.at < where.until)
    return ENTRIES.paginate(session.scalars(ENTRIES.select_page(stmt, page)).all(), page)


def corrections(session: Session, site: str, sample_id: str) -> list[AuditEntry]:
    """A sample's rows with a detail (its corrections), oldest first (partial index
    ix_audit_log_site_sample_detail)."""
    return list(
        session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.site == site,
                AuditEntry.sample_id == sample_id,
                AuditEntry.detail.is_not(None),
            )
            .order_by(AuditEntry.id)
        )
    )
