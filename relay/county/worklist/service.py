"""Rules of the worklist: who sees which studies, in which order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from relay.county.auth.service import Principal
from relay.county.previews.service import render_notes
from relay.county.worklist import repository
from relay.county.worklist.schemas import WorklistItem
from relay.dicom.vocab import Role


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def worklist(*, session: Session, principal: Principal, limit: int = 500) -> list[WorklistItem]:
    """Open studies, STAT first. A technician sees only the studies of their own site."""
    site_id = principal.site_id if principal.role is Role.TECHNICIAN else None
    if principal.role is Role.TECHNICIAN and site_id is None:
        return []
    rows: list[Any] = repository.open_items(session, site_id=site_id, limit=limit)
    notes = render_notes(session, [row[0].study_uid for row in rows])
    return [
        WorklistItem(
            study_instance_uid=study.study_uid, patient_name=patient.name,
            patient_id=patient.patient_id, modality=study.modalities, site=site.name,
            priority=study.priority, state=study.state, study_date=study.study_date,
            study_time=study.study_time, description=study.description,
            accession_number=study.accession_number, arrived_at=_utc(study.created_at),
            queued_at=_utc(item.queued_at),
            notes=[f"无法显示图像 / cannot render: {reason}" for reason in notes.get(study.study_uid, [])],
            assigned_to=holder,
        )
        for study, patient, site, item, holder in rows
    ]
