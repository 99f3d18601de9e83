"""Signed reports to the HIS over real sockets on real PostgreSQL: an MLLP listener that
records the raw bytes and answers AA / AE / nothing as told, and an HTTP listener taking
FHIR DiagnosticReport PUTs. At least once, the HIS's answer recorded, never patient data in
the audit trail."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from relay.county.app import create_app
from relay.county.audit.service import Action
from relay.county.clock import now_utc
from relay.county.db.models import AuditEvent, HisMessage, Report, ReportDelivery, Study
from relay.county.his.delivery import his_round
from relay.county.flows import attach_renderings
from relay.county.orders.service import cancel_order, upsert_order
from relay.dicom.orders import Order
from relay.dicom.vocab import Role
from tests.county.test_index import index, ingest
from tests.county.test_reports import login
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.factories import encode, make_dataset, make_site, make_user

DEADLINE_S = 60.0
FINDINGS = "两肺纹理清晰|未见^实变&~\\\n心影不大（\\F\\ 照原样）。"
"""Every HL7 delimiter, a backslash, a line break, and a literal escape sequence."""
IMPRESSION = "两肺未见明显异常。"
ADVICE = "建议随访。"
LATER = timedelta(hours=3)
"""A round this much later finds every retry due (the backoff is capped at one hour)."""


# --- the HIS side: real listeners on loopback ------------------------------------------------


class MllpListener:
    """An HIS's MLLP listener: records every framed message, answers each with the next
    scripted reply ("AA", "AE", "AR", "other": AA for another control ID, "silent": read on
    and never answer), then "AA"."""

    def __init__(self, replies: list[str] | None = None, *, hold_s: float = 0.0) -> None:
        self.received: list[bytes] = []
        self.replies = list(replies or [])
        self.lock = threading.Lock()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(DEADLINE_S)
                buffer = b""
                while b"\x1c\x0d" not in buffer:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                message = buffer[buffer.index(b"\x0b") + 1:buffer.index(b"\x1c\x0d")]
                with outer.lock:
                    outer.received.append(message)
                    reply = outer.replies.pop(0) if outer.replies else "AA"
                if reply == "silent":
                    while self.request.recv(65536):  # until the sender gives up and closes
                        pass
                    return
                time.sleep(hold_s)
                control_id = message.split(b"\r")[0].split(b"|")[9].decode("ascii")
                if reply == "other":
                    reply, control_id = "AA", "relay-999999-hl7"
                ack = (f"MSH|^~\\&|HIS|HOSP|RELAY|COUNTY|20261207120000||ACK^R01^ACK|A{len(outer.received)}|P|2.5\r"
                       f"MSA|{reply}|{control_id}|{'PID-3 unknown' if reply != 'AA' else ''}\r")
                self.request.sendall(b"\x0b" + ack.encode() + b"\x1c\x0d")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FhirListener:
    """An HIS's FHIR server: records every PUT (path, headers, JSON body), answers the next
    scripted status, then 201."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.received: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.statuses = list(statuses or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.received.append((self.path, dict(self.headers), body))
                status = outer.statuses.pop(0) if outer.statuses else 201
                answer = b"{}" if status < 400 else json.dumps({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "invalid", "diagnostics": "subject: unknown patient"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def mllp() -> Iterator[MllpListener]:
    listener = MllpListener()
    yield listener
    listener.close()


@pytest.fixture
def fhir_server() -> Iterator[FhirListener]:
    listener = FhirListener()
    yield listener
    listener.close()


# --- helpers -----------------------------------------------------------------------------------


def configure(county, **settings: Any) -> None:
    """The HIS settings a deployment would give (RELAY_HIS_*), short timeouts for silence."""
    county.settings = county.settings.model_copy(update={"his_timeout_s": 2.0, **settings})


def run_deliver(county, report_id: int) -> None:
    """What the ``deliver`` worker task runs after the signature (called directly: Celery's
    shared task registry keeps the task bound to the first test's County and its settings)."""
    assert attach_renderings(county, report_id)


def sign(client: TestClient, county, *, name: str = "Wang^Xiaoming=王^小明", accession: str = "A1001",
         deliver: bool = True, critical: bool = False) -> tuple[str, int, dict[str, str]]:
    """A study of patient ``name`` ingested, indexed, claimed, reported and signed by dr.wang;
    with ``deliver``, its renderings built as the deliver worker does. (uid, report id, headers)."""
    site_id = getattr(county, "_test_site", None) or make_site(county)[0]
    county._test_site = site_id
    ds = make_dataset(PatientName=name, SpecificCharacterSet="ISO_IR 192", AccessionNumber=accession,
                      PatientID="T0001", PatientSex="M", PatientBirthDate="19600102")
    index(county, ingest(county, encode(ds), site_id=site_id))
    uid = str(ds.StudyInstanceUID)
    dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
    client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr)
    client.post(f"/api/worklist/{uid}/claim", headers=dr)
    draft = client.post(f"/api/studies/{uid}/reports", json={"template": "chest-pa"}, headers=dr).json()
    client.patch(f"/api/reports/{draft['id']}", json={"findings": FINDINGS, "impression": IMPRESSION,
                                                       "advice": ADVICE, "critical": critical}, headers=dr)
    assert client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"},
                       headers=dr).status_code == 200
    if deliver:
        run_deliver(county, draft["id"])
    return uid, draft["id"], dr


