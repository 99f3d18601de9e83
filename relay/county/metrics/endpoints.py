"""GET /metrics in the Prometheus text format, for a scraper holding RELAY_METRICS_TOKEN."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from relay.county.auth.deps import CountyDep
from relay.county.context import County
from relay.county.errors import NotFound, Unauthorized
from relay.county.metrics.collector import CountyCollector

router = APIRouter(tags=["operations"])


def check_scraper(county: County, request: Request) -> None:
    """404 while no metrics token is configured (the route does not exist for anyone); 401
    unless the caller sends it as a bearer token (compared in constant time)."""
    expected = county.settings.metrics_token
    if not expected:
        raise NotFound("metrics are off: set RELAY_METRICS_TOKEN to let Prometheus scrape them")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise Unauthorized("the metrics token is required")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, county: CountyDep) -> Response:
    """Counts and gauges for Prometheus (identifiers only, no patient data). Read-only: a
    scrape writes nothing, so it may run against a read replica (the worker folds the
    counters' pending deltas)."""
    check_scraper(county, request)
    registry = CollectorRegistry()
    registry.register(CountyCollector(county))
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
