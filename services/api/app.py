"""create_app(): the FastAPI application, its routers, error handlers and health routes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

import services.models  # noqa: F401  (the whole mapper registry, before any session)
from services.alerts.router import router as alerts_router
from services.analysis.router import router as analysis_router
from services.api import docs, problems, ui
from services.api.idempotency import Idempotency
from services.api.metrics import DatabaseCollector, http_metrics
from services.api.middleware import BodySizeLimit, DenialAudit, RequestContext, UploadGate
from services.api.ratelimit import Limit, RateLimit
from services.audit.router import router as audit_router
from services.auth.router import router as keys_router
from services.config import get_settings
from services.db import get_engine, get_session_factory
from services.exports.router import router as exports_router
from services.jobs.broker import get_producer
from services.jobs.router import router as jobs_router
from services.logging import configure_logging
from services.patients.router import router as patients_router
from services.samples.router import router as samples_router
from services.sites.router import router as sites_router
from services.variants.router import router as variants_router


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    app = FastAPI(
        title="ctDNA monitoring service",
        version="0.1.0",
        description="Serial plasma VCFs in; MRD status, resistance clones and trends out.",
        # served from the package's own copies of Swagger UI and ReDoc (services/api/docs.py)
        docs_url=None,
        redoc_url=None,
    )
    problems.install(app)
    app.add_exception_handler(ui.LoginRequired, ui.login_redirect)  # type: ignore[arg-type]
    for router in (
        patients_router,
        samples_router,
        jobs_router,
        variants_router,
        alerts_router,
        analysis_router,
        audit_router,
        exports_router,
        keys_router,
        sites_router,
        ui.plots,
        ui.router,
        docs.router,
    ):
        app.include_router(router)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/patients", status_code=303)

    @app.get("/healthz", tags=["ops"], include_in_schema=True)
    def healthz() -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        checks: dict[str, Any] = {}
        try:
            with get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001  reported, not raised: this IS the probe
            checks["database"] = f"unavailable: {type(exc).__name__}"
        try:
            with get_producer().connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
        except Exception as exc:  # noqa: BLE001  reported, not raised: this IS the probe
            checks["broker"] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks},
            status_code=200 if ready else 503,
        )

    # The HTTP metrics of this API's processes, plus the background work as the database
    # records it.
    background = CollectorRegistry(auto_describe=False)
    background.register(
        DatabaseCollector(lambda: get_session_factory()(), max_age=settings.metrics_cache_seconds)
    )

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        return Response(
            http_metrics() + generate_latest(background), media_type=CONTENT_TYPE_LATEST
        )

    # The last added runs first: request id and metrics, body caps, rate limits, idempotency,
    # the audit of refusals (inside idempotency: a replayed answer was audited when first made),
    # the key and scope of an upload (before its body is read; its refusal audited).
    app.add_middleware(UploadGate)
    app.add_middleware(DenialAudit)
    app.add_middleware(Idempotency, ttl=timedelta(hours=settings.idempotency_ttl_hours))
    app.add_middleware(
        RateLimit,
        uploads=Limit(
            "uploads", settings.rate_limit_uploads_per_second, settings.rate_limit_uploads_burst
        ),
        reads=Limit("reads", settings.rate_limit_reads_per_second, settings.rate_limit_reads_burst),
        redis_url=settings.broker_url
        if (settings.broker_url or "").startswith(("redis://", "rediss://"))
        else None,
    )
    app.add_middleware(BodySizeLimit, upload_max=settings.max_upload_bytes)
    app.add_middleware(RequestContext)
    return app
