"""Accept one instance from an edge: verify, store the object, commit the index row.

The order is the durability contract: object in the store, then the index row
committed, then (by the caller, after commit) the follow-up task enqueued, and only
then the 200 that lets the edge mark the instance sent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Instance, Site
from relay.county.ingest import repository
from relay.county.storage import ObjectStore
from relay.county.errors import PayloadTooLarge, Unprocessable
from relay.county.studies.repository import put_header
from relay.dicom.header import InvalidInstance
from relay.dicom.json_header import header_json
from relay.dicom.keys import instance_key, quarantine_key
from relay.dicom.verified import DigestMismatch, VerifiedInstance, checked_instance, verify_instance
from relay.dicom.vocab import IngestOutcome, Priority

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Upload:
    """One instance as the edge sent it, with what the edge says about it."""

    data: bytes
    claimed_sha256: str | None
    """The SHA-256 the sender claims; None where nothing is claimed (STOW-RS, the county's
    own renderings): the bytes are then hashed, not checked."""
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
    object_key: str
    """Where these bytes are kept (the instance's object, or the quarantined copy)."""


def verify_upload(upload: Upload, *, max_bytes: int, digest_checked: bool = False) -> VerifiedInstance:
    """The trust boundary: size, SHA-256 against the claim (hashed once) and routing UIDs.
    ``digest_checked``: the caller has just checked ``claimed_sha256`` over these bytes
    (a bundle frame), so it is not computed again."""
    if len(upload.data) > max_bytes:
        raise PayloadTooLarge(f"instance of {len(upload.data)} bytes exceeds {max_bytes}")
    try:
        if digest_checked and upload.claimed_sha256 is not None:
            return checked_instance(upload.data, sha256=upload.claimed_sha256)
        return verify_instance(upload.data, claimed_sha256=upload.claimed_sha256)
    except DigestMismatch:
        raise Unprocessable("SHA-256 of the body does not match X-Relay-SHA256") from None
    except InvalidInstance as exc:
        raise Unprocessable(f"not a usable DICOM instance: {exc}") from exc


def ingest_instance(
    *, session: Session, store: ObjectStore, site: Site, upload: Upload, max_bytes: int
) -> IngestResult:
    """Verify, store and index one uploaded instance; idempotent on (SOP Instance UID, SHA-256)."""
    return ingest_verified(session=session, store=store, site=site, upload=upload,
                           instance=verify_upload(upload, max_bytes=max_bytes))


def ingest_verified(
    *, session: Session, store: ObjectStore, site: Site, upload: Upload, instance: VerifiedInstance
) -> IngestResult:
    """Store and index an instance verified at the boundary (``upload`` says who sent it).

    Its header is read here, once, and kept as DICOM JSON beside the index row, so the
    index task does not fetch the object back from the store to read it."""
    ids, sha256 = instance.ids, instance.sha256
    existing = repository.instance_by_sop(session, ids.sop_uid)
    if existing is None:
        key = instance_key(study_uid=ids.study_uid, series_uid=ids.series_uid,
                           sop_uid=ids.sop_uid, sha256=sha256)
        store.put_verified(key, instance)
        instance_id, inserted = repository.insert_instance(
            session, _instance_values(instance, key, site, upload))
        if inserted:
            put_header(session, instance_pk=instance_id, header=header_json(instance.data))
        session.commit()
        if inserted:
            return IngestResult(IngestOutcome.STORED, instance_id, ids.sop_uid, sha256, key)
        existing = repository.instance_by_sop(session, ids.sop_uid)  # lost a race
        assert existing is not None
    return _known(session=session, store=store, site=site, existing=existing, instance=instance)


def _known(
    *, session: Session, store: ObjectStore, site: Site, existing: Instance, instance: VerifiedInstance,
) -> IngestResult:
    """The UID is already held: a harmless duplicate, or conflicting bytes to keep aside."""
    sha256 = instance.sha256
    if existing.sha256 == sha256:
        pending = existing.id if existing.indexed_at is None else None
        return IngestResult(IngestOutcome.DUPLICATE, pending, existing.sop_uid, sha256, existing.object_key)
    key = quarantine_key(sop_uid=existing.sop_uid, sha256=sha256)
    store.put_verified(key, instance)
    repository.insert_quarantine(session, {
        "sop_uid": existing.sop_uid, "sha256": sha256, "object_key": key,
        "size": instance.size, "site_id": site.id, "received_at": now_utc()})
    session.commit()
    log.warning("quarantined conflicting instance sop=%s sha256=%s held_sha256=%s site=%s",
                existing.sop_uid, sha256[:16], existing.sha256[:16], site.name)
    return IngestResult(IngestOutcome.QUARANTINED, None, existing.sop_uid, sha256, key)


def _instance_values(
    instance: VerifiedInstance, key: str, site: Site, upload: Upload
) -> dict[str, object]:
    ids, sha256 = instance.ids, instance.sha256
    return {
        "sop_uid": ids.sop_uid, "sha256": sha256, "sop_class_uid": ids.sop_class_uid,
        "study_uid": ids.study_uid, "series_uid": ids.series_uid,
        "transfer_syntax_uid": ids.transfer_syntax_uid[:64], "object_key": key,
        "size": instance.size, "site_id": site.id, "priority": upload.priority.value,
        "calling_ae": upload.calling_ae[:16], "edge_received_at": upload.edge_received_at,
        "received_at": now_utc(), "late": upload.late,
    }
