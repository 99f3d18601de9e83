"""JSON shapes of the worklist API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class WorklistItem(BaseModel):
    study_instance_uid: str
    patient_name: str = Field(description="As decoded with the study's Specific Character Set.")
    patient_id: str
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
