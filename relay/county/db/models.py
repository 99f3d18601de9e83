"""Tables of the county index.

Natural keys carry unique constraints (SOP/Series/Study Instance UID, site name,
patient ID + issuer): idempotency rests on them, not on isolation levels. All times
are UTC (``DateTime(timezone=True)``).
"""

from __future__ import annotations

from datetime import date, datetime, time, timezone
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UID = String(64)
SHA256 = String(64)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware (UTC).

    PostgreSQL does this itself; SQLite, the embedded default, hands back naive values.
    Normalising here, once, spares every reader of a timestamp a special case.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column; use an aware one")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


UTC = UtcDateTime()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Site(Base):
    """A township hospital whose edge may upload; its credential is stored hashed."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    token_sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
    revoked_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)


class User(Base):
    """A person who logs in: administrator, reader or township technician."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(128), unique=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(32))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), nullable=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UTC)
    disabled_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    competences: Mapped[str] = mapped_column(String(256), default="", server_default=text("''"))
    """Modalities the reader reads, comma-separated (e.g. "CT,DX,ECG"); empty: all."""
    body_regions: Mapped[str] = mapped_column(String(256), default="", server_default=text("''"))
    """Body regions the reader reads, as BodyPartExamined names them, comma-separated (e.g.
    "HEAD,NECK"); empty: all. A study whose series name no body part needs none (0021)."""
    on_duty: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """Whether automatic assignment gives the reader studies now."""
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    """Wrong passwords in a row; reset by a successful login."""
    locked_until: Mapped[datetime | None] = mapped_column(UTC, nullable=True)


class ApiToken(Base):
    """A bearer token issued at login, stored as its SHA-256 so a database leak is not a login."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
    expires_at: Mapped[datetime] = mapped_column(UTC)


class PortalSession(Base):
    """A browser's login to the portal pages. The HttpOnly cookie holds a random id; the row
    holds only its SHA-256, so a database leak is not a login. ``csrf_token`` is the
    synchronizer token the pages send back in ``X-CSRF-Token`` (useless without the cookie)."""

    __tablename__ = "portal_sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
    last_seen_at: Mapped[datetime] = mapped_column(UTC)
    """Last request with this session (written at most once a minute): idle expiry counts from here."""
    expires_at: Mapped[datetime] = mapped_column(UTC)
    """Absolute end, whatever the activity."""


class Patient(Base):
    """A patient as one issuer of patient IDs knows them (a township's own ID namespace)."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("patient_id", "issuer", name="uq_patients_id_issuer"),
        # QIDO-RS PatientName wildcards (LIKE '王%', '%=王%'): trigrams, PostgreSQL only (0017)
        Index("ix_patients_name_trgm", "name", postgresql_using="gin",
              postgresql_ops={"name": "gin_trgm_ops"}).ddl_if(dialect="postgresql"),
        # a name search walking the studies reads each one's patient name from here (0017)
        Index("ix_patients_id_name", "id", "name"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(512), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    merged_into_pk: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), nullable=True)
    """Set when the HIS merged this patient ID into another (HL7 ADT^A40): the row stays for
    the trail, its orders and studies moved to the surviving patient (migration 0029)."""


