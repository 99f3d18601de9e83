"""The power-loss file system (tests/powerfs.py) is strict: after ``cut_power`` only
what was fsynced is on the disk, the file's data by fsync of the file and its name
by fsync of its folder. The edge's power-loss test relies on exactly this."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.powerfs import PowerFS


@pytest.fixture
def powerfs(tmp_path: Path) -> Iterator[PowerFS]:
    with PowerFS(mount=tmp_path / "mnt", backing=tmp_path / "disk",
                 scratch=tmp_path / "scratch") as fs:
        yield fs


def write(path: Path, data: bytes, *, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_file_written_but_never_fsynced_is_gone_after_power_cut(powerfs: PowerFS) -> None:
    write(powerfs.mount / "a.dcm", b"bytes", fsync=False)
    assert (powerfs.mount / "a.dcm").read_bytes() == b"bytes"  # visible while powered

    powerfs.cut_power()

    assert list(powerfs.backing.iterdir()) == []


def test_fsynced_file_whose_folder_was_not_fsynced_is_gone(powerfs: PowerFS) -> None:
    write(powerfs.mount / "a.dcm", b"bytes", fsync=True)

    powerfs.cut_power()

    assert list(powerfs.backing.iterdir()) == []


def test_fsynced_file_in_fsynced_folder_survives(powerfs: PowerFS) -> None:
    write(powerfs.mount / "a.dcm", b"bytes", fsync=True)
    fsync_dir(powerfs.mount)

    powerfs.cut_power()

    assert (powerfs.backing / "a.dcm").read_bytes() == b"bytes"


def test_durable_name_without_fsynced_data_comes_back_empty(powerfs: PowerFS) -> None:
    write(powerfs.mount / "a.dcm", b"bytes", fsync=False)
    fsync_dir(powerfs.mount)

    powerfs.cut_power()

    assert (powerfs.backing / "a.dcm").read_bytes() == b""


def test_writes_after_the_last_fsync_are_lost(powerfs: PowerFS) -> None:
    path = powerfs.mount / "a.dcm"
    write(path, b"first", fsync=True)
    fsync_dir(powerfs.mount)
    with open(path, "r+b") as fh:
        fh.write(b"SECOND, longer")

    powerfs.cut_power()

    assert (powerfs.backing / "a.dcm").read_bytes() == b"first"


def test_rename_is_durable_only_once_the_folder_is_fsynced(powerfs: PowerFS) -> None:
    write(powerfs.mount / "old", b"bytes", fsync=True)
    fsync_dir(powerfs.mount)
    os.rename(powerfs.mount / "old", powerfs.mount / "new")

    powerfs.cut_power()

    assert sorted(p.name for p in powerfs.backing.iterdir()) == ["old"]


def test_new_folder_needs_its_parent_fsynced(powerfs: PowerFS) -> None:
    sub = powerfs.mount / "sub"
    sub.mkdir()
    write(sub / "a.dcm", b"bytes", fsync=True)
    fsync_dir(sub)  # the file's name is durable in sub, but sub's own name is not

    powerfs.cut_power()

    assert list(powerfs.backing.iterdir()) == []


def test_sqlite_wal_commits_survive_and_unsynced_commits_do_not(powerfs: PowerFS) -> None:
    conn = sqlite3.connect(powerfs.mount / "journal.sqlite3")  # WAL needs a shared mmap
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    with conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    for x in range(20):
        with conn:
            conn.execute("INSERT INTO t VALUES (?)", (x,))
    conn.execute("PRAGMA synchronous=OFF")
    for x in range(20, 40):
        with conn:
            conn.execute("INSERT INTO t VALUES (?)", (x,))

    powerfs.cut_power()
    conn.close()

    reopened = sqlite3.connect(powerfs.backing / "journal.sqlite3")
    try:
        assert reopened.execute("SELECT count(*) FROM t").fetchone() == (20,)
    finally:
        reopened.close()


def test_clean_unmount_keeps_everything(powerfs: PowerFS) -> None:
    (powerfs.mount / "sub").mkdir()
    write(powerfs.mount / "sub" / "a.dcm", b"bytes", fsync=False)

    powerfs.unmount()

    assert (powerfs.backing / "sub" / "a.dcm").read_bytes() == b"bytes"


def test_existing_disk_content_is_there_after_mount_and_cut(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    (disk / "sub").mkdir(parents=True)
    (disk / "sub" / "kept").write_bytes(b"old")
    with PowerFS(mount=tmp_path / "mnt", backing=disk, scratch=tmp_path / "s") as fs:
        assert (fs.mount / "sub" / "kept").read_bytes() == b"old"
        (fs.mount / "sub" / "kept").unlink()  # not durable: the folder is not fsynced
        fs.cut_power()

    assert (disk / "sub" / "kept").read_bytes() == b"old"
