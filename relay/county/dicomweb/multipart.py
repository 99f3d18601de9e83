"""multipart/related bodies (RFC 2387) as DICOMweb uses them: build a stream, parse one."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator

from relay.county.errors import BadRequest, Unprocessable

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)


def new_boundary() -> str:
    return f"relay-{secrets.token_hex(16)}"


def content_type(boundary: str, part_type: str) -> str:
    return f'multipart/related; type="{part_type}"; boundary={boundary}'


def stream_parts(parts: Iterable[bytes], *, boundary: str, part_type: str) -> Iterator[bytes]:
    """Yield the encoded body part by part, so a large study is never whole in memory."""
    for body in parts:
        yield (f"--{boundary}\r\nContent-Type: {part_type}\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode()
        yield body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def parse_related(body: bytes, header: str) -> list[tuple[str, bytes]]:
    """The (content type, bytes) of each part of a multipart/related request body."""
    if not header.lower().startswith("multipart/related"):
        raise BadRequest("Content-Type must be multipart/related")
    match = _BOUNDARY.search(header)
    if not match:
        raise BadRequest("multipart/related without a boundary")
    default_type = (_TYPE.search(header) or re.match(r"(.*)", "application/dicom")).group(1)  # type: ignore[union-attr]
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, payload = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise Unprocessable("a multipart part has no header/body separator")
        ptype = default_type
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                ptype = value.strip()
        parts.append((ptype, payload[:-2] if payload.endswith(b"\r\n") else payload))
    return parts