class Study(Base):
    """One study, as the county index knows it; ``state`` is the latest transition."""

    __tablename__ = "studies"
    # QIDO-RS lists newest first (study_date DESC, id DESC) with a limit: walked backwards,
    # this index answers that without sorting every study, and serves StudyDate ranges;
    # patient_pk in it lets a PatientName walk check names without reading study rows.
    # A PatientName search matching few patients orders their studies from
    # (patient_pk, study_date, id) alone (index-only scans; migration 0017).
    __table_args__ = (Index("ix_studies_study_date_id_patient_pk", "study_date", "id", "patient_pk"),
                      Index("ix_studies_patient_pk_study_date", "patient_pk", "study_date", "id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(256), default="")
    modalities: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(512), default="", server_default=text("''"))
    """The Patient's Name as this study's first indexed instance carried it. The patient row keeps
    the first name seen for the patient ID + issuer; a later study with another (e.g. corrected)
    name keeps its own here, so readers are warned instead of the difference vanishing. A study
    linked to its order shows the order's (HIS) name here instead, with ``patient_pk`` the
    order's patient; the stored DICOM keeps its own (relay.county.orders.matching)."""
    priority: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(UTC, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTC)
    # TAT milestones: the first transition into each state (edge: the earliest instance the
    # edge received). Kept by database triggers on study_transitions and instances
    # (migration 0018), so the dashboards aggregate one row per study; see relay.county.tat.
    tat_edge_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_arrived_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_assigned_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_reading_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_signed_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_delivered_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_acknowledged_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    tat_reader: Mapped[str | None] = mapped_column(String(128), nullable=True)
    """Who signed first (the actor of the first ``signed`` transition)."""
    order_pk: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, index=True)
    """The order (申请单) this study was done for; with ``order_match = conflict`` only the
    candidate the administrator must decide on (relay.county.orders.matching)."""
    order_match: Mapped[str] = mapped_column(String(16), default="", server_default=text("''"))
    """How ``order_pk`` was found: "" (not tried / none), accession, uid, demographics, manual,
    conflict (DICOM identity contradicts the order: on the reconciliation list), split (an
    administrator said it is not this order; never matched automatically again)."""
    order_conflict: Mapped[str] = mapped_column(Text, default="", server_default=text("''"))
    """JSON list of the fields that contradict the order (patient_id, name, sex, ...) and notes
    (name_unverified, order_cancelled): relay.county.orders.identity_check.Flag."""


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")


