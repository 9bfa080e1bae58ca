"""Per-site settings: the site's time zone (what "today" is for its dates) and whether an
upload for an unknown patient creates it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from services.db import Base, UtcDateTime, utcnow


class SiteSettings(Base):
    __tablename__ = "site_settings"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")
    create_patients_on_upload: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="false"
    )
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
