"""Request-scoped dependencies: the unit of work and the calling principal."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from services.auth.service import Principal, authenticate
from services.db import get_session_factory
from services.errors import DomainError


class Unauthorized(DomainError):
    """No key, or a key that is unknown or revoked."""


class Forbidden(DomainError):
    """A valid key without the scope the route needs."""


def _session() -> Iterator[Session]:
    session = get_session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# "function" scope: commit before the response is sent, so a client that gets 202 can poll
# the job at once and the after-commit publish has happened.
SessionDep = Annotated[Session, Depends(_session, scope="function")]


def _principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send Authorization: Bearer <api key>")
    with get_session_factory()() as session:
        principal = authenticate(session, token.strip())
    if principal is None:
        raise Unauthorized("unknown or revoked API key")
    request.state.principal = principal
    return principal


def require(scope: str) -> object:
    def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        if not principal.has(scope):
            raise Forbidden(f"this key lacks the '{scope}' scope")
        return principal

    return Depends(dependency)


Reader = Annotated[Principal, require("read")]
Ingestor = Annotated[Principal, require("ingest")]
Admin = Annotated[Principal, require("admin")]