class Instance(Base):
    """One instance the county holds. Row written at ingest; ``indexed_at`` set by the worker."""

    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID, unique=True)
    sha256: Mapped[str] = mapped_column(SHA256)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    series_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID, default="")
    object_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    priority: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    edge_received_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTC)
    series_pk: Mapped[int | None] = mapped_column(ForeignKey("series.id"), nullable=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    indexed_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    late: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """Arrived after its study was forwarded (the edge says so) or read: an addition."""


class QuarantinedInstance(Base):
    """Bytes that arrived under a SOP Instance UID the county already holds with other bytes."""

    __tablename__ = "quarantined_instances"
    __table_args__ = (UniqueConstraint("sop_uid", "sha256", name="uq_quarantine_uid_sha"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(UID)
    sha256: Mapped[str] = mapped_column(SHA256)
    object_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"))
    received_at: Mapped[datetime] = mapped_column(UTC)


class StudyTransition(Base):
    """One state change of a study; turnaround times are computed from these rows."""

    __tablename__ = "study_transitions"
    __table_args__ = (Index("ix_study_transitions_study_at", "study_pk", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTC)
    actor: Mapped[str] = mapped_column(String(128), default="")
    detail: Mapped[str] = mapped_column(Text, default="")


class ReadingItem(Base):
    """A study's place on the reading queue: one per study."""

    __tablename__ = "reading_items"
    __table_args__ = (Index("ix_reading_items_rank_queued", "priority_rank", "queued_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    priority_rank: Mapped[int] = mapped_column(Integer)
    queued_at: Mapped[datetime] = mapped_column(UTC)
    assigned_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    assigned_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)


class DutyShift(Base):
    """One line of the duty roster (值班表), in the county's local time (``Settings.timezone``).

    Either weekly (``weekday`` 0 = Monday … 6 = Sunday, every week) or on one date
    (``on_date``). The shift runs from ``start_time`` to ``end_time``; an end at or before
    the start is on the next day (夜班 17:30–08:00). A ``leave`` line (请假/调休) takes the
    reader off duty for its span even where another line puts them on.
    """

    __tablename__ = "duty_shifts"
    __table_args__ = (
        CheckConstraint("(weekday IS NULL) <> (on_date IS NULL)", name="weekly_or_dated"),
        CheckConstraint("weekday IS NULL OR (weekday >= 0 AND weekday <= 6)", name="weekday_range"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    weekday: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    start_time: Mapped[time] = mapped_column(Time)
    end_time: Mapped[time] = mapped_column(Time)
    label: Mapped[str] = mapped_column(String(64), default="")
    """What people call it: 白班, 夜班, 二线…"""
    leave: Mapped[bool] = mapped_column(Boolean, default=False)
    lead: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    """Its reader is the county's on-duty lead (值班组长) for the span: unacknowledged critical
    results are escalated to them (relay.county.reports.alerts)."""
    created_at: Mapped[datetime] = mapped_column(UTC)
    created_by: Mapped[str] = mapped_column(String(128), default="")


class UploadBundle(Base):
    """An edge's bundle upload in progress or done (protocol in relay.dicom.wire)."""

    __tablename__ = "upload_bundles"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_id: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(SHA256)
    encoding: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16))
    instances_json: Mapped[str] = mapped_column(Text)
    """The announced instances: JSON list of {sop_uid, sha256, size}."""
    received: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTC)
    updated_at: Mapped[datetime] = mapped_column(UTC)
    results_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class BundleChunk(Base):
    """One staged chunk of a bundle: bytes [offset, offset+length) under object_key."""

    __tablename__ = "bundle_chunks"
    __table_args__ = (UniqueConstraint("bundle_pk", "offset", name="uq_bundle_chunks_offset"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bundle_pk: Mapped[int] = mapped_column(ForeignKey("upload_bundles.id", ondelete="CASCADE"))
    offset: Mapped[int] = mapped_column(BigInteger)
    length: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(512))


class EdgeHealth(Base):
    """The latest heartbeat of each township edge (one row per site)."""

    __tablename__ = "edge_health"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), unique=True)
    received_at: Mapped[datetime] = mapped_column(UTC)
    edge_time: Mapped[datetime] = mapped_column(UTC)
    clock_offset_s: Mapped[float] = mapped_column(Float)
    """County receive time minus the edge's clock, in seconds (includes one-way latency)."""
    spool_instances: Mapped[int] = mapped_column(Integer)
    spool_bytes: Mapped[int] = mapped_column(BigInteger)
    oldest_unsent_age_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    goodput_bps: Mapped[float | None] = mapped_column(Float, nullable=True)
    disk_free_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    version: Mapped[str] = mapped_column(String(64))
    last_error: Mapped[str] = mapped_column(Text, default="")


class TaskAttempt(Base):
    """How often a unit of work was started; past the cap it is dead-lettered here.

    Counted in its own committed transaction before the work runs, so a worker that
    dies mid-task (killed, out of memory) still counts: a poison message cannot loop
    forever, and the administrator sees what gave up and why.
    """

    __tablename__ = "task_attempts"
    __table_args__ = (UniqueConstraint("task", "key", name="uq_task_attempts_task_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(128))
    attempts: Mapped[int] = mapped_column(Integer)
    first_attempt_at: Mapped[datetime] = mapped_column(UTC)
    last_attempt_at: Mapped[datetime] = mapped_column(UTC)
    last_error: Mapped[str] = mapped_column(Text, default="")
    dead_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True, index=True)


class OutboxEvent(Base):
    """A domain event written in the same transaction as the change it announces.

    A publisher sends unpublished rows to RabbitMQ (publisher confirms) and then marks
    them: an event is never announced for a change that rolled back, and never lost
    after one that committed (it may be sent twice; consumers dedupe on its id).
    """

    __tablename__ = "outbox_events"
    __table_args__ = (Index("ix_outbox_events_unpublished", "published_at", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTC)
    published_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)


class RenderResult(Base):
    """What rendering made of one instance: a thumbnail, ECG numbers, or why it cannot."""

    __tablename__ = "render_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instances.id"), unique=True)
    study_uid: Mapped[str] = mapped_column(UID, index=True)
    ok: Mapped[bool] = mapped_column(Boolean)
    failure_kind: Mapped[str] = mapped_column(String(32), default="")
    failure_reason: Mapped[str] = mapped_column(String(512), default="")
    thumbnail_key: Mapped[str] = mapped_column(String(512), default="")
    ecg_json: Mapped[str] = mapped_column(Text, default="")
    """Heart rate and RR computed from the signal, and the device's numbers (ECG only)."""
    rendered_at: Mapped[datetime] = mapped_column(UTC)


class AuditEvent(Base):
    """One audited action, chained to the one before by SHA-256 (tamper-evident).

    ``hash`` covers the previous row's hash and this row's fields in a canonical
    form; editing or deleting any row breaks every hash after it, which
    `relay audit verify` reports. The database also refuses UPDATE and DELETE on the
    table, and PostgreSQL TRUNCATE (triggers, migrations 0008 and 0028); signed
    checkpoints (:class:`AuditCheckpoint`) anchor it outside the database.
    """

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_at", "at"),
                      Index("ix_audit_events_object", "object_type", "object_id"))
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(UTC)
    actor: Mapped[str] = mapped_column(String(128))
    """Username, ``site:NAME`` for an edge, or ``system``."""
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32), default="")
    object_id: Mapped[str] = mapped_column(String(128), default="")
    outcome: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(64), default="")
    """Network address of the caller."""
    detail: Mapped[str] = mapped_column(Text, default="")
    prev_hash: Mapped[str] = mapped_column(SHA256, unique=True)
    """Unique: two writers that read the same chain end cannot both append (no fork)."""
    hash: Mapped[str] = mapped_column(SHA256, unique=True)


