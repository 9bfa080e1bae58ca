"""A site's settings."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from schemas.common import ApiModel


class SiteSettingsRead(ApiModel):
    site: str
    timezone: str = Field(description="IANA time zone: what today is for the site's dates")
    create_patients_on_upload: bool = Field(
        description="An upload for an unknown patient creates it (as if it sent "
        "create_patient=true); otherwise it is a 404"
    )
    today: dt.date = Field(description="Today in the site's time zone")
    updated_at: dt.datetime | None = None


class SiteSettingsUpdate(ApiModel):
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    create_patients_on_upload: bool | None = None
