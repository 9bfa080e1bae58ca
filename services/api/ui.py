"""The oncologist's web view: server-rendered pages (every table works without JavaScript),
interactive plots drawn by the plotly.js this app serves itself (no CDN: a clinic may be
offline), the static plot images, and the patient report (printable HTML and PDF).

Authenticated by the same Bearer key as the API or by a session cookie from /ui/login, with
the same site isolation (another site's patient is a 404) and the same audit row per read."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import plotly
from fastapi import APIRouter, Depends, Form, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.analysis import amendments
from services.analysis.models import PatientAnalysis
from services.analysis.router import EMPTY
from services.api import ui_auth
from services.api.assets import LONG_CACHE, TYPES, packaged
from services.api.deps import Reader, SessionDep, lookup_principal
from services.audit.service import audit
from services.auth.service import Principal, authenticate
from services.db import get_session_factory, unit_of_work
from services.errors import NotFound
from services.patients import repository
from services.patients.models import Patient
from services.patients.service import get_patient_or_raise, receptors_read
from services.reports import plots as static_plots
from services.reports.figures import clones_model, plotly_clones, plotly_timeline, timeline_model
from services.reports.labels import drug_class_label
from services.reports.report import report_context, report_pdf

router = APIRouter(tags=["web view"], include_in_schema=False)
plots = APIRouter(prefix="/v1/patients", tags=["analyses"])
templates = Jinja2Templates(directory=str(FilePath(__file__).with_name("templates")))
STATIC = FilePath(__file__).with_name("static")
PAGE = 50
PLOTLY_VERSION = plotly.__version__
CSS_VERSION = hashlib.sha256((STATIC / "ui.css").read_bytes()).hexdigest()[:12]
templates.env.globals["css_version"] = CSS_VERSION
# a therapy named by its class shows the class in words
templates.env.filters["drug_class"] = drug_class_label
templates.env.globals["logout_token"] = ui_auth.logout_token


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


def _ui_principal(request: Request) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        principal = lookup_principal(token.strip())  # the API's per-process key cache
    else:
        with get_session_factory()() as session:
            principal = ui_auth.verify(session, request.cookies.get(ui_auth.COOKIE))
    if principal is None or not principal.has("read"):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return principal


UiReader = Annotated[Principal, Depends(_ui_principal)]


def _bodies(session: Session, patient_pk: int, patient_id: str) -> dict[str, Any]:
    """The four stored analysis bodies of a patient in one query (an empty body where an
    analysis has not run yet)."""
    stored = dict(
        session.execute(
            select(PatientAnalysis.kind, PatientAnalysis.body).where(
                PatientAnalysis.patient_pk == patient_pk
            )
        ).all()
    )
    return {
        kind: json.loads(stored[kind])
        if stored.get(kind)
        else {"patient_id": patient_id, **EMPTY[kind]}
        for kind in ("mrd", "trends", "clones", "resistance")
    }


def _script_json(value: Any) -> str:
    """JSON safe inside a <script type="application/json"> element: no `<`, `>` or `&` left
    to end the element or open a comment, whatever a patient or sample id contains."""
    text = json.dumps(value, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _patient(
    session: Session, request: Request, principal: Principal, patient_id: str
) -> tuple[Patient, dict[str, Any]]:
    """The site's patient (404 otherwise), its read audited, and its analysis bodies."""
    patient = get_patient_or_raise(session, principal.site, patient_id)
    audit(session, request, principal, patient_id=patient.patient_id)
    return patient, _bodies(session, patient.id, patient.patient_id)


# --- static assets --------------------------------------------------------------------------


@router.get("/ui/static/plotly.min.js")
def plotly_js(request: Request) -> Response:
    """plotly.js from the installed `plotly` package: the page needs no CDN."""
    return packaged("plotly", "package_data/plotly.min.js", request)


@router.get("/ui/static/{name}")
def static_file(name: Annotated[str, Path(pattern=r"^[a-z0-9_-]+\.(css|js)$")]) -> Response:
    path = STATIC / name
    if not path.is_file():
        return Response(status_code=404)
    return Response(
        path.read_bytes(),
        media_type=TYPES[path.suffix],
        headers={"Cache-Control": LONG_CACHE},
    )


# --- sign in --------------------------------------------------------------------------------


def _safe_next(target: str) -> str:
    # only a path of this web view: never an absolute or protocol-relative URL
    return target if target.startswith("/ui/") and not target.startswith("//") else "/ui/patients"


@router.get("/ui", include_in_schema=False)
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/patients", status_code=303)