class AuditCheckpoint(Base):
    """A signed anchor of the audit chain: at ``at`` it held ``count`` events ending with
    ``head_id`` whose hash was ``head_hash`` (relay.county.audit.checkpoint). Signed with
    the county's checkpoint key, which is kept outside the database, so rewriting the
    chain or cutting its newest rows cannot be hidden by recomputing hashes. Append-only
    (migration 0028); also kept in the checkpoint folder and by every edge."""

    __tablename__ = "audit_checkpoints"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    round: Mapped[int] = mapped_column(BigInteger, unique=True)
    """The writing round (time since the epoch // interval): unique, so one writer per round."""
    at: Mapped[datetime] = mapped_column(UTC)
    count: Mapped[int] = mapped_column(BigInteger)
    head_id: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(SHA256)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
    """Base64 of the Ed25519 signature over the checkpoint's canonical JSON."""


class SigningKey(Base):
    """A reader's Ed25519 key. The private key is stored only encrypted (PKCS#8, under a
    key derived from the reader's signing password): the county cannot sign for them."""

    __tablename__ = "signing_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    public_pem: Mapped[str] = mapped_column(Text)
    encrypted_private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTC)
    revoked_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """From when the key signs nothing (may be earlier than the revocation itself: the
    time the key was compromised)."""
    # Migration 0025: the key's published validity and who revoked it, and why.
    valid_from: Mapped[datetime] = mapped_column(UTC, default=lambda ctx: ctx.get_current_parameters()["created_at"])
    valid_until: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """Set when the reader makes a newer key (or an old admin key was retired); null: open."""
    revocation_reason: Mapped[str] = mapped_column(String(500), default="", server_default=text("''"))
    revoked_by: Mapped[str] = mapped_column(String(128), default="", server_default=text("''"))


class Report(Base):
    """One revision of a study's report: the report itself (revision 1) or an addendum.

    A draft may change; once signed, the row never changes again (the service refuses,
    and the signature would no longer verify): an addendum is a new signed revision.
    """

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("study_pk", "revision", name="uq_reports_study_revision"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    author_user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    template: Mapped[str] = mapped_column(String(64), default="")
    findings: Mapped[str] = mapped_column(Text, default="")
    impression: Mapped[str] = mapped_column(Text, default="")
    advice: Mapped[str] = mapped_column(Text, default="")
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTC)
    updated_at: Mapped[datetime] = mapped_column(UTC)
    signed_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    key_id: Mapped[str] = mapped_column(String(32), default="")
    signature: Mapped[str] = mapped_column(Text, default="")
    document_json: Mapped[str] = mapped_column(Text, default="")
    """The canonical document that was signed, kept exactly as signed."""


class ReportDelivery(Base):
    """A signed report (or addendum) on its way back to the study's township.

    Created with the signature; the site's edge picks it up, stores its objects into
    the township's PACS, says so (``delivered_at``), and the technician acknowledges
    it (``acknowledged_at``). Each step is also a study transition, for TAT.
    """

    __tablename__ = "report_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_pk: Mapped[int] = mapped_column(ForeignKey("reports.id"), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    object_keys_json: Mapped[str] = mapped_column(Text, default="{}")
    """What travels: {"signed": key of the signed JSON, "sr": ..., "pdf": ..., "encapsulated_pdf": ...}."""
    created_at: Mapped[datetime] = mapped_column(UTC)
    ready_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """When its renderings (SR, PDF) were attached; until then the edge is not offered it."""
    delivered_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    acknowledged_by: Mapped[str] = mapped_column(String(128), default="")
    critical_notified_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """When the critical-result webhook accepted the alert (危急值 reports only)."""
    escalated_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """When an unacknowledged critical result was escalated to the county's on-duty lead."""
    escalated_to: Mapped[str] = mapped_column(String(512), default="", server_default=text("''"))
    """Usernames of the leads on duty at ``escalated_at``, comma-separated; empty: no lead was."""
    critical_claimed_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """When an alert round took the township webhook to send it (one sender per round; a
    claim older than the lease is taken again: relay.county.reports.alerts)."""
    escalation_claimed_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    """When an alert round took the escalation to send it (as ``critical_claimed_at``)."""


