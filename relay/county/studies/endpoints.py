"""GET /api/studies/{uid}/priors: the same patient's other studies, across townships."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import select

from relay.county.auth.deps import PrincipalDep, SessionDep
from relay.county.db.models import Patient, Site, Study
from relay.county.errors import NotFound
from relay.county.studies import identity
from relay.dicom.vocab import Role

router = APIRouter(prefix="/api/studies", tags=["studies"])


class PriorOut(BaseModel):
    study_instance_uid: str
    study_date: str
    modality: str
    description: str
    site: str
    state: str
    arrived_at: datetime
    patient_name: str = Field(description="Patient's Name as this study carries it (DICOM PN).")


class PriorsOut(BaseModel):
    patient_id: str = Field(description="'' when the study came without a usable Patient ID (shown as 无患者ID).")
    issuer: str = Field(description="Issuer of Patient ID; 'site:NAME' when the township gave none, "
                        "in which case priors are found within that township only; '' without a Patient ID.")
    has_patient_id: bool = Field(description="False for a study without a usable Patient ID: a patient of its "
                                 "own, never linked to another study, so it has no priors.")
    patient_name: str = Field(description="The patient's name as first indexed for this ID and issuer.")
    study_patient_name: str = Field(description="The name this study carries; differs from patient_name (or "
                                    "from a prior's) when a name was corrected or mistyped: readers are warned.")
    priors: list[PriorOut] = Field(description="Newest first, the study itself excluded.")


@router.get("/{study_uid}/priors", response_model=PriorsOut)
def priors(study_uid: str, principal: PrincipalDep, session: SessionDep) -> PriorsOut:
    """The patient's other studies (same patient ID and issuer), from every township."""
    row = session.execute(select(Study, Patient).join(Patient, Patient.id == Study.patient_pk)
                          .where(Study.study_uid == study_uid)).one_or_none()
    if row is None or (principal.role is Role.TECHNICIAN and row[0].site_id != principal.site_id):
        raise NotFound(f"no study {study_uid}")
    study, patient = row
    if not identity.is_identified(patient.issuer):
        return PriorsOut(patient_id="", issuer="", has_patient_id=False, patient_name=study.patient_name,
                         study_patient_name=study.patient_name, priors=[])
    stmt = (select(Study, Site.name).join(Site, Site.id == Study.site_id)
            .where(Study.patient_pk == patient.id, Study.id != study.id)
            .order_by(Study.study_date.desc(), Study.created_at.desc()))
    if principal.role is Role.TECHNICIAN:
        stmt = stmt.where(Study.site_id == principal.site_id)
    return PriorsOut(patient_id=patient.patient_id, issuer=patient.issuer, has_patient_id=True,
                     patient_name=patient.name,
                     study_patient_name=study.patient_name, priors=[
        PriorOut(study_instance_uid=s.study_uid, study_date=s.study_date, modality=s.modalities,
                 description=s.description, site=site, state=s.state,
                 arrived_at=s.created_at, patient_name=s.patient_name)
        for s, site in session.execute(stmt).all()])
