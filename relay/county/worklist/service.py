"""Rules of the worklist: who sees which studies, in which order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from relay.county.auth.service import Principal
from relay.county.orders import matching
from relay.county.previews.service import render_notes
from relay.county.sla import SlaPolicy, split_modalities
from relay.county.studies import identity
from relay.county.studies.repository import late_counts
from relay.county.worklist import repository
from relay.county.worklist.repository import Filters
from relay.county.worklist.schemas import WorklistItem
from relay.dicom.vocab import Role


def _additions(n: int) -> list[str]:
    return [f"补传图像 {n} 幅 / {n} instance(s) arrived after the study was forwarded or read"] if n else []


COMMON_MODALITIES = ("CT", "DX", "CR", "MR", "US", "ECG")
"""Always offered in the worklist's modality menu, even with none of them waiting."""


def filter_choices(*, session: Session, principal: Principal) -> tuple[list[str], list[str]]:
    """(townships, modality codes) the worklist's filter menus offer; a technician gets
    only their own township."""
    site_id = principal.site_id if principal.role is Role.TECHNICIAN else None
    if principal.role is Role.TECHNICIAN and site_id is None:
        return [], list(COMMON_MODALITIES)
    sites, lists = repository.choices(session, site_id=site_id)
    waiting = {code for codes in lists for code in split_modalities(codes)}
    return sites, [*COMMON_MODALITIES, *sorted(waiting - set(COMMON_MODALITIES))]


def worklist(*, session: Session, principal: Principal, limit: int = 500, sla: SlaPolicy = SlaPolicy(),
             filters: Filters = Filters(), now: datetime | None = None) -> list[WorklistItem]:
    """Open studies matching ``filters``, STAT first. A technician sees only the studies of
    their own site, whatever the filters say."""
    now = now or datetime.now(UTC)
    site_id = principal.site_id if principal.role is Role.TECHNICIAN else None
    if principal.role is Role.TECHNICIAN and site_id is None:
        return []
    rows: list[Any] = repository.open_items(session, site_id=site_id, limit=limit,
                                            user_id=principal.user_id, filters=filters)
    uids = [row[0].study_uid for row in rows]
    notes = render_notes(session, uids)
    additions = late_counts(session, uids)
    return [
        WorklistItem(
            study_instance_uid=study.study_uid, patient_name=study.patient_name,
            patient_id=patient.patient_id, has_patient_id=identity.is_identified(patient.issuer),
            name_differs=identity.names_differ(study.patient_name, patient.name),
            requested_procedure=(procedure or "") if study.order_match in matching.LINKED else "",
            identity_conflict=study.order_match == matching.MatchKind.CONFLICT,
            identity_flags=matching.flags_of(study),
            modality=study.modalities, site=site.name,
            priority=study.priority, state=study.state, study_date=study.study_date,
            study_time=study.study_time, description=study.description,
            accession_number=study.accession_number, arrived_at=study.created_at,
            queued_at=item.queued_at,
            notes=_additions(additions.get(study.study_uid, 0))
            + [f"无法显示图像 / cannot render: {reason}" for reason in notes.get(study.study_uid, [])],
            assigned_to=holder,
            sla_due_at=(due := sla.due(priority=study.priority, modalities=study.modalities,
                                       arrived=study.created_at)),
            sla_remaining_s=(due - now).total_seconds(),
        )
        for study, patient, site, item, holder, procedure in rows
    ]
