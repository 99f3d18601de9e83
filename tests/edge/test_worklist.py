"""The edge's Modality Worklist: DCMTK findscu -W and pynetdicom ask for orders by date,
modality, station, name (Chinese or pinyin), patient ID and accession; names come back in
the character set the modality asked, byte for byte; an unsupported key is a warning,
not a failure; a cancelled order is never offered; and it all works with the WAN down."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset

from relay.config import Settings
from relay.edge.http import county_client
from relay.edge.orders import OrderCache, sync_once
from relay.edge.worklist import IDENTIFIER_MISMATCH, PENDING, PENDING_WARNING, UNABLE_TO_PROCESS
from tests.edge.mwl import SITE, at, findscu, mwl_query, pynetdicom_find, raw_find, running_worklist, sample_orders


@pytest.fixture
def worklist_settings(edge_settings: Settings) -> Settings:
    return edge_settings.model_copy(update={"edge_site": SITE, "timezone": "Asia/Shanghai"})


@pytest.fixture
def port(worklist_settings: Settings, spool) -> Iterator[int]:
    cache = OrderCache(spool.root)
    cache.replace_from_county(sample_orders(), etag='"v1"')
    with running_worklist(worklist_settings, cache) as server:
        yield server.port


def _accessions(answers: list[tuple[int, Dataset | None]]) -> list[str]:
    assert answers and answers[-1][0] == 0x0000, [hex(s) for s, _ in answers]
    return sorted(str(ds.AccessionNumber) for status, ds in answers if ds is not None)


def _today() -> str:
    return at(0).strftime("%Y%m%d")


def test_findscu_finds_todays_dx_order_at_its_station_by_date_range(port: int, dcmtk, tmp_path: Path) -> None:
    query = mwl_query(sps={"Modality": "DX", "ScheduledStationAETitle": "DR01",
                           "ScheduledProcedureStepStartDate": f"{_today()}-{_today()}"})
    found = findscu(dcmtk, port, query, tmp_path / "dx")
    assert found.completed.returncode == 0, found.completed.stderr
    [answer] = found.datasets()
    assert str(answer.AccessionNumber) == "A001" and str(answer.PatientID) == "PA001"
    step = answer.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate,
            step.ScheduledProcedureStepStartTime) == ("DX", "DR01", _today(), "090000")
    assert answer.AdmittingDiagnosesDescription == "咳嗽待查" and answer.RequestedProcedurePriority == "ROUTINE"
    assert answer.StudyInstanceUID and answer.ReferencedStudySequence == []


def test_date_ranges_open_at_either_end_and_universal_matching(port: int) -> None:
    tomorrow, three_ago = at(1).strftime("%Y%m%d"), at(-3).strftime("%Y%m%d")
    date = "ScheduledProcedureStepStartDate"
    assert _accessions(pynetdicom_find(port, mwl_query())) == ["A001", "A002", "A004"]  # the cancelled A003 never
    assert _accessions(pynetdicom_find(port, mwl_query(sps={date: f"{tomorrow}-"}))) == ["A002"]
    assert _accessions(pynetdicom_find(port, mwl_query(sps={date: f"-{three_ago}"}))) == ["A004"]
    assert _accessions(pynetdicom_find(port, mwl_query(sps={date: three_ago}))) == ["A004"]
    assert _accessions(pynetdicom_find(port, mwl_query(sps={"Modality": "CT"}))) == ["A002"]
    assert _accessions(pynetdicom_find(port, mwl_query(sps={"ScheduledStationAETitle": "CT01"}))) == ["A002"]
    assert _accessions(pynetdicom_find(port, mwl_query(sps={"ScheduledProcedureStepStartTime": "0800-1000"}))) \
        == ["A001", "A002"]


def test_names_match_with_wildcards_on_the_chinese_name_and_the_pinyin(port: int, dcmtk, tmp_path: Path) -> None:
    def by_name(name: str) -> list[str]:
        return _accessions(pynetdicom_find(port, mwl_query(charset="ISO_IR 192", PatientName=name)))

    assert by_name("王*") == ["A001"]
    assert by_name("wang*") == ["A001"]
    assert by_name("Wang^Xiaoming") == ["A001"]
    assert by_name("王小明") == ["A001"]
    assert by_name("*娜") == ["A002", "A004"]
    assert by_name("李?") == ["A002"]
    assert by_name("Ouyang^*") == ["A004"]
    assert by_name("=欧阳*") == ["A004"]
    assert by_name("Zhang*") == []  # cancelled
    gb = findscu(dcmtk, port, mwl_query(charset="GB18030", PatientName="李*"), tmp_path / "gb")
    assert [str(d.AccessionNumber) for d in gb.datasets()] == ["A002"]


def test_patient_id_and_accession_single_value_matching(port: int) -> None:
    assert _accessions(pynetdicom_find(port, mwl_query(PatientID="PA002"))) == ["A002"]
    assert _accessions(pynetdicom_find(port, mwl_query(AccessionNumber="A004"))) == ["A004"]
    assert _accessions(pynetdicom_find(port, mwl_query(AccessionNumber="A00?"))) == ["A001", "A002", "A004"]
    assert _accessions(pynetdicom_find(port, mwl_query(AccessionNumber="A003"))) == []  # cancelled


@pytest.mark.parametrize(("asked", "answered", "codec"), [
    ("GB18030", "GB18030", "gb18030"), ("ISO_IR 192", "ISO_IR 192", "utf-8"), (None, "GB18030", "gb18030")])
def test_names_come_back_byte_exact_in_the_character_set_asked(port: int, dcmtk, tmp_path: Path, asked: str | None,
                                                               answered: str, codec: str) -> None:
    found = findscu(dcmtk, port, mwl_query(charset=asked, sps={"ScheduledProcedureStepStartDate": ""}),
                    tmp_path / (asked or "none").replace(" ", "_"))
    assert found.completed.returncode == 0, found.completed.stderr
    raw = b"".join(p.read_bytes() for p in found.responses)
    assert answered.encode() in raw
    assert "Wang^Xiaoming=王^小明".encode(codec) in raw  # pinyin known: alphabetic = ideographic
    assert "李^娜".encode(codec) in raw  # no pinyin: the Chinese name in the first group
    assert "咳嗽待查".encode(codec) in raw and "胸部正位".encode(codec) in raw  # also inside the sequence
    other = "utf-8" if codec == "gb18030" else "gb18030"
    assert "王^小明".encode(other) not in raw
    names = {str(d.AccessionNumber): str(d.PatientName) for d in found.datasets()}
    assert names["A001"] == "Wang^Xiaoming=王^小明" and names["A002"] == "李^娜"


def test_an_unsupported_key_is_a_warning_with_the_results(port: int) -> None:
    query = mwl_query(PatientID="PA001")
    query.PatientWeight = ""  # not a key this worklist answers
    query.add_new(0x00111010, "LO", "x")  # a private tag
    answers = pynetdicom_find(port, query)
    assert [status for status, _ in answers] == [PENDING_WARNING, 0x0000]
    answer = answers[0][1]
    assert answer is not None and answer.AccessionNumber == "A001" and "PatientWeight" not in answer
    plain = pynetdicom_find(port, mwl_query(PatientID="PA001"))
    assert [status for status, _ in plain] == [PENDING, 0x0000]


def test_a_query_that_cannot_be_read_is_refused_with_a_failure_status_and_no_patient_data_logged(
    port: int, caplog: pytest.LogCaptureFixture,
) -> None:
    two_steps = mwl_query(charset="GB18030", PatientName="王*")
    two_steps.ScheduledProcedureStepSequence.append(Dataset())
    with caplog.at_level(logging.INFO, logger="relay.edge.worklist"):
        assert [s for s, _ in pynetdicom_find(port, two_steps)] == [IDENTIFIER_MISMATCH]
        broken = b"\x40\x00\x00\x01\xff\xff\xff\xff\xfe\xff\x00\xe0\x10\x00\x00\x00" + b"\x99" * 16
        assert raw_find(port, broken) == UNABLE_TO_PROCESS
        assert _accessions(pynetdicom_find(port, mwl_query(charset="GB18030", PatientName="王*"))) == ["A001"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "ae=DR01" in logged and "0xA900" in logged and "0xC000" in logged
    assert "王" not in logged and "PA001" not in logged and "Wang" not in logged


class _County(BaseHTTPRequestHandler):
    snapshot: bytes = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", '"snap"')
        self.send_header("Content-Length", str(len(self.snapshot)))
        self.end_headers()
        self.wfile.write(self.snapshot)

    def log_message(self, *_args: object) -> None:
        pass


def test_with_the_wan_down_the_worklist_answers_from_the_cache(worklist_settings: Settings, spool) -> None:
    _County.snapshot = json.dumps({"orders": [o.to_wire() for o in sample_orders()], "etag": '"snap"'}).encode()
    listener = ThreadingHTTPServer(("127.0.0.1", 0), _County)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    up = worklist_settings.model_copy(update={"county_url": f"http://127.0.0.1:{listener.server_address[1]}"})
    cache = OrderCache(spool.root)
    try:
        with county_client(up) as client:
            assert sync_once(client, cache, site=SITE) is True
    finally:
        listener.shutdown()
        listener.server_close()
    with county_client(up) as client, pytest.raises(httpx.ConnectError):
        sync_once(client, cache, site=SITE)  # the county is gone: the cache stays
    with running_worklist(up, OrderCache(spool.root)) as server:  # as after a restart
        assert _accessions(pynetdicom_find(server.port, mwl_query(charset="GB18030", PatientName="王*"))) == ["A001"]


def test_the_services_ae_applies_the_edges_allow_list(worklist_settings: Settings, spool) -> None:
    from tests.edge.helpers import association_answer

    settings = worklist_settings.model_copy(update={"edge_allowed_aes": "DR01@127.0.0.1, CT01@10.9.9.9"})
    cache = OrderCache(spool.root)
    cache.replace_from_county(sample_orders(), etag='"v1"')
    with running_worklist(settings, cache) as server:
        for stranger in ("UNKNOWN", "CT01"):  # unknown title; known title from another address
            rejected = association_answer(server.port, stranger)
            assert rejected[:1] == b"\x03" and (rejected[7], rejected[8], rejected[9]) == (0x01, 0x01, 0x03)
        assert association_answer(server.port, "DR01")[:1] == b"\x02"  # A-ASSOCIATE-AC
        assert _accessions(pynetdicom_find(server.port, mwl_query(AccessionNumber="A001"))) == ["A001"]


def test_a_query_without_a_character_set_is_read_in_the_default_one(port: int) -> None:
    from pydicom.dataelem import DataElement

    query = mwl_query()  # no (0008,0005), but a GB18030 name, as many Chinese modalities send
    query["PatientName"] = DataElement(0x00100010, "PN", "李*".encode("gb18030"))
    answers = pynetdicom_find(port, query)
    assert _accessions(answers) == ["A002"]
    assert answers[0][1] is not None and answers[0][1].SpecificCharacterSet == "GB18030"
