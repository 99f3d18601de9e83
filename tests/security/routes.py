"""Every route of an ASGI app as (method, path), whatever FastAPI's router nesting: the
security matrices enumerate the app, so a new route without a rule fails them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from starlette.routing import Mount

MOUNT = "MOUNT"
"""The method recorded for a mounted sub-application (static files): every GET under it."""


def _walk(routes: Iterable[Any]) -> Iterator[tuple[str, str]]:
    for route in routes:
        if hasattr(route, "effective_candidates"):  # FastAPI >= 0.16x keeps included routers nested
            for candidate in route.effective_candidates():
                if hasattr(candidate, "effective_candidates"):
                    yield from _walk([candidate])
                else:
                    for method in getattr(candidate.original_route, "methods", None) or ():
                        yield method, candidate.path
        elif isinstance(route, Mount):
            yield MOUNT, route.path
        else:
            for method in getattr(route, "methods", None) or ():
                yield method, route.path


def every_route(app: Any) -> list[tuple[str, str]]:
    """Sorted (METHOD, path) of every route; HEAD (Starlette adds it to GET) left out."""
    return sorted({(m, p) for m, p in _walk(app.routes) if m != "HEAD"})
