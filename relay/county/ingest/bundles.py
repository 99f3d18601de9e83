"""Bundle uploads from edges: open or resume, stage chunks, complete.

Chunks are staged in the object store and progress is kept in the index, so any API
replica can take any chunk and a cut costs at most the chunk in flight. Completing
ingests every instance with the single-upload rules (relay.county.ingest.service):
object stored, index row committed; the caller enqueues after that and only then
answers 200, the edge's signal that it may mark the instances sent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import BundleChunk, Site, UploadBundle
from relay.county.db.upsert import insert_ignore
from relay.county.errors import Conflict, NotFound, PayloadTooLarge, RelayError, Unprocessable
from relay.county.ingest.service import Upload, ingest_verified, verify_upload
from relay.county.storage import ObjectStore
from relay.dicom.bundle import BundleError, FrameHeader, iter_frames
from relay.dicom.vocab import BundleState, Priority
from relay.dicom.wire import HEADER_UPLOAD_OFFSET, MAX_CHUNK_BYTES

log = logging.getLogger(__name__)

ASSEMBLY_MEMORY_BYTES = 64 * 1024 * 1024
"""Bundles up to this size are assembled in memory at completion, larger ones in a
temporary file of the request (bytes)."""


class OffsetMismatch(RelayError):
    """The chunk does not start where the county's held bytes end: resume from there."""

    status, title = 409, "Upload offset mismatch"

    def __init__(self, held: int) -> None:
        super().__init__(f"the county holds {held} bytes of this bundle; send from there",
                         headers={HEADER_UPLOAD_OFFSET: str(held)})


@dataclass(frozen=True, slots=True)
class BundleSpec:
    """What the edge announces when it opens a bundle."""

    bundle_id: str
    size: int
    sha256: str
    encoding: str
    priority: Priority
    instances: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Completion:
    results: list[dict[str, str]]
    pending_instance_ids: list[int]
    """Instances committed but not yet indexed: the caller enqueues them."""


def _owned(session: Session, site: Site, bundle_id: str) -> UploadBundle:
    bundle = session.execute(
        select(UploadBundle).where(UploadBundle.bundle_id == bundle_id)).scalar_one_or_none()
    if bundle is None or bundle.site_id != site.id:  # another site's bundle does not exist for you
        raise NotFound(f"no bundle {bundle_id}")
    return bundle


def open_bundle(*, session: Session, site: Site, spec: BundleSpec) -> UploadBundle:
    """Create the bundle, or return it as held if the edge opens it again (resume)."""
    now = now_utc()
    insert_ignore(session, UploadBundle, {
        "bundle_id": spec.bundle_id, "site_id": site.id, "size": spec.size, "sha256": spec.sha256,
        "encoding": spec.encoding, "priority": spec.priority.value,
        "instances_json": json.dumps(spec.instances), "received": 0, "state": BundleState.OPEN.value,
        "created_at": now, "updated_at": now}, keys=["bundle_id"])
    session.commit()
    bundle = _owned(session, site, spec.bundle_id)
    if (bundle.size, bundle.sha256, bundle.encoding) != (spec.size, spec.sha256, spec.encoding):
        raise Conflict(f"bundle {spec.bundle_id} is held with another size, digest or encoding")
    return bundle


def progress(*, session: Session, site: Site, bundle_id: str) -> UploadBundle:
    return _owned(session, site, bundle_id)


def put_chunk(*, session: Session, store: ObjectStore, site: Site, bundle_id: str, offset: int,
              data: bytes) -> int:
    """Stage bytes [offset, offset+len) durably; return the new held offset."""
    bundle = _owned(session, site, bundle_id)
    if len(data) > MAX_CHUNK_BYTES:
        raise PayloadTooLarge(f"chunk of {len(data)} bytes exceeds {MAX_CHUNK_BYTES}")
    if bundle.state != BundleState.OPEN or offset != bundle.received:
        raise OffsetMismatch(bundle.received)
    if offset + len(data) > bundle.size or not data:
        raise Unprocessable(f"chunk [{offset}, {offset + len(data)}) is outside the bundle's {bundle.size} bytes")
    digest = hashlib.sha256(data).hexdigest()
    key = f"staging/{site.id}/{bundle_id}/{offset:016d}-{digest[:16]}"
    store.put(key, data, sha256=digest)
    moved = session.execute(
        update(UploadBundle).where(UploadBundle.id == bundle.id, UploadBundle.received == offset,
                                   UploadBundle.state == BundleState.OPEN.value)
        .values(received=offset + len(data), updated_at=now_utc())).rowcount  # type: ignore[attr-defined]
    if moved != 1:  # another request advanced it first
        session.rollback()
        raise OffsetMismatch(_owned(session, site, bundle_id).received)
    session.add(BundleChunk(bundle_pk=bundle.id, offset=offset, length=len(data), object_key=key))
    session.commit()
    return offset + len(data)


