"""Request bodies have a hard cap, enforced while they arrive (issue 10, point 9): a chunked
upload (no Content-Length) over the cap is answered 413 as soon as the cap is passed, while
the client is still sending, on the ingest, bundle chunk and STOW routes (real uvicorn,
raw sockets)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from bench.common import serve_app
from relay.county.app import create_app
from relay.county.context import County
from relay.dicom import wire
from tests.factories import make_instance, make_site, sha256

CAP = 256 * 1024
PIECE = 16 * 1024


@pytest.fixture
def small(county: County, settings) -> Iterator[tuple[str, str]]:
    """The county app with a small instance cap under uvicorn: (base URL, site credential)."""
    capped = County(settings.model_copy(update={"max_instance_bytes": CAP}))
    try:
        _, token = make_site(capped)
        with serve_app(create_app(capped)) as url:
            yield url, token
    finally:
        capped.close()


def chunked_until_answered(base: str, path: str, headers: dict[str, str], *, method: str = "POST",
                           send_up_to: int) -> tuple[int, dict[str, str], bytes, int]:
    """Send a chunked body of zeros without ever ending it, up to ``send_up_to`` bytes, and
    read the answer: (status, headers, body, bytes sent before the server stopped us)."""
    where = urlsplit(base)
    sock = socket.create_connection((where.hostname, where.port), timeout=60)
    head = f"{method} {path} HTTP/1.1\r\nHost: {where.netloc}\r\nTransfer-Encoding: chunked\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())
    sent = 0
    try:
        while sent < send_up_to:
            sock.sendall(f"{PIECE:x}\r\n".encode() + b"\0" * PIECE + b"\r\n")
            sent += PIECE
    except OSError:
        pass  # the server answered and closed: read what it said
    raw = b""
    try:
        while b"\r\n\r\n" not in raw:
            got = sock.recv(65536)
            if not got:
                break
            raw += got
        head_block, _, body = raw.partition(b"\r\n\r\n")
        lines = head_block.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        answer = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(answer.get("content-length", 0)):
            got = sock.recv(65536)
            if not got:
                break
            body += got
        return status, answer, body, sent
    finally:
        sock.close()


def assert_413(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 413, (status, body)
    assert headers["content-type"].startswith("application/problem+json")
    assert json.loads(body)["status"] == 413


def test_a_chunked_instance_over_the_cap_is_refused_while_it_is_still_arriving(small):
    url, token = small
    status, headers, body, _ = chunked_until_answered(
        url, wire.INGEST_PATH, {"Authorization": f"Bearer {token}", wire.HEADER_SHA256: "0" * 64,
                                "Content-Type": wire.DICOM_MEDIA_TYPE}, send_up_to=4 * CAP)
    assert_413(status, headers, body)


def test_a_chunked_stow_over_the_cap_is_refused_while_it_is_still_arriving(small):
    url, token = small
    status, headers, body, _ = chunked_until_answered(
        url, "/dicomweb/studies", {"Authorization": f"Bearer {token}",
                                   "Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        send_up_to=4 * CAP)
    assert_413(status, headers, body)


def test_a_chunked_bundle_chunk_over_the_chunk_cap_is_refused_while_it_is_still_arriving(small):
    url, token = small
    auth = {"Authorization": f"Bearer {token}"}
    spec = {"bundle_id": str(uuid.uuid4()), "size": wire.MAX_BUNDLE_BYTES // 2, "sha256": "0" * 64,
            "encoding": "identity", "priority": "routine",
            "instances": [{"sop_uid": "1.2.3", "sha256": "0" * 64, "size": 10}]}
    assert requests.post(f"{url}{wire.BUNDLES_PATH}", json=spec, headers=auth, timeout=60).status_code == 200
    status, headers, body, _ = chunked_until_answered(
        url, f"{wire.BUNDLES_PATH}/{spec['bundle_id']}",
        {**auth, wire.HEADER_UPLOAD_OFFSET: "0", "Content-Type": wire.CHUNK_MEDIA_TYPE},
        method="PATCH", send_up_to=2 * wire.MAX_CHUNK_BYTES)
    assert_413(status, headers, body)


def test_a_declared_length_over_the_cap_is_refused_before_the_body(small):
    url, token = small
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=60) as sock:
        sock.sendall((f"POST {wire.INGEST_PATH} HTTP/1.1\r\nHost: {where.netloc}\r\nAuthorization: Bearer {token}\r\n"
                      f"{wire.HEADER_SHA256}: {'0' * 64}\r\nContent-Length: {CAP + 1}\r\n\r\n").encode())
        assert sock.recv(65536).split(b" ")[1] == b"413"


def test_a_chunked_instance_under_the_cap_is_stored(small):
    url, token = small
    data = make_instance()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(data), 100):
            yield data[i:i + 100]

    r = requests.post(f"{url}{wire.INGEST_PATH}", data=pieces(), timeout=60, headers={
        "Authorization": f"Bearer {token}", wire.HEADER_SHA256: sha256(data), "Content-Type": wire.DICOM_MEDIA_TYPE})
    assert r.status_code == 200, r.text
    assert r.json()["outcome"] == "stored"
