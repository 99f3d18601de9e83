"""The county's settings: backing services, reading SLA, sessions, audit, keys, metrics."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from relay.config.common import CommonSettings
from relay.dicom.vocab import Priority


class CountySettings(CommonSettings):
    """Configuration of the county API, the workers and the reader portal."""

    # --- county backing services (one URL each) ----------------------------------
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the index, e.g. postgresql+psycopg://relay@db/relay. "
        "Default: SQLite file <data_dir>/county.db (one machine only).",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker, e.g. amqp://guest:guest@127.0.0.1:5672/%2F. Default: "
        "kombu's filesystem transport under <data_dir>/broker (one machine only).",
    )
    store_url: str | None = Field(
        None,
        description="Object store: s3://ACCESS:SECRET@HOST:PORT/BUCKET (add ?secure=1 for "
        "HTTPS) for MinIO/S3, or file:///path. Default: file://<data_dir>/objects.",
    )
    queue_prefix: str = Field(
        "relay",
        description="Prefix of the Celery queue names, so that two deployments (or two "
        "test runs) can share one broker without taking each other's tasks.",
    )

    # --- reading SLA -------------------------------------------------------------
    sla_stat_minutes: float = Field(
        30.0, description="Minutes from arrival at the county to a signed report for a STAT study.")
    sla_urgent_minutes: float = Field(
        120.0, description="Minutes from arrival to a signed report for an urgent study.")
    sla_routine_minutes: float = Field(
        1440.0, description="Minutes from arrival to a signed report for a routine study (a day).")
    sla_overrides: str = Field(
        "", description="Per-modality SLA minutes that replace the priority's, comma separated "
        "'MODALITY:priority=minutes', e.g. 'ECG:stat=10,CT:urgent=60'. Default empty: every "
        "modality has its priority's minutes. Why: a STAT ECG is read in minutes while a STAT MR "
        "takes longer, so one number per priority misstates one of them. A study of several "
        "modalities gets the shortest that applies. Checked at start (see parse_sla_overrides).")

    @field_validator("sla_overrides")
    @classmethod
    def _valid_sla_overrides(cls, value: str) -> str:
        parse_sla_overrides(value)
        return value

    @property
    def sla_override_minutes(self) -> dict[tuple[str, str], float]:
        """(modality, priority) -> minutes, parsed from ``sla_overrides``."""
        return parse_sla_overrides(self.sla_overrides)

    edge_spool_alarm_minutes: float = Field(
        60.0, description="Minutes an instance may wait unsent in an edge's spool before the fleet "
        "view raises an alarm for that edge (a healthy edge forwards within minutes; an hour "
        "means a link or county problem a person should look at).")

    reassign_stat_minutes: float = Field(
        5.0, description="Minutes an assigned STAT study may stay unopened before it goes to another reader.")
    reassign_minutes: float = Field(
        30.0, description="Minutes an assigned urgent or routine study may stay unopened before reassignment.")

    # --- critical results (危急值) -------------------------------------------------
    critical_webhook_url: str | None = Field(
        None, description="URL that receives a JSON POST when a critical report is signed (e.g. an "
        "SMS or WeChat gateway of the township). Identifiers only, no patient data. Default none.")
    critical_escalation_url: str | None = Field(
        None, description="URL that receives a JSON POST when nobody at the township acknowledged a "
        "critical report in time: the county's on-duty lead. The payload names the leads (值班组长) the duty "
        "roster has on duty then (``leads``), or says ``note: no lead on duty``. Default none (the event is "
        "still emitted).")
    critical_escalate_minutes: float = Field(
        15.0, description="Minutes a critical report may stay unacknowledged before it is escalated.")
    outbox_retention_hours: float = Field(
        168.0,
        description="Hours a domain event stays in the county's outbox after it was published "
        "to RabbitMQ (then the worker's event publisher deletes it, in small batches). Default "
        "7 days: room for an integration to look back at what it was sent, while the table "
        "does not grow forever. Unpublished events are never deleted. Negative keeps them all.",
    )

    # --- signed reports to the HIS/EMR (relay.county.his) --------------------------------
    his_mllp: str = Field(
        "", description="host:port of the HIS's MLLP listener that takes each signed report as an HL7 "
        "v2.5 ORU^R01, e.g. 10.0.0.5:2575. Default empty: the HL7 channel is off (no messages made).")
    his_charset: Literal["UNICODE UTF-8", "GB 18030-2000"] = Field(
        "UNICODE UTF-8", description="Character set of the ORU^R01 (MSH-18; the whole message is "
        "encoded in it): 'UNICODE UTF-8' (default) or 'GB 18030-2000' for an HIS that reads only GB18030.")
    his_sending_facility: str = Field(
        "COUNTY", description="MSH-4 Sending Facility of the ORU^R01 (the county hospital as the HIS "
        "names it). Default COUNTY.")
    his_receiving_application: str = Field(
        "HIS", description="MSH-5 Receiving Application of the ORU^R01. Default HIS.")
    his_receiving_facility: str = Field(
        "", description="MSH-6 Receiving Facility of the ORU^R01. Default empty.")
    his_fhir_url: str = Field(
        "", description="Base URL of the HIS's FHIR R4 server; each signed report is PUT to "
        "{url}/DiagnosticReport/{id}. Default empty: the FHIR channel is off.")
    his_fhir_out_token: str = Field(
        "", description="Bearer token sent with each DiagnosticReport PUT (Authorization: Bearer). "
        "Default empty: no Authorization header.")
    his_identifier_system: str = Field(
        "urn:relay:county:report", description="FHIR identifier.system of the county's report ids "
        "(DiagnosticReport.identifier). Default urn:relay:county:report; a county with an OID uses urn:oid:...")
    his_timeout_s: float = Field(
        30.0, gt=0, description="Seconds to connect to the HIS and again to wait for its ACK or HTTP "
        "answer, per attempt (MLLP and FHIR). Default 30: an HIS that takes longer is treated as silent "
        "and the message is sent again later.")
    his_retry_base_s: float = Field(
        30.0, gt=0, description="Seconds before the first retry of a message the HIS did not acknowledge; "
        "doubled after each failed attempt up to his_retry_max_s. Default 30.")
    his_retry_max_s: float = Field(
        3600.0, gt=0, description="Longest wait between two attempts of one message, in seconds. Default "
        "one hour: an HIS down overnight gets the backlog within the hour it is back.")
    his_overdue_minutes: float = Field(
        30.0, gt=0, description="Minutes after which a message still not acknowledged is shown red "
        "(overdue) on the HIS 回传 page. Default 30.")

    @field_validator("his_mllp")
    @classmethod
    def _valid_his_mllp(cls, value: str) -> str:
        if value:
            parse_host_port(value)
        return value

    @property
    def his_mllp_address(self) -> tuple[str, int] | None:
        """(host, port) of ``his_mllp``, None when the HL7 channel is off."""
        return parse_host_port(self.his_mllp) if self.his_mllp else None

    # --- audit checkpoints (the signed anchors of the audit chain) ----------------------
    audit_checkpoint_key_file: Path | None = Field(
        None, description="The county's Ed25519 key that signs audit checkpoints (PEM). Created "
        "with mode 0600 by the first worker that writes a checkpoint; `relay audit verify` reads "
        "it to check the signatures. Keep it OUTSIDE the database's reach (another disk or "
        "account than the DBA's): whoever holds it can re-anchor a rewritten chain. Default "
        "<data_dir>/audit/checkpoint-key.pem.")
    audit_checkpoint_dir: Path | None = Field(
        None, description="Folder where the worker appends every checkpoint it signs, one JSON "
        "line each, to audit-checkpoints.jsonl (choose a place the database's administrators "
        "cannot rewrite: another machine's share, a WORM mount). Edges keep their own copies "
        "from their heartbeat answers. Default <data_dir>/audit.")
    audit_checkpoint_minutes: float = Field(
        5.0, gt=0, description="Minutes between checkpoints, default 5: the newest events a cut "
        "can remove unseen are at most this old. One worker writes per round whatever the "
        "number of workers; a round without new events writes none.")

    # --- county HTTP -------------------------------------------------------------
    county_host: str = Field("127.0.0.1", description="Address the county API binds.")
    county_port: int = Field(8000, description="TCP port of the county API.")
    token_ttl_hours: float = Field(
        12.0,
        description="Lifetime of a bearer token from /api/auth/token, in hours: one "
        "reading shift, so a token left on a shared reading-room PC does not live on.",
    )
    session_idle_minutes: float = Field(
        30.0, gt=0, le=30,
        description="Minutes without a request after which a portal page session (cookie) ends: "
        "a reading-room PC left alone logs itself out. At most 30 (a shared PC showing patient "
        "data; the technician's page has the same limit). Default 30.",
    )
    session_absolute_hours: float = Field(
        12.0,
        description="Hours after login at which a portal page session ends whatever the activity: "
        "one reading shift, like a bearer token. Default 12.",
    )
    session_cookie_secure: bool | None = Field(
        None,
        description="Mark the portal session cookie Secure. Default (unset): Secure exactly when "
        "the request came over HTTPS (behind a proxy, run uvicorn with --proxy-headers).",
    )
    max_instance_bytes: int = Field(
        2 * 1024**3,
        description="Largest single DICOM instance the ingest endpoint accepts, in bytes "
        "(default 2 GiB); larger bodies get 413 instead of exhausting memory.",
    )
    county_keyset_key_file: Path | None = Field(
        None,
        description="PEM file of the county's key-set key, which signs the key set that "
        "`relay keys export` writes (townships pin its fingerprint, `relay keys fingerprint`). "
        "Kept outside the database, made on first use with mode 0600. Default: "
        "<data_dir>/county-keyset-key.pem; in production a place the database's "
        "administrators cannot write.",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token Prometheus must send to scrape /metrics (Authorization: Bearer "
        "<token>; prometheus.yml authorization.credentials_file). Default (unset): /metrics "
        "answers 404, so nothing about the county's traffic is readable without it.",
    )
    # --- orders from the HIS (relay.county.orders) -------------------------------------
    his_mllp_bind: str = Field(
        "127.0.0.1:2575",
        description="host:port the `relay mllp` listener takes HL7 v2 orders and ADT on (MLLP). "
        "Default 127.0.0.1:2575 (2575 is the IANA port for HL7 over MLLP); one process only.",
    )
    his_mllp_max_frame_bytes: int = Field(
        4 * 1024**2,
        description="Largest MLLP frame (one HL7 message) accepted, in bytes (default 4 MiB): "
        "an order is a few KiB; a larger frame is answered AR and the connection closed, so a "
        "stream without an end block cannot exhaust memory.",
    )
    his_mllp_idle_seconds: float = Field(
        300.0,
        description="Seconds an MLLP connection may stay silent before the listener closes it "
        "(default 300): an HIS keeps its connection open between orders; a dead peer's does not "
        "hold a thread forever.",
    )
    his_fhir_token: str | None = Field(
        None,
        description="Bearer token the HIS must send to the FHIR order endpoints (/fhir/...; "
        "Authorization: Bearer <token>). Default (unset): those endpoints answer 404, so no order "
        "can be placed over FHIR without it.",
    )
    api_docs: bool = Field(
        True,
        description="Serve /docs and /openapi.json, to logged-in administrators only (bearer token "
        "or portal session). False: both answer 404. Default True.",
    )

    # --- derived values ------------------------------------------------------------
    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'county.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Folder of the embedded filesystem broker (used only when broker_url is unset)."""
        return (self.data_dir / "broker").resolve()

    @property
    def resolved_store_url(self) -> str:
        if self.store_url:
            return self.store_url
        return f"file://{(self.data_dir / 'objects').resolve()}"

    @property
    def resolved_keyset_key_file(self) -> Path:
        return (self.county_keyset_key_file or self.data_dir / "county-keyset-key.pem").resolve()

    @property
    def audit_checkpoint_key_path(self) -> Path:
        return (self.audit_checkpoint_key_file or self.data_dir / "audit" / "checkpoint-key.pem").resolve()

    @property
    def audit_checkpoint_folder(self) -> Path:
        return (self.audit_checkpoint_dir or self.data_dir / "audit").resolve()

    @property
    def county_base_url(self) -> str:
        return f"http://{self.county_host}:{self.county_port}"


