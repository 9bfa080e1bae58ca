"""A site's settings, and the dates that cannot be true for it: a collection date or a
clinical event after tomorrow in the site's time, a collection date before 1990."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.orm import Session

from schemas.sites import SiteSettingsUpdate
from services.db import utcnow
from services.errors import InvalidInput
from services.sites.models import SiteSettings

# No cell-free DNA assay of this kind existed before; a date before it is a typo.
EARLIEST_COLLECTION_DATE = dt.date(1990, 1, 1)


def settings_of(session: Session, site: str) -> SiteSettings:
    """The site's settings row, or the defaults (UTC, no creation on upload) when it has none
    (not added to the session)."""
    stored = session.get(SiteSettings, site)
    if stored is not None:
        return stored
    return SiteSettings(site=site, timezone="UTC", create_patients_on_upload=False)


def today(settings: SiteSettings) -> dt.date:
    return utcnow().astimezone(ZoneInfo(settings.timezone)).date()


def check_collection_date(session: Session, site: str, value: dt.date, *, what: str) -> None:
    """Refuse a collection date after tomorrow (site time) or before 1990."""
    if value < EARLIEST_COLLECTION_DATE:
        raise InvalidInput(
            f"{what} {value.isoformat()} is before {EARLIEST_COLLECTION_DATE.isoformat()}"
        )
    check_not_future(session, site, value, what=what)


def check_not_future(session: Session, site: str, value: dt.date, *, what: str) -> None:
    """Refuse a date after tomorrow in the site's time zone (tomorrow itself passes: a lab a
    few hours ahead of the site's zone is not wrong)."""
    settings = settings_of(session, site)
    latest = today(settings) + dt.timedelta(days=1)
    if value > latest:
        raise InvalidInput(
            f"{what} {value.isoformat()} is in the future (today is "
            f"{today(settings).isoformat()} in {settings.timezone})"
        )


def update(session: Session, site: str, body: SiteSettingsUpdate) -> SiteSettings:
    row = session.get(SiteSettings, site)
    if row is None:
        row = SiteSettings(site=site, timezone="UTC", create_patients_on_upload=False)
        session.add(row)
    if body.timezone is not None:
        try:
            ZoneInfo(body.timezone)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise InvalidInput(f"timezone {body.timezone!r} is not an IANA time zone") from exc
        row.timezone = body.timezone
    if body.create_patients_on_upload is not None:
        row.create_patients_on_upload = body.create_patients_on_upload
    row.updated_at = utcnow()
    session.flush()
    return row
