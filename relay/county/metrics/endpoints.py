"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from relay.county.auth.deps import CountyDep
from relay.county.metrics.collector import CountyCollector

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(county: CountyDep) -> Response:
    """Counts and gauges for Prometheus (identifiers only, no patient data). Restrict who
    may scrape it at the reverse proxy, like /healthz."""
    registry = CollectorRegistry()
    registry.register(CountyCollector(county))
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
