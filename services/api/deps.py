"""Request-scoped dependencies: the unit of work and the calling principal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from services.auth.models import ApiKey
from services.auth.service import Principal, authenticate, hash_key
from services.db import get_session_factory, unit_of_work
from services.errors import DomainError
from services.pagination import DEFAULT_LIMIT, MAX_CURSOR_CHARS, MAX_LIMIT, PageRequest

# Known keys are remembered per process for a few seconds: otherwise every request hashes the
# key and opens a session for one more database round trip. Consequence: a key revoked (or
# rotated away) in ANOTHER process (the CLI, another API process) keeps working here for at
# most PRINCIPAL_TTL_SECONDS; a revocation committed in THIS process takes effect at once
# (see _forget_revoked_keys). Unknown keys are never cached (a new key works at once).
PRINCIPAL_TTL_SECONDS = 5.0
_PRINCIPAL_CACHE_MAX = 10_000
_principals: dict[str, tuple[float, Principal]] = {}
_KEYS_CHANGED = "ctdna_api_keys_changed"


class Unauthorized(DomainError):
    """No key, or a key that is unknown or revoked."""


class Forbidden(DomainError):
    """A valid key without the scope the route needs."""


def _session() -> Iterator[Session]:
    with unit_of_work() as session:
        yield session


# "function" scope: commit before the response is sent, so a client that gets 202 can poll
# the job at once and the after-commit publish has happened.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def lookup_principal(token: str) -> Principal | None:
    """The principal of a bearer token, from the per-process cache or the database."""
    digest = hash_key(token)
    cached = _principals.get(digest)
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    with get_session_factory()() as session:
        principal = authenticate(session, token)
    if principal is None:
        _principals.pop(digest, None)
        return None
    if len(_principals) >= _PRINCIPAL_CACHE_MAX:
        _principals.clear()
    _principals[digest] = (time.monotonic() + PRINCIPAL_TTL_SECONDS, principal)
    return principal


def _cached_principal(token: str) -> Principal | None:
    cached = _principals.get(hash_key(token))
    return cached[1] if cached is not None and cached[0] > time.monotonic() else None


@event.listens_for(ApiKey.revoked_at, "set")
def _note_revocation(target: ApiKey, *_: Any) -> None:
    session = object_session(target)
    if session is not None:
        session.info[_KEYS_CHANGED] = True
    _principals.clear()


@event.listens_for(Session, "after_commit")
def _forget_revoked_keys(session: Session) -> None:
    # Cleared again after the commit: a request that re-cached the key between the change and
    # the commit must not keep it for a whole TTL.
    if session.info.pop(_KEYS_CHANGED, False):
        _principals.clear()


def bearer_token(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def known_key(authorization: str) -> bool:
    """Whether the header carries a key this process has recently found valid (no database
    read): the rate limiter charges any other credential to the client address."""
    token = bearer_token(authorization)
    return token is not None and _cached_principal(token) is not None


async def authorize(authorization: str, scope: str | None = None) -> Principal:
    """The principal of an Authorization header, holding `scope` if given; Unauthorized or
    Forbidden otherwise. async: a cached key costs no trip to the thread pool; a lookup goes
    there."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized(
            "missing bearer token: send Authorization: Bearer <api key> (an admin of the site "
            "makes keys with `ctdna keys create --site SITE --scopes ingest,read`)"
        )
    principal = _cached_principal(token) or await run_in_threadpool(lookup_principal, token)
    if principal is None:
        raise Unauthorized(
            "unknown or revoked API key: check it, or ask an admin of your site for a new one "
            "(`ctdna keys create --site SITE --scopes ingest,read`)"
        )
    if scope is not None and not principal.has(scope):
        raise Forbidden(f"this key lacks the '{scope}' scope")
    return principal


async def _principal(request: Request) -> Principal:
    principal = await authorize(request.headers.get("authorization", ""))
    request.state.principal = principal
    return principal


def require(scope: str) -> object:
    async def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.has(scope):
            raise Forbidden(
                f"this key lacks the '{scope}' scope: use a key made with --scopes {scope} "
                f"(`ctdna keys create --site {principal.site} --scopes {scope}`)"
            )
        return principal

    return Depends(dependency)


Reader = Annotated[Principal, require("read")]
Ingestor = Annotated[Principal, require("ingest")]
Admin = Annotated[Principal, require("admin")]


def page_params(default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> Any:
    """The `cursor` and `limit` query parameters of a list, as a PageRequest."""

    # Query(...) as defaults, not in Annotated: these annotations are strings (PEP 563) that
    # FastAPI resolves in the module's namespace, where `maximum` does not exist.
    def dependency(
        cursor: str | None = Query(
            None,
            max_length=MAX_CURSOR_CHARS,
            description="The next_cursor of the previous page; omit for the first page",
        ),
        limit: int = Query(default, ge=1, le=maximum, description="Rows per page"),
    ) -> PageRequest:
        return PageRequest(cursor=cursor or None, limit=limit)

    return Depends(dependency)


Page = Annotated[PageRequest, page_params()]
