"""Issue 12's loop on the production-shaped bed: the HIS's order to the HIS's report.

An HL7 ORM^O01 from an MLLP client reaches the county's `relay mllp`; the township's edge
syncs it; DCMTK findscu (the modality) gets it from the edge's worklist; storescu sends the
study with that accession and the pinyin a modality types; the modality asks for storage
commitment and gets it; the study is on the county worklist under the HIS's Chinese name
with the clinical question; the reader signs; the HIS's MLLP listener gets an ORU^R01 with
the findings and the PDF, and its FHIR server a DiagnosticReport. Then the same with the
township's WAN cut between the order and the exam.
"""

from __future__ import annotations

import base64
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from tests.edge.mwl import findscu, mwl_query
from tests.his_standins import field, segments, send_mllp
from tests.topology.bed import Edge, Topology, fresh_study, storescu
from tests.topology.test_county_topology import _read_and_sign, _sample

HIS_NAME, PINYIN = "王^小明", "Wang^Xiaoming"
QUESTION = ("咳嗽两周，发热3天", "排除肺炎", "吸烟史30年")
FINDINGS_TEXT = "右下肺见斑片状模糊影。"


def _orm(*, site: str, placer: str, accession: str, patient_id: str, charset: str = "UNICODE UTF-8") -> bytes:
    """An ORM^O01 new order as a township HIS sends it (fields as docs/interfaces/hl7-in.md reads them)."""
    diagnosis, purpose, history = QUESTION
    lines = [
        f"MSH|^~\\&|HIS|XZHIS|RELAY|COUNTY|20261207100000||ORM^O01^ORM_O01|{placer}|P|2.5|||AL|NE||{charset}",
        f"PID|1||{patient_id}^^^XZHIS^MR||王^小明^^^^^L^I~Wang^Xiaoming^^^^^L^P||19600102|M|||||13800000000",
        f"PV1|1|O|{site}^^^{site}",
        f"ORC|NW|{placer}^XZHIS|||SC||^^^20261207100000^^R||20261207095500|||D001^李^医生|||||内科",
        f"OBR|1|{placer}^XZHIS||DX001^胸部正位^L|||20261207100000||||||{purpose}|||D001^李^医生||{accession}|"
        f"RP{placer[-6:]}|SPS{placer[-6:]}||||DX",
        f"DG1|1||^{diagnosis}",
        f"NTE|1||{history}",
    ]
    encoding = "gb18030" if "18030" in charset else "utf-8"
    return "\r".join(lines).encode(encoding) + b"\r"


def _worklist_entry(bed: Topology, edge: Edge, accession: str, folder: Path) -> Dataset | None:
    found = findscu(_dcmtk, edge.services_port, mwl_query(charset="GB18030", AccessionNumber=accession),
                    folder, calling_ae="DR01")
    assert found.completed.returncode == 0, found.completed.stderr
    entries = found.datasets()
    return entries[0] if entries else None


def _dcmtk(*args: str) -> Any:
    import subprocess

    from tests.processes import base_env

    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=base_env())


