"""HTTP edge for API keys: a site's admins create, list, revoke and rotate the keys of their
own site (another site's key id is a 404)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from schemas.keys import KeyCreate, KeyCreated, KeyList, KeyRead
from services.api.deps import Admin, Page, SessionDep
from services.audit.service import audit
from services.auth import service
from services.auth.models import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])


def _read(key: ApiKey) -> KeyRead:
    return KeyRead(
        id=key.id,
        site=key.site,
        scopes=sorted(key.scope_set),
        prefix=key.prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        rotated_from=key.rotated_from,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(
    body: KeyCreate, principal: Admin, session: SessionDep, request: Request, response: Response
) -> KeyCreated:
    """A key for the caller's own site; the secret is in this answer only (not kept for an
    Idempotency-Key replay either)."""
    key, secret = service.create_key(session, site=principal.site, scopes=frozenset(body.scopes))
    audit(session, request, principal)
    response.headers["Cache-Control"] = "no-store"
    return KeyCreated(**_read(key).model_dump(), secret=secret)


@router.get("", response_model=KeyList)
def list_keys(principal: Admin, session: SessionDep, page: Page) -> KeyList:
    """The site's keys, oldest first, a page at a time (follow `next_cursor`)."""
    keys, next_cursor = service.list_keys_page(session, principal.site, page)
    return KeyList(items=[_read(k) for k in keys], next_cursor=next_cursor)


@router.post("/{key_id}/revoke", response_model=KeyRead)
def revoke_key(key_id: str, principal: Admin, session: SessionDep, request: Request) -> KeyRead:
    """Revoke at once (revoking a revoked key changes nothing)."""
    key = service.get_key_or_raise(session, key_id, site=principal.site)
    service.revoke_key(session, key.id)
    audit(session, request, principal)
    return _read(key)


@router.post("/{key_id}/rotate", response_model=KeyCreated)
def rotate_key(
    key_id: str, principal: Admin, session: SessionDep, request: Request, response: Response
) -> KeyCreated:
    """A new secret with the same scopes; the old key stops working when this answers."""
    key, secret = service.rotate_key(session, key_id, site=principal.site)
    audit(session, request, principal)
    response.headers["Cache-Control"] = "no-store"
    return KeyCreated(**_read(key).model_dump(), secret=secret)
