"""The API documentation, Swagger UI at /docs and ReDoc at /redoc, drawn by the copies of
their JavaScript that the `fastapi-offline` package ships (MIT; Swagger UI Apache-2.0, ReDoc
MIT): FastAPI's own pages load them from a CDN and are blank without internet."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

from fastapi import APIRouter, Path, Request, Response
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse

from services.api.assets import packaged

router = APIRouter(include_in_schema=False)
PACKAGE = "fastapi_offline"
VERSION = version("fastapi-offline")
TITLE = "ctDNA monitoring service"
# ReDoc's sidebar shows the Redocly logo from their CDN: an empty image of our own instead.
OFFLINE = {
    "redoc.standalone.js": (
        (
            b"https://cdn.redoc.ly/redoc/logo-mini.svg",
            b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E",
        ),
    ),
}
ASSETS = r"^(swagger-ui-bundle\.js|swagger-ui\.css|redoc\.standalone\.js|favicon\.png)$"


def _asset(name: str) -> str:
    return f"/docs/static/{name}?v={VERSION}"


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE}: API",
        swagger_js_url=_asset("swagger-ui-bundle.js"),
        swagger_css_url=_asset("swagger-ui.css"),
        swagger_favicon_url=_asset("favicon.png"),
        oauth2_redirect_url="/docs/oauth2-redirect",
        # no badge fetched from the public validator service
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
    )


@router.get("/docs/oauth2-redirect", response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", response_class=HTMLResponse)
def redoc() -> HTMLResponse:
    return get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE}: API",
        redoc_js_url=_asset("redoc.standalone.js"),
        redoc_favicon_url=_asset("favicon.png"),
        with_google_fonts=False,
    )


@router.get("/docs/static/{name}")
def docs_asset(name: Annotated[str, Path(pattern=ASSETS)], request: Request) -> Response:
    return packaged(PACKAGE, f"static/{name}", request, OFFLINE.get(name, ()))
