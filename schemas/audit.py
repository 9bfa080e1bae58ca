"""The audit trail as admins read it."""

from __future__ import annotations

import datetime as dt

from schemas.common import ApiModel


class AuditEntryRead(ApiModel):
    id: int
    at: dt.datetime
    key_id: str
    method: str
    route: str
    patient_id: str | None
    sample_id: str | None
    client: str | None


class AuditList(ApiModel):
    items: list[AuditEntryRead]
    next_cursor: str | None = None
