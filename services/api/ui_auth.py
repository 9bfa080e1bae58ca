"""The web view's session and its CSRF tokens.

A sign-in (`/ui/login`, after the key itself was checked) is a row (services/auth), and the
cookie holds its random id with an HMAC over it: the key's secret never enters the cookie, a
sign-out ends the session everywhere (the same cookie no longer reads), and a revoked key ends
its sessions at once (the row is read with its key on every request). The HMAC lets the rate
limiter tell a cookie we issued from a forged one without a database read.

The sign-in and sign-out forms carry a CSRF token: for sign-in, bound to a random cookie the
form's page set (a page of another site can neither read nor send it: SameSite=Strict); for
sign-out, bound to the session.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import secrets
import tempfile
import time
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import structlog
from sqlalchemy.orm import Session
from starlette.requests import Request

from services.auth.service import Principal, end_session, session_principal, start_session
from services.config import get_settings

log = structlog.get_logger(__name__)

COOKIE = "ctdna_session"
CSRF_COOKIE = "ctdna_csrf"
# A key file created by a process starting at the same moment is complete when it appears
# (it is linked into place); an empty one is waited for this long, then replaced.
_KEY_FILE_WAIT_SECONDS = 5.0


@lru_cache(maxsize=1)
def _secret() -> bytes:
    settings = get_settings()
    if settings.secret_key:
        return settings.secret_key.encode()
    return _key_file(settings.resolved_data_dir / "secret_key")


def _key_file(path: Path) -> bytes:
    """The key kept in `path`, created if missing. A new key is written to a temporary file
    and linked into place, so no reader ever sees it empty or half written, and of two
    processes creating it at once exactly one wins and both use its key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + _KEY_FILE_WAIT_SECONDS
    while True:
        try:
            value = path.read_bytes().strip()
        except FileNotFoundError:
            value = None
        if value:
            return value
        if value is None:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(secrets.token_hex(32).encode())
                os.chmod(tmp, 0o600)
                # another process may have linked its key first: then that one is read
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
            continue
        if time.monotonic() > deadline:
            # empty for seconds: left by a crash of an older version; replace it whole
            log.warning("ui.secret_key_replaced", path=str(path))
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
            with os.fdopen(fd, "wb") as out:
                out.write(secrets.token_hex(32).encode())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
            continue
        time.sleep(0.05)


def _mac(payload: str) -> str:
    return hmac.new(_secret(), payload.encode(), hashlib.sha256).hexdigest()


def signed_session(cookie: str | None) -> str | None:
    """The session id a cookie carries, if we signed it (no database read)."""
    if not cookie or cookie.count(".") != 1:
        return None
    session_id, mac = cookie.split(".")
    return session_id if hmac.compare_digest(mac, _mac(f"session.{session_id}")) else None


def lifetime() -> timedelta:
    return timedelta(hours=get_settings().ui_session_hours)


def issue(session: Session, key_id: str) -> str:
    """A new session of the key, as the cookie value."""
    session_id = start_session(session, key_id, lifetime())
    return f"{session_id}.{_mac(f'session.{session_id}')}"


def verify(session: Session, cookie: str | None) -> Principal | None:
    session_id = signed_session(cookie)
    return session_principal(session, session_id) if session_id is not None else None


def end(session: Session, cookie: str | None) -> None:
    session_id = signed_session(cookie)
    if session_id is not None:
        end_session(session, session_id)


def secure_cookie(request: Request) -> bool:
    """Whether the session cookie is sent only over https: always, except to a browser on
    this machine over plain http (`make run`); CTDNA_UI_COOKIE_SECURE forces either. Behind a
    TLS proxy the API sees http on the public host name: Secure."""
    forced = get_settings().ui_cookie_secure
    if forced is not None:
        return forced
    if request.url.scheme == "https":
        return True
    host = (request.url.hostname or "").strip("[]")
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


# --- CSRF -------------------------------------------------------------------------------------


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def login_token(nonce: str) -> str:
    """The sign-in form's token, bound to the nonce cookie of the page that shows the form."""
    return _mac(f"login.{nonce}")


def logout_token(request: Request) -> str:
    """The sign-out form's token, bound to the session (empty without one)."""
    session_id = signed_session(request.cookies.get(COOKIE))
    return _mac(f"logout.{session_id}") if session_id else ""


def valid_login(request: Request, token: str | None) -> bool:
    nonce = request.cookies.get(CSRF_COOKIE)
    return bool(nonce and token and hmac.compare_digest(token, login_token(nonce)))


def valid_logout(request: Request, token: str | None) -> bool:
    expected = logout_token(request)
    return bool(expected and token and hmac.compare_digest(token, expected))


def same_origin(request: Request) -> bool:
    """A form posted from another site (its Origin names another host) is refused whatever
    its token; a browser that sends no Origin is judged by the token alone."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1].rstrip("/") == host