def addendum(client: TestClient, county, uid: str, dr: dict[str, str]) -> int:
    draft = client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).json()
    client.patch(f"/api/reports/{draft['id']}", json={"impression": "补充：右下肺小结节，建议复查。"}, headers=dr)
    assert client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"},
                       headers=dr).status_code == 200
    run_deliver(county, draft["id"])
    return int(draft["id"])


def rounds_until(county, done, *, later: bool = False) -> None:
    """Run rounds (each a moment later, or LATER, so retries are due) until ``done()``."""
    deadline = time.monotonic() + DEADLINE_S
    for _ in range(50):
        his_round(county=county, now=now_utc() + (LATER if later else timedelta(0)))
        if done():
            return
        assert time.monotonic() < deadline, "the HIS delivery did not get there in time"
    raise AssertionError("the HIS delivery did not get there in 50 rounds")


def messages(county) -> list[HisMessage]:
    with county.sessions() as s:
        return list(s.execute(select(HisMessage).order_by(HisMessage.id)).scalars())


def segments(raw: bytes, codec: str = "utf-8") -> dict[str, list[list[str]]]:
    found: dict[str, list[list[str]]] = {}
    for seg in raw.decode(codec).split("\r"):
        if seg:
            found.setdefault(seg[:3], []).append(seg.split("|"))
    return found


def unescape(text: str) -> str:
    """What the HIS reads back from an escaped HL7 text value."""
    out, i = [], 0
    table = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\", ".br": "\n"}
    while i < len(text):
        if text[i] == "\\":
            end = text.index("\\", i + 1)
            out.append(table[text[i + 1:end]])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def stored_pdf(county, report_id: int) -> bytes:
    with county.sessions() as s:
        delivery = s.execute(select(ReportDelivery).where(ReportDelivery.report_pk == report_id)).scalar_one()
        return county.store.get(json.loads(delivery.object_keys_json)["pdf"])


def make_order(county, **fields: Any) -> None:
    order = dict(placer_order_number="HIS-1001", placer_issuer="HIS.XZ", accession_number="A1001",
                 site="township-a", patient_id="P-1", patient_id_issuer="HIS.XZ", patient_name="王^小明",
                 patient_name_pinyin="Wang^Xiaoming", patient_sex="M", patient_birth_date="19600102",
                 modality="DX", procedure_code="DX-CHEST", procedure_description="胸部正位")
    order.update(fields)
    with county.sessions() as s:
        upsert_order(s, Order(**order))  # type: ignore[arg-type]
        s.commit()


