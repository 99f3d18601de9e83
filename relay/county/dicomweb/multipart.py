"""multipart/related bodies (RFC 2387) as DICOMweb uses them: build a stream, parse one."""

from __future__ import annotations

import io
import re
import secrets
from collections.abc import Iterable, Iterator
from typing import IO

from relay.county.errors import BadRequest, PayloadTooLarge, Unprocessable

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


READ_BYTES = 64 * 1024
"""Bytes read from the body at a time while looking for the next delimiter."""
MAX_PART_HEADER_BYTES = 16 * 1024
"""A part's header block longer than this is not a real one (bytes)."""


def check_header(header: str) -> None:
    """400 unless ``header`` is a multipart/related Content-Type with a boundary."""
    _header_info(header)


def _header_info(header: str) -> tuple[bytes, str]:
    """The delimiter (CRLF ``--`` boundary, RFC 2046 5.1.1) and the parts' default type."""
    if not header.lower().startswith("multipart/related"):
        raise BadRequest("Content-Type must be multipart/related")
    match = _BOUNDARY.search(header)
    if not match or len(match.group(1)) > 70:
        raise BadRequest("multipart/related without a boundary (of 1 to 70 characters)")
    found = _TYPE.search(header)
    return b"\r\n--" + match.group(1).strip().encode("latin-1"), found.group(1) if found else "application/dicom"


class _Reader:
    """A buffer over a binary stream, for finding delimiters piece by piece."""

    def __init__(self, stream: IO[bytes], lead: bytes) -> None:
        self.stream, self.buf, self.eof = stream, bytearray(lead), False

    def fill(self) -> bool:
        """Read more; False at the end of the stream."""
        if self.eof:
            return False
        piece = self.stream.read(READ_BYTES)
        if not piece:
            self.eof = True
            return False
        self.buf += piece
        return True

    def until(self, token: bytes, *, limit: int, what: str) -> bytes:
        """The bytes before the next ``token`` (consumed with it); 413 past ``limit`` bytes."""
        out = bytearray()
        while True:
            at = self.buf.find(token)
            if at >= 0:
                out += self.buf[:at]
                del self.buf[:at + len(token)]
                break
            keep = len(token) - 1  # a token may straddle two reads
            if len(self.buf) > keep:
                out += self.buf[:len(self.buf) - keep]
                del self.buf[:len(self.buf) - keep]
            if len(out) > limit:
                raise PayloadTooLarge(f"{what} is larger than {limit} bytes")
            if not self.fill():
                raise Unprocessable(f"the multipart body ends inside {what}, before its closing boundary")
        if len(out) > limit:
            raise PayloadTooLarge(f"{what} is larger than {limit} bytes")
        return bytes(out)

    def peek(self, n: int) -> bytes:
        while len(self.buf) < n and self.fill():
            pass
        return bytes(self.buf[:n])

    def skip(self, n: int) -> None:
        del self.buf[:n]


def _part_type(head: bytes, default: str) -> str:
    ptype = default
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            ptype = value.strip()
    return ptype


def iter_related(stream: IO[bytes], header: str, *, max_part_bytes: int) -> Iterator[tuple[str, bytes]]:
    """The (content type, bytes) of each part of a multipart/related body, read from
    ``stream`` piece by piece (RFC 2046 5.1.1): the CRLF before a boundary is part of the
    delimiter, the preamble and epilogue are ignored, transport padding after a boundary
    is allowed, and a body without its closing delimiter is refused. One part at a time
    is in memory, at most ``max_part_bytes`` of it (else 413)."""
    delimiter, default_type = _header_info(header)
    reader = _Reader(stream, b"\r\n")  # a first boundary at the very start has no CRLF of its own
    reader.until(delimiter, limit=1 << 20, what="the preamble")
    while True:
        if reader.peek(2) == b"--":
            return  # the close delimiter; what follows is the epilogue
        if reader.until(b"\r\n", limit=1024, what="a boundary line").strip(b" \t"):
            raise Unprocessable("a multipart boundary line has text after the boundary")
        if reader.peek(2) == b"\r\n":
            reader.skip(2)
            head = b""  # no headers: the part is of the default type
        else:
            head = reader.until(b"\r\n\r\n", limit=MAX_PART_HEADER_BYTES, what="a part's headers")
        yield _part_type(head, default_type), reader.until(delimiter, limit=max_part_bytes, what="a part")


def parse_related(body: bytes, header: str) -> list[tuple[str, bytes]]:
    """The (content type, bytes) of each part of an in-memory multipart/related body."""
    return list(iter_related(io.BytesIO(body), header, max_part_bytes=len(body)))
