"""Hostile inputs for issue 13 row 13: UIDs that try to climb out of a folder or reach a
shell, over-long UIDs, names with shell and control characters, a preamble holding other
formats' headers, a file meta UID that differs from the dataset's. Each builder returns the
Part 10 bytes (pydicom's writing checks are switched off for them: these are what an
attacker sends, not what pydicom would write)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from pydicom import config
from pydicom.dataset import Dataset

from tests.factories import make_dataset


def climbing_uid(depth: int, target: str = "escaped/pwned") -> str:
    """A "UID" that, pasted into a path ``depth`` folders deep, lands in ``target`` beside them."""
    return "../" * depth + target


HOSTILE_UIDS = {
    "dot-dot": "../../x",
    "absolute": "/etc/passwd",
    "uid-then-climb": "1.2.840.10008/../../../../x",
    "shell": "1.2.3;rm -rf $(id)|cat&",
    "backticks": "1.2.`touch pwned`.3",
    "nul": "1.2.3\x00.4",
    "over-long": "1." + "2" * 250,
    "over-long-valid-digits": ".".join(["123456789"] * 10),
    "newline": "1.2.3\n4",
    "empty-components": "1..2",
    "dot": ".",
}
"""Each is used as SOPInstanceUID, then StudyInstanceUID, then SeriesInstanceUID."""

HOSTILE_NAMES = {
    "shell": "ROBERT^'); DROP TABLE patients;--$(reboot)|`id`&;",
    "control": "ZHANG^SAN\x1b[31m\x07\x08\r",
    "chinese-shell": "张三$(rm -rf /)^`id`",
    "path": "../../etc/passwd^/bin/sh",
}


def _zip_preamble() -> bytes:
    """A ZIP local file header with a file name and content, at most 128 bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("x.sh", b"#!/bin/sh\nid\n")
    data = buf.getvalue()
    local = data[:data.index(b"PK\x01\x02")]  # the local header and the file's bytes
    assert len(local) <= 128
    return local


PREAMBLES = {
    "zip": _zip_preamble(),
    "html": b"<html><body><script>window.__xss=1</script><img src=x onerror=alert(1)></body></html>",
    "elf": b"\x7fELF\x02\x01\x01" + b"\x00" * 9 + b"#!/bin/sh\n",
    "pdf": b"%PDF-1.4\n1 0 obj<</JS(app.alert(1))/S/JavaScript>>endobj\n",
}


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    build: Callable[[], bytes]
    refused: bool
    """True: the instance must be refused; False: stored (under a safe key), unchanged."""


def _raw(**attrs: object) -> bytes:
    """The instance with ``attrs`` set as given (no validation on write)."""
    ds = make_dataset(**attrs)
    buf = io.BytesIO()
    with config.disable_value_validation():
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def with_preamble(data: bytes, preamble: bytes) -> bytes:
    return preamble.ljust(128, b"\x00")[:128] + data[128:]


def zip_polyglot() -> bytes:
    """A file that is both a valid DICOM instance and a valid ZIP archive (the PS3.10
    preamble attack, CVE-2019-11687): the ZIP's local header and file in the preamble, its
    central directory and end record in a trailing Data Set Trailing Padding (FFFC,FFFC)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("x.sh", b"#!/bin/sh\nid\n")
    archive = buf.getvalue()
    cd_start, eocd_start = archive.index(b"PK\x01\x02"), archive.index(b"PK\x05\x06")
    dicom = with_preamble(_raw(), archive[:cd_start])
    directory, end = archive[cd_start:eocd_start], bytearray(archive[eocd_start:])
    value_at = len(dicom) + 12  # after the padding element's tag, VR, reserved bytes and length
    end[16:20] = value_at.to_bytes(4, "little")  # where the central directory now is
    if (len(directory) + len(end)) % 2:
        end[20:22] = (1).to_bytes(2, "little")
        end += b" "  # a one-byte comment keeps the value's length even
    value = directory + bytes(end)
    return dicom + b"\xfc\xff\xfc\xffOB\x00\x00" + len(value).to_bytes(4, "little") + value


def meta_uid_differs() -> bytes:
    """The file meta's MediaStorageSOPInstanceUID names another instance than the dataset's
    SOPInstanceUID (pydicom would fix it on writing: the meta bytes are edited after)."""
    ds = make_dataset()
    uid = str(ds.SOPInstanceUID).encode()
    data = bytearray(_raw_ds(ds))
    at = data.index(uid, 132)  # the first: in the file meta
    other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
    data[at:at + len(uid)] = other
    return bytes(data)


def _raw_ds(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def cases() -> list[Case]:
    """Every hostile instance of the row, named."""
    found = []
    for name, uid in HOSTILE_UIDS.items():
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            found.append(Case(f"uid-{name}-{keyword}", lambda u=uid, k=keyword: _raw(**{k: u}), refused=True))
    for name, person in HOSTILE_NAMES.items():
        found.append(Case(f"name-{name}", lambda p=person: _raw(PatientName=p, ReferringPhysicianName=p,
                                                                StudyDescription=p), refused=False))
    for name, preamble in PREAMBLES.items():
        found.append(Case(f"preamble-{name}", lambda p=preamble: with_preamble(_raw(), p), refused=False))
    found.append(Case("preamble-zip-polyglot", zip_polyglot, refused=False))
    found.append(Case("meta-uid-differs", meta_uid_differs, refused=True))
    return found