def link(county, uid: str, placer: str = "HIS-1001") -> None:
    """Link the study to the order as an administrator would (a manual link is not re-checked
    against the DICOM identity when the order changes)."""
    from relay.county.db.models import Order as OrderRow
    with county.sessions() as s:
        order_pk = s.execute(select(OrderRow.id).where(OrderRow.placer_order_number == placer)).scalar_one()
        s.execute(update(Study).where(Study.study_uid == uid).values(order_pk=order_pk, order_match="manual"))
        s.commit()


# --- HL7 v2 ORU^R01 over MLLP -------------------------------------------------------------------


def test_a_signed_report_reaches_the_his_as_oru_r01_with_its_text_and_its_pdf(county, mllp):
    configure(county, his_mllp=mllp.address)
    with TestClient(create_app(county)) as client:
        uid, report_id, _ = sign(client, county)
    rounds_until(county, lambda: messages(county)[0].state == "acked")
    (raw,) = mllp.received
    seg = segments(raw)
    (msg,) = messages(county)
    assert seg["MSH"][0][9] == msg.message_id and seg["MSH"][0][8] == "ORU^R01^ORU_R01"
    assert seg["MSH"][0][17] == "UNICODE UTF-8" and seg["MSH"][0][2] == "RELAY"
    assert "王^小明".encode("utf-8") in raw
    names = seg["PID"][0][5].split("~")
    assert names[0].split("^")[:2] == ["王", "小明"] and names[1].split("^")[:2] == ["Wang", "Xiaoming"]
    assert seg["PID"][0][3].split("^")[0] == "T0001" and seg["PID"][0][8] == "M" and seg["PID"][0][7] == "19600102"
    obr = seg["OBR"][0]
    assert obr[18] == "A1001" and obr[25] == "F" and obr[24] == "CT" and obr[32].startswith("dr.wang")
    text = {o[3].split("^")[0]: o for o in seg["OBX"] if o[2] == "TX"}
    assert unescape(text["59776-5"][5]) == FINDINGS and unescape(text["19005-8"][5]) == IMPRESSION
    assert unescape(text["18783-1"][5]) == ADVICE and text["19005-8"][11] == "F"
    (ed,) = [o for o in seg["OBX"] if o[2] == "ED"]
    source, kind, subtype, encoding, data = ed[5].split("^")
    pdf = base64.b64decode(data)
    assert (kind, subtype, encoding) == ("application", "pdf", "Base64") and pdf.startswith(b"%PDF")
    assert pdf == stored_pdf(county, report_id)
    assert (msg.ack_code, msg.attempts, msg.acked_at is not None, msg.last_error) == ("AA", 1, True, "")
    with county.sessions() as s:
        (event,) = s.execute(select(AuditEvent).where(AuditEvent.action == Action.HIS_DELIVERY.value)).scalars()
    assert event.object_id == str(report_id) and "ack=AA" in event.detail and "王" not in event.detail
    assert uid not in event.detail and "T0001" not in event.detail


def test_a_gb18030_his_gets_the_chinese_name_in_gb18030_bytes(county, mllp):
    configure(county, his_mllp=mllp.address, his_charset="GB 18030-2000")
    with TestClient(create_app(county)) as client:
        sign(client, county, name="Zhang^Zhe=张^喆")
    rounds_until(county, lambda: messages(county)[0].state == "acked")
    (raw,) = mllp.received
    assert "张^喆".encode("gb18030") in raw and "张^喆".encode("utf-8") not in raw
    seg = segments(raw, "gb18030")
    assert seg["MSH"][0][17] == "GB 18030-2000" and seg["PID"][0][5].split("~")[0].startswith("张^喆")
    assert unescape([o for o in seg["OBX"] if o[3].startswith("59776-5")][0][5]) == FINDINGS


def test_a_study_linked_to_an_order_carries_the_placer_number_and_the_orders_patient(county, mllp):
    configure(county, his_mllp=mllp.address)
    with TestClient(create_app(county)) as client:
        county._test_site = make_site(county)[0]
        make_order(county, patient_id="HIS-P-77")
        uid, report_id, _ = sign(client, county, deliver=False)
        link(county, uid)
        run_deliver(county, report_id)
    rounds_until(county, lambda: messages(county)[0].state == "acked")
    seg = segments(mllp.received[0])
    assert seg["ORC"][0][1] == "RE" and seg["ORC"][0][2] == "HIS-1001^HIS.XZ" and seg["ORC"][0][5] == "CM"
    assert seg["OBR"][0][2] == "HIS-1001^HIS.XZ" and seg["OBR"][0][4].startswith("DX-CHEST^胸部正位")
    assert seg["PID"][0][3] == "HIS-P-77^^^HIS.XZ"
    assert messages(county)[0].order_cancelled is False


