"""Signed checkpoints that anchor the audit chain outside the database.

The chain alone is unkeyed: anyone who can write the table can edit a row and recompute
every hash after it, or cut the newest rows, and the chain still links. A checkpoint is
(event count, head id, head hash, time) signed with Ed25519 under the county's checkpoint
key, a file outside the database (RELAY_AUDIT_CHECKPOINT_KEY_FILE, created 0600). A worker
writes one every RELAY_AUDIT_CHECKPOINT_MINUTES to the database (``audit_checkpoints``,
whose unique ``round`` makes one writer per round whatever the number of workers), to the
checkpoint folder (RELAY_AUDIT_CHECKPOINT_DIR, append-only JSON lines) and, through the
heartbeat answers, to every edge. `relay audit verify` checks the rows against them.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from relay.config import CountySettings
from relay.county import keyfile
from relay.county.clock import now_utc
from relay.county.db.models import AuditCheckpoint, AuditEvent
from relay.county.db.upsert import insert_ignore
from relay.dicom.signing import key_id

log = logging.getLogger(__name__)

FORMAT = "county-relay-audit-checkpoint/1"
FILE_NAME = "audit-checkpoints.jsonl"
"""The checkpoint folder's file, one JSON checkpoint a line (the edges use the same name)."""


class CheckpointKeyMissing(RuntimeError):
    """The checkpoint key file does not exist (verification never creates one)."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The chain held ``count`` events through ``head_id`` (hash ``head_hash``) at ``at``."""

    count: int
    head_id: int
    head_hash: str
    at: datetime
    key_id: str
    signature: str
    """Base64 of the Ed25519 signature over :meth:`signed_bytes`."""

    def document(self) -> dict[str, Any]:
        return {"format": FORMAT, "count": self.count, "head_id": self.head_id, "head_hash": self.head_hash,
                "at": self.at.astimezone(UTC).isoformat(timespec="microseconds"), "key_id": self.key_id}

    def signed_bytes(self) -> bytes:
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        return {**self.document(), "signature": self.signature}

    def to_json(self) -> str:
        """One line (the checkpoint files hold one a line)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def describe(self) -> str:
        return f"the checkpoint of {self.at:%Y-%m-%d %H:%M:%S}Z ({self.count} events through #{self.head_id})"

    def signature_problem(self, public_key: Ed25519PublicKey) -> str | None:
        """Why this checkpoint's signature does not verify under ``public_key``; None if it does."""
        if self.key_id != key_id(public_key):
            return (f"{self.describe()} is signed by key {self.key_id}, not by the county's checkpoint key "
                    f"{key_id(public_key)}")
        try:
            public_key.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, ValueError):
            return f"{self.describe()} has a signature that does not verify (forged or altered)"
        return None

    @classmethod
    def from_dict(cls, data: Any) -> "Checkpoint":
        """Parse one checkpoint; ValueError names what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} object")
        try:
            at = datetime.fromisoformat(str(data["at"]))
            count, head_id = data["count"], data["head_id"]
            if not isinstance(count, int) or not isinstance(head_id, int) or isinstance(count, bool):
                raise ValueError("count and head_id must be integers")
            return cls(count=count, head_id=head_id, head_hash=str(data["head_hash"]),
                       at=at if at.tzinfo else at.replace(tzinfo=UTC), key_id=str(data["key_id"]),
                       signature=str(data["signature"]))
        except KeyError as exc:
            raise ValueError(f"missing field {exc.args[0]!r}") from None

    @classmethod
    def from_row(cls, row: AuditCheckpoint) -> "Checkpoint":
        return cls(count=row.count, head_id=row.head_id, head_hash=row.head_hash, at=row.at,
                   key_id=row.key_id, signature=row.signature)


def sign(key: Ed25519PrivateKey, *, count: int, head_id: int, head_hash: str, at: datetime) -> Checkpoint:
    unsigned = Checkpoint(count=count, head_id=head_id, head_hash=head_hash, at=at,
                          key_id=key_id(key.public_key()), signature="")
    signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
    return Checkpoint(count=count, head_id=head_id, head_hash=head_hash, at=at, key_id=unsigned.key_id,
                      signature=signature)


# --- the key -------------------------------------------------------------------------


def load_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The checkpoint key from ``path``; with ``create``, a new one is made first if there is
    none (relay.county.keyfile: two workers starting together end up with the same key)."""
    if create and not path.exists() and keyfile.create(path):
        log.info("created the audit checkpoint key %s (key id %s)", path, key_id(keyfile.read(path).public_key()))
    try:
        key = keyfile.read(path)
    except FileNotFoundError:
        raise CheckpointKeyMissing(f"the audit checkpoint key {path} does not exist") from None
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("audit checkpoint key %s is readable by others than its owner; chmod 600 it", path)
    return key


# --- writing -----------------------------------------------------------------------------


