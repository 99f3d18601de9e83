"""Small DICOM instances and county rows made in tests (real objects, no mocks)."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from relay.county.auth import service
from relay.county.context import County
from relay.county.db.engine import session_scope
from relay.dicom.vocab import Role


def make_dataset(**attrs: Any) -> Dataset:
    """A small valid CT instance; keyword arguments override or (value None) remove attributes."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality = "TEST^PATIENT", "T0001", "CT"
    ds.StudyDate, ds.StudyTime = "20261123", "080000"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", CTImageStorage)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", generate_uid())
    return ds


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_instance(**attrs: Any) -> bytes:
    return encode(make_dataset(**attrs))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_site(county: County, name: str = "township-a") -> tuple[int, str]:
    """Register a site; return (site id, credential)."""
    with session_scope(county.sessions) as session:
        site, token = service.create_site(session=session, name=name)
        session.commit()
        return site.id, token


def make_user(county: County, username: str, role: Role, *, site: str | None = None,
              password: str = "correct-horse-1") -> str:
    with session_scope(county.sessions) as session:
        service.create_user(session=session, username=username, password=password, role=role,
                            site_name=site)
        session.commit()
    return password
