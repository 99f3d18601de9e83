"""JSON shapes of the edge fleet API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class HeartbeatIn(BaseModel):
    """What an edge reports every minute (no patient data)."""

    edge_time: datetime = Field(description="The edge's clock when it sent this (ISO 8601 with zone).")
    spool_instances: int = Field(ge=0, description="Instances acknowledged and not yet at the county.")
    spool_bytes: int = Field(ge=0)
    oldest_unsent_age_s: float | None = Field(None, ge=0)
    goodput_bps: float | None = Field(None, ge=0, description="Bytes per second delivered recently.")
    disk_free_bytes: int | None = Field(None, ge=0)
    version: str = Field(max_length=64)
    last_error: str = Field("", max_length=2000)


class AuditCheckpointOut(BaseModel):
    """The county's newest signed audit checkpoint (relay.county.audit.checkpoint), handed to
    every edge with each heartbeat answer; the edge keeps a copy, so a chain rewritten at the
    county can be checked against it (`relay audit verify --checkpoints FILE`)."""

    format: str
    count: int
    head_id: int
    head_hash: str
    at: str = Field(description="ISO 8601, exactly as signed.")
    key_id: str
    signature: str


class EdgeOut(BaseModel):
    site: str
    display_name: str
    last_heartbeat_at: datetime | None
    silent: bool = Field(description="No heartbeat for longer than the silence threshold (10 minutes).")
    spool_stale: bool = Field(description="The oldest unsent instance has waited longer than "
                                          "RELAY_EDGE_SPOOL_ALARM_MINUTES (default 60).")
    alarms: list[str] = Field(description="What needs a person: 'silent', 'spool_stale'; empty when healthy.")
    clock_offset_s: float | None
    spool_instances: int | None
    spool_bytes: int | None
    oldest_unsent_age_s: float | None
    goodput_bps: float | None
    disk_free_bytes: int | None
    version: str | None
    last_error: str | None
