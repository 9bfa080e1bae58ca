"""Append-only audit trail of every read and write of patient data, and of every request for
it that was refused (401, 403, 404). On PostgreSQL a trigger (migration 0004) refuses UPDATE,
DELETE and TRUNCATE of the table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UtcDateTime, utcnow


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_site_at", "site", "at"),
        Index("ix_audit_log_site_patient_id", "site", "patient_id"),
        Index("ix_audit_log_site_key_id", "site", "key_id"),
        Index(
            "ix_audit_log_site_denied",
            "site",
            "id",
            postgresql_where=text("outcome = 'denied'"),
            sqlite_where=text("outcome = 'denied'"),
        ),
        Index(
            "ix_audit_log_site_sample_detail",
            "site",
            "sample_id",
            postgresql_where=text("detail IS NOT NULL"),
            sqlite_where=text("detail IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Both None for a request with no key or an unknown one (the client address remains).
    site: Mapped[str | None] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(32))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(256))
    patient_id: Mapped[str | None] = mapped_column(String(128))
    sample_id: Mapped[str | None] = mapped_column(String(128))
    status_code: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(8), default="allowed", server_default="allowed")
    client: Mapped[str | None] = mapped_column(String(64))
    # What a correction changed and why (JSON: action, changes, reason); None for a plain read
    # or write.
    detail: Mapped[str | None] = mapped_column(Text)