_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")


def parse_sla_overrides(text: str) -> dict[tuple[str, str], float]:
    """'ECG:stat=10,CT:urgent=60' -> {("ECG", "stat"): 10.0, ("CT", "urgent"): 60.0}.

    Modalities are DICOM codes (case-insensitive), priorities stat/urgent/routine, minutes
    a positive number. Anything else raises ValueError naming the entry, so a typo stops
    the start instead of silently keeping the default deadline."""
    out: dict[tuple[str, str], float] = {}
    priorities = [p.value for p in Priority]
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        modality, _, rest = raw.partition(":")
        priority, _, number = rest.partition("=")
        key = (modality.strip().upper(), priority.strip().lower())
        try:
            minutes = float(number)
        except ValueError:
            minutes = math.nan
        if not _MODALITY.match(key[0]) or key[1] not in priorities or not 0 < minutes < math.inf:
            raise ValueError(f"RELAY_SLA_OVERRIDES entry {raw!r} is not MODALITY:priority=minutes with "
                             f"priority one of {'/'.join(priorities)} and minutes > 0, e.g. 'ECG:stat=10'")
        if key in out:
            raise ValueError(f"RELAY_SLA_OVERRIDES gives {key[0]}:{key[1]} twice")
        out[key] = minutes
    return out


def parse_host_port(text: str) -> tuple[str, int]:
    """'10.0.0.5:2575' -> ("10.0.0.5", 2575); ValueError naming the setting otherwise."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"RELAY_HIS_MLLP {text!r} is not host:port, e.g. 10.0.0.5:2575")
    return host.strip("[]"), int(port)
