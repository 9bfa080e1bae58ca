"""The audit trail as admins read it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

from pydantic import Field, field_validator

from schemas.common import ApiModel


class AuditEntryRead(ApiModel):
    id: int
    at: dt.datetime
    key_id: str
    method: str
    route: str
    patient_id: str | None
    sample_id: str | None
    status_code: int | None = Field(description="HTTP status of the answer")
    outcome: Literal["allowed", "denied"] = Field(
        description="denied: refused with 401 (revoked key), 403 or 404"
    )
    client: str | None
    detail: dict[str, Any] | None = Field(
        default=None,
        description="a correction's action, what it changed (field: [before, after]) and "
        "its reason",
    )

    @field_validator("detail", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value


class AuditList(ApiModel):
    items: list[AuditEntryRead]
    next_cursor: str | None = None
