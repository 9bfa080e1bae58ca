"""Pure ASGI middleware: request body caps, request ids / access metrics, the key check of an
upload before its body, and the audit row of a refused request for patient data."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import structlog
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import ui_auth
from services.api.deps import Forbidden, Unauthorized, authorize
from services.audit.service import DENIED_STATUSES, audit_denied, is_audited
from services.auth.service import Principal, identify
from services.db import unit_of_work

log = structlog.get_logger(__name__)

REQUESTS = Counter("ctdna_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "ctdna_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

UPLOAD_PATH = "/v1/samples"


def is_upload(method: str, path: str) -> bool:
    """A file upload: a sample (POST /v1/samples) or its alignment (PUT .../alignment)."""
    path = path.rstrip("/")
    if method == "POST":
        return path == UPLOAD_PATH
    return method == "PUT" and path.startswith(UPLOAD_PATH + "/") and path.endswith("/alignment")


class BodyTooLarge(Exception):
    pass


class UploadGate:
    """An upload's key and scope are checked before a byte of its body is read. FastAPI reads
    a multipart body (spooling its files to disk) before it runs the route's dependencies, so
    without this a request with no valid key costs its whole body in writes before its 401.
    The refusal names its route and ids, for the audit row of DenialAudit around it, and
    closes the connection rather than read the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_upload(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = dict(scope.get("headers", ())).get(b"authorization", b"")
        refusal: Unauthorized | Forbidden | None = None
        try:
            principal = await authorize(authorization.decode("latin-1"))
        except Unauthorized as unauthorized:
            refusal = unauthorized
        else:
            # who was refused, for the audit row (as the route's own dependency would)
            scope.setdefault("state", {})["principal"] = principal
            if not principal.has("ingest"):
                refusal = Forbidden("this key lacks the 'ingest' scope")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        _match_route(scope)
        is_unauthorized = isinstance(refusal, Unauthorized)
        await send_problem(
            send,
            401 if is_unauthorized else 403,
            refusal.detail,
            scope["path"],
            headers=[
                (b"connection", b"close"),
                *([(b"www-authenticate", b"Bearer")] if is_unauthorized else []),
            ],
        )


def _match_route(scope: Scope) -> None:
    """Set the route (and its path parameters) a request would reach, as routing would."""
    for route in _routes(getattr(scope.get("app"), "router", None)):
        match, child = route.matches(scope)
        if match == Match.FULL:
            scope.update(child)
            scope["route"] = route
            return


def _routes(router: object) -> Iterator[Any]:
    """The app's routes, those of included routers included (no prefix is added at include)."""
    for route in getattr(router, "routes", ()):
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _routes(inner)
        elif getattr(route, "path", None) is not None:
            yield route


class BodySizeLimit:
    """Refuse bodies over the cap with 413 as soon as the bytes say so (Content-Length, or
    counting a chunked stream), before anything is written to disk."""

    def __init__(self, app: ASGIApp, *, upload_max: int, other_max: int = 1024 * 1024) -> None:
        self.app = app
        self.upload_max = upload_max
        self.other_max = other_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.upload_max if is_upload(scope["method"], scope["path"]) else self.other_max
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, scope["path"], limit)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, scope["path"], limit)


async def _too_large(send: Send, path: str, limit: int) -> None:
    await send_problem(
        send,
        413,
        f"request body exceeds the {limit}-byte limit",
        path,
        headers=[(b"connection", b"close")],
    )


async def send_problem(
    send: Send,
    status: int,
    detail: str,
    path: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    **extra: object,
) -> None:
    """An RFC 9457 answer from middleware, where FastAPI's exception handlers do not reach."""
    body = json.dumps(
        {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": detail,
            "instance": path,
            **extra,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")


class RequestContext:
    """A request id on every response and log line, and Prometheus request metrics. A request
    whose path or query holds a NUL character is refused here (400): no id, cursor or filter
    of ours can contain one, and PostgreSQL cannot even compare text with one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", ())).get(b"x-request-id", b"")
        # a client's own id is kept only when it is a plain token; otherwise a new one
        request_id = (
            incoming.decode("ascii") if REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
        )
        query = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"\x00" in query or b"%00" in query:
            await send_problem(
                send,
                400,
                "the path or query contains a NUL character",
                scope["path"].replace("\x00", "\N{REPLACEMENT CHARACTER}"),
                headers=[(b"x-request-id", request_id.encode())],
            )
            return
        structlog.contextvars.bind_contextvars(request_id=request_id)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            REQUESTS.labels(scope["method"], path, str(status)).inc()
            LATENCY.labels(scope["method"], path).observe(time.perf_counter() - start)
            structlog.contextvars.unbind_contextvars("request_id")


class DenialAudit:
    """A request for patient data refused with 401, 403 or 404 leaves an audit row, whatever
    refused it: an exception turned into problem+json, or a page of its own (the web view's
    404). The row is written in a transaction of its own (the request's unit of work has
    rolled back) before the answer starts, so a client that got the refusal finds its row.
    Only matched routes: a path that is no route names no patient data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def audited_send(message: Message) -> None:
            if message["type"] == "http.response.start" and _refused(scope, message["status"]):
                route = getattr(scope.get("route"), "path", None)
                if route is not None and is_audited(route):
                    await run_in_threadpool(_record_denial, Request(scope), message["status"])
            await send(message)

        await self.app(scope, receive, audited_send)


def _refused(scope: Scope, status: int) -> bool:
    # The web view answers a request without a valid session with a redirect to sign in.
    return status in DENIED_STATUSES or (
        status == 303 and bool(scope.get("state", {}).get("login_required"))
    )


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
    web view's session, else the key the request presented, revoked ones included (401), else
    nobody."""
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
