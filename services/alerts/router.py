"""HTTP edge for webhook endpoints and deliveries. Every route is audited: an endpoint decides
where patient-identifying events go, and its deliveries are a record of what went. An answer
holding a secret is marked no-store (never cached, never kept for an Idempotency-Key
replay)."""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter, Request, Response, status

from schemas.webhooks import (
    AttemptRead,
    DeliveryList,
    DeliveryRead,
    EndpointCreate,
    EndpointCreated,
    EndpointList,
    EndpointRead,
    EndpointUpdate,
    SecretRotated,
)
from services.alerts import service
from services.alerts.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookEvent
from services.api.deps import Admin, Page, SessionDep
from services.audit.service import audit

router = APIRouter(tags=["webhooks"])


def _read(endpoint: WebhookEndpoint) -> EndpointRead:
    return EndpointRead(
        id=endpoint.id,
        url=endpoint.url,
        events=sorted(endpoint.event_set),
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
    )


def _delivery(d: WebhookDelivery, e: WebhookEvent, attempts: list[WebhookAttempt]) -> DeliveryRead:
    return DeliveryRead(
        id=d.id,
        event_id=e.id,
        event_type=e.type,
        endpoint_id=d.endpoint_id,
        status=d.status,
        attempts=d.attempts,
        last_status_code=d.last_status_code,
        next_attempt_at=d.next_attempt_at,
        created_at=d.created_at,
        attempt_log=[
            AttemptRead(
                attempted_at=a.attempted_at,
                status_code=a.status_code,
                latency_ms=a.latency_ms,
                error=a.error,
                response_excerpt=a.response_excerpt,
            )
            for a in attempts
        ],
    )


NO_STORE = "no-store"


@router.post(
    "/v1/webhook-endpoints", status_code=status.HTTP_201_CREATED, response_model=EndpointCreated
)
def create_endpoint(
    body: EndpointCreate,
    principal: Admin,
    session: SessionDep,
    request: Request,
    response: Response,
) -> EndpointCreated:
    endpoint = service.create_endpoint(session, principal.site, body)
    audit(session, request, principal)
    response.headers["Cache-Control"] = NO_STORE
    return EndpointCreated(**_read(endpoint).model_dump(), secret=endpoint.secret)


@router.get("/v1/webhook-endpoints", response_model=EndpointList)
def list_endpoints(
    principal: Admin, session: SessionDep, page: Page, request: Request
) -> EndpointList:
    """The site's endpoints, oldest first, a page at a time (follow `next_cursor`)."""
    endpoints, next_cursor = service.list_endpoints(session, principal.site, page)
    audit(session, request, principal)
    return EndpointList(items=[_read(e) for e in endpoints], next_cursor=next_cursor)


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointRead)
def get_endpoint(
    endpoint_id: str, principal: Admin, session: SessionDep, request: Request
) -> EndpointRead:
    endpoint = service.get_endpoint_or_raise(session, principal.site, endpoint_id)
    audit(session, request, principal)
    return _read(endpoint)


@router.patch("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointRead)
def update_endpoint(
    endpoint_id: str,
    body: EndpointUpdate,
    principal: Admin,
    session: SessionDep,
    request: Request,
) -> EndpointRead:
    endpoint = service.update_endpoint(session, principal.site, endpoint_id, body)
    audit(session, request, principal)
    return _read(endpoint)


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204)
def delete_endpoint(
    endpoint_id: str, principal: Admin, session: SessionDep, request: Request
) -> Response:
    service.delete_endpoint(session, principal.site, endpoint_id)
    audit(session, request, principal)
    return Response(status_code=204)


@router.post("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=SecretRotated)
def rotate_secret(
    endpoint_id: str,
    principal: Admin,
    session: SessionDep,
    request: Request,
    response: Response,
) -> SecretRotated:
    endpoint, until = service.rotate_secret(session, principal.site, endpoint_id)
    audit(session, request, principal)
    response.headers["Cache-Control"] = NO_STORE
    return SecretRotated(id=endpoint.id, secret=endpoint.secret, previous_secret_valid_until=until)


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries", response_model=DeliveryList)
def endpoint_deliveries(
    endpoint_id: str, principal: Admin, session: SessionDep, page: Page, request: Request
) -> DeliveryList:
    """Every delivery to the endpoint with its attempts, newest first, a page at a time."""
    rows, next_cursor = service.deliveries_for_endpoint(session, principal.site, endpoint_id, page)
    audit(session, request, principal)
    return DeliveryList(items=[_delivery(*row) for row in rows], next_cursor=next_cursor)


@router.get("/v1/webhook-events/{event_id}/deliveries", response_model=DeliveryList)
def event_deliveries(
    event_id: str, principal: Admin, session: SessionDep, page: Page, request: Request
) -> DeliveryList:
    """Every delivery of the event with its attempts, newest first, a page at a time."""
    rows, next_cursor = service.deliveries_for_event(session, principal.site, event_id, page)
    audit(session, request, principal)
    return DeliveryList(items=[_delivery(*row) for row in rows], next_cursor=next_cursor)


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/redeliver", status_code=202, response_model=DeliveryRead
)
def redeliver(
    delivery_id: str, principal: Admin, session: SessionDep, request: Request
) -> DeliveryRead:
    delivery = service.redeliver(session, principal.site, delivery_id)
    event = session.get(WebhookEvent, delivery.event_id)
    assert event is not None
    # The event's payload names a patient and leaves for the endpoint again: a disclosure.
    payload = event.payload or {}
    # Payloads are validated by their pydantic model at emit(): these ids are strings or absent.
    audit(
        session,
        request,
        principal,
        patient_id=cast("str | None", payload.get("patient_id")),
        sample_id=cast("str | None", payload.get("sample_id")),
    )
    return _delivery(delivery, event, [])