def _login_page(
    request: Request, next_url: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The sign-in form, with a fresh CSRF nonce cookie and the token bound to it."""
    nonce = ui_auth.new_login_nonce()
    response = templates.TemplateResponse(
        request,
        "login.html",
        {"next": _safe_next(next_url), "error": error, "csrf_token": ui_auth.login_token(nonce)},
        status_code=status_code,
    )
    response.set_cookie(
        ui_auth.CSRF_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=ui_auth.secure_cookie(request),
        path="/ui",
    )
    return response


@router.get("/ui/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/ui/patients") -> HTMLResponse:
    return _login_page(request, next)


@router.post("/ui/login", response_model=None)
def login(
    request: Request,
    api_key: Annotated[str, Form(max_length=256)],
    next: Annotated[str, Form(max_length=512)] = "/ui/patients",
    csrf_token: Annotated[str | None, Form(max_length=128)] = None,
) -> Response:
    if not (ui_auth.same_origin(request) and ui_auth.valid_login(request, csrf_token)):
        return _login_page(
            request,
            next,
            "This sign-in form expired or was sent from another page; sign in again.",
            status_code=403,
        )
    with unit_of_work() as session:
        principal = authenticate(session, api_key.strip())
        if principal is None or not principal.has("read"):
            return _login_page(
                request,
                next,
                "Unknown, revoked or unscoped key: use a key of your site with the read scope "
                "(`make run` prints one for the demo; an admin makes one with "
                "`ctdna keys create --site SITE --scopes read`).",
                401,
            )
        cookie = ui_auth.issue(session, principal.key_id)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        ui_auth.COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=ui_auth.secure_cookie(request),
        max_age=int(ui_auth.lifetime().total_seconds()),
    )
    response.delete_cookie(ui_auth.CSRF_COOKIE, path="/ui")
    return response


@router.post("/ui/logout", response_model=None)
def logout(
    request: Request, csrf_token: Annotated[str | None, Form(max_length=128)] = None
) -> Response:
    """End the session (the same cookie no longer reads, wherever it was copied to)."""
    cookie = request.cookies.get(ui_auth.COOKIE)
    if ui_auth.signed_session(cookie) is not None:
        if not (ui_auth.same_origin(request) and ui_auth.valid_logout(request, csrf_token)):
            return Response(
                "sign-out refused: the form expired or was sent from another page",
                status_code=403,
                media_type="text/plain; charset=utf-8",
            )
        with unit_of_work() as session:
            ui_auth.end(session, cookie)
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(ui_auth.COOKIE)
    return response


# --- pages ----------------------------------------------------------------------------------


@router.get("/ui/patients", response_class=HTMLResponse)
def patients_page(
    request: Request,
    principal: UiReader,
    session: SessionDep,
    q: Annotated[str | None, Query(max_length=128)] = None,
    sort: Annotated[str, Query(pattern=f"^({'|'.join(repository.OVERVIEW_SORTS)})$")] = "attention",
    status: Annotated[
        str | None, Query(pattern=f"^({'|'.join(repository.OVERVIEW_STATUSES)})?$")
    ] = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
) -> HTMLResponse:
    total, items = repository.overview(
        session,
        principal.site,
        query=q or None,
        sort=sort,
        status=status or None,
        offset=(page - 1) * PAGE,
        limit=PAGE,
    )
    audit(session, request, principal)
    state = {"q": q or "", "sort": sort, "status": status or ""}

    def link(**changes: Any) -> str:
        params = {k: v for k, v in {**state, "page": 1, **changes}.items() if v not in ("", None)}
        if params.get("page") == 1:
            params.pop("page")
        return "/ui/patients" + (f"?{urlencode(params)}" if params else "")

    return templates.TemplateResponse(
        request,
        "patients.html",
        {
            "items": items,
            "total": total,
            "page": page,
            "pages": max(1, math.ceil(total / PAGE)),
            "first": (page - 1) * PAGE + 1,
            "site": principal.site,
            "link": link,
            **state,
        },
    )


def _not_found(request: Request, principal: Principal, patient_id: str) -> HTMLResponse:
    # the same answer for a patient of another site as for one that does not exist
    return templates.TemplateResponse(
        request,
        "not_found.html",
        {"patient_id": patient_id, "site": principal.site},
        status_code=404,
    )


def _page_context(
    session: Session, request: Request, principal: Principal, patient_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report context (tables, versions) and the analysis bodies of one patient's page;
    NotFound for another site's patient."""
    patient, bodies = _patient(session, request, principal, patient_id)
    return _report_context(session, principal, patient, bodies), bodies


def _report_context(
    session: Session, principal: Principal, patient: Patient, bodies: dict[str, Any]
) -> dict[str, Any]:
    return report_context(
        bodies,
        patient_id=patient.patient_id,
        site=principal.site,
        samples=repository.samples(session, patient.id),
        generated_at=dt.datetime.now(dt.UTC),
        amendments=amendments.history_of(session, patient.id),
        receptors=receptors_read(session, patient).model_dump(mode="json"),
    )


@router.get("/ui/patients/{patient_id}", response_class=HTMLResponse)
def patient_page(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> HTMLResponse:
    try:
        context, bodies = _page_context(session, request, principal, patient_id)
    except NotFound:
        return _not_found(request, principal, patient_id)
    timeline = plotly_timeline(
        timeline_model(bodies["trends"], bodies["mrd"], bodies["resistance"])
    )
    clones = plotly_clones(clones_model(bodies["clones"]))
    return templates.TemplateResponse(
        request,
        "patient.html",
        {
            **context,
            "timeline_json": _script_json(timeline),
            "clones_json": _script_json(clones),
            "plotly_version": PLOTLY_VERSION,
        },
    )


@router.get("/ui/patients/{patient_id}/report", response_class=HTMLResponse)
def report_page(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> HTMLResponse:
    """The printable report: the static plots and every table, styled for A4 paper."""
    try:
        context, _ = _page_context(session, request, principal, patient_id)
    except NotFound:
        return _not_found(request, principal, patient_id)
    return templates.TemplateResponse(request, "report.html", context)


def _pdf(patient_id: str, principal: Principal, session: Session, request: Request) -> Response:
    patient, bodies = _patient(session, request, principal, patient_id)
    context = _report_context(session, principal, patient, bodies)
    name = quote(f"ctdna-report-{patient.patient_id}.pdf")
    return Response(
        report_pdf(bodies, context),
        media_type="application/pdf",
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": f"inline; filename*=UTF-8''{name}",
        },
    )


@router.get("/ui/patients/{patient_id}/report.pdf")
def ui_report_pdf(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> Response:
    return _pdf(patient_id, principal, session, request)


@plots.get(
    "/{patient_id}/report.pdf",
    responses={200: {"content": {"application/pdf": {}}}},
    summary="Patient report (PDF)",
)
def api_report_pdf(
    patient_id: str, request: Request, principal: Reader, session: SessionDep
) -> Response:
    """The patient report as a PDF: timeline and clone plots, MRD calls with their LoD95,
    resistance events with implications and citations, method versions and parameters, the
    site and the time it was generated."""
    return _pdf(patient_id, principal, session, request)


def _plot(
    patient_id: str,
    plot: str,
    fmt: str,
    principal: Principal,
    session: Session,
    request: Request,
) -> Response:
    _, bodies = _patient(session, request, principal, patient_id)
    if plot == "clones":
        image = static_plots.clones(bodies["clones"], fmt=fmt)
    else:
        image = static_plots.timeline(
            bodies["trends"], bodies["mrd"], bodies["resistance"], fmt=fmt
        )
    return Response(
        image,
        media_type="image/png" if fmt == "png" else "image/svg+xml",
        headers={"Cache-Control": "private, no-store"},
    )


@router.get("/ui/patients/{patient_id}/timeline.png")
def ui_timeline(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> Response:
    return _plot(patient_id, "timeline", "png", principal, session, request)


@router.get("/ui/patients/{patient_id}/clones.png")
def ui_clones(
    patient_id: str, request: Request, principal: UiReader, session: SessionDep
) -> Response:
    return _plot(patient_id, "clones", "png", principal, session, request)


@plots.get(
    "/{patient_id}/plots/{plot}.{fmt}",
    responses={200: {"content": {"image/png": {}, "image/svg+xml": {}}}},
    summary="Patient plot as an image",
)
def api_plot(
    patient_id: str,
    plot: Annotated[str, Path(pattern="^(timeline|clones)$")],
    fmt: Annotated[str, Path(pattern="^(png|svg)$")],
    request: Request,
    principal: Reader,
    session: SessionDep,
) -> Response:
    """A static image (PNG or SVG) for reports: `timeline` (VAF per variant, tumour fraction
    with its 95% band, LoD95 of negative draws, MRD calls, therapy spans, clinical events) or
    `clones` (clone prevalence over time, stacked)."""
    return _plot(patient_id, plot, fmt, principal, session, request)


async def login_redirect(request: Request, exc: LoginRequired) -> Response:
    # a refusal, audited as one (middleware.DenialAudit) like the API's 401
    request.state.login_required = True
    return RedirectResponse(f"/ui/login?next={quote(exc.next_url)}", status_code=303)
