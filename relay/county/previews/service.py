"""Render one stored instance after indexing: thumbnail, ECG numbers, or a "cannot render" note.

Runs in a Celery task on the ``render`` queue, at least once: the result row is
unique per instance and the thumbnail key is deterministic, so a second run returns
early. A failure to render is a result, not an error: the study still reaches the
reader, with the note. An ECG's thumbnail is its paper, made small.

:func:`thumbnail_of` serves those thumbnails (WADO-RS /thumbnail), rendering on request
what has none stored (not rendered yet, or rendered before ECGs had thumbnails).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from relay.county.clock import now_utc
from relay.county.db.models import Instance, RenderResult
from relay.county.db.upsert import insert_ignore
from relay.county.render.ecg import ecg_measurements, ecg_thumbnail
from relay.county.render.errors import RenderError, RenderFailure
from relay.county.render.image import thumbnail
from relay.county.storage import ObjectNotFound, ObjectStore
from relay.dicom.sop import is_document, is_waveform

log = logging.getLogger(__name__)


def _render_thumbnail(inst: Instance, data: bytes) -> bytes:
    """A JPEG thumbnail of ``data``: an ECG's paper, else the image's middle frame."""
    return ecg_thumbnail(data) if is_waveform(inst.sop_class_uid) else thumbnail(data)


def _thumbnail_values(store: ObjectStore, inst: Instance, data: bytes) -> dict[str, object]:
    jpeg = _render_thumbnail(inst, data)
    key = f"derived/{inst.sop_uid}/{inst.sha256}/thumbnail.jpg"
    store.put(key, jpeg, sha256=hashlib.sha256(jpeg).hexdigest())
    return {"thumbnail_key": key}


def _ecg_values(data: bytes) -> dict[str, object]:
    m = ecg_measurements(data)
    return {"ecg_json": json.dumps({
        "heart_rate_bpm": m.heart_rate_bpm, "rr_ms": m.rr_ms, "lead": m.lead,
        "device": dataclasses.asdict(m.device)}, ensure_ascii=False, default=str)}


def render_instance(*, session: Session, store: ObjectStore, instance_id: int) -> RenderResult | None:
    """Render ``instance_id`` once; None if it does not exist or has nothing to render."""
    inst = session.get(Instance, instance_id)
    if inst is None or is_document(inst.sop_class_uid):  # nothing to render, and no note
        return None
    done = session.execute(select(RenderResult).where(RenderResult.instance_pk == instance_id)).scalar_one_or_none()
    if done is not None and done.failure_kind == RenderFailure.GAVE_UP.value:
        session.delete(done)  # an administrator retried the dead letter: render for real
        session.flush()
    elif done is not None:
        return done
    data = store.get(inst.object_key)
    values: dict[str, object] = {"instance_pk": inst.id, "study_uid": inst.study_uid, "ok": True,
                                 "rendered_at": now_utc()}
    try:
        values.update(_ecg_values(data) if is_waveform(inst.sop_class_uid) else {})
        values.update(_thumbnail_values(store, inst, data))
    except RenderError as exc:
        log.warning("cannot render sop=%s kind=%s: %s", inst.sop_uid, exc.kind.value, exc)
        values.update(ok=False, failure_kind=exc.kind.value, failure_reason=str(exc)[:512])
    insert_ignore(session, RenderResult, values, keys=["instance_pk"])
    session.commit()
    return session.execute(select(RenderResult).where(RenderResult.instance_pk == instance_id)).scalar_one()


def thumbnail_of(*, session: Session, store: ObjectStore, instance: Instance) -> bytes:
    """The instance's thumbnail JPEG: the one rendering stored, else rendered now (not
    stored: the render task owns that). Raises :class:`RenderError` when it cannot render."""
    key = session.execute(select(RenderResult.thumbnail_key)
                          .where(RenderResult.instance_pk == instance.id)).scalar_one_or_none()
    if key:
        try:
            return store.get(key)
        except ObjectNotFound:
            log.warning("stored thumbnail missing sop=%s key=%s; rendering it", instance.sop_uid, key)
    return _render_thumbnail(instance, store.get(instance.object_key))


def record_given_up(*, session: Session, instance_id: int, attempts: int) -> None:
    """Rendering was dead-lettered: leave a "cannot render" note for the reader (once; a
    result already there stays). The caller commits."""
    inst = session.get(Instance, instance_id)
    if inst is None or is_document(inst.sop_class_uid):
        return
    insert_ignore(session, RenderResult, {
        "instance_pk": inst.id, "study_uid": inst.study_uid, "ok": False, "rendered_at": now_utc(),
        "failure_kind": RenderFailure.GAVE_UP.value,
        "failure_reason": f"rendering failed {attempts} times and was stopped; an administrator can retry it"},
        keys=["instance_pk"])
    log.error("render gave up sop=%s after %d attempts", inst.sop_uid, attempts)


def render_notes(session: Session, study_uids: list[str]) -> dict[str, list[str]]:
    """Per study, the reasons its instances cannot be rendered (for the worklist)."""
    rows = session.execute(select(RenderResult.study_uid, RenderResult.failure_reason)
                           .where(RenderResult.study_uid.in_(study_uids), RenderResult.ok.is_(False)))
    notes: dict[str, list[str]] = {}
    for study_uid, reason in rows:
        notes.setdefault(study_uid, []).append(reason)
    return notes
