"""Study completeness at the edge: when a study is ready to forward, and who is STAT.

A modality sends a study as a burst of C-STOREs, often over several associations,
and never says "done". So the edge tracks each study in the journal (``studies``
table, same SQLite file and same transaction as the instance rows) and calls it
*ready* after a quiet period without new instances (shorter for STAT), or at most a
maximum wait after its first instance. The forwarder only ever sees instances of
ready studies (``ready_clause`` gates ``Spool.next_batch``).

Once a study has been handed to the forwarder (``released_at``), instances that
arrive later are *additions*: journaled with ``late = 1`` and forwarded with that
flag, so the county can show them instead of silently merging them into a read.

A study is STAT if any instance came with C-STORE Priority HIGH, if a configured
rule matches its first instance (``modality=ECG``, ``ae=ER_CT``), or if the
technician marked it; escalation applies to every pending instance of the study.

The functions here take an open connection and run inside the caller's lock and
transaction (the ``Spool``'s); they never commit on their own.
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay.dicom.header import InvalidInstance, read_meta
from relay.dicom.vocab import Priority
from relay.edge.clock import iso
from relay.edge.journal import SpoolState

STUDIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid         TEXT PRIMARY KEY,
    first_at          TEXT NOT NULL,     -- UTC ISO 8601 of the first instance
    last_at           TEXT NOT NULL,     -- UTC ISO 8601 of the latest instance
    instance_count    INTEGER NOT NULL DEFAULT 0,
    priority          TEXT NOT NULL,     -- relay.dicom.vocab.Priority value
    priority_rank     INTEGER NOT NULL,
    stat_reason       TEXT,              -- why STAT: dimse-high | rule:... | technician
    calling_ae        TEXT NOT NULL,     -- of the first instance
    modality          TEXT NOT NULL DEFAULT '',
    patient_name      TEXT NOT NULL DEFAULT '',  -- for the technician's page only, never logged
    study_date        TEXT NOT NULL DEFAULT '',
    study_time        TEXT NOT NULL DEFAULT '',
    study_description TEXT NOT NULL DEFAULT '',
    released_at       TEXT,              -- first handed to the forwarder; later = addition
    late_count        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS studies_first ON studies (first_at);
"""


class StudyPhase(enum.StrEnum):
    """What the technician's page says about a study at the edge."""

    RECEIVING = "receiving"
    """Instances still arriving (not yet quiet): 接收中."""
    WAITING = "waiting"
    """Complete and queued for the county, nothing sent yet: 等待发送."""
    SENDING = "sending"
    """Part of the study is at the county: 发送中 n%."""
    AT_COUNTY = "at_county"
    """Every instance is at the county: 已到达县医院."""
    REPORT_BACK = "report_back"
    """The signed report is back at the edge: 报告已返回. No study is given this phase yet:
    the page lists the reports back on their own (``relay.edge.report_pickup.local_reports``)."""


@dataclass(frozen=True, slots=True)
class StatRule:
    """One ``key=value`` rule of ``Settings.edge_stat_rules``."""

    key: str
    """``modality`` or ``ae`` (calling AE title)."""
    value: str


@dataclass(frozen=True, slots=True)
class StudyPolicy:
    """When studies are ready and which are STAT (from Settings, see there for units)."""

    quiet_s: float = 0.0
    stat_quiet_s: float = 0.0
    max_wait_s: float = 0.0
    stat_rules: tuple[StatRule, ...] = ()


@dataclass(frozen=True, slots=True)
class StudyInfo:
    """Header attributes of a study's first instance, decoded with its character set."""

    modality: str = ""
    patient_name: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""


@dataclass(frozen=True, slots=True)
class StudyRow:
    """One study as the status page and `relay edge status` show it."""

    study_uid: str
    first_at: str
    last_at: str
    instance_count: int
    priority: Priority
    stat_reason: str | None
    calling_ae: str
    modality: str
    patient_name: str
    study_date: str
    study_time: str
    study_description: str
    late_count: int
    sent: int
    pending: int
    phase: StudyPhase
    percent_sent: int
    """Share of the study's bytes the county holds, counting bundles on their way."""
    last_error: str | None


def parse_stat_rules(text: str) -> tuple[StatRule, ...]:
    """Parse ``'modality=ECG,ae=ER_CT'``; raise ValueError naming a bad rule."""
    rules = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("modality", "ae") or not value.strip():
            raise ValueError(f"edge_stat_rules: bad rule {part!r} (want modality=X or ae=X)")
        rules.append(StatRule(key=key, value=value.strip().upper()))
    return tuple(rules)


