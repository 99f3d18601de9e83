"""The technician's page (logged in): Chinese by default with the patient's name exact
(decoded from GB18030), English with ?lang=en, and a STAT button that needs the CSRF
token. The patient's name appears on the page and nowhere in the logs."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest

from bench.common import SAMPLES
from relay.dicom.vocab import Priority
from relay.edge.admission import Alarms
from relay.edge.clock import now_utc
from relay.edge.status_page import StatusPage, display_name
from tests.edge.conftest import RunningScp
from tests.edge.techpage import cached_technician, form_token, logged_in

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]
ECG = SAMPLES / "ecg_12lead" / "ECG_12lead_rest.dcm"  # GB18030, 陈^思喆


@pytest.fixture
def page(scp: RunningScp, dcmtk: Dcmtk) -> Iterator[httpx.Client]:
    """The ECG sample stored through the SCP, and the page on a free port, logged in."""
    done = dcmtk("storescu", "-aet", "ECG1", "-aec", "RELAY_EDGE", scp.host, str(scp.port),
                 str(ECG))
    assert done.returncode == 0, done.stderr
    status_page = StatusPage(spool=scp.spool, alarms=Alarms(), host="127.0.0.1", port=0,
                             timezone="Asia/Shanghai", technicians=cached_technician(scp.spool.root))
    status_page.start()
    try:
        with logged_in(f"http://127.0.0.1:{status_page.port}") as client:
            yield client
    finally:
        status_page.stop()


def test_the_page_is_chinese_with_the_patient_name_exact(
    page: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    html = page.get("/").text

    assert "今日检查" in html and "等待发送" in html and "标记为急诊" in html
    assert "陈思喆" in html  # 喆 is outside GB2312: only a GB18030 decode gets it
    assert "ECG1" in html
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "思喆" not in logged and "陈" not in logged


def test_english_on_request(page: httpx.Client) -> None:
    html = page.get("/", params={"lang": "en"}).text

    assert "Studies today" in html and "Mark STAT" in html and "waiting to send" in html
    assert "陈思喆" in html


def test_the_stat_button_needs_the_csrf_token_and_escalates(
    page: httpx.Client, scp: RunningScp
) -> None:
    [study] = scp.spool.studies(since=now_utc() - timedelta(hours=1))
    url = f"/studies/{study.study_uid}/stat"

    refused = page.post(url, data={"csrf": "forged", "lang": "zh"})
    assert refused.status_code == 403
    assert scp.spool.studies(since=now_utc() - timedelta(hours=1))[0].priority is Priority.ROUTINE

    token = form_token(page.get("/").text)
    marked = page.post(url, data={"csrf": token, "lang": "en"})
    assert marked.status_code == 303
    [after] = scp.spool.studies(since=now_utc() - timedelta(hours=1))
    assert (after.priority, after.stat_reason) == (Priority.STAT, "technician")
    assert "Mark STAT" not in page.get("/?lang=en").text


def test_display_name_prefers_the_ideographic_group() -> None:
    assert display_name("Li^Na=李^娜") == "李娜"
    assert display_name("Wang^Xiaoming") == "Wang Xiaoming"
    assert display_name("") == ""


def test_summary_json_has_no_patient_data(page: httpx.Client) -> None:
    summary = page.get("/api/summary").json()
    assert "思喆" not in str(summary)
    assert summary["pending"] == 1


def test_failures_are_put_in_plain_words() -> None:
    from relay.edge.status_page import plain_reason

    assert plain_reason("ConnectError: [Errno 111] Connection refused", "zh") == (
        "无法连接县医院（网络或县医院服务中断），将自动重试")
    assert "credential" in (plain_reason("county answered 403: site revoked", "en") or "")
    assert plain_reason(None, "zh") is None
