"""Accept one instance from an edge: verify, store the object, commit the index row.

The order is the durability contract: object in the store, then the index row
committed, then (by the caller, after commit) the follow-up task enqueued, and only
then the 200 that lets the edge mark the instance sent.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Instance, Site
from relay.county.ingest import repository
from relay.county.storage import ObjectStore
from relay.county.errors import PayloadTooLarge, Unprocessable
from relay.dicom.header import InstanceIds, InvalidInstance, read_ids
from relay.dicom.keys import instance_key, quarantine_key
from relay.dicom.vocab import IngestOutcome, Priority

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upload:
    """One instance as the edge sent it, with what the edge says about it."""

    data: bytes
    claimed_sha256: str
    priority: Priority
    calling_ae: str
    edge_received_at: datetime | None
    late: bool = False
    """The edge forwarded the instance after its study: an addition."""


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcome: IngestOutcome
    instance_id: int | None
    """The indexed instance to (re)index, or None when nothing needs indexing."""
    sop_uid: str
    sha256: str


def _verify(upload: Upload, *, max_bytes: int) -> tuple[InstanceIds, str]:
    if len(upload.data) > max_bytes:
        raise PayloadTooLarge(f"instance of {len(upload.data)} bytes exceeds {max_bytes}")
    sha256 = hashlib.sha256(upload.data).hexdigest()
    if sha256 != upload.claimed_sha256.lower():
        raise Unprocessable("SHA-256 of the body does not match X-Relay-SHA256")
    try:
        return read_ids(upload.data), sha256
    except InvalidInstance as exc:
        raise Unprocessable(f"not a usable DICOM instance: {exc}") from exc


def ingest_instance(
    *, session: Session, store: ObjectStore, site: Site, upload: Upload, max_bytes: int
) -> IngestResult:
    """Store and index one uploaded instance; idempotent on (SOP Instance UID, SHA-256)."""
    ids, sha256 = _verify(upload, max_bytes=max_bytes)
    existing = repository.instance_by_sop(session, ids.sop_uid)
    if existing is None:
        key = instance_key(study_uid=ids.study_uid, series_uid=ids.series_uid,
                           sop_uid=ids.sop_uid, sha256=sha256)
        store.put(key, upload.data, sha256=sha256)
        instance_id, inserted = repository.insert_instance(
            session, _instance_values(ids, sha256, key, site, upload))
        session.commit()
        if inserted:
            return IngestResult(IngestOutcome.STORED, instance_id, ids.sop_uid, sha256)
        existing = repository.instance_by_sop(session, ids.sop_uid)  # lost a race
        assert existing is not None
    return _known(session=session, store=store, site=site, existing=existing, upload=upload,
                  sha256=sha256)


def _known(
    *, session: Session, store: ObjectStore, site: Site, existing: Instance, upload: Upload,
    sha256: str,
) -> IngestResult:
    """The UID is already held: a harmless duplicate, or conflicting bytes to keep aside."""
    if existing.sha256 == sha256:
        pending = existing.id if existing.indexed_at is None else None
        return IngestResult(IngestOutcome.DUPLICATE, pending, existing.sop_uid, sha256)
    key = quarantine_key(sop_uid=existing.sop_uid, sha256=sha256)
    store.put(key, upload.data, sha256=sha256)
    repository.insert_quarantine(session, {
        "sop_uid": existing.sop_uid, "sha256": sha256, "object_key": key,
        "size": len(upload.data), "site_id": site.id, "received_at": now_utc()})
    session.commit()
    log.warning("quarantined conflicting instance sop=%s sha256=%s held_sha256=%s site=%s",
                existing.sop_uid, sha256[:16], existing.sha256[:16], site.name)
    return IngestResult(IngestOutcome.QUARANTINED, None, existing.sop_uid, sha256)


def _instance_values(
    ids: InstanceIds, sha256: str, key: str, site: Site, upload: Upload
) -> dict[str, object]:
    return {
        "sop_uid": ids.sop_uid, "sha256": sha256, "sop_class_uid": ids.sop_class_uid,
        "study_uid": ids.study_uid, "series_uid": ids.series_uid,
        "transfer_syntax_uid": ids.transfer_syntax_uid[:64], "object_key": key,
        "size": len(upload.data), "site_id": site.id, "priority": upload.priority.value,
        "calling_ae": upload.calling_ae[:16], "edge_received_at": upload.edge_received_at,
        "received_at": now_utc(), "late": upload.late,
    }