def matching_rule(rules: tuple[StatRule, ...], *, modality: str, calling_ae: str) -> str | None:
    """The first rule that makes a study STAT, as ``'rule:key=value'``, or None."""
    facts = {"modality": modality.strip().upper(), "ae": calling_ae.strip().upper()}
    for rule in rules:
        if facts[rule.key] == rule.value:
            return f"rule:{rule.key}={rule.value}"
    return None


def study_info_from(data: bytes) -> StudyInfo:
    """Decode the first instance's header for the page; an undecodable one gives blanks."""
    try:
        meta = read_meta(data)
    except InvalidInstance:
        return StudyInfo()
    return StudyInfo(modality=meta.modality, patient_name=meta.patient_name,
                     study_date=meta.study_date, study_time=meta.study_time,
                     study_description=meta.study_description)


def study_known(conn: sqlite3.Connection, study_uid: str) -> bool:
    """True if the journal already tracks ``study_uid``."""
    row = conn.execute("SELECT 1 FROM studies WHERE study_uid = ?", (study_uid,)).fetchone()
    return row is not None


def record_instance(conn: sqlite3.Connection, *, study_uid: str, at: str, priority: Priority,
                    stat_reason: str | None, calling_ae: str,
                    info: StudyInfo | None) -> tuple[bool, Priority]:
    """Count one new instance in its study (inside the caller's transaction).

    Returns ``(late, priority)``: late if the study was already handed to the
    forwarder; priority is the study's after escalation, which the instance takes.
    """
    row = conn.execute("SELECT priority, released_at FROM studies WHERE study_uid = ?",
                       (study_uid,)).fetchone()
    if row is None:
        _insert_study(conn, study_uid=study_uid, at=at, priority=priority,
                      stat_reason=stat_reason, calling_ae=calling_ae, info=info or StudyInfo())
        return False, priority
    late = row[1] is not None
    conn.execute("UPDATE studies SET last_at = ?, instance_count = instance_count + 1,"
                 " late_count = late_count + ? WHERE study_uid = ?", (at, int(late), study_uid))
    current = Priority(row[0])
    if priority.rank < current.rank:
        escalate(conn, study_uid=study_uid, priority=priority, reason=stat_reason)
        return late, priority
    return late, current


def _insert_study(conn: sqlite3.Connection, *, study_uid: str, at: str, priority: Priority,
                  stat_reason: str | None, calling_ae: str, info: StudyInfo) -> None:
    conn.execute(
        "INSERT INTO studies (study_uid, first_at, last_at, instance_count, priority,"
        " priority_rank, stat_reason, calling_ae, modality, patient_name, study_date,"
        " study_time, study_description) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (study_uid, at, at, priority.value, priority.rank, stat_reason, calling_ae,
         info.modality, info.patient_name, info.study_date, info.study_time,
         info.study_description))


def escalate(conn: sqlite3.Connection, *, study_uid: str, priority: Priority,
             reason: str | None) -> bool:
    """Raise a study and its pending instances to ``priority``; False if unknown."""
    cur = conn.execute(
        "UPDATE studies SET priority = ?, priority_rank = ?, stat_reason = ?"
        " WHERE study_uid = ? AND priority_rank > ?",
        (priority.value, priority.rank, reason, study_uid, priority.rank))
    conn.execute(
        "UPDATE instances SET priority = ?, priority_rank = ?"
        " WHERE study_uid = ? AND state = ? AND priority_rank > ?",
        (priority.value, priority.rank, study_uid, SpoolState.SPOOLED, priority.rank))
    return cur.rowcount > 0 or study_known(conn, study_uid)


def _cutoffs(policy: StudyPolicy, now: datetime) -> tuple[str, str, str]:
    return (iso(now - timedelta(seconds=policy.quiet_s)),
            iso(now - timedelta(seconds=policy.stat_quiet_s)),
            iso(now - timedelta(seconds=policy.max_wait_s)))


READY_JOIN = "LEFT JOIN studies s ON s.study_uid = i.study_uid"
"""Join ``instances i`` to their study for ``ready_clause``."""


def ready_clause(policy: StudyPolicy, now: datetime) -> tuple[str, tuple[str, ...]]:
    """SQL condition (and its parameters) true for instances of ready studies.

    An instance without a study row (a journal from before studies were tracked)
    is ready.
    """
    quiet, stat_quiet, max_cut = _cutoffs(policy, now)
    sql = ("(s.study_uid IS NULL OR s.first_at <= ? OR s.last_at <="
           " CASE WHEN s.priority_rank = 0 THEN ? ELSE ? END)")
    return sql, (max_cut, stat_quiet, quiet)


def release(conn: sqlite3.Connection, *, study_uids: set[str], at: str) -> None:
    """Note that these studies were handed to the forwarder: later instances are late."""
    conn.executemany(
        "UPDATE studies SET released_at = ? WHERE study_uid = ? AND released_at IS NULL",
        [(at, uid) for uid in study_uids])


