"""read_ids' fast path (scan_ids) against pydicom: same identifiers whenever it answers,
pydicom whenever it does not, on real files, sequences of every length kind, and
thousands of corrupted variants."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from relay.dicom.header import _ID_TAGS, InvalidInstance, _parse, ids_from_dataset, read_ids, scan_ids
from tests.edge.factories import ct_dataset, part10_bytes

SAMPLES = Path(__file__).resolve().parents[2] / "sample_dicom"


def _pydicom_ids(data: bytes) -> object:
    try:
        return ids_from_dataset(_parse(data, specific_tags=_ID_TAGS))
    except InvalidInstance as exc:
        return type(exc)


@pytest.mark.parametrize("path", sorted(SAMPLES.rglob("*.dcm")), ids=lambda p: p.name)
def test_samples_give_pydicoms_identifiers(path: Path) -> None:
    data = path.read_bytes()
    fast = scan_ids(data)
    assert fast is None or fast == _pydicom_ids(data)
    assert read_ids(data) == _pydicom_ids(data)


def test_explicit_le_is_read_fast_and_implicit_goes_to_pydicom() -> None:
    explicit = part10_bytes(ct_dataset())
    assert scan_ids(explicit) is not None
    ds = ct_dataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    assert scan_ids(part10_bytes(ds)) is None
    assert read_ids(part10_bytes(ds)) == _pydicom_ids(part10_bytes(ds))


def _with_sequences(undefined: bool) -> bytes:
    """A CT with nested sequences before the UIDs, lengths defined or undefined."""
    ds = ct_dataset()
    inner = Dataset()
    inner.CodeValue, inner.CodingSchemeDesignator, inner.CodeMeaning = "X", "99TEST", "x"
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.PurposeOfReferenceCodeSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, item])  # (0008,1140): before (0020,000D)
    ds.ProcedureCodeSequence = Sequence([inner])  # (0008,1032)
    for seq in (ds.ReferencedImageSequence, ds.ProcedureCodeSequence,
                item.PurposeOfReferenceCodeSequence):
        seq.is_undefined_length = undefined
        for member in seq:
            member.is_undefined_length_sequence_item = undefined
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    return part10_bytes(ds)


@pytest.mark.parametrize("undefined", [False, True])
def test_sequences_before_the_uids_are_skipped(undefined: bool) -> None:
    data = _with_sequences(undefined)
    assert scan_ids(data) == _pydicom_ids(data)
    assert scan_ids(data) is not None


def test_corrupted_bytes_never_give_other_identifiers_than_pydicom() -> None:
    rng = random.Random(20261123)
    bases = [part10_bytes(ct_dataset()), _with_sequences(True), _with_sequences(False)]
    answered = 0
    for n in range(6000):
        data = bytearray(rng.choice(bases))
        if n % 3 == 0:
            data = data[:rng.randrange(132, len(data))]  # truncated
        else:
            for _ in range(rng.randint(1, 4)):  # flipped bytes, mostly in the header
                data[rng.randrange(132, 900 if n % 2 else len(data))] = rng.randrange(256)
        fast = scan_ids(bytes(data))
        if fast is not None:
            answered += 1
            assert fast == _pydicom_ids(bytes(data)), n
    assert answered > 100  # the comparison above really ran