class MetricDelta(Base):
    """One change to a Prometheus figure, appended by a database trigger in the transaction
    of the change itself (migration 0022): an instance stored, a study changing state or
    priority, a study's first assignment. Writers only ever insert here, so concurrent
    ingests never wait on a shared counter row; a scrape folds the rows into
    :class:`MetricCounter` and deletes them (relay.county.metrics.repository)."""

    __tablename__ = "metric_deltas"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    name: Mapped[str] = mapped_column(String(32))
    labels: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)


class MetricCounter(Base):
    """The running total of one figure and label set: ``instances``/``instance_bytes`` by site
    id, ``studies`` by ``state|priority``, ``tat_assign`` by ``priority|le`` (non-cumulative
    bucket counts) and ``tat_assign_sum`` by priority. Written only by the fold at scrape."""

    __tablename__ = "metric_counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    labels: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class InstanceHeader(Base):
    """An instance's header as DICOM JSON (PS3.18 F.2, no pixel data), written at ingest (or
    by the indexer when none was kept) so that indexing and WADO-RS metadata answer from the
    index instead of reading the object."""

    __tablename__ = "instance_headers"
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True)
    header_json: Mapped[str] = mapped_column(Text)


class Order(Base):
    """An exam order (申请单) from the HIS or the township's registration page: the fields of
    :class:`relay.dicom.orders.Order`, idempotent on (placer order number, issuer)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("placer_order_number", "placer_issuer", name="uq_orders_placer"),
        Index("ix_orders_site_status_scheduled", "site_id", "status", "scheduled_at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    placer_order_number: Mapped[str] = mapped_column(String(64))
    placer_issuer: Mapped[str] = mapped_column(String(128))
    accession_number: Mapped[str] = mapped_column(String(16), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    patient_pk: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), nullable=True, index=True)
    """The HIS's patient (patient_id + issuer); None when the order names no usable ID."""
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_id_issuer: Mapped[str] = mapped_column(String(128), default="")
    patient_name: Mapped[str] = mapped_column(String(512), default="")
    patient_name_pinyin: Mapped[str] = mapped_column(String(512), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_phone: Mapped[str] = mapped_column(String(32), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    procedure_code: Mapped[str] = mapped_column(String(64), default="")
    procedure_description: Mapped[str] = mapped_column(String(256), default="")
    clinical_diagnosis: Mapped[str] = mapped_column(Text, default="")
    exam_purpose: Mapped[str] = mapped_column(Text, default="")
    history_summary: Mapped[str] = mapped_column(Text, default="")
    ordering_department: Mapped[str] = mapped_column(String(128), default="")
    ordering_doctor: Mapped[str] = mapped_column(String(128), default="")
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    scheduled_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    scheduled_station_ae: Mapped[str] = mapped_column(String(16), default="")
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    scheduled_step_id: Mapped[str] = mapped_column(String(16), default="")
    study_instance_uid: Mapped[str] = mapped_column(UID, default="", index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column(Integer, default=1)
    extra_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTC)
    updated_at: Mapped[datetime] = mapped_column(UTC, index=True)


class HisMessage(Base):
    """A signed report (or addendum) on its way to the HIS: one row per report and channel
    (HL7 v2 ORU^R01 over MLLP, FHIR DiagnosticReport), retried until the HIS acknowledges."""

    __tablename__ = "his_messages"
    __table_args__ = (UniqueConstraint("report_pk", "channel", name="uq_his_messages_report_channel"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_pk: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    """hl7 | fhir."""
    order_pk: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True)
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    """MSH-10 message control ID / the FHIR resource's id: the HIS dedupes on it."""
    state: Mapped[str] = mapped_column(String(16), index=True)
    """pending | acked | rejected (an AR/CR or 4xx: retried too, shown red)."""
    order_cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    """The order was cancelled before the report: delivered anyway, flagged."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTC, index=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    ack_code: Mapped[str] = mapped_column(String(8), default="")
    """MSA-1 (AA, AE, AR, CA, CE, CR) or the HTTP status."""
    acked_at: Mapped[datetime | None] = mapped_column(UTC, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTC)
