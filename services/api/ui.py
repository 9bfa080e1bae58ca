"""The oncologist's web view: server-rendered pages (tables work without JavaScript) and the
timeline image, authenticated by the same Bearer key or by a session cookie from /ui/login,
with the same site isolation as the API."""

from __future__ import annotations

import json
import math
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from services.analysis.router import EMPTY
from services.analysis.service import stored_body
from services.api import ui_auth
from services.api.deps import Reader, SessionDep
from services.audit.service import audit
from services.auth.service import Principal, authenticate
from services.db import get_session_factory
from services.patients import repository
from services.patients.service import get_patient_or_raise
from services.reports.plots import timeline

router = APIRouter(tags=["web view"], include_in_schema=False)
plots = APIRouter(prefix="/v1/patients", tags=["analyses"])
templates = Jinja2Templates(directory=str(FilePath(__file__).with_name("templates")))
PAGE = 50


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _ui_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    with get_session_factory()() as session:
        if scheme.lower() == "bearer" and token.strip():
            principal = authenticate(session, token.strip())
        else:
            principal = ui_auth.verify(session, request.cookies.get(ui_auth.COOKIE))
    if principal is None or not principal.has("read"):
        raise LoginRequired(request.url.path)
    return principal


UiReader = Annotated[Principal, Depends(_ui_principal)]


def _bodies(session: Session, patient_pk: int, patient_id: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("mrd", "trends", "clones", "resistance"):
        body = stored_body(session, patient_pk, kind)
        out[kind] = json.loads(body) if body else {"patient_id": patient_id, **EMPTY[kind]}
    return out


@router.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui/patients") -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"next": next, "error": None})


@router.post("/ui/login", response_model=None)
def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=512)] = "/ui/patients",
) -> Response:
    with get_session_factory()() as session:
        principal = authenticate(session, api_key.strip())
    if principal is None or not principal.has("read"):
        return templates.TemplateResponse(
            request,
            "login.html",
            {"next": next, "error": "Unknown, revoked or unscoped key."},
            status_code=401,
        )
    target = next if next.startswith("/ui/") else "/ui/patients"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        ui_auth.COOKIE,
        ui_auth.issue(principal.key_id),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=12 * 3600,
    )
    return response


@router.post("/ui/logout")
def logout() -> RedirectResponse:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(ui_auth.COOKIE)
    return response


@router.get("/ui/patients", response_class=HTMLResponse)
def patients_page(
    request: Request,
    principal: UiReader,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=128)] = None,
    sort: Annotated[str, Query(pattern="^(patient|last_draw|status)$")] = "patient",
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
) -> HTMLResponse:
    total, items = repository.overview(
        session, principal.site, query=q, sort=sort, offset=(page - 1) * PAGE, limit=PAGE
    )
    audit(session, request, principal)
    return templates.TemplateResponse(
        request,
        "patients.html",
        {
            "items": items,
            "total": total,
            "q": q,
            "sort": sort,
            "page": page,
            "pages": max(1, math.ceil(total / PAGE)),
        },
    )


@router.get("/ui/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> HTMLResponse:
    patient = get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    bodies = _bodies(session, patient.id, patient.patient_id)
    tf = {s["sample_id"]: s for s in bodies["trends"].get("samples", [])}
    return templates.TemplateResponse(
        request,
        "patient.html",
        {
            "patient_id": patient.patient_id,
            "samples": repository.samples(session, patient.id),
            "tf": tf,
            **bodies,
        },
    )


def _timeline(
    patient_id: str, principal: Principal, session: Session, request: Request, fmt: str
) -> Response:
    patient = get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    bodies = _bodies(session, patient.id, patient.patient_id)
    media = "image/png" if fmt == "png" else "image/svg+xml"
    return Response(
        timeline(bodies["trends"], bodies["mrd"], fmt=fmt),
        media_type=media,
        headers={"Cache-Control": "private, no-store"},
    )


@router.get("/ui/patients/{patient_id}/timeline.png")
def ui_timeline(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> Response:
    return _timeline(patient_id, principal, session, request, "png")


@plots.get(
    "/{patient_id}/plots/timeline.{fmt}",
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
)
def api_timeline(
    patient_id: str,
    fmt: Annotated[str, Path(pattern="^(png|svg)$")],
    request: Request,
    principal: Reader,
    session: SessionDep,
) -> Response:
    """The patient timeline as a static image (PNG or SVG) for reports."""
    return _timeline(patient_id, principal, session, request, fmt)


async def login_redirect(request: Request, exc: LoginRequired) -> Response:
    return RedirectResponse(f"/ui/login?next={quote(exc.next_url)}", status_code=303)
