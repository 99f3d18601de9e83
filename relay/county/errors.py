"""Errors that carry their HTTP status; one handler renders them as RFC 9457 problems."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def install_error_handler(app: FastAPI) -> None:
    """Render every RelayError as a problem document."""

    async def _handle(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RelayError)
        log.info("%s %s -> %d %s: %s", _request.method, _request.url.path, exc.status, exc.title, exc.detail)
        return problem(exc.status, exc.title, exc.detail, exc.headers)

    app.add_exception_handler(RelayError, _handle)