def test_a_refusal_is_shown_then_retried_and_the_acceptance_recorded(county):
    his = MllpListener(["AE"])
    try:
        configure(county, his_mllp=his.address)
        with TestClient(create_app(county)) as client:
            sign(client, county)
        rounds_until(county, lambda: messages(county)[0].attempts == 1)
        (msg,) = messages(county)
        assert (msg.state, msg.ack_code, msg.last_error) == ("rejected", "AE", "PID-3 unknown")
        assert msg.next_attempt_at > now_utc()  # waits its backoff
        assert his_round(county=county).rejected == 0 and len(his.received) == 1  # not due yet
        rounds_until(county, lambda: messages(county)[0].state == "acked", later=True)
        (msg,) = messages(county)
        assert (msg.attempts, msg.ack_code) == (2, "AA") and len(his.received) == 2
        first, second = (segments(m)["MSH"][0][9] for m in his.received)
        assert first == second == msg.message_id  # the HIS dedupes on MSH-10
        with county.sessions() as s:
            outcomes = [e.outcome for e in s.execute(select(AuditEvent).where(
                AuditEvent.action == Action.HIS_DELIVERY.value).order_by(AuditEvent.id)).scalars()]
        assert outcomes == ["failure", "success"]
    finally:
        his.close()


def test_a_silent_his_gets_the_message_again(county):
    his = MllpListener(["silent"])
    try:
        configure(county, his_mllp=his.address)
        with TestClient(create_app(county)) as client:
            sign(client, county)
        rounds_until(county, lambda: messages(county)[0].attempts == 1)
        (msg,) = messages(county)
        assert msg.state == "pending" and "no answer" in msg.last_error and msg.claimed_at is None
        rounds_until(county, lambda: messages(county)[0].state == "acked", later=True)
        assert len(his.received) == 2 and messages(county)[0].attempts == 2
    finally:
        his.close()


def test_an_ack_for_another_message_is_no_ack(county):
    his = MllpListener(["other"])
    try:
        configure(county, his_mllp=his.address)
        with TestClient(create_app(county)) as client:
            sign(client, county)
        rounds_until(county, lambda: messages(county)[0].attempts == 1)
        (msg,) = messages(county)
        assert msg.state == "pending" and msg.acked_at is None and "another message" in msg.last_error
        rounds_until(county, lambda: messages(county)[0].state == "acked", later=True)
    finally:
        his.close()


def test_a_critical_result_is_flagged_aa_in_hl7_and_fhir(county, mllp, fhir_server):
    configure(county, his_mllp=mllp.address, his_fhir_url=fhir_server.url)
    with TestClient(create_app(county)) as client:
        sign(client, county, critical=True)
    rounds_until(county, lambda: all(m.state == "acked" for m in messages(county)))
    flags = {o[3].split("^")[0]: o[8] for o in segments(mllp.received[0])["OBX"]}
    assert flags["19005-8"] == "AA" and flags["59776-5"] == ""
    (_path, _headers, body) = fhir_server.received[0]
    assert body["conclusionCode"][0]["coding"][0]["code"] == "AA"


def test_a_refused_connection_is_retried(county, mllp):
    configure(county, his_mllp="127.0.0.1:1")
    with TestClient(create_app(county)) as client:
        sign(client, county)
    rounds_until(county, lambda: messages(county)[0].attempts == 1)
    assert messages(county)[0].state == "pending" and messages(county)[0].last_error
    configure(county, his_mllp=mllp.address)
    rounds_until(county, lambda: messages(county)[0].state == "acked", later=True)


