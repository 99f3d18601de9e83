"""Spool files made ahead of time (relay.edge.slots): a store is one data flush into a
slot, the forwarder reads back exactly the instance, and recovery never hands out a
slot that a journal row holds."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from relay.dicom.header import InstanceIds
from relay.dicom.vocab import Priority
from relay.edge.bundle_outbox import read_verified
from relay.edge.slots import SLOTS_DIR, SlotPool
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset, part10_bytes
from tests.edge.helpers import journal_rows

SLOT_BYTES = 256 * 1024


def _ids() -> InstanceIds:
    return InstanceIds(
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", sop_uid=generate_uid(),
        study_uid=generate_uid(), series_uid=generate_uid(),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
    )


def _spool(root: Path, count: int = 4) -> Spool:
    spool = Spool(root, slot_count=count, slot_bytes=SLOT_BYTES)
    assert spool.slot_pool is not None and spool.slot_pool.wait_full(timeout=30.0)
    return spool


def _store(spool: Spool, data: bytes) -> int:
    return spool.store(data, ids=_ids(), priority=Priority.ROUTINE, calling_ae="CT1",
                       peer="127.0.0.1:1").entry_id


def test_a_store_writes_into_a_slot_with_one_data_flush_and_no_new_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = _spool(tmp_path / "spool")
    before = set((spool.root / SLOTS_DIR).iterdir())
    flushed: list[str] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        flushed.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    try:
        data = part10_bytes(ct_dataset())
        _store(spool, data)
        (row,) = journal_rows(spool.root)
        assert row["path"].startswith(f"{SLOTS_DIR}/")
        assert (spool.root / row["path"]) in before  # made ahead, not created by the store
        assert flushed == [str(spool.root / row["path"])]
        assert list((spool.root / "objects").rglob("*.dcm")) == []
    finally:
        spool.close()


def test_the_forwarder_reads_back_exactly_the_stored_bytes_from_a_slot(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool") as spool:
        data = part10_bytes(ct_dataset())
        _store(spool, data)
        (entry,) = spool.next_batch(10)

        assert entry.path.stat().st_size == SLOT_BYTES > len(data)
        assert read_verified(entry) == data


def test_an_instance_larger_than_a_slot_is_written_as_a_new_file(tmp_path: Path) -> None:
    with _spool(tmp_path / "spool") as spool:
        ds = ct_dataset()
        ds.Rows = ds.Columns = 512
        ds.PixelData = bytes(512 * 512 * 2)  # over 256 KiB
        data = part10_bytes(ds)
        assert len(data) > SLOT_BYTES
        _store(spool, data)
        (entry,) = spool.next_batch(10)

        assert entry.path.parent.parent.name == "objects"
        assert read_verified(entry) == data


def test_with_no_free_slot_a_store_still_succeeds_as_a_new_file(tmp_path: Path) -> None:
    with Spool(tmp_path / "spool", slot_count=4, slot_bytes=SLOT_BYTES,
               keep_free_bytes=1 << 62) as spool:  # the pool can never make a slot
        assert spool.slot_pool is not None and spool.slot_pool.free == 0
        blobs = [part10_bytes(ct_dataset(seed=n)) for n in range(3)]
        for data in blobs:
            _store(spool, data)
        entries = spool.next_batch(10)

        assert sorted(read_verified(e) for e in entries) == sorted(blobs)
        assert {e.path.parent.parent.name for e in entries} == {"objects"}


def test_reopening_keeps_journaled_slots_and_reuses_only_free_ones(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with _spool(root) as spool:
        data = part10_bytes(ct_dataset())
        _store(spool, data)
    held = journal_rows(root)[0]["path"]
    folder = root / SLOTS_DIR
    (folder / "deadbeef.tmp").write_bytes(b"unfinished")  # a creation cut short
    (folder / "short").write_bytes(b"x" * 10)  # not a slot this pool made

    with _spool(root, count=4) as spool:
        assert not (folder / "deadbeef.tmp").exists() and not (folder / "short").exists()
        pool = spool.slot_pool
        assert pool is not None
        taken = {pool.take(1) for _ in range(pool.free)}
        assert held.split("/", 1)[1] not in taken
        (entry,) = spool.next_batch(10)
        assert read_verified(entry) == data


def test_the_pool_never_takes_the_disk_below_the_watermark(tmp_path: Path) -> None:
    import shutil

    free = shutil.disk_usage(tmp_path).free
    pool = SlotPool(tmp_path / "slots", target=8, slot_bytes=SLOT_BYTES,
                    keep_free_bytes=free - 3 * SLOT_BYTES, in_use=set())
    try:
        assert not pool.wait_full(timeout=2.0)
        assert pool.free <= 3
    finally:
        pool.close()


def test_a_slot_written_but_never_journaled_is_free_again_after_a_crash(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    with _spool(root, count=2) as spool:
        pool = spool.slot_pool
        assert pool is not None
        name = pool.take(100)
        assert name is not None
        (root / SLOTS_DIR / name).write_bytes(b"\x01" * SLOT_BYTES)  # the store died here

    with _spool(root, count=2) as spool:
        assert journal_rows(root) == []
        data = part10_bytes(ct_dataset())
        _store(spool, data)
        (entry,) = spool.next_batch(10)
        assert hashlib.sha256(read_verified(entry)).hexdigest() == entry.sha256
