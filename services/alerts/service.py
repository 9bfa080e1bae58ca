"""Webhook endpoints, events and their delivery (Standard Webhooks).

An event row and one delivery row per subscribed endpoint are written in the transaction of
the change that caused them; the `webhooks.deliver` message is published after commit. Each
attempt is recorded. Retries follow a fixed schedule with jitter over about three days; a 410
disables the endpoint; an endpoint failing for longer than `disable_after` is disabled with
the reason. The `webhook-id` is the event id, stable across retries, so a receiver can drop
duplicates.

An attempt is bounded whatever the receiver does: it ends by `webhook_deadline_seconds` from
connect to last byte (a receiver dripping one byte every few seconds never trips a read
timeout, so a watchdog shuts the socket), reads at most RESPONSE_READ_CAP bytes of the answer,
and holds its delivery under a lease longer than that deadline, so no second attempt of the
same delivery can start while one is in flight. Deliveries run on a queue (and worker) of their
own, so ingests never wait behind slow receivers."""

from __future__ import annotations

import base64
import contextlib
import json
import random
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from schemas.webhooks import PAYLOADS, EndpointCreate, EndpointUpdate
from services import outbox
from services.alerts.guard import UnsafeWebhookUrl, check_url
from services.alerts.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from services.config import get_settings
from services.db import unit_of_work, utcnow
from services.errors import NotFound
from services.pagination import Keyset, PageRequest

log = structlog.get_logger(__name__)

DELIVER_TASK = "webhooks.deliver"
# Standard Webhooks' suggested schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
# (about 28 h), extended to cover roughly three days of receiver downtime.
RETRY_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 36000, 36000, 36000, 36000)
DISABLE_AFTER = timedelta(days=5)
SECRET_GRACE = timedelta(hours=24)
# Per network operation, within the attempt's overall deadline.
READ_TIMEOUT, CONNECT_TIMEOUT = 10.0, 5.0
# Of the receiver's answer only the status matters; a short excerpt is kept for the attempt log.
RESPONSE_READ_CAP = 64 * 1024
EXCERPT_CHARS = 500


def _lease() -> timedelta:
    """How long a claimed delivery is held: well past the attempt's deadline, so that the lease
    never runs out while the attempt is still in flight."""
    return timedelta(seconds=max(60.0, 3 * get_settings().webhook_deadline_seconds))


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def _events_csv(events: Sequence[str]) -> str:
    return ",".join(sorted(set(events)))


