"""Index one stored instance: patient, study, series rows, and the study onto the queue.

Runs in a Celery task, at least once: every step is an upsert on a natural key, and
an instance already indexed returns at once. The first instance of a study records
the transitions ``arrived`` and ``queued`` and creates the reading item; later
instances only add their series and may raise the study's priority.

``on_new_study`` is called in the same transaction when a study's first instance is
indexed: the worker binds the order matching there (relay.county.orders.matching), which
this domain does not import (orders already depend on studies' patient identity).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from dataclasses import dataclass

from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Instance, Site
from relay.county.events import outbox
from relay.county.events.outbox import Topic
from relay.county.storage import ObjectStore
from relay.county.studies import identity, repository
from relay.dicom.header import InstanceIds, InstanceMeta, InvalidInstance
from relay.dicom.json_header import meta_from_json, read_header
from relay.dicom.sop import is_document
from relay.dicom.vocab import Priority, StudyState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexResult:
    instance_id: int
    study_uid: str
    already_indexed: bool
    new_study: bool
    queued_study_pk: int | None = None
    """The study's primary key when this indexing put it on the reading queue (new, or
    reopened after signing): the caller enqueues its assignment after the commit."""


NewStudyHook = Callable[[Session, int, InstanceMeta | None], None]
"""Called with (session, study pk, the first instance's header) before the new study commits."""


def index_instance(*, session: Session, store: ObjectStore, instance_id: int,
                   on_new_study: NewStudyHook | None = None) -> IndexResult | None:
    """Index instance ``instance_id``; None if no such row (nothing to do)."""
    inst = repository.instance_for_update(session, instance_id)
    if inst is None:
        return None
    if inst.indexed_at is not None:
        session.rollback()
        return IndexResult(instance_id, inst.study_uid, True, False)
    meta, header = _read(session, store, inst)
    site = session.get(Site, inst.site_id)
    assert site is not None
    now = now_utc()
    # A study keeps the patient its first indexed instance named: a later instance never
    # moves it, nor makes another patient row out of its own (perhaps empty) ID.
    patient_pk = (repository.patient_of_study(session, inst.study_uid)
                  or repository.upsert_patient(session, _patient_values(meta, site, inst.study_uid)))
    study_pk, new_study = repository.upsert_study(session, _study_values(meta, inst, patient_pk, now))
    series_pk = repository.upsert_series(session, _series_values(meta, inst, study_pk))
    priority = Priority(inst.priority)
    event: dict[str, object] = {"study_instance_uid": inst.study_uid, "site": site.name, "priority": priority.value,
             "modality": meta.modality if meta else ""}
    if new_study:
        repository.add_transition(session, study_pk=study_pk, state=StudyState.ARRIVED, at=now)
        repository.add_transition(session, study_pk=study_pk, state=StudyState.QUEUED, at=now)
        repository.enqueue_reading(session, study_pk=study_pk, priority_rank=priority.rank, at=now)
        outbox.emit(session, Topic.STUDY_ARRIVED, event)
        queued = True
    else:
        queued = _existing_study(session, inst, study_pk, priority, now, event)
    inst.series_pk, inst.instance_number, inst.indexed_at = series_pk, meta.instance_number if meta else None, now
    repository.put_header(session, instance_pk=inst.id, header=header)
    session.flush()
    modalities = "\\".join(repository.study_modalities(session, study_pk))
    repository.touch_study(session, study_pk=study_pk, modalities=modalities, at=now)
    if new_study and on_new_study is not None:
        on_new_study(session, study_pk, meta)
    session.commit()
    return IndexResult(instance_id, inst.study_uid, False, new_study, study_pk if queued else None)


READ_STATES = (StudyState.ASSIGNED.value, StudyState.READING.value)
SIGNED_STATES = (StudyState.SIGNED.value, StudyState.DELIVERED.value, StudyState.ACKNOWLEDGED.value)


def _existing_study(session: Session, inst: Instance, study_pk: int, priority: Priority, now: datetime,
                    event: dict[str, object]) -> bool:
    """A further instance of a known study: escalate, and never merge it silently into a read.
    True if the study went back onto the reading queue.

    While a reader holds the study it is marked as an addition; once the study is
    signed, it reopens: back on the queue, a transition saying why, an event, and the
    signed report stays as signed (the reader adds an addendum).
    """
    if priority is Priority.STAT and repository.escalate_priority(
            session, study_pk=study_pk, priority=priority.value, rank=priority.rank, at=now):
        outbox.emit(session, Topic.STUDY_ESCALATED, event)
    if is_document(inst.sop_class_uid):
        return False  # reports and documents (ours among them) are not new imaging to read
    state = repository.study_state(session, study_pk)
    if state in READ_STATES or state in SIGNED_STATES:
        inst.late = True
    if state in SIGNED_STATES:
        repository.reopen(session, study_pk=study_pk, at=now)
        repository.add_transition(session, study_pk=study_pk, state=StudyState.QUEUED, at=now,
                                  detail=f"reopened: instance {inst.sop_uid} arrived after the report was signed")
        outbox.emit(session, Topic.STUDY_REOPENED, event)
        return True
    return False


def _read(session: Session, store: ObjectStore, inst: Instance) -> tuple[InstanceMeta | None, str | None]:
    """The decoded header, and its DICOM JSON when it still has to be kept.

    From the header kept at ingest when there is one (no store read, no parse of the
    object); else (an instance ingested before headers were kept, or one whose header
    could not be made) one read and one parse of the stored object. Meta None if the
    header cannot be decoded (the instance is still indexed)."""
    ids = InstanceIds(sop_class_uid=inst.sop_class_uid, sop_uid=inst.sop_uid, study_uid=inst.study_uid,
                      series_uid=inst.series_uid, transfer_syntax_uid=inst.transfer_syntax_uid)
    kept = repository.header_of(session, inst.id)
    if kept is not None:
        try:
            return meta_from_json(kept, ids), None
        except InvalidInstance as exc:
            log.warning("kept header unreadable sop=%s: %s; reading the object", inst.sop_uid, exc)
    try:
        return read_header(store.get(inst.object_key))
    except InvalidInstance as exc:
        log.warning("cannot decode header sop=%s key=%s: %s", inst.sop_uid, inst.object_key, exc)
        return None, None


def _patient_values(meta: InstanceMeta | None, site: Site, study_uid: str) -> dict[str, object]:
    key = identity.patient_key(patient_id=meta.patient_id if meta else "",
                               issuer_of_patient_id=meta.issuer_of_patient_id if meta else "",
                               site_name=site.name, study_uid=study_uid)
    return {
        "patient_id": key.patient_id,
        "issuer": key.issuer,
        "name": (meta.patient_name if meta else "")[:512],
        "birth_date": (meta.patient_birth_date if meta else "")[:8],
        "sex": (meta.patient_sex if meta else "")[:16],
    }


def _study_values(meta: InstanceMeta | None, inst: Instance, patient_pk: int, now: object) -> dict[str, object]:
    return {
        "study_uid": inst.study_uid, "patient_pk": patient_pk, "site_id": inst.site_id,
        "accession_number": (meta.accession_number if meta else "")[:64],
        "study_date": (meta.study_date if meta else "")[:8],
        "study_time": (meta.study_time if meta else "")[:32],
        "description": (meta.study_description if meta else "")[:256],
        "modalities": (meta.modality if meta else "")[:64],
        "patient_name": (meta.patient_name if meta else "")[:512],
        "priority": inst.priority, "state": StudyState.QUEUED.value,
        "created_at": now, "updated_at": now,
    }


def _series_values(meta: InstanceMeta | None, inst: Instance, study_pk: int) -> dict[str, object]:
    return {
        "series_uid": inst.series_uid, "study_pk": study_pk,
        "modality": (meta.modality if meta else "")[:16],
        "series_number": meta.series_number if meta else None,
        "description": (meta.series_description if meta else "")[:256],
        "body_part": (meta.body_part if meta else "")[:64],
    }
