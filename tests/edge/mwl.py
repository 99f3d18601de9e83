"""Helpers of the worklist tests: orders as the county sends them, a running services AE,
and the two C-FIND SCUs (DCMTK findscu -W, pynetdicom)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from relay.config import Settings
from relay.dicom.orders import Order
from relay.edge.dimse_services import ServicesServer, start_services
from relay.edge.orders import OrderCache
from relay.edge.worklist import WorklistService

ZONE = ZoneInfo("Asia/Shanghai")
SITE = "township-a"


def at(days: int = 0, hour: int = 9) -> datetime:
    return (datetime.now(ZONE) + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)


def county_order(accession: str, name: str, *, when: datetime, pinyin: str = "", **kw: Any) -> Order:
    base: dict[str, Any] = dict(placer_order_number=f"HIS-{accession}", placer_issuer="HIS.XZ",
                                accession_number=accession, site=SITE, patient_id=f"P{accession}",
                                patient_id_issuer="HIS.XZ", patient_name=name, patient_name_pinyin=pinyin,
                                patient_sex="M", patient_birth_date="19600102", modality="DX",
                                procedure_description="胸部正位", clinical_diagnosis="咳嗽待查",
                                ordering_doctor="赵^医生", ordering_department="内科",
                                scheduled_at=when.isoformat(), study_instance_uid=generate_uid(prefix=None))
    base.update(kw)
    return Order(**base)


def sample_orders() -> list[Order]:
    """Today's DX at DR01 (with pinyin), tomorrow's CT at CT01 (no pinyin), a cancelled DX
    today, an ultrasound three days ago for any station."""
    return [
        county_order("A001", "王^小明", pinyin="Wang^Xiaoming", when=at(0, 9), scheduled_station_ae="DR01"),
        county_order("A002", "李^娜", when=at(1, 10), modality="CT", scheduled_station_ae="CT01", patient_sex="F"),
        county_order("A003", "张^伟", pinyin="Zhang^Wei", when=at(0, 11), status="cancelled"),
        county_order("A004", "欧阳^娜娜", pinyin="Ouyang^Nana", when=at(-3, 14), modality="US", patient_sex="F"),
    ]


@contextlib.contextmanager
def running_worklist(settings: Settings, cache: OrderCache) -> Iterator[ServicesServer]:
    service = WorklistService(cache, timezone="Asia/Shanghai", default_charset=settings.edge_mwl_default_charset)
    server = start_services(settings, [service], host="127.0.0.1", port=0)
    try:
        yield server
    finally:
        server.stop()


def mwl_query(*, charset: str | None = None, sps: dict[str, Any] | None = None, **top: Any) -> Dataset:
    """A worklist query: the usual return keys empty (universal), ``top`` and ``sps`` set."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    for key in ("AccessionNumber", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                "PatientSex", "StudyInstanceUID", "RequestedProcedureDescription", "RequestedProcedureID",
                "RequestedProcedurePriority", "ReferringPhysicianName", "RequestingPhysician",
                "AdmittingDiagnosesDescription"):
        setattr(ds, key, "")
    ds.ReferencedStudySequence = Sequence([])
    item = Dataset()
    for key in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                "ScheduledProcedureStepStartTime", "ScheduledProcedureStepDescription", "ScheduledProcedureStepID",
                "ScheduledPerformingPhysicianName"):
        setattr(item, key, "")
    for key, value in (sps or {}).items():
        setattr(item, key, value)
    ds.ScheduledProcedureStepSequence = Sequence([item])
    for key, value in top.items():
        setattr(ds, key, value)
    return ds


def pynetdicom_find(port: int, query: Dataset, *, calling_ae: str = "DR01") -> list[tuple[int, Dataset | None]]:
    """(status, identifier) of every C-FIND response, the final one included."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE")
    assert assoc.is_established, "no association with the edge's services AE"
    try:
        return [(int(status.Status), identifier) for status, identifier
                in assoc.send_c_find(query, ModalityWorklistInformationFind)]
    finally:
        assoc.release()


def raw_find(port: int, identifier: bytes) -> int:
    """Send a C-FIND whose identifier is ``identifier`` as bytes (implicit VR little endian,
    not necessarily a dataset); the status of the first response."""
    ae = AE(ae_title="DR01")
    ae.add_requested_context(ModalityWorklistInformationFind, "1.2.840.10008.1.2")
    assoc = ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE")
    assert assoc.is_established
    assoc._reactor_checkpoint.clear()  # pause the association's reactor, as pynetdicom's own send_* do,
    deadline = time.monotonic() + 10  # so that it does not take the response off the queue first
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.001)
    assert assoc._is_paused, "the association's reactor did not pause"
    try:
        request = C_FIND()
        request.MessageID, request.Priority = 1, 2
        request.AffectedSOPClassUID = ModalityWorklistInformationFind
        request.Identifier = BytesIO(identifier)
        assoc.dimse.send_msg(request, assoc.accepted_contexts[0].context_id)
        _, response = assoc.dimse.get_msg(block=True)
        assert response is not None, "no C-FIND response"
        return int(response.Status)
    finally:
        assoc._reactor_checkpoint.set()
        assoc.release()


@dataclass
class FindscuResult:
    completed: subprocess.CompletedProcess[str]
    responses: list[Path]
    """The response identifiers findscu -X wrote, as files (their bytes are as received)."""

    def datasets(self) -> list[Dataset]:
        return [pydicom.dcmread(p, force=True) for p in self.responses]


def findscu(dcmtk: Any, port: int, query: Dataset, folder: Path, *, calling_ae: str = "DR01") -> FindscuResult:
    """DCMTK's findscu -W with ``query`` written as a DICOM file; -X keeps each response."""
    folder.mkdir(parents=True, exist_ok=True)
    query.file_meta = FileMetaDataset()
    query.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    query.file_meta.MediaStorageSOPClassUID = ModalityWorklistInformationFind
    query.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    path = folder / "query.dcm"
    query.save_as(path, enforce_file_format=True)
    done = dcmtk("findscu", "-W", "-X", "-od", str(folder), "-aet", calling_ae, "-aec", "RELAY_EDGE",
                 "127.0.0.1", str(port), str(path))
    return FindscuResult(done, sorted(folder.glob("rsp*.dcm")))
