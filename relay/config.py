"""Settings for every relay process, read once in the entry point and passed down.

Values come from environment variables prefixed ``RELAY_`` and, optionally, from a
TOML file named by ``RELAY_CONFIG``. Every field says its unit, default and why.
No other module reads ``os.environ``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from relay.dicom.vocab import Priority


class Settings(BaseSettings):
    """All configuration of the edge, the county API and the workers."""

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore")

    # --- shared -----------------------------------------------------------------
    data_dir: Path = Field(
        Path("./var"),
        description="Folder for all embedded-default state (SQLite files, local object "
        "folder, edge spool, embedded broker). Default ./var, so that `relay users "
        "create` run in the same directory sees the database `relay up` uses.",
    )
    log_level: str = Field("INFO", description="Python log level name.")
    timezone: str = Field(
        "Asia/Shanghai",
        description="Zone in which times are shown; everything is stored in UTC.",
    )

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
        60.0,
        description="Minutes without a request after which a portal page session (cookie) ends: "
        "a reading-room PC left alone logs itself out. Default 60.",
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
    login_max_failures: int = Field(
        5, description="Wrong passwords in a row after which a login is locked (guessing defence).")
    login_lockout_minutes: float = Field(
        15.0, description="Minutes a login stays locked after too many wrong passwords.")
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
    county_keyset_pin: str | None = Field(
        None,
        description="At a township: the fingerprint (sha256:…) of the county's key-set key, "
        "pinned once, against which `relay verify-report --keys KEYSET` checks the key set; "
        "`--pin` overrides it.",
    )
    metrics_token: str | None = Field(
        None,
        description="Bearer token Prometheus must send to scrape /metrics (Authorization: Bearer "
        "<token>; prometheus.yml authorization.credentials_file). Default (unset): /metrics "
        "answers 404, so nothing about the county's traffic is readable without it.",
    )
    api_docs: bool = Field(
        True,
        description="Serve /docs and /openapi.json, to logged-in administrators only (bearer token "
        "or portal session). False: both answer 404. Default True.",
    )

    # --- edge --------------------------------------------------------------------
    edge_host: str = Field("127.0.0.1", description="Address the edge DICOM SCP binds.")
    edge_port: int = Field(11112, description="TCP port of the edge DICOM SCP.")
    edge_ae_title: str = Field("RELAY_EDGE", description="AE title of the edge SCP.")
    edge_site: str = Field(
        "demo-township", description="Name of this township site, as registered at the county."
    )
    edge_site_token: str | None = Field(
        None,
        description="Credential issued by the county for this site (`relay sites create`). "
        "Required to forward.",
    )
    county_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL of the county API the edge forwards to. Use https:// in "
        "production: the site credential and patient data cross the WAN.",
    )
    edge_county_ca_file: Path | None = Field(
        None,
        description="PEM file of the CA that signed the county's HTTPS certificate, when it "
        "is a private CA (a 医共体 intranet); default: the system's CAs. Verification is "
        "never switched off.",
    )
    edge_heartbeat_s: float = Field(
        60.0,
        description="Seconds between heartbeats to the county (spool depth, oldest unsent, "
        "goodput, disk, version, clock); the county calls an edge silent after 10 minutes.",
    )
    edge_max_pdu: int = Field(
        4 * 1024 * 1024, ge=4096, le=64 * 1024 * 1024,
        description="Maximum P-DATA-TF PDU length the edge SCP advertises and accepts, in "
        "bytes; a longer PDU aborts the association before it is read. Default 4 MiB: a CT "
        "or MR slice still fits one PDU (per-PDU overhead stays negligible) while each "
        "association's read buffer is bounded. 4096-64 MiB; 'unlimited' (0) is no longer "
        "offered, because it let any peer make the edge allocate 256 MiB per PDU.",
    )
    edge_network_timeout: float = Field(
        60.0, description="Seconds of silence on an association before the edge aborts it."
    )
    edge_acse_timeout_s: float = Field(
        30.0,
        description="Seconds the edge waits for association messages (request, release); "
        "a connection that sent garbage holds an association slot this long "
        "(pynetdicom's default, 30).",
    )
    edge_dimse_timeout_s: float = Field(
        60.0, gt=0,
        description="Seconds the edge waits for the rest of a DIMSE message it has begun to "
        "receive (a C-STORE's dataset after its command, the next fragment); longer and the "
        "association is aborted, the instance unanswered (the sender retries it). pynetdicom's "
        "30 doubled for slow township links and large instances. Idle time between messages "
        "is edge_network_timeout.",
    )
    edge_max_associations: int = Field(
        16, ge=1,
        description="Concurrent connections the edge serves, each with its thread (a "
        "connection holds its place from its first byte, also before it associates); more "
        "are answered A-ASSOCIATE-RJ transient (local limit exceeded) by one shared thread, "
        "without one of their own. A township has a handful of modalities; 16 bounds threads "
        "and memory on a small PC.",
    )
    edge_allowed_aes: str = Field(
        "",
        description="Calling AE titles allowed to associate, comma separated, each "
        "optionally pinned to a source address: 'CT01@192.168.1.20,DR01,ECG1@10.0.0.5'. "
        "Empty (the default, for first setup) accepts any AE and logs a warning at start. "
        "AE titles are not authentication: they only stop misdirected sends.",
    )
    edge_min_free_bytes: int = Field(
        1024**3,
        description="Free bytes the spool's file system must keep; below it the edge "
        "answers C-STORE with 0xA700 (out of resources) before writing and raises an "
        "alarm. Default 1 GiB: room for the journal, logs and the OS on a small PC, and "
        "for instances already in flight. 0 disables the byte watermark.",
    )
    edge_spool_slots: int = Field(
        256,
        ge=0,
        description="Spool files the edge makes ahead of time (a background thread, never "
        "below edge_min_free_bytes), so that storing an instance is one data flush instead of "
        "creating a file: ~0.6 ms instead of ~2 ms per 512 KB CT slice on the virtual disk "
        "the project is measured on (relay.edge.slots; bench.slots_ab). Default 256: one typical CT series "
        "(256 MiB of disk with the default slot size); a longer burst uses new files for the "
        "rest while the pool refills. 0 turns the pool off.",
    )
    edge_spool_slot_kib: int = Field(
        1024,
        ge=64,
        description="Size of one ahead-of-time spool file, KiB. Instances larger than this "
        "(DX/CR, multi-frame) are written as new files, where the flush is a small part of "
        "their cost. Default 1 MiB: a 512x512 CT or MR slice with its header.",
    )
    edge_min_free_percent: float = Field(
        0.0,
        description="Free share of the spool's file system (0-100) the edge must keep, in "
        "addition to edge_min_free_bytes; 0 (default) disables it.",
    )
    edge_study_quiet_s: float = Field(
        60.0,
        description="Seconds without a new instance after which a routine study is "
        "ready to forward. Default 60: a modality sends a series back to back (ms apart) "
        "and the next series of the same exam within a minute, so a minute of silence "
        "means the exam is sent, and a minute is nothing against a routine read (hours).",
    )
    edge_study_stat_quiet_s: float = Field(
        5.0,
        description="Quiet seconds for a STAT study: short, because minutes count and a "
        "late instance still goes as an addition. Default 5.",
    )
    edge_study_max_wait_s: float = Field(
        600.0,
        description="Seconds after a study's first instance after which it is forwarded "
        "even if instances still trickle in (later ones go as additions). Default 600 "
        "(10 min): caps the delay a slow or stuck modality can add.",
    )
    edge_stat_rules: str = Field(
        "",
        description="Rules that make a study STAT, comma separated 'key=value' with key "
        "modality or ae, e.g. 'modality=ECG,ae=ER_CT'. Default empty: only C-STORE "
        "priority HIGH and the technician's button make a study STAT.",
    )
    edge_status_host: str = Field(
        "127.0.0.1",
        description="Address of the technician's status page; loopback by default because "
        "the page shows patient names. Another address (the township LAN) needs TLS "
        "(edge_status_tls_cert) and edge_status_allowed_hosts; without TLS the edge logs a "
        "security warning at start.",
    )
    edge_status_allowed_hosts: str = Field(
        "",
        description="Host names and addresses the page answers to (the browser's Host header), "
        "comma separated, e.g. 'edge-a.local,192.168.1.10'; any other Host gets 421, which "
        "defeats DNS rebinding. Default empty: the bind address plus localhost, 127.0.0.1 and ::1.",
    )
    edge_status_tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) for HTTPS on the technician's page; with it the "
        "session cookie is Secure. Default none: plain HTTP, fine on loopback only.",
    )
    edge_status_tls_key: Path | None = Field(None, description="PEM private key of edge_status_tls_cert.")
    edge_status_session_idle_minutes: float = Field(
        30.0, gt=0, le=30,
        description="Minutes without a click after which a technician's page login ends (the "
        "page's own 10 s refresh does not count). At most 30: the PC at a township desk is "
        "shared. Default 30.",
    )
    edge_technicians_poll_s: float = Field(
        300.0, gt=0,
        description="Seconds between fetches of this site's technician logins from the county "
        "(GET /api/edges/technicians; unchanged lists cost a 304). The copy is kept on disk, so "
        "login works while the WAN is down. Default 5 min: a new or disabled account reaches "
        "the township within minutes.",
    )
    edge_ack_retry_s: float = Field(
        15.0, gt=0,
        description="Seconds between attempts to deliver journaled acknowledgements to the county "
        "while it cannot be reached (a new acknowledgement is sent at once). Default 15, like "
        "the report poll.",
    )
    edge_status_port: int = Field(
        8081,
        description="TCP port of the technician's status page (http://127.0.0.1:8081). "
        "-1 disables the page; 0 picks a free port (tests).",
    )
    edge_tls_cert: Path | None = Field(
        None,
        description="PEM certificate (chain) for DICOM TLS on the modality side (PS3.15 B.1). "
        "Default none: plain DICOM, as most township modalities speak. With it set, the edge "
        "accepts only TLS associations.",
    )
    edge_tls_key: Path | None = Field(None, description="PEM private key of edge_tls_cert.")
    edge_tls_client_ca: Path | None = Field(
        None,
        description="PEM CA bundle: when set, a modality must present a certificate signed by "
        "it (mutual TLS), which is real authentication, unlike calling AE titles.",
    )
    edge_report_destinations: str = Field(
        "",
        description="Where signed reports go at the township, comma-separated AE@host:port "
        "(e.g. TOWNPACS@127.0.0.1:4242). Empty: reports are kept at the edge and shown on the "
        "technician's page only.",
    )
    edge_report_poll_s: float = Field(
        15.0, gt=0, description="Seconds between checks for new signed reports at the county; "
        "also the first retry delay of a report step that failed (fetch, store at one "
        "destination, confirm).")
    edge_report_retry_max_s: float = Field(
        300.0, gt=0,
        description="Longest wait, in seconds, before a failed report step is tried again "
        "(each report and destination backs off on its own, doubling from edge_report_poll_s). "
        "Default 5 min: a PACS that was down gets its reports within minutes of coming back, "
        "while a long outage costs one connection attempt per round.")
    edge_retention_hours: float = Field(
        72.0,
        description="Hours an instance's file stays in the edge spool after the county "
        "confirmed it (then deleted; its journal row stays). Default 3 days: room to "
        "re-examine a transfer, while a busy township's disk does not fill. Negative keeps "
        "files forever.",
    )
    forward_retry_min: float = Field(
        1.0, description="First retry delay after a failed upload, in seconds."
    )
    forward_retry_max: float = Field(
        300.0,
        description="Longest retry delay, in seconds. Uploads are retried forever: an "
        "acknowledged instance is never given up.",
    )
    forward_timeout: float = Field(
        120.0,
        description="Seconds an upload may wait on each step (connect, each read, each "
        "write) before it is abandoned and retried; httpx applies it per step, not to the "
        "whole request, so a slow but moving upload is not cut off.",
    )
    forward_streams: int = Field(
        2, ge=1, le=16,
        description="Bundles uploaded at once (parallel HTTP streams), default 2: while one "
        "stream waits a round trip for a chunk's answer or a bundle's completion, the other "
        "keeps the link busy. More rarely helps on one township line.",
    )
    forward_chunk_bytes: int = Field(
        4 * 1024 * 1024, ge=64 * 1024, le=8 * 1024 * 1024,
        description="Bytes per PATCH chunk of a bundle upload, default 4 MiB (at most the "
        "wire's 8 MiB). A cut re-sends at most one chunk, and a STAT bundle waits behind at "
        "most one routine chunk (4 MiB is ~1.7 s at 20 Mbit/s): lower it on slow links.",
    )
    forward_bundle_max_bytes: int = Field(
        32 * 1024 * 1024, ge=1,
        description="Raw (before compression) instance bytes per bundle, default 32 MiB: big "
        "enough that the two round trips per bundle (create, complete) cost < 2 % of the "
        "transfer at 20 Mbit/s, small enough to rebuild quickly after a 422. An instance "
        "larger than this travels alone.",
    )
    forward_bundle_max_instances: int = Field(
        1000, ge=1,
        description="Instances per bundle, default 1000: bounds the JSON of the create "
        "request and the county's per-bundle work when instances are tiny (ECGs, SR).",
    )
    forward_encoding: str = Field(
        "zstd", pattern="^(zstd|identity)$",
        description="Bundle encoding on the wire: 'zstd' (default; lossless, bit-exact, "
        "~2.3x on CT) or 'identity' (for already-compressed transfer syntaxes or a CPU-starved "
        "edge PC).",
    )
    forward_rate_limit_bps: float | None = Field(
        None, gt=0,
        description="Upload cap for the whole site, in bits per second, shared by all "
        "streams; default none (unlimited). Set it so the township's own traffic (HIS, "
        "video consults) keeps a share of the line.",
    )
    forward_routine_window: str | None = Field(
        None, pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="Local time window 'HH:MM-HH:MM' (in `timezone`; may wrap midnight, e.g. "
        "'22:00-06:00') outside which routine bundles are not sent; STAT and urgent always "
        "go. Default none: routine goes any time.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("RELAY_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

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
    def edge_spool_dir(self) -> Path:
        return (self.data_dir / "edge").resolve()

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


def load_settings(**overrides: Any) -> Settings:
    """Build the settings once, in an entry point."""
    return Settings(**overrides)
