"""The spool keeps what the SCP acknowledges, durably, and hands it out in order."""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from relay.dicom.header import InstanceIds
from relay.dicom.vocab import IngestOutcome, Priority
from relay.edge.clock import now_utc
from relay.edge.journal import read_counts
from relay.edge.spool import TMP_DIR, Spool, SpoolLocked, StoreOutcome
from tests.edge.factories import ct_dataset, part10_bytes
from tests.edge.helpers import journal_rows


def _ids(sop_uid: str | None = None) -> InstanceIds:
    return InstanceIds(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_uid=sop_uid or generate_uid(),
        study_uid=generate_uid(), series_uid=generate_uid(),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


def _store(spool: Spool, data: bytes, ids: InstanceIds,
           priority: Priority = Priority.ROUTINE) -> int:
    result = spool.store(data, ids=ids, priority=priority, calling_ae="MODALITY",
                         peer="127.0.0.1:40000")
    return result.entry_id


def test_store_fsyncs_file_and_directory_and_commits_before_returning(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    data = part10_bytes(ct_dataset())
    ids = _ids()
    result = spool.store(data, ids=ids, priority=Priority.ROUTINE, calling_ae="CT1",
                         peer="127.0.0.1:1")

    sha = hashlib.sha256(data).hexdigest()
    final = spool.root / "objects" / sha[:2] / f"{ids.sop_uid}.{sha}.dcm"
    assert result.outcome is StoreOutcome.SPOOLED and result.sha256 == sha
    assert final.read_bytes() == data
    assert synced.index(str(final)) < synced.index(str(final.parent))  # file, then its folder
    (row,) = journal_rows(spool.root)  # committed: visible to another connection
    assert (row["sop_uid"], row["sha256"], row["state"]) == (ids.sop_uid, sha, "spooled")
    assert row["size"] == len(data) and row["calling_ae"] == "CT1"
    assert row["path"] == final.relative_to(spool.root).as_posix()
    assert row["received_at"].endswith("+00:00")


def test_same_uid_and_same_bytes_again_is_a_no_op(spool: Spool) -> None:
    data, ids = part10_bytes(ct_dataset()), _ids()
    first = spool.store(data, ids=ids, priority=Priority.ROUTINE, calling_ae="A", peer="p")
    again = spool.store(data, ids=ids, priority=Priority.STAT, calling_ae="B", peer="q")

    assert again.outcome is StoreOutcome.DUPLICATE
    assert again.entry_id == first.entry_id
    assert len(journal_rows(spool.root)) == 1
    assert len(list((spool.root / "objects").glob("*/*.dcm"))) == 1


def test_same_uid_with_other_bytes_gets_a_row_of_its_own(spool: Spool) -> None:
    ids = _ids()
    first = _store(spool, part10_bytes(ct_dataset(seed=1)), ids)
    second = _store(spool, part10_bytes(ct_dataset(seed=2)), ids)

    rows = journal_rows(spool.root)
    assert first != second
    assert [r["sop_uid"] for r in rows] == [ids.sop_uid, ids.sop_uid]
    assert rows[0]["sha256"] != rows[1]["sha256"]


def test_open_removes_temp_files_and_unjournaled_files_but_keeps_journaled_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "spool"
    with Spool(root) as spool:
        _store(spool, b"journaled bytes", _ids())
    kept = root / journal_rows(root)[0]["path"]
    leftover = root / TMP_DIR / "tmpabc.part"
    leftover.write_bytes(b"half a write")
    orphan = root / "objects" / "ab" / f"{generate_uid()}.{'ab' * 32}.dcm"
    orphan.write_bytes(b"renamed, never journaled")

    with Spool(root):
        assert not leftover.exists()
        assert not orphan.exists()
        assert kept.read_bytes() == b"journaled bytes"


def test_second_open_of_a_spool_in_use_is_refused(spool: Spool) -> None:
    with pytest.raises(SpoolLocked):
        Spool(spool.root)


def test_next_batch_gives_stat_before_routine_then_oldest_first(spool: Spool) -> None:
    routine_old = _store(spool, b"r1", _ids())
    routine_new = _store(spool, b"r2", _ids())
    stat = _store(spool, b"s1", _ids(), Priority.STAT)
    urgent = _store(spool, b"u1", _ids(), Priority.URGENT)

    batch = spool.next_batch(10)
    assert [e.entry_id for e in batch] == [stat, urgent, routine_old, routine_new]
    assert batch[0].priority is Priority.STAT
    assert [e.entry_id for e in spool.next_batch(2)] == [stat, urgent]


def test_next_batch_leaves_out_instances_not_yet_due(spool: Spool) -> None:
    waiting = _store(spool, b"w", _ids(), Priority.STAT)
    due = _store(spool, b"d", _ids())
    spool.mark_failed(waiting, error="HTTP 503", next_attempt_at=now_utc() + timedelta(hours=1))

    assert [e.entry_id for e in spool.next_batch(10)] == [due]
    later = now_utc() + timedelta(hours=2)
    assert [e.entry_id for e in spool.next_batch(10, now=later)] == [waiting, due]


def test_mark_sent_and_mark_failed_are_journaled_and_counted(spool: Spool) -> None:
    sent = _store(spool, b"x" * 10, _ids())
    failing = _store(spool, b"y" * 20, _ids())
    spool.mark_sent(sent, outcome=IngestOutcome.STORED)
    spool.mark_failed(failing, error="HTTP 422 sha256 mismatch", next_attempt_at=now_utc())

    rows = {r["id"]: r for r in journal_rows(spool.root)}
    assert rows[sent]["state"] == "sent" and rows[sent]["county_outcome"] == "stored"
    assert rows[sent]["sent_at"] is not None
    assert rows[failing]["state"] == "spooled" and rows[failing]["attempts"] == 1
    counts = spool.counts()
    assert (counts.pending, counts.pending_bytes, counts.retrying, counts.sent) == (1, 20, 1, 1)
    assert counts.last_error == "HTTP 422 sha256 mismatch"
    assert counts.oldest_pending_age_s is not None and counts.oldest_pending_age_s >= 0
    now = now_utc()
    assert read_counts(spool.root, now=now) == spool.counts(now=now)  # no lock needed


def test_concurrent_stores_from_many_threads_are_all_journaled_once(spool: Spool) -> None:
    shared_ids, shared_data = _ids(), b"same bytes from every thread"
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            _store(spool, f"instance {n}".encode(), _ids())
            _store(spool, shared_data, shared_ids)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert not errors
    rows = journal_rows(spool.root)
    assert len(rows) == 17
    assert sum(r["sop_uid"] == shared_ids.sop_uid for r in rows) == 1
    assert all((spool.root / r["path"]).is_file() for r in rows)


def test_retention_deletes_only_files_the_county_confirmed_long_enough_ago(spool: Spool) -> None:
    sent_old, sent_new, pending = (part10_bytes(ct_dataset()) for _ in range(3))
    old_ids = _ids()
    old_id, new_id = _store(spool, sent_old, old_ids), _store(spool, sent_new, _ids())
    _store(spool, pending, _ids())
    spool.mark_sent(old_id, outcome=IngestOutcome.STORED)
    spool.mark_sent(new_id, outcome=IngestOutcome.STORED)
    later = now_utc() + timedelta(hours=73)
    files, freed = spool.prune_sent(older_than=timedelta(hours=72), now=later)
    assert (files, freed) == (2, len(sent_old) + len(sent_new))
    assert len(list((spool.root / "objects").glob("*/*.dcm"))) == 1  # the unsent one stays
    assert spool.prune_sent(older_than=timedelta(hours=72), now=later) == (0, 0)
    resent = spool.store(sent_old, ids=old_ids, priority=Priority.ROUTINE, calling_ae="A", peer="p")
    assert resent.outcome is StoreOutcome.DUPLICATE  # a pruned instance sent again is not re-forwarded
    assert len(journal_rows(spool.root)) == 3  # the journal remembers what was sent


def test_nothing_is_pruned_before_its_time(spool: Spool) -> None:
    entry = _store(spool, part10_bytes(ct_dataset()), _ids())
    spool.mark_sent(entry, outcome=IngestOutcome.STORED)
    assert spool.prune_sent(older_than=timedelta(hours=72)) == (0, 0)
