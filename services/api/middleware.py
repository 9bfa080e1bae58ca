"""Pure ASGI middleware: request body caps and request ids / access metrics."""

from __future__ import annotations

import json
import time
import uuid
from http import HTTPStatus

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("ctdna_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "ctdna_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)

UPLOAD_PATH = "/v1/samples"


class BodyTooLarge(Exception):
    pass


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
        limit = self.upload_max if scope["path"].rstrip("/") == UPLOAD_PATH else self.other_max
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


class RequestContext:
    """A request id on every response and log line, and Prometheus request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode()[:64]
        request_id = incoming or uuid.uuid4().hex
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
