"""The web view's session: a cookie holding the API key id, an expiry and an HMAC over both,
set by /ui/login after the key itself was checked. The key's secret never enters the cookie,
and a revoked key ends its sessions at once (the key row is read on every request)."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from functools import lru_cache

from sqlalchemy.orm import Session

from services.auth.models import ApiKey
from services.auth.service import Principal
from services.config import get_settings

COOKIE = "ctdna_session"


@lru_cache(maxsize=1)
def _secret() -> bytes:
    settings = get_settings()
    if settings.secret_key:
        return settings.secret_key.encode()
    path = settings.resolved_data_dir / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    value = secrets.token_hex(32).encode()
    with os.fdopen(fd, "wb") as out:
        out.write(value)
    return value


def _mac(payload: str) -> str:
    return hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()


def issue(key_id: str) -> str:
    expires = int(time.time()) + get_settings().ui_session_hours * 3600
    payload = f"{key_id}.{expires}"
    return f"{payload}.{_mac(payload)}"


def verify(session: Session, cookie: str | None) -> Principal | None:
    if not cookie or cookie.count(".") != 2:
        return None
    key_id, expires, mac = cookie.split(".")
    if not hmac.compare_digest(mac, _mac(f"{key_id}.{expires}")):
        return None
    if not expires.isdigit() or int(expires) < time.time():
        return None
    key = session.get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        return None
    return Principal(key_id=key.id, site=key.site, scopes=key.scope_set)
