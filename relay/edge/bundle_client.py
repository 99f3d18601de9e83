"""The bundle protocol of ``relay.dicom.wire``, client side: one HTTP connection to
the county's bundle endpoints (create, progress, PATCH a chunk, complete) and the
errors a step can end in. Scheduling (which bundle, when, on which stream) is
``relay.edge.forward``'s."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from relay.dicom import wire
from relay.edge.bundle_outbox import Bundle
from relay.edge.ratelimit import TokenBucket

BLOCK_BYTES = 64 * 1024
"""Bytes handed to the socket per write inside a chunk (64 KiB): the grain of the rate
cap and of how fast a stopping edge abandons a chunk."""
MAX_DETAIL_CHARS = 200
"""How much of a county problem document is kept in the journal and the log."""



class UploadError(Exception):
    """One step of a bundle upload failed. ``link_down``: it concerns every bundle
    (network, county unavailable, credential); ``unknown``: the county does not know
    the bundle id (announce it again)."""

    def __init__(self, message: str, *, status: int | None = None, link_down: bool = True,
                 unknown: bool = False) -> None:
        super().__init__(message[:MAX_DETAIL_CHARS])
        self.status, self.link_down, self.unknown = status, link_down, unknown


class Rejected(UploadError):
    """The county refused the bundle's bytes (422, or 409 for a clashing id): rebuild it."""


class Interrupted(Exception):
    """The forwarder is stopping; the chunk in progress is abandoned (resumed next start)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """What the county holds of one bundle (wire steps 1 and 3)."""

    received: int
    state: str
    results: list[dict[str, Any]] | None


def _problem(response: httpx.Response) -> str:
    """Short, log-safe description of a refusal: status plus the problem title/detail."""
    text = ""
    try:
        body = response.json()
        if isinstance(body, dict):
            text = " ".join(str(body[k]) for k in ("title", "detail") if body.get(k))
    except ValueError:
        pass
    return f"HTTP {response.status_code} {text}".strip()[:MAX_DETAIL_CHARS]


def _refusal(response: httpx.Response) -> UploadError:
    status = response.status_code
    if status in (409, 422):
        return Rejected(_problem(response), status=status, link_down=False)
    if status == 404:
        return UploadError(_problem(response), status=status, link_down=False, unknown=True)
    return UploadError(_problem(response), status=status, link_down=status != 413)


class BundleClient:
    """The bundle protocol of ``relay.dicom.wire`` over one HTTP connection."""

    def __init__(self, *, client: httpx.Client, token: str | None, bucket: TokenBucket,
                 stop: threading.Event) -> None:
        self.client, self.bucket, self.stop = client, bucket, stop
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.failures = 0
        """Consecutive failed steps on this stream (0 after any success)."""

    def _call(self, method: str, url: str, *, ok: tuple[int, ...], **kwargs: Any) -> httpx.Response:
        headers = {**self.auth, **kwargs.pop("headers", {})}
        try:
            response = self.client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise UploadError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code not in ok:
            raise _refusal(response)
        return response

    def create(self, bundle: Bundle) -> Progress:
        """Announce the bundle (or learn the progress of one announced before)."""
        response = self._call("POST", wire.BUNDLES_PATH, ok=(200,), json=bundle.announcement())
        return _progress(response)

    def progress(self, bundle: Bundle) -> Progress:
        """How much of the bundle the county holds (after a cut)."""
        return _progress(self._call("GET", f"{wire.BUNDLES_PATH}/{bundle.bundle_id}", ok=(200,)))

    def send_chunk(self, bundle: Bundle, *, offset: int, length: int) -> int:
        """PATCH bytes [offset, offset+length); return the offset the county now holds."""
        headers = {wire.HEADER_UPLOAD_OFFSET: str(offset), "Content-Type": wire.CHUNK_MEDIA_TYPE,
                   "Content-Length": str(length)}
        response = self._call("PATCH", f"{wire.BUNDLES_PATH}/{bundle.bundle_id}", ok=(204, 409),
                              headers=headers, content=self._body(bundle.path, offset, length))
        try:
            return int(response.headers[wire.HEADER_UPLOAD_OFFSET])
        except (KeyError, ValueError):
            raise UploadError(f"HTTP {response.status_code} without a usable "
                              f"{wire.HEADER_UPLOAD_OFFSET}") from None

    def _body(self, path: Path, offset: int, length: int) -> Iterator[bytes]:
        with path.open("rb") as fh:
            fh.seek(offset)
            while length > 0:
                if self.stop.is_set():
                    raise Interrupted()
                block = fh.read(min(BLOCK_BYTES, length))
                if not block:
                    raise UploadError("bundle file shorter than recorded", link_down=False)
                self.bucket.take(len(block))
                length -= len(block)
                yield block

    def complete(self, bundle: Bundle) -> list[dict[str, Any]]:
        """Ask the county to verify and ingest the bundle; its per-instance results."""
        response = self._call("POST", f"{wire.BUNDLES_PATH}/{bundle.bundle_id}/complete",
                              ok=(200,))
        results = _json(response).get("results")
        if not isinstance(results, list):
            raise UploadError("HTTP 200 to complete without results")
        return results


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UploadError(f"HTTP {response.status_code} without a JSON object")
    return body


def _progress(response: httpx.Response) -> Progress:
    body = _json(response)
    try:
        return Progress(received=int(body["received"]), state=str(body["state"]),
                        results=body.get("results"))
    except (KeyError, TypeError, ValueError):
        raise UploadError("bundle progress without received/state") from None
