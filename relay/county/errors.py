"""Errors that carry their HTTP status; one handler renders them as RFC 9457 problems."""

from __future__ import annotations

import logging
import re
import traceback
import uuid
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)


class RelayError(Exception):
    """A failure a client should see, with its HTTP status and a short title."""

    status: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}


class BadRequest(RelayError):
    status, title = 400, "Bad request"


class Unauthorized(RelayError):
    status, title = 401, "Not authenticated"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(RelayError):
    status, title = 403, "Forbidden"


class NotFound(RelayError):
    status, title = 404, "Not found"


class NotAcceptable(RelayError):
    status, title = 406, "Not acceptable"


class Conflict(RelayError):
    status, title = 409, "Conflict"


class PayloadTooLarge(RelayError):
    status, title = 413, "Payload too large"


class Unprocessable(RelayError):
    status, title = 422, "Unprocessable content"


class Unavailable(RelayError):
    status, title = 503, "Service unavailable"

    def __init__(self, detail: str, *, retry_after_s: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


PROBLEM_MEDIA_TYPE = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
HtmlRenderer = Callable[[Request, int, str, str], Response]
"""Renders an error as an HTML page for a browser (set by the portal, which owns the strings)."""


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, *,
            instance: str | None = None, **extra: Any) -> JSONResponse:
    """An RFC 9457 problem document (type, title, status, detail, instance, extensions)."""
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if instance is not None:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def request_id(request: Request) -> str:
    """This request's id (the proxy's X-Request-ID when well-formed, else a new one)."""
    rid: str | None = getattr(request.state, "request_id", None)
    if rid is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        rid = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        request.state.request_id = rid
    return rid


def set_html_renderer(app: FastAPI, renderer: HtmlRenderer) -> None:
    """Let browsers asking for HTML under /portal get an error page instead of JSON."""
    app.state.html_error_renderer = renderer


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.url.path.startswith("/portal") and "text/html" in accept


def _respond(request: Request, status: int, title: str, detail: str,
             headers: dict[str, str] | None = None, **extra: Any) -> Response:
    rid = request_id(request)
    all_headers = {**(headers or {}), REQUEST_ID_HEADER: rid}
    renderer: HtmlRenderer | None = getattr(request.app.state, "html_error_renderer", None)
    if renderer is not None and _wants_html(request):
        response = renderer(request, status, title, detail)
        response.headers.update(all_headers)
        return response
    # The instance names this occurrence: the path (never the query: it may hold patient names).
    return problem(status, title, detail, all_headers, instance=request.url.path, request_id=rid, **extra)


_HTTP_TITLES = {404: "Not found", 405: "Method not allowed", 401: "Not authenticated", 403: "Forbidden"}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Location, message and type only: the rejected input may be patient data.
    return [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
             "type": str(e.get("type", ""))} for e in exc.errors()]


def install_error_handler(app: FastAPI) -> None:
    """Render every error as a problem document: RelayErrors, validation errors, unknown
    routes and methods, and unhandled exceptions (logged here with the request id; the
    caller sees no trace)."""

    async def _handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RelayError)
        log.info("%s %s -> %d %s: %s [%s]", request.method, request.url.path, exc.status, exc.title,
                 exc.detail, request_id(request))
        return _respond(request, exc.status, exc.title, exc.detail, exc.headers)

    async def _invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _validation_errors(exc)
        detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
        log.info("%s %s -> 422 invalid: %s [%s]", request.method, request.url.path,
                 [".".join(e["loc"]) for e in errors], request_id(request))
        return _respond(request, 422, "Unprocessable content", detail, errors=errors)

    async def _http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        title = _HTTP_TITLES.get(exc.status_code, HTTPStatus(exc.status_code).phrase)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase \
            else f"{request.method} {request.url.path}: {title.lower()}"
        return _respond(request, exc.status_code, title, detail, dict(exc.headers or {}))

    app.add_exception_handler(RelayError, _handle)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_middleware(_RequestGuard)


async def _unhandled(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    # The frames, not the message: an exception's text can quote patient data (SQL parameters).
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s %s -> 500 unhandled %s [%s]\n%s", request.method, request.url.path,
              type(exc).__name__, rid, frames)
    return _respond(request, 500, "Internal error",
                    f"the server failed on this request; quote request id {rid} to the operator")


class _RequestGuard:
    """Gives each request its id (X-Request-ID on every answer) and turns an unhandled
    exception into a 500 problem here, so that it goes no further up: the server's own
    handler would log the exception's message and could answer with a trace."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rid = request_id(request)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if started:  # the answer is under way: nothing left to say but to drop it
                log.error("%s %s: failed while answering (%s) [%s]", request.method, request.url.path,
                          type(exc).__name__, rid)
                raise
            response = await _unhandled(request, exc)
            await response(scope, receive, send)