def test_two_rounds_racing_send_the_message_once(county):
    his = MllpListener(hold_s=1.0)
    try:
        configure(county, his_mllp=his.address)
        with TestClient(create_app(county)) as client:
            sign(client, county)
        start, results = threading.Barrier(2), []

        def one_round() -> None:
            start.wait(timeout=DEADLINE_S)
            results.append(his_round(county=county))

        threads = [threading.Thread(target=one_round) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=DEADLINE_S)
        assert sorted(r.acked for r in results) == [0, 1]
        assert len(his.received) == 1 and messages(county)[0].attempts == 1
    finally:
        his.close()


# --- FHIR R4 DiagnosticReport ---------------------------------------------------------------------


def test_a_signed_report_is_put_as_a_fhir_diagnostic_report_with_its_pdf(county):
    his = FhirListener([422])
    try:
        configure(county, his_fhir_url=his.url, his_fhir_out_token="his-secret")
        with TestClient(create_app(county)) as client:
            county._test_site = make_site(county)[0]
            make_order(county)
            uid, report_id, _ = sign(client, county, deliver=False)
            link(county, uid)
            run_deliver(county, report_id)
        rounds_until(county, lambda: messages(county)[0].attempts == 1)
        (msg,) = messages(county)
        assert (msg.channel, msg.state, msg.ack_code) == ("fhir", "rejected", "422")
        assert "unknown patient" in msg.last_error
        rounds_until(county, lambda: messages(county)[0].state == "acked", later=True)
        assert messages(county)[0].ack_code == "201"
        path, headers, body = his.received[-1]
        assert path == f"/fhir/DiagnosticReport/{msg.message_id}" and body["id"] == msg.message_id
        assert headers["Authorization"] == "Bearer his-secret"
        assert body["resourceType"] == "DiagnosticReport" and body["status"] == "final"
        assert body["conclusion"] == IMPRESSION
        assert body["identifier"][0]["value"] == str(report_id)
        assert body["basedOn"][0]["identifier"] == {"system": "HIS.XZ", "value": "HIS-1001"}
        assert body["subject"]["identifier"] == {"system": "HIS.XZ", "value": "P-1"}
        pdf, findings = body["presentedForm"]
        assert pdf["contentType"] == "application/pdf"
        assert base64.b64decode(pdf["data"]) == stored_pdf(county, report_id)
        assert FINDINGS in base64.b64decode(findings["data"]).decode("utf-8")
    finally:
        his.close()


def test_an_addendum_is_a_second_message_corrected_and_amended(county, mllp, fhir_server):
    configure(county, his_mllp=mllp.address, his_fhir_url=fhir_server.url)
    with TestClient(create_app(county)) as client:
        uid, report_id, dr = sign(client, county)
        rounds_until(county, lambda: all(m.state == "acked" for m in messages(county)))
        second = addendum(client, county, uid, dr)
    rounds_until(county, lambda: len(messages(county)) == 4 and all(m.state == "acked" for m in messages(county)))
    assert {(m.report_pk, m.channel) for m in messages(county)} == {
        (report_id, "hl7"), (report_id, "fhir"), (second, "hl7"), (second, "fhir")}
    first_oru, second_oru = (segments(raw) for raw in mllp.received)
    assert first_oru["OBR"][0][25] == "F" and second_oru["OBR"][0][25] == "C"
    assert {o[11] for o in second_oru["OBX"]} == {"C"}
    assert first_oru["MSH"][0][9] != second_oru["MSH"][0][9]
    statuses = [body["status"] for _path, _h, body in fhir_server.received]
    assert statuses == ["final", "amended"]


def test_a_late_report_for_a_cancelled_order_is_delivered_and_flagged(county, mllp):
    configure(county, his_mllp=mllp.address)
    with TestClient(create_app(county)) as client:
        county._test_site = make_site(county)[0]
        make_order(county)
        uid, report_id, _ = sign(client, county, deliver=False)
        link(county, uid)
        with county.sessions() as s:
            cancel_order(s, placer_order_number="HIS-1001", placer_issuer="HIS.XZ")
            s.commit()
        run_deliver(county, report_id)
        rounds_until(county, lambda: messages(county)[0].state == "acked")
        (msg,) = messages(county)
        assert msg.order_cancelled is True
        assert segments(mllp.received[0])["ORC"][0][5] == "CA"
        admin = login(client, county, "admin", Role.ADMIN)
        (listed,) = client.get("/api/his/messages", headers=admin).json()
    assert listed["order_cancelled"] is True and listed["state"] == "acked"