def round_of(at: datetime, minutes: float) -> int:
    return int(at.timestamp() // (minutes * 60))


def append_line(path: Path, line: str) -> None:
    """Append one line and fsync it (the file is only ever appended to)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(*, settings: CountySettings, sessions: sessionmaker[Session],
                     now: datetime | None = None) -> Checkpoint | None:
    """Sign the chain's current head and keep it, if this round has no checkpoint yet and the
    chain grew since the last one; None when nothing was written (another writer had the
    round, or there is nothing new)."""
    now = now or now_utc()
    key = load_key(settings.audit_checkpoint_key_path, create=True)
    with sessions() as session:
        head = session.execute(select(AuditEvent.id, AuditEvent.hash).order_by(AuditEvent.id.desc()).limit(1)).first()
        if head is None:
            return None
        latest = session.execute(select(AuditCheckpoint.head_id, AuditCheckpoint.head_hash)
                                 .order_by(AuditCheckpoint.id.desc()).limit(1)).first()
        if latest is not None and tuple(latest) == (head.id, head.hash):
            return None
        count = session.execute(select(func.count()).select_from(AuditEvent).where(AuditEvent.id <= head.id)).scalar_one()
        checkpoint = sign(key, count=int(count), head_id=int(head.id), head_hash=str(head.hash), at=now)
        _, inserted = insert_ignore(session, AuditCheckpoint, {
            "round": round_of(now, settings.audit_checkpoint_minutes), "at": now, "count": checkpoint.count,
            "head_id": checkpoint.head_id, "head_hash": checkpoint.head_hash, "key_id": checkpoint.key_id,
            "signature": checkpoint.signature}, keys=["round"])
        session.commit()
    if not inserted:
        return None
    append_line(settings.audit_checkpoint_folder / FILE_NAME, checkpoint.to_json())
    log.info("audit checkpoint: %d events through id=%d", checkpoint.count, checkpoint.head_id)
    return checkpoint


def run_checkpoints(settings: CountySettings, sessions: sessionmaker[Session], stop: threading.Event) -> None:
    """Write a checkpoint at every round until ``stop`` (the worker's main process)."""
    interval = settings.audit_checkpoint_minutes * 60
    while not stop.is_set():
        try:
            write_checkpoint(settings=settings, sessions=sessions)
        except Exception:
            log.exception("audit checkpoint round failed")
        now = now_utc().timestamp()
        stop.wait(interval - now % interval + 1.0)  # just past the next round's start


def latest(session: Session) -> Checkpoint | None:
    """The newest checkpoint in the database (what the heartbeat hands to the edges)."""
    row = session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id.desc()).limit(1)).scalar_one_or_none()
    return Checkpoint.from_row(row) if row else None


# --- reading, for verification -------------------------------------------------------------


@dataclass
class Anchors:
    """The checkpoints a verification compares the rows with, and how they were found."""

    checkpoints: list[Checkpoint] = field(default_factory=list)
    public_key: Ed25519PublicKey | None = None
    sources: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """What made some of them unusable (a malformed line, no key to check signatures)."""


def read_file(path: Path) -> tuple[list[Checkpoint], list[str]]:
    """The checkpoints of one JSON-lines file and a problem per line that is not one."""
    out: list[Checkpoint] = []
    problems: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(Checkpoint.from_dict(json.loads(line)))
            except ValueError as exc:
                problems.append(f"line {number} of {path} is not a checkpoint ({exc})")
    return out, problems


def load_anchors(*, settings: CountySettings, session: Session, files: Sequence[Path] | None = None) -> Anchors:
    """The checkpoints to verify against: those of ``files`` (e.g. an edge's copy) if given,
    else the database's and the checkpoint folder's; and the public half of the county's key."""
    anchors = Anchors()
    found: list[Checkpoint] = []
    if files:
        paths = list(files)
    else:
        rows = session.execute(select(AuditCheckpoint).order_by(AuditCheckpoint.id)).scalars().all()
        found.extend(Checkpoint.from_row(r) for r in rows)
        anchors.sources.append(f"database ({len(rows)})")
        paths = [settings.audit_checkpoint_folder / FILE_NAME]
    for path in paths:
        if not path.is_file():
            if files:
                anchors.problems.append(f"checkpoint file {path} not found")
            continue
        got, problems = read_file(path)
        found.extend(got)
        anchors.problems.extend(problems)
        anchors.sources.append(f"{path} ({len(got)})")
    anchors.checkpoints = _unique(found)
    if anchors.checkpoints:
        try:
            anchors.public_key = load_key(settings.audit_checkpoint_key_path, create=False).public_key()
        except CheckpointKeyMissing as exc:
            anchors.problems.append(f"cannot check the checkpoints' signatures: {exc}")
        except (OSError, ValueError) as exc:
            anchors.problems.append(f"cannot check the checkpoints' signatures: the key "
                                    f"{settings.audit_checkpoint_key_path} is unreadable ({type(exc).__name__})")
    return anchors


def _unique(checkpoints: Iterable[Checkpoint]) -> list[Checkpoint]:
    seen: dict[str, Checkpoint] = {}
    for cp in checkpoints:
        seen.setdefault(cp.to_json(), cp)
    return sorted(seen.values(), key=lambda cp: (cp.head_id, cp.at))