def create_endpoint(session: Session, site: str, body: EndpointCreate) -> WebhookEndpoint:
    check_url(str(body.url), get_settings().allowed_webhook_hosts)
    endpoint = WebhookEndpoint(
        id="ep_" + secrets.token_hex(12),
        site=site,
        url=str(body.url),
        events=_events_csv(body.events),
        description=body.description,
        secret=new_secret(),
        enabled=True,
        created_at=utcnow(),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint_or_raise(session: Session, site: str, endpoint_id: str) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or endpoint.site != site or endpoint.deleted_at is not None:
        raise NotFound(f"webhook endpoint {endpoint_id!r} not found")
    return endpoint


ENDPOINTS = Keyset("webhook-endpoints", (WebhookEndpoint.created_at, WebhookEndpoint.id))
# Newest first, on ix_webhook_deliveries_endpoint (endpoint_id, created_at) or the event_id index.
DELIVERIES = Keyset(
    "webhook-deliveries", (WebhookDelivery.created_at, WebhookDelivery.id), descending=True
)


def list_endpoints(
    session: Session, site: str, page: PageRequest
) -> tuple[list[WebhookEndpoint], str | None]:
    """One page of the site's endpoints, oldest first, and the next page's cursor."""
    stmt = select(WebhookEndpoint).where(
        WebhookEndpoint.site == site, WebhookEndpoint.deleted_at.is_(None)
    )
    return ENDPOINTS.paginate(session.scalars(ENDPOINTS.select_page(stmt, page)).all(), page)


def update_endpoint(
    session: Session, site: str, endpoint_id: str, body: EndpointUpdate
) -> WebhookEndpoint:
    endpoint = get_endpoint_or_raise(session, site, endpoint_id)
    if body.url is not None:
        check_url(str(body.url), get_settings().allowed_webhook_hosts)
        endpoint.url = str(body.url)
    if body.events is not None:
        endpoint.events = _events_csv(body.events)
    if body.description is not None:
        endpoint.description = body.description
    if body.enabled is not None:
        endpoint.enabled = body.enabled
        if body.enabled:
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        else:
            endpoint.disabled_reason = "disabled by the site"
    return endpoint


def delete_endpoint(session: Session, site: str, endpoint_id: str) -> None:
    endpoint = get_endpoint_or_raise(session, site, endpoint_id)
    endpoint.deleted_at = utcnow()
    endpoint.enabled = False
    _cancel_pending(session, endpoint.id)


def rotate_secret(
    session: Session, site: str, endpoint_id: str
) -> tuple[WebhookEndpoint, datetime]:
    endpoint = get_endpoint_or_raise(session, site, endpoint_id)
    until = utcnow() + SECRET_GRACE
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = until
    endpoint.secret = new_secret()
    return endpoint, until


def emit(session: Session, site: str, event_type: str, data: dict[str, Any]) -> WebhookEvent:
    """Record an event (validated against its versioned payload model) and a delivery for
    every enabled endpoint of the site subscribed to it."""
    payload = PAYLOADS[event_type].model_validate(data).model_dump(mode="json")
    now = utcnow()
    event = WebhookEvent(
        id="msg_" + secrets.token_hex(12),
        site=site,
        type=event_type,
        payload=payload,
        created_at=now,
    )
    session.add(event)
    endpoints = session.scalars(
        select(WebhookEndpoint).where(
            WebhookEndpoint.site == site,
            WebhookEndpoint.enabled.is_(True),
            WebhookEndpoint.deleted_at.is_(None),
        )
    ).all()
    session.flush()
    for endpoint in endpoints:
        if event_type in endpoint.event_set:
            _new_delivery(session, event.id, endpoint.id, now)
    return event


def _new_delivery(session: Session, event_id: str, endpoint_id: str, now: datetime) -> str:
    delivery = WebhookDelivery(
        id="dlv_" + secrets.token_hex(12),
        event_id=event_id,
        endpoint_id=endpoint_id,
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    outbox.after_commit(session, DELIVER_TASK, delivery.id, WebhookDelivery)
    return delivery.id


def redeliver(session: Session, site: str, delivery_id: str) -> WebhookDelivery:
    """A fresh delivery of the same event (same webhook-id) to the same endpoint."""
    old = session.get(WebhookDelivery, delivery_id)
    if old is None:
        raise NotFound(f"delivery {delivery_id!r} not found")
    endpoint = get_endpoint_or_raise(session, site, old.endpoint_id)
    new_id = _new_delivery(session, old.event_id, endpoint.id, utcnow())
    delivery = session.get(WebhookDelivery, new_id)
    assert delivery is not None
    return delivery


Deliveries = list[tuple[WebhookDelivery, WebhookEvent, list[WebhookAttempt]]]


def deliveries_for_endpoint(
    session: Session, site: str, endpoint_id: str, page: PageRequest
) -> tuple[Deliveries, str | None]:
    get_endpoint_or_raise(session, site, endpoint_id)
    return _deliveries(session, WebhookDelivery.endpoint_id == endpoint_id, page)


def deliveries_for_event(
    session: Session, site: str, event_id: str, page: PageRequest
) -> tuple[Deliveries, str | None]:
    event = session.get(WebhookEvent, event_id)
    if event is None or event.site != site:
        raise NotFound(f"event {event_id!r} not found")
    return _deliveries(session, WebhookDelivery.event_id == event_id, page)


def _deliveries(session: Session, where: Any, page: PageRequest) -> tuple[Deliveries, str | None]:
    """One page of deliveries, newest first, each with its attempts (one query for those)."""
    stmt = select(WebhookDelivery, WebhookEvent).join(
        WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id
    )
    rows, next_cursor = DELIVERIES.paginate(
        session.execute(DELIVERIES.select_page(stmt.where(where), page)).all(),
        page,
        key=lambda row: [row[0].created_at, row[0].id],
    )
    ids = [d.id for d, _ in rows]
    attempts: dict[str, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        for attempt in session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(ids))
            .order_by(WebhookAttempt.attempted_at)
        ):
            attempts[attempt.delivery_id].append(attempt)
    return [(d, e, attempts[d.id]) for d, e in rows], next_cursor


def _cancel_pending(session: Session, endpoint_id: str) -> None:
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending")
        .values(status="cancelled", next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )


# --- delivery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Outgoing:
    delivery_id: str
    event_id: str
    event_type: str
    body: str
    url: str
    secret: str
    created_at: datetime
    previous_secret: str | None = None


def deliver(delivery_id: str) -> str:
    """One attempt of one delivery. Returns the delivery's status afterwards, or 'skipped'
    when it is not due or another worker holds it."""
    outgoing = _claim(delivery_id)
    if outgoing is None:
        return "skipped"
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None
    start = time.perf_counter()
    deadline = _Deadline(get_settings().webhook_deadline_seconds)
    try:
        status_code, excerpt = _send(outgoing, deadline)
    except UnsafeWebhookUrl as exc:
        error = exc.detail
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:500]
        if deadline.expired:
            error = f"no complete answer within the {deadline.seconds:g}-second deadline"
    finally:
        deadline.cancel()
    latency_ms = (time.perf_counter() - start) * 1000
    return _record(outgoing, status_code, excerpt, error, latency_ms)