def test_no_channel_configured_makes_no_message(county):
    with TestClient(create_app(county)) as client:
        sign(client, county)
    assert messages(county) == []


# --- the administrator's API ---------------------------------------------------------------------


def test_administrators_list_the_messages_and_make_a_refused_one_due_now(county):
    his = MllpListener(["AR"])
    try:
        configure(county, his_mllp=his.address)
        with TestClient(create_app(county)) as client:
            sign(client, county)
            rounds_until(county, lambda: messages(county)[0].attempts == 1)
            admin = login(client, county, "admin", Role.ADMIN)
            (listed,) = client.get("/api/his/messages", headers=admin).json()
            assert (listed["state"], listed["ack_code"], listed["attempts"]) == ("rejected", "AR", 1)
            assert listed["last_error"] == "PID-3 unknown" and listed["channel"] == "hl7"
            assert client.get("/api/his/messages?state=acked", headers=admin).json() == []
            make_user(county, "dr.li", Role.RADIOLOGIST)
            reader = client.post("/api/auth/token", data={"username": "dr.li", "password": "correct-horse-1"}).json()
            assert client.get("/api/his/messages", headers={
                "Authorization": f"Bearer {reader['access_token']}"}).status_code == 403
            assert client.post(f"/api/his/messages/{listed['id']}/retry", headers=admin).status_code == 202
            rounds_until(county, lambda: messages(county)[0].state == "acked")  # due now, not in LATER
            assert client.post(f"/api/his/messages/{listed['id']}/retry", headers=admin).status_code == 409
            assert client.post("/api/his/messages/99999/retry", headers=admin).status_code == 404
    finally:
        his.close()


def test_a_report_whose_renderings_were_never_built_waits_without_a_message(county, mllp):
    configure(county, his_mllp=mllp.address)
    with TestClient(create_app(county)) as client:
        sign(client, county, deliver=False)
    his_round(county=county)
    assert messages(county) == [] and mllp.received == []
    with county.sessions() as s:
        assert s.execute(select(Report.status)).scalar_one() == "signed"


# --- the administrator's page in a real browser -------------------------------------------------


def test_the_his_page_shows_a_refused_message_red_and_retries_it(county, server):  # noqa: F811
    from tests.browser import chromium, log_in, screenshot_path

    his = MllpListener(["AR"])
    try:
        configure(county, his_mllp=his.address)
        with TestClient(create_app(county)) as client:
            sign(client, county)
        rounds_until(county, lambda: messages(county)[0].attempts == 1)
        password = make_user(county, "admin", Role.ADMIN)
        with chromium() as browser:
            page = browser.new_page(locale="zh-CN", viewport={"width": 1440, "height": 900})
            page.set_default_timeout(DEADLINE_S * 1000)
            log_in(page, server, "admin", password, next_path="/portal/admin/his")
            page.wait_for_selector("#his tr[data-state=rejected]")
            refused = page.locator("#his tr[data-state=rejected]")
            assert refused.get_attribute("class") == "alarm-red"
            assert "拒收" in refused.inner_text() and "AR" in refused.inner_text()
            assert "PID-3 unknown" in refused.inner_text()
            assert page.locator("#kpi-rejected .v").inner_text() == "1"
            assert page.locator("#nav a.current").inner_text() == "HIS 回传"
            page.screenshot(path=str(screenshot_path("admin-his-zh")), full_page=True)
            refused.locator("button").click()
            page.wait_for_selector("#his tr[data-state=rejected] button:has-text('已安排立即重试')")
        rounds_until(county, lambda: messages(county)[0].state == "acked")
    finally:
        his.close()
