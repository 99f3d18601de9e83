"""Routes a township edge uses to take its signed reports home (site credential)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from relay.county.audit.service import Action, Entry, append
from relay.dicom.vocab import Role

from relay.county.auth.deps import CountyDep, SessionDep, SiteDep
from relay.county.errors import NotFound
from relay.county.reports import delivery

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/edges/reports", tags=["edges"])

MEDIA = {"signed": "application/json", "sr": "application/dicom", "encapsulated_pdf": "application/dicom",
         "pdf": "application/pdf"}


class PendingReport(BaseModel):
    delivery_id: int
    study_instance_uid: str
    revision: int
    kind: str
    critical: bool = Field(description="危急值: the technician must be alerted at once.")
    reader: str
    signed_at: datetime
    objects: list[str] = Field(description="Names to fetch: signed, sr, encapsulated_pdf, pdf.")


class DeliveredIn(BaseModel):
    detail: str = Field("", max_length=500, description="Where it went, e.g. 'TOWNPACS@10.1.2.3:104'.")


class AcknowledgedIn(BaseModel):
    by: str = Field(min_length=1, max_length=128,
                    description="Username of the technician of this site who acknowledged it (logged in on the "
                    "edge's page).")
    at: datetime | None = Field(None, description="When the technician acknowledged it, by the edge's clock "
                                "(the edge may deliver it hours later, after a WAN outage); default: now.")


@router.get("", response_model=list[PendingReport])
def pending(site: SiteDep, session: SessionDep) -> list[PendingReport]:
    """This site's signed reports not yet confirmed delivered, critical ones first."""
    return [PendingReport(delivery_id=d.id, study_instance_uid=s.study_uid, revision=r.revision, kind=r.kind,
                          critical=r.critical, reader=user,
                          signed_at=r.signed_at or datetime.now(UTC),
                          objects=sorted(json.loads(d.object_keys_json)))
            for d, r, s, user in delivery.pending_for_site(session, site)]


@router.get("/{delivery_id}/objects/{name}")
def fetch_object(delivery_id: int, name: str, site: SiteDep, session: SessionDep, county: CountyDep) -> Response:
    """One object of a delivery: the signed JSON, the SR, the Encapsulated PDF or the PDF."""
    found, _, _ = delivery.owned(session, site, delivery_id)
    key = json.loads(found.object_keys_json).get(name)
    if key is None:
        raise NotFound(f"delivery {delivery_id} has no {name}")
    return Response(county.store.get(key), media_type=MEDIA.get(name, "application/octet-stream"))


@router.post("/{delivery_id}/delivered", status_code=204, response_class=Response)
def delivered(delivery_id: int, body: DeliveredIn, site: SiteDep, session: SessionDep) -> Response:
    """The edge stored the report at the township (idempotent)."""
    delivery.mark_delivered(session=session, site=site, delivery_id=delivery_id, detail=body.detail)
    return Response(status_code=204)


@router.post("/{delivery_id}/acknowledged", status_code=204, response_class=Response)
def acknowledged(delivery_id: int, body: AcknowledgedIn, site: SiteDep, session: SessionDep,
                 county: CountyDep, request: Request) -> Response:
    """A technician of the site saw or printed the report (idempotent: the first one counts,
    and only it is audited). 422 if ``by`` is not a technician of this site."""
    acknowledgement = delivery.mark_acknowledged(session=session, site=site, delivery_id=delivery_id, by=body.by,
                                                 at=body.at)
    if acknowledgement.first:
        append(county.sessions, Entry(
            actor=body.by, role=Role.TECHNICIAN.value, action=Action.REPORT_ACKNOWLEDGE, object_type="study",
            object_id=acknowledgement.study_uid, source=f"site:{site.name}",
            detail=f"delivery={delivery_id} revision={acknowledgement.revision} "
                   f"critical={acknowledgement.critical} at={acknowledgement.at.isoformat()}"))
        log.info("report acknowledged delivery=%d site=%s critical=%s", delivery_id, site.name,
                 acknowledgement.critical)
    return Response(status_code=204)
