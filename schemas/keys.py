"""API keys as site admins manage them. A secret appears once, in the answer that made it."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from schemas.common import ApiModel

Scope = Literal["ingest", "read", "admin"]


class KeyCreate(ApiModel):
    scopes: list[Scope] = Field(min_length=1, max_length=3)


class KeyRead(ApiModel):
    id: str
    site: str
    scopes: list[str]
    prefix: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    rotated_from: str | None


class KeyCreated(KeyRead):
    secret: str


class KeyList(ApiModel):
    items: list[KeyRead]
    next_cursor: str | None = None
