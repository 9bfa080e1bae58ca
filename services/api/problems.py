"""RFC 9457 problem+json for every error; domain errors get their HTTP status here only. A
request for patient data refused with 401, 403 or 404 is put on the audit trail here, in a
transaction of its own (the request's own unit of work has rolled back)."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api import ui_auth
from services.api.deps import Forbidden, Unauthorized
from services.audit.service import DENIED_STATUSES, audit_denied, is_audited
from services.auth.service import Principal, identify
from services.db import unit_of_work
from services.errors import Conflict, DomainError, InvalidInput, NotFound, PayloadTooLarge

log = structlog.get_logger(__name__)

STATUS_FOR: list[tuple[type[DomainError], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
]


def problem(status: int, detail: str | None, request: Request, **extra: object) -> JSONResponse:
    body: dict[str, object] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        status = next((code for kind, code in STATUS_FOR if isinstance(exc, kind)), 400)
        await _audit_if_denied(request, status)
        return problem(status, exc.detail, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem(422, detail, request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        await _audit_if_denied(request, exc.status_code)
        return problem(exc.status_code, str(exc.detail), request)

    @app.exception_handler(OperationalError)
    async def _db_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.warning("db.unavailable", error=str(exc.orig)[:200])
        response = problem(503, "the database is unavailable; retry shortly", request)
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(IntegrityError)
    async def _race(request: Request, exc: IntegrityError) -> JSONResponse:
        # A uniqueness check passed, then a concurrent request committed the same record first.
        log.info("db.integrity_conflict", error=str(exc.orig)[:200])
        return problem(409, "a concurrent request changed the same record; retry", request)

    @app.exception_handler(DBAPIError)
    async def _db_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return problem(503, "the database connection was lost; retry shortly", request)
        log.exception("db.error")
        return problem(500, "internal error", request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled", path=request.url.path)
        return problem(500, "internal error", request)


async def _audit_if_denied(request: Request, status: int) -> None:
    # Only matched routes: a path that is no route (a 404 of the router) names no patient data.
    route = request.scope.get("route")
    if status in DENIED_STATUSES and route is not None and is_audited(getattr(route, "path", "")):
        await run_in_threadpool(_record_denial, request, status)


def _record_denial(request: Request, status: int) -> None:
    try:
        with unit_of_work() as session:
            site, key_id = _caller(session, request)
            audit_denied(session, request, status_code=status, site=site, key_id=key_id)
    except SQLAlchemyError as exc:
        # The refusal stands without its row (the database is failing: the request would
        # have been refused or failed anyway); the log keeps the trace.
        log.warning(
            "audit.denial_not_recorded",
            route=getattr(request.scope.get("route"), "path", None),
            status=status,
            error=str(exc)[:200],
        )


def _caller(session: Session, request: Request) -> tuple[str | None, str | None]:
    """(site, key id) of whoever was refused: the authenticated principal (403, 404), else the
    key the request presented, revoked ones included (401), else nobody."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None and request.url.path.startswith("/ui/"):
        principal = ui_auth.verify(session, request.cookies.get(ui_auth.COOKIE))
    if principal is not None:
        return principal.site, principal.key_id
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        known = identify(session, token.strip())
        if known is not None:
            return known[1], known[0]
    return None, None