def is_ready(row: sqlite3.Row, policy: StudyPolicy, now: datetime) -> bool:
    """The same rule as ``ready_clause``, for one ``studies`` row in Python."""
    quiet, stat_quiet, max_cut = _cutoffs(policy, now)
    cut = stat_quiet if row["priority_rank"] == 0 else quiet
    return bool(row["released_at"]) or row["first_at"] <= max_cut or row["last_at"] <= cut


_STUDY_QUERY = """
SELECT s.*,
  (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid AND i.state = ?) AS sent,
  (SELECT COUNT(*) FROM instances i WHERE i.study_uid = s.study_uid AND i.state = ?)
      AS pending,
  (SELECT COALESCE(SUM(i.size), 0) FROM instances i WHERE i.study_uid = s.study_uid
      AND i.state = ?) AS sent_bytes,
  (SELECT COALESCE(SUM(i.size), 0) FROM instances i WHERE i.study_uid = s.study_uid)
      AS total_bytes,
  (SELECT i.last_error FROM instances i WHERE i.study_uid = s.study_uid
      AND i.state = ? AND i.last_error IS NOT NULL
      ORDER BY i.next_attempt_at DESC LIMIT 1) AS last_error
FROM studies s WHERE s.first_at >= ? ORDER BY s.priority_rank, s.first_at DESC LIMIT ?
"""


def list_studies(conn: sqlite3.Connection, *, since: datetime, policy: StudyPolicy,
                 now: datetime, limit: int = 500,
                 uploading: dict[int, int] | None = None) -> list[StudyRow]:
    """Studies first seen at or after ``since``, STAT first, newest first.
    ``uploading``: spool entry id -> bytes already at the county of an instance whose
    bundle is still on its way (``outbox.uploaded_bytes``), for "sending n%"."""
    rows = conn.execute(_STUDY_QUERY, (SpoolState.SENT, SpoolState.SPOOLED, SpoolState.SENT,
                                       SpoolState.SPOOLED, iso(since), limit)).fetchall()
    in_flight: dict[str, int] = {}
    if uploading:
        ids = list(uploading)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for entry_id, study_uid in conn.execute(
                    f"SELECT id, study_uid FROM instances WHERE state = ?"
                    f" AND id IN ({marks})", (SpoolState.SPOOLED, *chunk)):
                in_flight[study_uid] = in_flight.get(study_uid, 0) + uploading[int(entry_id)]
    return [_study_row(row, policy=policy, now=now, in_flight=in_flight.get(row["study_uid"], 0))
            for row in rows]


def _phase(row: sqlite3.Row, ready: bool, in_flight: int) -> StudyPhase:
    sent, pending = int(row["sent"]), int(row["pending"])
    if pending == 0 and sent > 0:
        return StudyPhase.AT_COUNTY
    if sent > 0 or in_flight > 0:
        return StudyPhase.SENDING
    return StudyPhase.WAITING if ready else StudyPhase.RECEIVING


def _percent(row: sqlite3.Row, in_flight: int) -> int:
    """Bytes at the county (confirmed instances, plus the confirmed part of bundles on
    their way) over the study's bytes; 100 only when every instance is confirmed."""
    total = int(row["total_bytes"])
    if int(row["pending"]) == 0:
        return 100 if total or int(row["sent"]) else 0
    done = min(int(row["sent_bytes"]) + in_flight, total)
    return min(99, 100 * done // total) if total else 0


def _study_row(row: sqlite3.Row, *, policy: StudyPolicy, now: datetime,
               in_flight: int = 0) -> StudyRow:
    sent, pending = int(row["sent"]), int(row["pending"])
    return StudyRow(
        study_uid=row["study_uid"], first_at=row["first_at"], last_at=row["last_at"],
        instance_count=int(row["instance_count"]), priority=Priority(row["priority"]),
        stat_reason=row["stat_reason"], calling_ae=row["calling_ae"],
        modality=row["modality"], patient_name=row["patient_name"],
        study_date=row["study_date"], study_time=row["study_time"],
        study_description=row["study_description"], late_count=int(row["late_count"]),
        sent=sent, pending=pending, phase=_phase(row, is_ready(row, policy, now), in_flight),
        percent_sent=_percent(row, in_flight), last_error=row["last_error"],
    )


def policy_from(*, quiet_s: float, stat_quiet_s: float, max_wait_s: float,
                stat_rules: str) -> StudyPolicy:
    """Build the policy from the Settings fields of the same names."""
    return StudyPolicy(quiet_s=quiet_s, stat_quiet_s=stat_quiet_s, max_wait_s=max_wait_s,
                       stat_rules=parse_stat_rules(stat_rules))
