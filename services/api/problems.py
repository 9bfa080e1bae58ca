"""RFC 9457 problem+json for every error; domain errors get their HTTP status here only."""

from __future__ import annotations

from http import HTTPStatus

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.api.deps import Forbidden, Unauthorized
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

    @app.exception_handler(DataError)
    async def _bad_value(request: Request, exc: DataError) -> JSONResponse:
        # A value the database cannot hold (a NUL in text, a number out of range) that no
        # validation caught: the request's fault, so a 4xx, not an internal error.
        log.info("db.data_error", error=type(exc.orig).__name__)
        return problem(422, "a value in the request cannot be stored or searched", request)

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
