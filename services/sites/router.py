"""HTTP edge for the caller's site settings (admins change them, every key reads them)."""

from __future__ import annotations

from fastapi import APIRouter

from schemas.sites import SiteSettingsRead, SiteSettingsUpdate
from services.api.deps import Admin, Reader, SessionDep
from services.sites import service
from services.sites.models import SiteSettings

router = APIRouter(prefix="/v1/site-settings", tags=["site"])


def _read(row: SiteSettings) -> SiteSettingsRead:
    return SiteSettingsRead(
        site=row.site,
        timezone=row.timezone,
        create_patients_on_upload=row.create_patients_on_upload,
        today=service.today(row),
        updated_at=row.updated_at,
    )


@router.get("", response_model=SiteSettingsRead)
def get_site_settings(principal: Reader, session: SessionDep) -> SiteSettingsRead:
    return _read(service.settings_of(session, principal.site))


@router.put("", response_model=SiteSettingsRead)
def put_site_settings(
    body: SiteSettingsUpdate, principal: Admin, session: SessionDep
) -> SiteSettingsRead:
    """Set the site's time zone (dates after tomorrow there are refused) and whether an upload
    for an unknown patient creates it by default."""
    return _read(service.update(session, principal.site, body))
