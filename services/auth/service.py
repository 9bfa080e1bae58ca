"""API keys: creation (secret shown once), verification by hash, revocation, rotation; and the
web view's sessions, which a sign-out ends."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from services.auth.models import ApiKey, UiSession
from services.db import utcnow
from services.errors import Conflict, InvalidInput, NotFound
from services.pagination import Keyset, PageRequest

SCOPES = frozenset({"ingest", "read", "admin"})
KEY_PREFIX = "ctd_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key id, its site and its scopes."""

    key_id: str
    site: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def hash_key(secret: str) -> str:
    # Keys are 256-bit random tokens, so a plain SHA-256 is a sound verifier (no dictionary
    # to attack) and keeps each request's lookup a single index probe.
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(raw: str | Iterable[str]) -> frozenset[str]:
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = scopes - SCOPES
    if unknown or not scopes:
        raise InvalidInput(
            f"unknown or empty scopes {sorted(unknown)}; choose from {sorted(SCOPES)}"
        )
    return scopes


def create_key(
    session: Session, *, site: str, scopes: frozenset[str], rotated_from: str | None = None
) -> tuple[ApiKey, str]:
    if not site.strip():
        raise InvalidInput("site must not be empty")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        id=secrets.token_hex(8),
        site=site.strip(),
        scopes=",".join(sorted(scopes)),
        key_hash=hash_key(secret),
        prefix=secret[:10],
        created_at=utcnow(),
        rotated_from=rotated_from,
    )
    session.add(key)
    session.flush()
    return key, secret


def authenticate(session: Session, secret: str) -> Principal | None:
    key = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(secret)))
    if key is None or key.revoked_at is not None:
        return None
    return Principal(key_id=key.id, site=key.site, scopes=key.scope_set)


def identify(session: Session, secret: str) -> tuple[str, str] | None:
    """(key id, site) of a key we issued, revoked or not: who to name on the audit trail when
    a revoked key is still being used."""
    row = session.execute(
        select(ApiKey.id, ApiKey.site).where(ApiKey.key_hash == hash_key(secret))
    ).first()
    return (row[0], row[1]) if row else None


def revoke_key(session: Session, key_id: str) -> bool:
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return False
    key.revoked_at = utcnow()
    return True


def get_key_or_raise(
    session: Session, key_id: str, *, site: str | None = None, for_update: bool = False
) -> ApiKey:
    """The key, if it exists and (when `site` is given) belongs to that site: another site's
    key is reported as missing, like any other site's id."""
    key = session.get(ApiKey, key_id, with_for_update=for_update)
    if key is None or (site is not None and key.site != site):
        raise NotFound(f"key {key_id!r} not found")
    return key


def rotate_key(session: Session, key_id: str, *, site: str | None = None) -> tuple[ApiKey, str]:
    """A new secret with the same site and scopes; the old key is revoked in the same
    transaction, so exactly one of the two works once it commits."""
    old = get_key_or_raise(session, key_id, site=site, for_update=True)
    if old.revoked_at is not None:
        raise Conflict(f"key {key_id!r} is revoked; create a new key instead")
    old.revoked_at = utcnow()
    return create_key(session, site=old.site, scopes=old.scope_set, rotated_from=old.id)


KEYS = Keyset("keys", (ApiKey.created_at, ApiKey.id))


def list_keys_page(
    session: Session, site: str, page: PageRequest
) -> tuple[list[ApiKey], str | None]:
    """One page of a site's keys, oldest first, and the next page's cursor."""
    stmt = KEYS.select_page(select(ApiKey).where(ApiKey.site == site), page)
    return KEYS.paginate(session.scalars(stmt).all(), page)


def list_keys(session: Session, site: str | None = None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at)
    if site:
        stmt = stmt.where(ApiKey.site == site)
    return list(session.scalars(stmt))


# --- web-view sessions ------------------------------------------------------------------------


def start_session(session: Session, key_id: str, lifetime: timedelta) -> str:
    """A new sign-in of the key; returns the session id (only its hash is stored)."""
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    session.add(
        UiSession(
            id_hash=hash_key(session_id),
            key_id=key_id,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    return session_id


def session_principal(session: Session, session_id: str) -> Principal | None:
    """Who a session is, while it has not ended, expired, or lost its key."""
    key = session.scalar(
        select(ApiKey)
        .join(UiSession, UiSession.key_id == ApiKey.id)
        .where(
            UiSession.id_hash == hash_key(session_id),
            UiSession.ended_at.is_(None),
            UiSession.expires_at > utcnow(),
            ApiKey.revoked_at.is_(None),
        )
    )
    return Principal(key_id=key.id, site=key.site, scopes=key.scope_set) if key else None


def end_session(session: Session, session_id: str) -> None:
    session.execute(
        update(UiSession)
        .where(UiSession.id_hash == hash_key(session_id), UiSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def purge_sessions(session: Session) -> int:
    """Forget sessions past their expiry (run by the periodic sweep)."""
    result = session.execute(delete(UiSession).where(UiSession.expires_at < utcnow()))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
