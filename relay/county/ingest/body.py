"""Request bodies read under a hard cap, spooled to disk while they arrive.

A body is counted as it streams in, with or without Content-Length (chunked), and the
request is answered 413 the moment the cap is passed, not after the whole body was read:
a township's slow link or a broken client cannot make the county hold more than the cap
per request. Small bodies stay in memory; larger ones go to a temporary file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

from fastapi import Request

from relay.county.errors import BadRequest, PayloadTooLarge

SPOOL_MEMORY_BYTES = 1024 * 1024
"""A body up to this many bytes is held in memory while it arrives; past it, in a
temporary file (bytes). 1 MiB keeps a typical CT slice (~0.5 MiB) off the disk."""


def declared_length(request: Request) -> int | None:
    """The Content-Length the client declared, if any; 400 when it is not a number."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest("Content-Length is not a number") from None
    if value < 0:
        raise BadRequest("Content-Length is negative")
    return value


def check_declared(request: Request, *, limit: int, what: str) -> None:
    """413 before reading anything when the declared length is already over ``limit``."""
    declared = declared_length(request)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"{what} of {declared} bytes exceeds {limit}")


async def spool_body(request: Request, *, limit: int, what: str, spool_dir: Path | None = None) -> IO[bytes]:
    """The request body in a spooled temporary file positioned at its start; 413 as soon
    as more than ``limit`` bytes have arrived. The caller closes the file."""
    check_declared(request, limit=limit, what=what)
    if spool_dir is not None:
        spool_dir.mkdir(parents=True, exist_ok=True)
    out: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (returned to the caller)
        max_size=SPOOL_MEMORY_BYTES, dir=str(spool_dir) if spool_dir is not None else None)
    total = 0
    try:
        async for piece in request.stream():
            total += len(piece)
            if total > limit:
                raise PayloadTooLarge(f"{what} exceeds {limit} bytes")
            out.write(piece)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out


async def read_body(request: Request, *, limit: int, what: str, spool_dir: Path | None = None) -> bytes:
    """The whole request body, at most ``limit`` bytes (413 the moment it passes that)."""
    with await spool_body(request, limit=limit, what=what, spool_dir=spool_dir) as spooled:
        return spooled.read()
