"""Idempotency-Key on POST requests under /v1 (uploads excepted: the same bytes for the same
patient already give the same sample and job back).

A retry with the same key and the same request, from the same API key, within the
`idempotency_ttl_hours` window, gets the stored status and body (with `Idempotent-Replayed:
true`) and the effect is not repeated; the same key with another method, path or body is a 422;
a retry while the first is still running is a 409 with Retry-After. Answers of 5xx are not
kept, so the retry of a failed request runs again.

An answer marked `Cache-Control: no-store` holds a secret (a new API key, a webhook signing
secret): its secret is never stored. What is kept is the answer without its `secret`, and a
replay gets a 409 problem naming that resource (the effect is not repeated; the secret was
shown once: rotate it if it was lost)."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import structlog
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.middleware import UPLOAD_PATH, send_problem
from services.auth.service import authenticate
from services.db import unit_of_work, utcnow
from services.idempotency import service
from services.idempotency.service import Begin

log = structlog.get_logger(__name__)

HEADER = b"idempotency-key"
MAX_KEY_LENGTH = 255
# The stored form of an answer whose secret was left out (see the module docstring).
REDACTED = "application/vnd.ctdna.redacted+json"
SECRET_FIELDS = frozenset({"secret"})
# Answers larger than this are not stored (none of the covered routes comes near it).
MAX_STORED_BODY = 1024 * 1024


class Idempotency:
    def __init__(self, app: ASGIApp, *, ttl: timedelta) -> None:
        self.app = app
        self.ttl = ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _covered(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        raw_key = headers.get(HEADER)
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if raw_key is None or scheme.lower() != b"bearer" or not token.strip():
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        key = _parse_key(raw_key)
        if key is None:
            await send_problem(
                send,
                400,
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
                path,
            )
            return
        body = await _read_body(receive)
        if body is None:  # the client went away before sending its body
            return
        fingerprint = hashlib.sha256(
            b"\0".join(
                [scope["method"].encode(), path.encode(), scope.get("query_string", b""), body]
            )
        ).hexdigest()
        try:
            key_id, begun = await run_in_threadpool(
                self._begin,
                token.strip().decode("latin-1"),
                key,
                scope["method"],
                path,
                fingerprint,
            )
        except IntegrityError:
            begun, key_id = Begin("in_flight"), None
        except SQLAlchemyError as exc:
            log.warning("idempotency.database_unavailable", error=str(exc)[:200])
            await send_problem(
                send,
                503,
                "the database is unavailable; retry shortly",
                path,
                headers=[(b"retry-after", b"5")],
            )
            return
        replayed = _replay_receive(body, receive)
        if begun is None:  # unknown or revoked key: the route answers 401 itself
            await self.app(scope, replayed, send)
            return
        if begun.outcome == "mismatch":
            await send_problem(
                send,
                422,
                "this Idempotency-Key was used with another request; use a new key",
                path,
            )
        elif begun.outcome == "in_flight":
            await send_problem(
                send,
                409,
                "a request with this Idempotency-Key is still in progress",
                path,
                headers=[(b"retry-after", b"1")],
            )
        elif begun.outcome == "replay" and begun.content_type == REDACTED:
            kept = json.loads(begun.body or b"{}")
            await send_problem(
                send,
                409,
                "this request was already carried out; the secret in its answer was shown "
                "once and is not kept: rotate it if it was lost",
                path,
                headers=[(b"idempotent-replayed", b"true")],
                original_status=kept["status"],
                resource=kept["resource"],
            )
        elif begun.outcome == "replay":
            await _send_stored(send, begun)
        else:
            assert key_id is not None
            await self._run(scope, replayed, send, key_id, key)

    async def _run(self, scope: Scope, receive: Receive, send: Send, key_id: str, key: str) -> None:
        """Run the request and record its answer BEFORE the client receives it: a retry sent
        the moment the answer arrives must find it stored, not still in flight."""
        held: list[Message] = []
        finished = False

        async def record_then_send(message: Message) -> None:
            nonlocal finished
            held.append(message)
            if message["type"] != "http.response.body" or message.get("more_body", False):
                return
            start = held[0]
            body = b"".join(m.get("body", b"") for m in held[1:])
            content_type = next(
                (
                    v.decode("latin-1")
                    for n, v in start.get("headers", ())
                    if n.lower() == b"content-type"
                ),
                None,
            )
            keep = start["status"] < 500 and len(body) <= MAX_STORED_BODY
            stored_type, stored = content_type, body
            if _no_store(start.get("headers", ())):
                stored_type, stored = REDACTED, _without_secrets(start["status"], body)
            await run_in_threadpool(
                self._finish, key_id, key, start["status"] if keep else None, stored_type, stored
            )
            finished = True
            for held_message in held:
                await send(held_message)

        try:
            await self.app(scope, receive, record_then_send)
        finally:
            if not finished:  # an error, or a client gone, before a whole answer
                await run_in_threadpool(self._finish, key_id, key, None, None, b"")

    def _begin(
        self, token: str, key: str, method: str, path: str, fingerprint: str
    ) -> tuple[str | None, Begin | None]:
        with unit_of_work() as session:
            principal = authenticate(session, token)
            if principal is None:
                return None, None
            return principal.key_id, service.begin(
                session,
                key_id=principal.key_id,
                idempotency_key=key,
                method=method,
                path=path,
                fingerprint=fingerprint,
                now=utcnow(),
                ttl=self.ttl,
            )

    def _finish(
        self, key_id: str, key: str, status: int | None, content_type: str | None, body: bytes
    ) -> None:
        """Store the answer, or forget the key (status None). A failure here leaves the key in
        flight; it is taken over once stale (service.IN_FLIGHT_STALE)."""
        try:
            with unit_of_work() as session:
                if status is None:
                    service.abandon(session, key_id=key_id, idempotency_key=key)
                else:
                    service.complete(
                        session,
                        key_id=key_id,
                        idempotency_key=key,
                        status_code=status,
                        content_type=content_type,
                        body=body,
                        now=utcnow(),
                    )
        except SQLAlchemyError as exc:
            log.warning("idempotency.record_failed", error=str(exc)[:200])


def _no_store(headers: object) -> bool:
    return any(
        name.lower() == b"cache-control" and b"no-store" in value.lower()
        for name, value in headers  # type: ignore[attr-defined]
    )


def _without_secrets(status: int, body: bytes) -> bytes:
    """The answer as stored for a replay: its status and its resource without the secret."""
    try:
        resource = json.loads(body)
    except ValueError:
        resource = None
    if isinstance(resource, dict):
        resource = {k: v for k, v in resource.items() if k not in SECRET_FIELDS}
    else:
        resource = None  # nothing of it is kept
    return json.dumps({"status": status, "resource": resource}).encode()


def _covered(scope: Scope) -> bool:
    path: str = scope["path"]
    return (
        scope["type"] == "http"
        and scope["method"] == "POST"
        and path.startswith("/v1/")
        and path.rstrip("/") != UPLOAD_PATH
    )


def _parse_key(raw: bytes) -> str | None:
    # A Structured Field string ("...") or, leniently, the bare token.
    text = raw.decode("latin-1").strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    if not 1 <= len(text) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in text):
        return None
    return text


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay_receive(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_stored(send: Send, stored: Begin) -> None:
    body = stored.body or b""
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"idempotent-replayed", b"true"),
    ]
    if stored.content_type:
        headers.append((b"content-type", stored.content_type.encode("latin-1")))
    await send({"type": "http.response.start", "status": stored.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