class _Deadline:
    """The overall deadline of one attempt. httpx's timeouts are per network operation, so a
    receiver sending one byte every few seconds would hold an attempt open for ever; this
    shuts the connection's socket down when the deadline passes, whatever the attempt is
    doing (TLS handshake, waiting for headers, reading the body). Armed through httpcore's
    `trace` extension as soon as the TCP connection exists."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self._timer: threading.Timer | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.expired = False

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if event != "connection.connect_tcp.complete":
            return
        sock = info["return_value"].get_extra_info("socket")
        with self._lock:
            self._sock = sock
            self._timer = threading.Timer(self.remaining(), self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._sock = None


def _claim(delivery_id: str) -> _Outgoing | None:
    now = utcnow()
    with unit_of_work() as session:
        claimed = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                or_(
                    WebhookDelivery.next_attempt_at.is_(None),
                    WebhookDelivery.next_attempt_at <= now + timedelta(seconds=1),
                ),
                or_(
                    WebhookDelivery.lease_expires_at.is_(None),
                    WebhookDelivery.lease_expires_at < now,
                ),
            )
            .values(lease_expires_at=now + _lease())
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        if claimed != 1:
            return None
        delivery = session.get(WebhookDelivery, delivery_id)
        assert delivery is not None
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        event = session.get(WebhookEvent, delivery.event_id)
        assert endpoint is not None and event is not None
        if not endpoint.enabled or endpoint.deleted_at is not None:
            delivery.status = "cancelled"
            delivery.next_attempt_at = None
            return None
        body = json.dumps(
            {"type": event.type, "timestamp": event.created_at.isoformat(), "data": event.payload},
            separators=(",", ":"),
        )
        previous = endpoint.previous_secret
        expires = endpoint.previous_secret_expires_at
        return _Outgoing(
            delivery.id,
            event.id,
            event.type,
            body,
            endpoint.url,
            endpoint.secret,
            event.created_at,
            previous_secret=previous if previous and expires and expires > utcnow() else None,
        )


def _send(outgoing: _Outgoing, deadline: _Deadline) -> tuple[int, str]:
    target = check_url(outgoing.url, get_settings().allowed_webhook_hosts)
    now = utcnow()
    # During a rotation's grace period both secrets sign (space-separated signatures, as the
    # Standard Webhooks spec allows), so a receiver still on the old secret verifies too.
    secrets_in_use = [
        outgoing.secret,
        *([outgoing.previous_secret] if outgoing.previous_secret else []),
    ]
    signature = " ".join(
        Webhook(s).sign(outgoing.event_id, now, outgoing.body) for s in secrets_in_use
    )
    headers = {
        "content-type": "application/json",
        "user-agent": "ctdna-webhooks/1",
        "webhook-id": outgoing.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    # Connect to the address that was just checked (no second DNS answer), keeping the
    # original host for the Host header and TLS SNI.
    url = httpx.URL(outgoing.url)
    pinned = url.copy_with(host=target.address)
    headers["host"] = url.netloc.decode()
    extensions: dict[str, Any] = {"trace": deadline.trace}
    if target.scheme == "https":
        extensions["sni_hostname"] = target.host
    remaining = deadline.remaining()
    timeout = httpx.Timeout(min(READ_TIMEOUT, remaining), connect=min(CONNECT_TIMEOUT, remaining))
    with (
        httpx.Client(timeout=timeout, follow_redirects=False) as client,
        client.stream(
            "POST",
            pinned,
            content=outgoing.body.encode(),
            headers=headers,
            extensions=extensions,
        ) as response,
    ):
        # The status is the answer; of the body only the first bytes are read (a receiver
        # answering 400 MB must not fill the worker's memory), and a body cut short by the
        # deadline does not undo a status already received.
        received = bytearray()
        with contextlib.suppress(httpx.HTTPError):
            for chunk in response.iter_raw():
                received += chunk[: RESPONSE_READ_CAP - len(received)]
                if len(received) >= RESPONSE_READ_CAP:
                    break
        text = received.decode(response.encoding or "utf-8", errors="replace")
        # PostgreSQL text cannot hold NUL, and a receiver may answer anything
        return response.status_code, text[:EXCERPT_CHARS].replace(
            "\x00", "\N{REPLACEMENT CHARACTER}"
        )


def _record(
    outgoing: _Outgoing,
    status_code: int | None,
    excerpt: str | None,
    error: str | None,
    latency_ms: float,
) -> str:
    now = utcnow()
    retry_in: float | None = None
    with unit_of_work() as session:
        delivery = session.get(WebhookDelivery, outgoing.delivery_id, with_for_update=True)
        assert delivery is not None
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        assert endpoint is not None
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                attempted_at=now,
                status_code=status_code,
                latency_ms=latency_ms,
                response_excerpt=excerpt,
                error=error,
            )
        )
        delivery.attempts += 1
        delivery.last_status_code = status_code
        delivery.lease_expires_at = None
        if status_code is not None and 200 <= status_code < 300:
            delivery.status = "succeeded"
            delivery.next_attempt_at = None
            endpoint.failing_since = None
        elif status_code == 410:
            delivery.status = "failed"
            delivery.next_attempt_at = None
            endpoint.enabled = False
            endpoint.disabled_reason = "the receiver answered 410 Gone"
            _cancel_pending(session, endpoint.id)
        else:
            endpoint.failing_since = endpoint.failing_since or now
            if now - endpoint.failing_since > DISABLE_AFTER:
                endpoint.enabled = False
                endpoint.disabled_reason = (
                    f"failing since {endpoint.failing_since.isoformat()} "
                    f"(last: {status_code or error})"
                )
                delivery.status = "failed"
                delivery.next_attempt_at = None
                _cancel_pending(session, endpoint.id)
            elif delivery.attempts > len(RETRY_SCHEDULE):
                delivery.status = "failed"
                delivery.next_attempt_at = None
            else:
                base = RETRY_SCHEDULE[delivery.attempts - 1] * get_settings().webhook_retry_scale
                retry_in = base * random.uniform(0.8, 1.2)
                delivery.next_attempt_at = now + timedelta(seconds=retry_in)
        status = delivery.status
    log.info(
        "webhook.attempt",
        delivery_id=outgoing.delivery_id,
        status_code=status_code,
        error=error,
        outcome=status,
    )
    if retry_in is not None and retry_in < 3600:
        # Short waits ride on the broker; long ones are picked up by the sweep when due, so a
        # broker restart cannot lose them.
        outbox.publish([(DELIVER_TASK, outgoing.delivery_id, WebhookDelivery)], countdown=retry_in)
    return status


def sweep_due(limit: int = 500) -> int:
    """Re-send deliveries that are due and whose message is not (or no longer) in flight."""
    now = utcnow()
    grace = timedelta(seconds=get_settings().job_resend_after_seconds)
    with unit_of_work() as session:
        due = session.scalars(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.sent_at.is_(None), WebhookDelivery.sent_at < now - grace),
                or_(
                    WebhookDelivery.lease_expires_at.is_(None),
                    WebhookDelivery.lease_expires_at < now,
                ),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(limit)
        ).all()
    if due:
        outbox.publish((DELIVER_TASK, d, WebhookDelivery) for d in due)
    return len(due)


# --- metrics ----------------------------------------------------------------------------------


def delivery_counts(session: Session) -> dict[str, int]:
    """Deliveries per status (pending, succeeded, failed = gave up, cancelled)."""
    rows = session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    )
    return {status: int(n) for status, n in rows}


def attempt_outcomes(session: Session, *, since: datetime) -> dict[str, tuple[int, int]]:
    """Attempts per outcome (success, gone, http_error, network_error): (all, since `since`)."""
    code = WebhookAttempt.status_code
    outcome = case(
        (code.is_(None), "network_error"),
        ((code >= 200) & (code < 300), "success"),
        (code == 410, "gone"),
        else_="http_error",
    ).label("outcome")
    recent = func.coalesce(func.sum(case((WebhookAttempt.attempted_at >= since, 1), else_=0)), 0)
    rows = session.execute(select(outcome, func.count(), recent).group_by(outcome))
    return {name: (int(n), int(r)) for name, n, r in rows}