def _assemble(session: Session, store: ObjectStore, bundle: UploadBundle) -> IO[bytes]:
    """The staged bytes in order, checked for gaps and against the bundle's SHA-256."""
    chunks = session.execute(select(BundleChunk).where(BundleChunk.bundle_pk == bundle.id)
                             .order_by(BundleChunk.offset)).scalars().all()
    out = tempfile.SpooledTemporaryFile(max_size=ASSEMBLY_MEMORY_BYTES)  # noqa: SIM115
    digest, expected = hashlib.sha256(), 0
    for chunk in chunks:
        if chunk.offset != expected:
            raise BundleError(f"staged chunks have a gap at byte {expected}")
        data = store.get(chunk.object_key)
        digest.update(data)
        out.write(data)
        expected += len(data)
    if expected != bundle.size or digest.hexdigest() != bundle.sha256:
        raise BundleError("the received bytes do not match the bundle's size and SHA-256")
    out.seek(0)
    return out


def discard_chunks(*, session: Session, store: ObjectStore, bundle: UploadBundle) -> None:
    """Forget the staged bytes (after completion, or after they proved corrupt)."""
    chunks = session.execute(select(BundleChunk).where(BundleChunk.bundle_pk == bundle.id)).scalars().all()
    for chunk in chunks:
        store.delete_unsafe(chunk.object_key)
        session.delete(chunk)
    session.commit()


Announced = dict[tuple[str, str, int], int]
"""(SOP Instance UID, SHA-256, size) -> how many frames of it are still expected. The
same UID may come twice with other bytes (a modality re-sent it in another transfer
syntax): both versions travel, the second is kept aside at ingest."""


def _announced(instances_json: str) -> Announced:
    counts: Announced = {}
    for i in json.loads(instances_json):
        key = (i["sop_uid"], i["sha256"], i["size"])
        counts[key] = counts.get(key, 0) + 1
    return counts


def _check_announced(header: FrameHeader, announced: Announced) -> None:
    key = (header.sop_uid, header.sha256, header.size)
    if not announced.get(key):
        raise BundleError(f"instance {header.sop_uid} was not announced with this digest and size")
    announced[key] -= 1


def _time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _ingest_frames(*, session: Session, store: ObjectStore, site: Site, bundle: UploadBundle,
                   stream: IO[bytes], max_bytes: int) -> Completion:
    announced = _announced(bundle.instances_json)
    results: list[dict[str, str]] = []
    pending: list[int] = []
    for header, data in iter_frames(stream, encoding=bundle.encoding):  # type: ignore[arg-type]
        _check_announced(header, announced)
        upload = Upload(data=data, claimed_sha256=header.sha256, priority=Priority(header.priority),
                        calling_ae=header.calling_ae, edge_received_at=_time(header.received_at),
                        late=header.late)
        # iter_frames has just checked the frame's SHA-256: the proof is carried, not recomputed.
        instance = verify_upload(upload, max_bytes=max_bytes, digest_checked=True)
        result = ingest_verified(session=session, store=store, site=site, upload=upload, instance=instance)
        results.append({"sop_uid": result.sop_uid, "sha256": result.sha256, "outcome": result.outcome.value})
        if result.instance_id is not None:
            pending.append(result.instance_id)
    missing = sum(announced.values())
    if missing:
        raise BundleError(f"{missing} announced instances are missing from the bundle")
    return Completion(results, pending)


def complete_bundle(*, session: Session, store: ObjectStore, site: Site, bundle_id: str,
                    max_bytes: int) -> Completion:
    """Ingest every instance of a fully received bundle (idempotent)."""
    bundle = _owned(session, site, bundle_id)
    if bundle.state == BundleState.COMPLETE:
        return Completion(json.loads(bundle.results_json or "[]"), [])
    if bundle.received != bundle.size:
        raise Conflict(f"bundle {bundle_id} is incomplete: {bundle.received} of {bundle.size} bytes")
    try:
        with _assemble(session, store, bundle) as stream:
            return _ingest_frames(session=session, store=store, site=site, bundle=bundle,
                                  stream=stream, max_bytes=max_bytes)
    except (BundleError, Unprocessable) as exc:
        session.rollback()
        log.warning("bundle %s from site %s refused: %s", bundle_id, site.name, exc)
        discard_chunks(session=session, store=store, bundle=bundle)
        session.delete(bundle)
        session.commit()
        raise Unprocessable(f"bundle {bundle_id} refused, send it again: {exc}") from exc


def mark_complete(*, session: Session, store: ObjectStore, site: Site, bundle_id: str,
                  results: list[dict[str, str]]) -> None:
    """Record the results (after the follow-up work was enqueued) and drop the chunks."""
    bundle = _owned(session, site, bundle_id)
    bundle.state, bundle.results_json, bundle.updated_at = BundleState.COMPLETE.value, json.dumps(results), now_utc()
    session.commit()
    discard_chunks(session=session, store=store, bundle=bundle)
