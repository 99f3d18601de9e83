"""The county HTTP application: ingest for edges, JSON API and portal for people."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

import relay
from relay.county.audit.endpoints import router as audit_router
from relay.county.auth.endpoints import router as auth_router
from relay.county.auth.endpoints import users_router
from relay.county.context import County
from relay.county.dicomweb.endpoints import router as dicomweb_router
from relay.county.dicomweb.frames import router as frames_router
from relay.county.dicomweb.rendered import router as rendered_router
from relay.county.edges.endpoints import router as edges_router
from relay.county.auth.deps import AdminDep
from relay.county.errors import NotFound, install_error_handler
from relay.county.his.endpoints import router as his_router
from relay.county.reading.endpoints import router as reading_router
from relay.county.reports.critical_endpoints import router as critical_router
from relay.county.reports.delivery_endpoints import router as deliveries_router
from relay.county.reports.endpoints import reports_router
from relay.county.reports.endpoints import router as signing_keys_router
from relay.county.studies.endpoints import router as studies_router
from relay.county.dead_letters.endpoints import router as dead_letters_router
from relay.county.tat.endpoints import router as tat_router
from relay.county.ingest.bundle_endpoints import router as bundle_router
from relay.county.ingest.endpoints import router as ingest_router
from relay.county.ingest.quarantine import router as quarantine_router
from relay.county.metrics.endpoints import router as metrics_router
from relay.county.orders.edge_endpoints import router as edge_orders_router
from relay.county.orders.fhir_endpoints import router as fhir_orders_router
from relay.county.orders.reconcile_endpoints import router as reconcile_router
from relay.county.orders.reconcile_endpoints import study_order_router
from relay.county.worklist.endpoints import router as worklist_router

log = logging.getLogger(__name__)


def _check_backends(county: County) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        with county.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        county.store.check()
        checks["store"] = "ok"
    except Exception as exc:
        checks["store"] = f"error: {type(exc).__name__}"
    return checks


def _install_docs(app: FastAPI, county: County) -> None:
    """/openapi.json and its Swagger page for logged-in administrators (bearer token or
    portal session); with RELAY_API_DOCS=false they answer 404 like any unknown path."""

    def _docs_on() -> None:
        if not county.settings.api_docs:
            raise NotFound("the API documentation is switched off (RELAY_API_DOCS)")

    @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(_docs_on)])
    def openapi_document(_admin: AdminDep) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=[Depends(_docs_on)])
    def swagger_page(_admin: AdminDep) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} – API")


def create_app(county: County) -> FastAPI:
    """Build the app around an already configured County."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        county.close()

    # The built-in /docs, /redoc and /openapi.json are open to anyone: off, and served below
    # to administrators only (the document maps every route an attacker could try).
    app = FastAPI(title="County imaging relay", version=relay.__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.county = county
    install_error_handler(app)
    app.include_router(auth_router)
    app.include_router(users_router)
    app.include_router(ingest_router)
    app.include_router(bundle_router)
    app.include_router(quarantine_router)
    app.include_router(edges_router)
    app.include_router(edge_orders_router)
    app.include_router(dicomweb_router)
    app.include_router(rendered_router)
    app.include_router(frames_router)
    app.include_router(dead_letters_router)
    app.include_router(his_router)
    app.include_router(audit_router)
    app.include_router(tat_router)
    app.include_router(metrics_router)
    app.include_router(signing_keys_router)
    app.include_router(reports_router)
    app.include_router(deliveries_router)
    app.include_router(worklist_router)
    app.include_router(reading_router)
    app.include_router(critical_router)
    app.include_router(studies_router)
    app.include_router(fhir_orders_router)
    app.include_router(reconcile_router)
    app.include_router(study_order_router)

    _install_docs(app, county)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> JSONResponse:
        """Liveness and backend reachability; the only route without authentication."""
        checks = await run_in_threadpool(_check_backends, county)
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ok" if ok else "degraded", "checks": checks,
                             "version": relay.__version__}, status_code=200 if ok else 503)

    return app
