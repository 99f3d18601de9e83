"""``relay county fsck``: the object store and the index agree, or the operator is told.

Ingest writes the object first and commits the index row after (relay.county.ingest.service):
an API process killed between the two leaves an object no row names. The edge got no 200,
so it retries; the retry finds the same bytes under the same key (keys carry the SHA-256)
and commits the row, and nothing is left over. An orphan stays only when no retry comes
(the edge's spool was lost, the instance was sent by a tool that gave up).

The sweep lists ``dicom/`` and ``quarantine/`` and compares with ``instances`` and
``quarantined_instances``:

* an object older than the grace period (an ingest may be between its put and its commit)
  that no row names is an **orphan**; with ``repair`` it is *set aside* under
  ``lost+found/`` (copied, then removed: its bytes are kept for the operator), and the row is
  looked for again afterwards: if a retry committed one meanwhile, the object is put back;
* a row whose object is missing is **missing**: nothing can repair it here (the edge no
  longer holds a sent instance); it is named by SOP Instance UID and site for the operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from relay.county.clock import now_utc
from relay.county.db.models import Instance, QuarantinedInstance, Site
from relay.county.storage import ObjectStore

log = logging.getLogger(__name__)

PREFIXES = ("dicom/", "quarantine/")
LOST_AND_FOUND = "lost+found/"
DEFAULT_GRACE = timedelta(hours=1)
"""An object younger than this may belong to an ingest still on its way to its commit."""
BATCH = 1000


@dataclass
class FsckReport:
    objects: int = 0
    rows: int = 0
    orphans: list[str] = field(default_factory=list)
    """Keys of objects no row names (older than the grace period)."""
    set_aside: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    """Orphans a retry claimed while they were being set aside: put back."""
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    """(SOP Instance UID, site, object key) of rows whose object is gone."""

    @property
    def clean(self) -> bool:
        return not self.missing and len(self.orphans) == len(self.set_aside) + len(self.restored)


def _named(session: Session, key: str) -> bool:
    if key.startswith("quarantine/"):
        stmt = select(QuarantinedInstance.id).where(QuarantinedInstance.object_key == key)
    else:
        stmt = select(Instance.id).where(Instance.object_key == key)
    return session.execute(stmt.limit(1)).first() is not None


def _keys(session: Session, keys: list[str]) -> set[str]:
    held = set(session.execute(select(Instance.object_key).where(Instance.object_key.in_(keys))).scalars())
    held |= set(session.execute(select(QuarantinedInstance.object_key)
                                .where(QuarantinedInstance.object_key.in_(keys))).scalars())
    return held


def sweep(sessions: sessionmaker[Session], store: ObjectStore, *, repair: bool,
          grace: timedelta = DEFAULT_GRACE, now: datetime | None = None) -> FsckReport:
    report = FsckReport()
    cutoff = (now or now_utc()) - grace
    for prefix in PREFIXES:
        batch: list[str] = []
        for obj in store.list(prefix):
            report.objects += 1
            if obj.modified_at <= cutoff:
                batch.append(obj.key)
            if len(batch) >= BATCH:
                _orphans(sessions, store, batch, report, repair=repair)
                batch = []
        if batch:
            _orphans(sessions, store, batch, report, repair=repair)
    _missing(sessions, store, report)
    return report


def _orphans(sessions: sessionmaker[Session], store: ObjectStore, keys: list[str], report: FsckReport,
             *, repair: bool) -> None:
    with sessions() as session:
        held = _keys(session, keys)
    for key in keys:
        if key in held:
            continue
        report.orphans.append(key)
        log.warning("fsck: object without an index row key=%s", key)
        if not repair:
            continue
        aside = LOST_AND_FOUND + key
        store.set_aside(key, aside)
        with sessions() as session:
            claimed = _named(session, key)
        if claimed:  # a retry committed its row while we moved the bytes: put them back
            store.set_aside(aside, key)
            report.restored.append(key)
            log.warning("fsck: object claimed during the sweep, put back key=%s", key)
        else:
            report.set_aside.append(key)


def _missing(sessions: sessionmaker[Session], store: ObjectStore, report: FsckReport) -> None:
    last = 0
    while True:
        with sessions() as session:
            rows = session.execute(
                select(Instance.id, Instance.sop_uid, Instance.object_key, Site.name)
                .join(Site, Site.id == Instance.site_id).where(Instance.id > last)
                .order_by(Instance.id).limit(BATCH)).all()
        if not rows:
            return
        for pk, sop_uid, key, site in rows:
            report.rows += 1
            if not store.exists(key):
                report.missing.append((sop_uid, site, key))
                log.error("fsck: index row without its object sop=%s site=%s key=%s", sop_uid, site, key)
        last = rows[-1][0]
