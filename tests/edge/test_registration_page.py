"""The registration page (登记): only a logged-in technician with the form's CSRF token
registers; a bad form is answered with Chinese messages naming the field; a registered
order is on the worklist at once (findscu finds it) with the county unreachable, listed
as 待上传, with numbers made at the edge."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from relay.config import Settings
from relay.edge.admission import Alarms
from relay.edge.orders import OrderCache, UploadState
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from tests.edge.mwl import findscu, mwl_query, running_worklist
from tests.edge.techpage import cached_technician, form_token, logged_in

FORM = {"patient_name": "王 小明", "patient_name_pinyin": "wang xiaoming", "patient_id": "", "patient_sex": "M",
        "patient_birth_date": "1960-01-02", "patient_phone": "138 0000 0000", "modality": "DX",
        "procedure_description": "胸部正位", "clinical_diagnosis": "咳嗽待查", "exam_purpose": "排除肺炎",
        "history_summary": "咳嗽两周", "ordering_department": "内科", "ordering_doctor": "赵医生", "priority": "urgent"}


@dataclass
class Edge:
    base: str
    cache: OrderCache
    settings: Settings


@pytest.fixture
def edge(edge_settings: Settings, spool: Spool) -> Iterator[Edge]:
    settings = edge_settings.model_copy(update={"edge_site": "township-a", "edge_site_code": "XZA",
                                                "timezone": "Asia/Shanghai", "county_url": "http://127.0.0.1:9"})
    cache = OrderCache(spool.root)
    page = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                      settings=settings, technicians=cached_technician(spool.root), orders=cache)
    page.start()
    try:
        yield Edge(f"http://127.0.0.1:{page.port}", cache, settings)
    finally:
        page.stop()


def test_registering_needs_a_login_and_the_forms_csrf_token(edge: Edge) -> None:
    assert httpx.get(edge.base + "/register").status_code == 303
    assert httpx.post(edge.base + "/register", data={**FORM, "csrf": "x"}).status_code == 401
    with logged_in(edge.base) as client:
        assert client.post("/register", data=FORM).status_code == 403
        assert client.post("/register", data={**FORM, "csrf": "forged"}).status_code == 403
        page = client.get("/register")
        assert page.status_code == 200 and "检查登记" in page.text and "nonce-" in page.headers["content-security-policy"]
    assert edge.cache.orders() == []


def test_a_bad_form_is_answered_in_chinese_naming_the_fields(edge: Edge) -> None:
    with logged_in(edge.base) as client:
        token = form_token(client.get("/register").text)
        bad = client.post("/register", data={**FORM, "csrf": token, "patient_name": " ", "modality": "XX",
                                             "patient_birth_date": "2999-01-01", "patient_name_pinyin": "王"})
        assert bad.status_code == 422
        for message in ("请填写姓名。", "请选择检查类型。", "出生日期不能晚于今天。", "拼音只能包含字母和空格"):
            assert message in bad.text
        assert "胸部正位" in bad.text  # what was typed is kept
    assert edge.cache.orders() == []


def test_a_registration_with_the_county_down_is_on_the_worklist_at_once_and_waits_to_upload(
    edge: Edge, dcmtk, tmp_path: Path,
) -> None:
    with logged_in(edge.base) as client:
        token = form_token(client.get("/register").text)
        done = client.post("/register", data={**FORM, "csrf": token})
        assert done.status_code == 303
        page = client.get(done.headers["location"])
        [accession] = re.findall(r'<b class="accession">([^<]+)</b>', page.text)
        assert re.fullmatch(r"XZA-\d{6}-0001", accession) and len(accession) <= 16
        assert "待上传" in page.text and "王小明" in page.text
        second = client.post("/register", data={**FORM, "csrf": token, "patient_name": "李娜",
                                                "patient_name_pinyin": ""})
        assert second.headers["location"].endswith(accession[:-1] + "2")
    [first, _] = [c for c in edge.cache.orders()]
    order = first.order
    assert (order.patient_name, order.patient_name_pinyin, order.placer_issuer, order.source) == (
        "王^小明", "Wang^Xiaoming", "site:township-a", "registration")
    assert order.patient_id == "" and order.patient_id_issuer == "" and order.priority == "urgent"
    assert order.extra["registered_by"] == "tech.li" and order.study_instance_uid.startswith("2.25.")
    assert first.upload is UploadState.PENDING

    with running_worklist(edge.settings, OrderCache(edge.settings.edge_spool_dir)) as server:
        found = findscu(dcmtk, server.port, mwl_query(charset="GB18030", PatientName="王*"), tmp_path / "q")
    assert found.completed.returncode == 0, found.completed.stderr
    [answer] = found.datasets()
    assert str(answer.AccessionNumber) == accession and answer.RequestedProcedurePriority == "HIGH"
    assert str(answer.PatientName) == "Wang^Xiaoming=王^小明" and answer.StudyInstanceUID == order.study_instance_uid
    assert "Wang^Xiaoming=王^小明".encode("gb18030") in found.responses[0].read_bytes()