def _commit(edge: Edge, files: list[Path]) -> Dataset:
    """Storage commitment as the modality asks for it: N-ACTION on an association it keeps
    open, accepting the SCP role so the edge may send the N-EVENT-REPORT on it."""
    reports: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event: Any) -> int:
        reports.append(event.event_information)
        arrived.set()
        return 0x0000, None

    ae = AE(ae_title="DR01")
    ae.add_requested_context(StorageCommitmentPushModel)
    from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation

    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = StorageCommitmentPushModel
    role.scu_role, role.scp_role = True, True
    assoc = ae.associate("127.0.0.1", edge.services_port, ae_title=edge.services_ae, ext_neg=[role],
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    assert assoc.is_established, "the edge refused the storage commitment association"
    try:
        request = Dataset()
        request.TransactionUID = pydicom.uid.generate_uid()
        refs = []
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            ref = Dataset()
            ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
            refs.append(ref)
        request.ReferencedSOPSequence = refs
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        assert status is not None and status.Status == 0x0000, status
        assert arrived.wait(120), "no N-EVENT-REPORT from the edge"
    finally:
        assoc.release()
    (report,) = reports
    return report


def _county_item(http: httpx.Client, uid: str) -> dict[str, Any] | None:
    items = {i["study_instance_uid"]: i for i in http.get("/api/worklist").raise_for_status().json()}
    return items.get(uid)


def _loop(bed: Topology, samples: list[dict[str, str]], tmp_path: Path, *, site: str, cut_before_exam: bool,
          charset: str) -> None:
    edge = bed.edges[site]
    tag = uuid.uuid4().hex[:8].upper()
    placer, accession, patient_id = f"ORD{tag}", f"A{tag}", f"P{tag}"
    ack = send_mllp(bed.mllp_port, _orm(site=site, placer=placer, accession=accession, patient_id=patient_id,
                                        charset=charset))
    assert field(ack, "MSA", 1) == b"AA", ack

    bed.wait("the order on the township's worklist (findscu at the modality)",
             lambda: _worklist_entry(bed, edge, accession, tmp_path / f"mwl-{uuid.uuid4().hex[:6]}") is not None,
             timeout=120)
    if cut_before_exam:
        bed.cut_wan(edge)
    try:
        entry = _worklist_entry(bed, edge, accession, tmp_path / "mwl-exam")
        assert entry is not None, "the worklist lost the order"
        assert HIS_NAME in str(entry.PatientName) and entry.PatientID == patient_id
        study_uid, files = fresh_study(_sample(samples, "DX"), tmp_path / "exam", AccessionNumber=accession,
                                       PatientID=patient_id, PatientName="WANG^XIAOMING", PatientSex="M",
                                       PatientBirthDate="19600102", IssuerOfPatientID=entry.IssuerOfPatientID)
        sent = storescu(edge, *files, calling_ae="DR01")
        assert sent.returncode == 0, sent.stderr
        report = _commit(edge, files)
        committed = {str(r.ReferencedSOPInstanceUID) for r in report.get("ReferencedSOPSequence", [])}
        assert committed == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
        assert "FailedSOPSequence" not in report
    finally:
        if cut_before_exam:
            bed.restore_wan(edge)

    with bed.client(bed.token(bed.reader)) as http:
        bed.wait("the study on the county worklist", lambda: _county_item(http, study_uid) is not None, timeout=150)
        item = _county_item(http, study_uid)
        assert item is not None
        assert item["patient_name"] == HIS_NAME, (  # the HIS's Chinese name, not the modality's pinyin
            f"{item}; order: {http.get(f'/api/studies/{study_uid}/order').text}")
        assert item["requested_procedure"] == "胸部正位" and not item["identity_conflict"], item
        linked = http.get(f"/api/studies/{study_uid}/order").raise_for_status().json()
        assert linked["order_match"] == "accession", linked
        order = linked["order"]
        assert (order["clinical_diagnosis"], order["exam_purpose"], order["history_summary"]) == QUESTION
        assert order["ordering_department"] == "内科"
        _read_and_sign(http, bed, study_uid, template="chest-pa", impression=FINDINGS_TEXT)

    def oru() -> bytes | None:
        for message in bed.his_mllp.messages(message_type="ORU"):
            if field(message, "OBR", 18) == accession.encode():
                return message
        return None

    bed.wait("the ORU^R01 at the HIS", lambda: oru() is not None, timeout=180)
    message = oru()
    assert message is not None
    encoding = "gb18030" if b"18030" in field(message, "MSH", 18) else "utf-8"
    assert field(message, "ORC", 2).split(b"^")[0] == placer.encode()
    assert HIS_NAME.encode(encoding) in field(message, "PID", 5)
    texts = [s for s in segments(message) if s[0] == b"OBX"]
    assert any(FINDINGS_TEXT.encode(encoding) in b"|".join(s) for s in texts)
    (pdf_obx,) = [s for s in texts if s[2] == b"ED"]
    assert base64.b64decode(pdf_obx[5].split(b"^")[-1]).startswith(b"%PDF")

    def diagnostic_report() -> dict[str, Any] | None:
        for request in bed.his_fhir.requests("DiagnosticReport"):
            if any(ref.get("identifier", {}).get("value") == placer for ref in request.body.get("basedOn", [])):
                return request.body
        return None

    bed.wait("the FHIR DiagnosticReport at the HIS", lambda: diagnostic_report() is not None, timeout=180)
    body = diagnostic_report()
    assert body is not None and body["status"] == "final"
    assert any(form.get("contentType") == "application/pdf" and base64.b64decode(form["data"]).startswith(b"%PDF")
               for form in body["presentedForm"])


def test_an_hl7_order_is_worked_at_the_township_and_its_signed_report_reaches_the_his(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    _loop(bed, samples, tmp_path, site="qingshan", cut_before_exam=False, charset="UNICODE UTF-8")


def test_the_same_with_the_townships_wan_cut_between_the_order_and_the_exam(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    _loop(bed, samples, tmp_path, site="hekou", cut_before_exam=True, charset="GB 18030-2000")
