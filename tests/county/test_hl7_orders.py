"""HL7 v2 orders and ADT from the HIS over a real MLLP socket into PostgreSQL: Chinese names
byte-exact in UTF-8 and GB 18030, idempotent repeats, change/cancel, A08 update, A40 merge,
ACK/NAK with ERR naming segment^sequence^field, nothing stored changed by a NAK."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from relay.county.db.models import AuditEvent, Order, Patient, Study
from relay.county.orders.mllp import ListenerConfig, serve
from tests.factories import make_site

DEADLINE_S = 30.0
NAME, PINYIN = "王^小明", "Wang^Xiaoming"
RARE = "龔^𪚥"
"""𪚥 (U+2A6A5, CJK Extension B) is four bytes in GB 18030: a name that survives only a real codec."""


def seg(name: str, fields: dict[int, str]) -> str:
    top = max(fields) if fields else 0
    return "|".join([name] + [fields.get(i, "") for i in range(1, top + 1)])


def msh(control: str, kind: str, charset: str | None = "UNICODE UTF-8", facility: str = "XZHOSP") -> str:
    fields = {1: "^~\\&", 2: "HIS", 3: facility, 4: "RELAY", 5: "COUNTY", 6: "20261207090000", 8: kind,
              9: control, 10: "P", 11: "2.5", 16: "CHN"}
    if charset is not None:
        fields[17] = charset
    # MSH-1 is the field separator itself: the dict numbers fields from MSH-2
    return seg("MSH", fields)


def orm(control: str = "C1", *, charset: str | None = "UNICODE UTF-8", order_control: str = "NW",
        placer: str = "HIS-1001", accession: str = "A1001", site: str = "township-a", patient_id: str = "P-1",
        name: str = NAME, pinyin: str = PINYIN, purpose: str = "排除肺炎", sex: str = "M",
        extra_groups: list[str] | None = None) -> str:
    segments = [
        msh(control, "ORM^O01^ORM_O01", charset),
        seg("PID", {1: "1", 3: f"X-9^^^^MR~{patient_id}^^^HIS.XZ^PI",
                    5: f"{name}^^^^^L^I~{pinyin}^^^^^L^A" if pinyin else f"{name}^^^^^L", 7: "19600102",
                    8: sex, 13: "13800000000"}),
        seg("PV1", {1: "1", 2: "O", 3: f"^^^{site}", 10: "内科"}),
        seg("ORC", {1: order_control, 2: f"{placer}^HIS.XZ", 3: "F-77", 7: "^^^202612070900^^A",
                    12: "D01^李^四"}),
        seg("OBR", {1: "1", 2: f"{placer}^HIS.XZ", 4: "DX001^胸部正位", 13: purpose, 16: "D01^李^四",
                    18: accession, 19: "RP1", 20: "SPS1", 24: "RX"}),
        seg("NTE", {1: "1", 3: "高血压十年"}),
        seg("NTE", {1: "2", 3: "无过敏史"}),
        seg("DG1", {1: "1", 3: "I10^高血压^ICD10"}),
        seg("ZDS", {1: "1.2.840.99.1^RELAY^Application^DICOM"}),
    ]
    return "\r".join(segments + (extra_groups or [])) + "\r"


def adt(control: str, trigger: str, *, patient_id: str, name: str, pinyin: str = "", prior: str = "",
        charset: str = "UNICODE UTF-8", sex: str = "F", birth: str = "19700305") -> str:
    segments = [msh(control, f"ADT^{trigger}^ADT_A01" if trigger == "A08" else f"ADT^{trigger}^ADT_A39", charset),
                seg("EVN", {1: trigger, 2: "20261207100000"}),
                seg("PID", {1: "1", 3: f"{patient_id}^^^HIS.XZ^PI",
                            5: f"{name}^^^^^L^I" + (f"~{pinyin}^^^^^L^A" if pinyin else ""), 7: birth, 8: sex})]
    if trigger == "A40":
        segments.append(seg("MRG", {1: f"{prior}^^^HIS.XZ^PI" if prior else ""}))
    return "\r".join(segments) + "\r"


# --- the listener and a client --------------------------------------------------------------

@pytest.fixture
def mllp(county) -> Iterator[int]:
    yield from _listen(county)


def _listen(county, *, max_frame_bytes: int = 4 * 1024**2, idle_seconds: float = 60.0) -> Iterator[int]:
    stop, ready, bound = threading.Event(), threading.Event(), []
    config = ListenerConfig(sessions=county.sessions, zone=ZoneInfo("Asia/Shanghai"),
                            max_frame_bytes=max_frame_bytes, idle_seconds=idle_seconds)
    thread = threading.Thread(target=serve, kwargs=dict(config=config, host="127.0.0.1", port=0, stop=stop,
                                                        ready=ready, bound=bound), daemon=True)
    thread.start()
    assert ready.wait(DEADLINE_S), "the MLLP listener did not start"
    try:
        yield bound[0]
    finally:
        stop.set()
        thread.join(DEADLINE_S)


def _read_frame(sock: socket.socket) -> bytes:
    buffer = b""
    deadline = time.monotonic() + DEADLINE_S
    while b"\x1c\x0d" not in buffer:
        assert time.monotonic() < deadline, "no ACK in time"
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the ACK ({buffer!r})"
        buffer += chunk
    assert buffer.startswith(b"\x0b")
    return buffer[1:buffer.index(b"\x1c\x0d")]


def exchange(port: int, *messages: bytes) -> list[bytes]:
    """Send each message framed on one connection; the ACK bytes of each."""
    acks = []
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
        for message in messages:
            sock.sendall(b"\x0b" + message + b"\x1c\x0d")
            acks.append(_read_frame(sock))
    return acks


def fields(ack: bytes, codec: str = "utf-8") -> dict[str, list[str]]:
    text = ack.decode(codec)
    return {line.split("|", 1)[0]: line.split("|") for line in text.split("\r") if line}


def msa(ack: bytes, codec: str = "utf-8") -> tuple[str, str]:
    f = fields(ack, codec)["MSA"]
    return f[1], f[2]


def err(ack: bytes, codec: str = "utf-8") -> tuple[str, str]:
    f = fields(ack, codec)["ERR"]
    return f[2], f[3].split("^")[0]


def orders(county) -> list[Order]:
    with county.sessions() as s:
        return list(s.execute(select(Order).order_by(Order.id)).scalars())


def audit_actions(county) -> list[str]:
    with county.sessions() as s:
        return list(s.execute(select(AuditEvent.action).order_by(AuditEvent.id)).scalars())


# --- orders ------------------------------------------------------------------------------

def test_a_new_order_in_utf8_and_in_gb18030_keeps_the_chinese_names_exactly(county, mllp) -> None:
    make_site(county)
    utf8 = orm("U1", placer="HIS-1").encode("utf-8")
    gb = orm("G1", charset="GB18030", placer="HIS-2", accession="A1002", patient_id="P-2", name=RARE,
             pinyin="Gong^Yan").encode("gb18030")
    assert "𪚥".encode("gb18030") in gb and len("𪚥".encode("gb18030")) == 4
    ack_utf8, ack_gb = exchange(mllp, utf8, gb)
    assert msa(ack_utf8) == ("AA", "U1")
    assert msa(ack_gb, "gb18030") == ("AA", "G1")
    assert fields(ack_gb, "gb18030")["MSH"][17] == "GB18030"  # the ACK says the charset it is in
    first, second = orders(county)
    assert (first.placer_order_number, first.placer_issuer, first.accession_number) == ("HIS-1", "HIS.XZ", "A1001")
    assert first.patient_name.encode("utf-8") == NAME.encode("utf-8") and first.patient_name_pinyin == PINYIN
    assert second.patient_name.encode("gb18030") == RARE.encode("gb18030") and second.patient_name_pinyin == "Gong^Yan"
    # the mapping, field by field (docs/interfaces/hl7-in.md)
    assert (first.patient_id, first.patient_id_issuer) == ("P-1", "HIS.XZ")  # first PID-3 with an authority
    assert (first.patient_sex, first.patient_birth_date, first.patient_phone) == ("M", "19600102", "13800000000")
    assert (first.procedure_code, first.procedure_description, first.modality) == ("DX001", "胸部正位", "DX")
    assert (first.clinical_diagnosis, first.exam_purpose, first.history_summary) == (
        "高血压", "排除肺炎", "高血压十年\n无过敏史")
    assert (first.ordering_doctor, first.ordering_department, first.priority) == ("李四", "内科", "urgent")
    assert first.scheduled_at == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)  # 09:00 in Asia/Shanghai
    assert (first.requested_procedure_id, first.scheduled_step_id, first.study_instance_uid) == (
        "RP1", "SPS1", "1.2.840.99.1")
    assert '"filler_order_number": "F-77"' in first.extra_json
    with county.sessions() as s:
        patient = s.get(Patient, second.patient_pk)
        assert patient is not None and patient.name.encode("gb18030") == RARE.encode("gb18030")
    assert audit_actions(county) == ["order.create", "order.create"]


def test_an_unknown_township_is_refused_naming_pv1_3_in_the_messages_own_charset(county, mllp) -> None:
    make_site(county)
    (ack,) = exchange(mllp, orm("G2", charset="GB 18030-2000", site="城关镇").encode("gb18030"))
    assert msa(ack, "gb18030") == ("AE", "G2")
    assert err(ack, "gb18030") == ("PV1^1^3", "103")
    assert "城关镇".encode("gb18030") in ack  # ERR-8 names the site as sent, in GB 18030
    assert orders(county) == []


def test_the_same_message_twice_is_acknowledged_twice_and_stored_once(county, mllp) -> None:
    make_site(county)
    message = orm("R1").encode()
    first, again = exchange(mllp, message, message)
    assert msa(first) == msa(again) == ("AA", "R1")
    (order,) = orders(county)
    assert order.revision == 1
    assert audit_actions(county) == ["order.create"]  # the repeat changed nothing, audited nothing


def test_a_change_bumps_the_revision_and_a_cancel_keeps_the_row(county, mllp) -> None:
    make_site(county)
    acks = exchange(mllp, orm("N1").encode(), orm("X1", order_control="XO", purpose="复查").encode(),
                    orm("K1", order_control="CA").encode(), orm("K2", order_control="CA").encode(),
                    orm("N2").encode())
    assert [msa(a)[0] for a in acks] == ["AA"] * 4 + ["AE"]
    assert err(acks[4])[0] == "ORC^1^1"  # a late new-order message does not bring a cancelled order back
    (order,) = orders(county)
    assert (order.exam_purpose, order.status, order.revision) == ("复查", "cancelled", 3)
    assert audit_actions(county) == ["order.create", "order.update", "order.cancel"]


def test_cancelling_an_order_never_received_is_refused_naming_orc_2(county, mllp) -> None:
    make_site(county)
    (ack,) = exchange(mllp, orm("K3", order_control="CA", placer="NOPE").encode())
    assert msa(ack)[0] == "AE" and err(ack)[0] == "ORC^1^2"


def test_an_order_without_an_accession_is_refused_naming_obr_1_18(county, mllp) -> None:
    make_site(county)
    (ack,) = exchange(mllp, orm("M1", accession="").encode())
    assert msa(ack) == ("AE", "M1")
    assert err(ack) == ("OBR^1^18", "101")
    assert orders(county) == []


def test_a_refused_message_changes_nothing_already_stored(county, mllp) -> None:
    make_site(county)
    second_group = "\r".join([
        seg("ORC", {1: "NW", 2: "HIS-2002^HIS.XZ"}),
        seg("OBR", {1: "2", 2: "HIS-2002^HIS.XZ", 4: "CT01^头颅平扫", 18: ""})])
    acks = exchange(mllp, orm("S1").encode(),
                    orm("S2", order_control="XO", purpose="改了", site="nowhere").encode(),
                    orm("S3", order_control="XO", purpose="也改了", extra_groups=[second_group]).encode())
    assert [msa(a)[0] for a in acks] == ["AA", "AE", "AE"]
    assert err(acks[1])[0] == "PV1^1^3"
    assert err(acks[2]) == ("OBR^2^18", "101")  # the second ORC group's OBR
    (order,) = orders(county)  # the first group of S3 was rolled back with the second
    assert (order.exam_purpose, order.revision) == ("排除肺炎", 1)
    assert audit_actions(county) == ["order.create"]


# --- refused messages ----------------------------------------------------------------------

def test_malformed_unsupported_and_undecodable_messages_are_rejected_with_err(county, mllp) -> None:
    make_site(county)
    bad_segment = (msh("B1", "ORM^O01") + "\rQQQ|1\r").encode()
    unsupported = (msh("B2", "ADT^A01^ADT_A01") + "\r" + seg("PID", {1: "1", 3: "P-1^^^HIS.XZ"}) + "\r").encode()
    wrong_bytes = orm("B3", charset="UNICODE UTF-8", name=RARE).encode("gb18030")  # says UTF-8, is GB 18030
    no_charset_gb = orm("B4", charset=None, name="王^小明").encode("gb18030")
    future = orm("B5").replace("|2.5|", "|9.9|", 1).encode()
    acks = exchange(mllp, b"hello, not HL7", bad_segment, unsupported, wrong_bytes, no_charset_gb,
                    (msh("", "ORM^O01") + "\r").encode(), future)
    noise, malformed, adt_a01, wrong, absent, no_control, version = acks
    assert msa(version) == ("AR", "B5") and err(version) == ("MSH^1^12", "203")
    assert msa(noise)[0] == "AR" and "ERR" in fields(noise)
    assert msa(malformed) == ("AR", "B1") and err(malformed) == ("MSH^1", "100")
    assert msa(adt_a01) == ("AR", "B2") and err(adt_a01) == ("MSH^1^9", "200")
    assert msa(wrong) == ("AR", "B3") and err(wrong)[0] == "MSH^1^18"
    assert msa(absent) == ("AR", "B4") and err(absent)[0] == "MSH^1^18"
    assert msa(no_control)[0] == "AR" and err(no_control) == ("MSH^1^10", "101")
    assert orders(county) == []


def test_a_frame_over_the_cap_is_rejected_and_the_connection_closed(county) -> None:
    make_site(county)
    for port in _listen(county, max_frame_bytes=2048):
        big = orm("O1", purpose="很" * 2000).encode()
        assert len(big) > 2048
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
            sock.sendall(b"\x0b" + big + b"\x1c\x0d")
            ack = _read_frame(sock)
            assert msa(ack) == ("AR", "O1")
            assert _closed(sock)
        assert orders(county) == []
        assert msa(exchange(port, orm("O2").encode())[0]) == ("AA", "O2")  # the next connection works


def _closed(sock: socket.socket) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if sock.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def test_an_idle_connection_is_closed_by_the_listener(county) -> None:
    for port in _listen(county, idle_seconds=0.5):
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
            assert _closed(sock)


# --- ADT --------------------------------------------------------------------------------------

def test_a08_updates_the_patient_and_the_patients_scheduled_orders(county, mllp) -> None:
    make_site(county)
    acks = exchange(mllp, orm("A1").encode(),
                    adt("A2", "A08", patient_id="P-1", name="王^晓明", pinyin="Wang^Xiaoming", sex="M",
                        birth="19600201").encode(),
                    adt("A3", "A08", patient_id="P-1", name="王^晓明", pinyin="Wang^Xiaoming", sex="M",
                        birth="19600201").encode())
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AA"]
    (order,) = orders(county)
    assert (order.patient_name, order.patient_birth_date, order.revision) == ("王^晓明", "19600201", 2)
    with county.sessions() as s:
        patient = s.get(Patient, order.patient_pk)
        assert patient is not None and (patient.name, patient.birth_date) == ("王^晓明", "19600201")
    assert audit_actions(county) == ["order.create", "patient.update"]  # the repeat changed nothing


def test_a40_moves_the_prior_patients_orders_and_studies_to_the_surviving_one(county, mllp) -> None:
    site_id, _ = make_site(county)
    (ack,) = exchange(mllp, orm("M0", patient_id="P-OLD").encode())
    assert msa(ack)[0] == "AA"
    (order,) = orders(county)
    prior_pk = order.patient_pk
    now = datetime.now(UTC)
    with county.sessions() as s:
        s.add(Study(study_uid="1.2.840.99.7", patient_pk=prior_pk, site_id=site_id, priority="routine",
                    state="received", created_at=now, updated_at=now))
        s.commit()
    acks = exchange(mllp, adt("M1", "A40", patient_id="P-NEW", name=NAME, prior="P-OLD").encode(),
                    adt("M2", "A40", patient_id="P-NEW", name=NAME, prior="P-OLD").encode(),
                    adt("M3", "A40", patient_id="P-NEW", name=NAME, prior="").encode(),
                    adt("M4", "A40", patient_id="P-NEW", name=NAME, prior="P-NEW").encode())
    assert [msa(a)[0] for a in acks] == ["AA", "AA", "AE", "AE"]
    assert err(acks[2])[0] == "MRG^1^1" and err(acks[3])[0] == "MRG^1^1"
    (order,) = orders(county)
    with county.sessions() as s:
        prior = s.get(Patient, prior_pk)
        surviving = s.execute(select(Patient).where(Patient.patient_id == "P-NEW")).scalar_one()
        study = s.execute(select(Study)).scalar_one()
        assert prior is not None and prior.merged_into_pk == surviving.id
        assert (order.patient_pk, order.patient_id, order.revision) == (surviving.id, "P-NEW", 2)
        assert study.patient_pk == surviving.id
        assert s.scalar(select(func.count()).select_from(Patient)) == 2
    assert audit_actions(county) == ["order.create", "patient.merge"]


# --- logs ---------------------------------------------------------------------------------------

def test_the_logs_name_messages_but_no_patient(county, mllp, caplog) -> None:
    make_site(county)
    caplog.set_level(logging.DEBUG)
    exchange(mllp, orm("L1", patient_id="PID-SECRET-7").encode(), orm("L2", accession="").encode(),
             adt("L3", "A08", patient_id="PID-SECRET-7", name="赵^秘密").encode(),
             adt("L4", "A40", patient_id="PID-SECRET-8", name="赵^秘密", prior="PID-SECRET-7").encode())
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "L1" in text and "L2" in text and "OBR^1^18" in text and "XZHOSP" in text
    for secret in ("PID-SECRET", "王", "小明", "Wang", "赵", "秘密", "19600102", "13800000000"):
        assert secret not in text


# --- OMI^O23 and the command --------------------------------------------------------------

def omi(control: str, *, accession: str = "I2001") -> str:
    return "\r".join([
        msh(control, "OMI^O23^OMI_O23"),
        seg("PID", {1: "1", 3: "P-3^^^HIS.XZ^PI", 5: "李^雷^^^^^L", 7: "19801224", 8: "U"}),
        seg("PV1", {1: "1", 2: "O", 3: "township-a"}),
        seg("ORC", {1: "NW", 2: "HIS-3001", 12: "D02^张^三", 17: "^放射科"}),
        seg("TQ1", {1: "1", 7: "20261208143000+0800", 9: "S"}),
        seg("OBR", {1: "1", 2: "HIS-3001", 4: "CT002^胸部CT", 31: "^肺结节"}),
        seg("IPC", {1: accession, 2: "RP9", 3: "1.2.840.99.3", 4: "SPS9", 5: "CT", 9: "CT_ROOM1"}),
    ]) + "\r"


def test_an_omi_order_reads_ipc_and_tq1(county, mllp) -> None:
    make_site(county)
    ok, missing = exchange(mllp, omi("I1").encode(), omi("I2", accession="").encode())
    assert msa(ok) == ("AA", "I1")
    assert msa(missing)[0] == "AE" and err(missing) == ("IPC^1^1", "101")
    (order,) = orders(county)
    assert (order.placer_order_number, order.placer_issuer) == ("HIS-3001", "XZHOSP")  # no ORC-2.2: MSH-4
    assert (order.accession_number, order.requested_procedure_id, order.scheduled_step_id) == ("I2001", "RP9", "SPS9")
    assert (order.study_instance_uid, order.modality, order.scheduled_station_ae) == ("1.2.840.99.3", "CT", "CT_ROOM1")
    assert (order.priority, order.scheduled_at) == ("stat", datetime(2026, 12, 8, 6, 30, tzinfo=UTC))
    assert (order.ordering_doctor, order.ordering_department, order.clinical_diagnosis) == ("张三", "放射科", "肺结节")
    assert (order.patient_name, order.patient_name_pinyin, order.patient_sex) == ("李^雷", "", "")


def test_the_relay_mllp_command_takes_orders_on_its_bind_address(county, settings, tmp_path) -> None:
    import os
    from pathlib import Path

    from tests.processes import RelayProcess, wait_for
    from tests.servers import free_port

    make_site(county)
    port = free_port()
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo, "RELAY_DATA_DIR": str(tmp_path / "var"),
           "RELAY_DATABASE_URL": settings.database_url, "RELAY_HIS_MLLP_BIND": f"127.0.0.1:{port}"}
    proc = RelayProcess("mllp", ["mllp"], env=env, cwd=tmp_path, logdir=tmp_path)
    try:
        wait_for("the mllp listener", lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close()
                 is None, timeout=DEADLINE_S, procs=[proc])
        (ack,) = exchange(port, orm("CLI1").encode())
        assert msa(ack) == ("AA", "CLI1")
    finally:
        assert proc.stop() == 0, proc.log()
    assert len(orders(county)) == 1
    assert "CLI1" in proc.log() and "王" not in proc.log()
