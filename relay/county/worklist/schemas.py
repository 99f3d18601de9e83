"""JSON shapes of the worklist API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class WorklistItem(BaseModel):
    study_instance_uid: str
    patient_name: str = Field(description="This study's own, as decoded with its Specific Character Set (not "
                              "the name first indexed for its patient ID).")
    patient_id: str = Field(description="'' when the study came without a usable Patient ID.")
    has_patient_id: bool = Field(True, description="False: no usable Patient ID, shown as 无患者ID; the study is "
                                 "a patient of its own, never merged with another.")
    name_differs: bool = Field(False, description="The same patient ID + issuer was first indexed under another "
                               "name (a corrected or mistyped name, or another person): readers are warned.")
    requested_procedure: str = Field("", description="申请项目: the linked order's requested procedure; '' "
                                     "without a linked order.")
    identity_conflict: bool = Field(False, description="身份待核对: the study's DICOM identity contradicts its "
                                    "candidate order; it keeps its own identity until an administrator decides.")
    identity_flags: list[str] = Field(default_factory=list, description="The fields that contradict the order "
                                      "(patient_id, name, sex, ...) and notes (name_unverified, order_cancelled).")
    modality: str = Field(description="Modalities in the study, backslash-separated.")
    site: str
    priority: str = Field(description="stat, urgent or routine.")
    state: str
    study_date: str
    study_time: str
    description: str
    accession_number: str
    arrived_at: datetime = Field(description="When the study arrived at the county (UTC).")
    queued_at: datetime = Field(description="When it was put on the reading queue (UTC).")
    sla_due_at: datetime = Field(description="When the report is due: arrival + the SLA of the priority, or of the "
                                 "modality where RELAY_SLA_OVERRIDES sets one (relay.county.sla).")
    sla_remaining_s: float = Field(description="Seconds left until the SLA is breached; negative once breached.")
    assigned_to: str | None = Field(None, description="Username of the reader who holds the study.")
    notes: list[str] = Field(default_factory=list,
                             description="Problems a reader should know, e.g. images that cannot be rendered.")
