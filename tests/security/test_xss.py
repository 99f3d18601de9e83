"""Issue 13 row 17: script payloads in every text a page shows (DICOM header attributes, a
signed report's findings, impression and advice, people's and sites' display names, an
edge's version and last error, an audit actor), put in through the real ingest, index and
API, then every page that shows them opened in Chromium: no script runs (window.__xss
stays undefined, no dialog), the payload is shown as text, and each page carries the CSP.
The browser context bypasses the CSP, so escaping alone must hold (the CSP is the second
line, checked as a header)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from playwright.sync_api import Page, Response
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from pydicom.uid import generate_uid
from sqlalchemy import select

from bench.common import serve_app
from reader_portal.app import create_app
from relay.county.auth import service
from relay.county.db.engine import session_scope
from relay.county.db.models import Site
from relay.dicom.header import InstanceIds
from relay.dicom.vocab import Priority, Role
from relay.edge.admission import Alarms
from relay.edge.completeness import study_info_from
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage, display_name
from tests.browser import chromium, log_in
from tests.county.test_delivery import run_task
from tests.county.test_index import index, ingest
from tests.edge.techpage import cached_technician, log_in_browser
from tests.factories import encode, make_dataset
from relay.county.jobs import DELIVER_TASK

PAYLOADS = ['<img src=x onerror=window.__xss=1>', '"><script>window.__xss=1</script>',
            "javascript:window.__xss=1//", "{{7*7}}${7*7}", "'-window.__xss=1-'",
            "<svg onload=window.__xss=1>"]
"""Each tried in every field; the first two are the ones that run if anything is unescaped."""
PASSWORD = "correct-horse-1"
WAIT_MS = 15_000
DICOM_TEXT = ("PatientName", "StudyDescription", "SeriesDescription", "InstitutionName", "ReferringPhysicianName")


def _seed(county) -> dict[str, str]:
    """Studies carrying the payloads, a signed report full of them, people and a site named with them."""
    with session_scope(county.sessions) as s:
        site, token = service.create_site(session=s, name="township-x", display_name=PAYLOADS[0] + "乡")
        for i, (username, role) in enumerate((("dr.x", Role.RADIOLOGIST), ("boss", Role.ADMIN))):
            service.create_user(session=s, username=username, password=PASSWORD, role=role,
                                display_name=PAYLOADS[i] + "医生")
        service.create_user(session=s, username="tech.x", password=PASSWORD, role=Role.TECHNICIAN,
                            site_name="township-x", display_name=PAYLOADS[1] + "技师")
        s.commit()
        site_id = site.id
    uids = []
    for payload in PAYLOADS:  # one patient: each study is the others' prior
        ds = make_dataset(SpecificCharacterSet="ISO_IR 192", PatientID="XSS-1", BodyPartExamined="CHEST",
                          **{k: payload for k in DICOM_TEXT})
        index(county, ingest(county, encode(ds), site_id=site_id, priority=Priority.ROUTINE))
        uids.append(str(ds.StudyInstanceUID))
    _orders(county, uids)
    return {"token": token, "study": uids[0], **{f"study{i}": u for i, u in enumerate(uids)}}


def _orders(county, uids: list[str]) -> None:
    """Orders (申请单) whose every free-text field is a payload: one linked to study1 (its
    study page shows the 申请单 box), one the candidate of study2's conflict (身份核对 lists it)."""
    from sqlalchemy import update

    from relay.county.db.models import Order as OrderRow
    from relay.county.db.models import Study
    from relay.county.orders.service import upsert_order
    from relay.dicom.orders import Order

    with session_scope(county.sessions) as s:
        for n, (uid, match) in enumerate(((uids[1], "manual"), (uids[2], "conflict"))):
            text = {k: PAYLOADS[(n + i) % len(PAYLOADS)] for i, k in enumerate(
                ("procedure_description", "clinical_diagnosis", "exam_purpose", "history_summary",
                 "ordering_department", "ordering_doctor", "patient_name", "patient_name_pinyin"))}
            row = upsert_order(s, Order(placer_order_number=f"XSS-{n}", placer_issuer="HIS.X", accession_number=f"XA{n}",
                                        site="township-x", patient_id=f"XSS-HIS-{n}", patient_id_issuer="HIS.X",
                                        source="fhir", **text)).row
            s.execute(update(Study).where(Study.study_uid == uid).values(
                order_pk=row.id, order_match=match, order_conflict='["name", "patient_id"]' if match == "conflict" else ""))
            assert s.get(OrderRow, row.id) is not None
        s.commit()


def _report(client: TestClient, uid: str) -> None:
    token = client.post("/api/auth/token", data={"username": "dr.x", "password": PASSWORD}).json()["access_token"]
    dr = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/signing-keys", json={"signing_password": "sign-me-please"}, headers=dr).status_code < 300
    assert client.post(f"/api/worklist/{uid}/claim", headers=dr).status_code == 200
    draft = client.post(f"/api/studies/{uid}/reports", json={}, headers=dr).json()
    text = " | ".join(PAYLOADS)
    edited = client.patch(f"/api/reports/{draft['id']}", headers=dr,
                          json={"findings": text, "impression": text, "advice": text})
    assert edited.status_code == 200, edited.text
    signed = client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": "sign-me-please"}, headers=dr)
    assert signed.status_code == 200, signed.text
    return draft["id"]


def _watch(page: Page, fired: list[str], csp: dict[str, str]) -> None:
    page.on("dialog", lambda d: (fired.append(f"dialog {d.message}"), d.dismiss()))
    page.on("pageerror", lambda e: None)

    def _response(r: Response) -> None:
        if r.request.resource_type == "document":
            csp[r.url] = r.headers.get("content-security-policy", "")
    page.on("response", _response)


def _visit(page: Page, url: str, fired: list[str], *, shows: str | None) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    if shows is not None:  # the payload appears, as text
        try:
            page.wait_for_function("t => document.body.innerText.includes(t)", arg=shows, timeout=WAIT_MS)
        except PlaywrightTimeout:
            fired.append(f"{shows!r} not shown as text on {url}")
    if page.evaluate("typeof window.__xss") != "undefined":
        fired.append(f"script ran on {url}")
    if "{{7*7}}" in (shows or "") and "49" in page.evaluate("document.body.innerText"):
        fired.append(f"template evaluated on {url}")


def test_no_payload_runs_on_any_portal_page_and_each_is_shown_as_text(county):
    ids = _seed(county)
    with TestClient(create_app(county)) as client:
        report_id = _report(client, ids["study0"])
        run_task(county, DELIVER_TASK, report_id)
        beat = client.post("/api/edges/heartbeat", headers={"Authorization": f"Bearer {ids['token']}"}, json={
            "edge_time": datetime.now(UTC).isoformat(), "spool_instances": 1, "spool_bytes": 10,
            "version": PAYLOADS[1][:60], "last_error": " ".join(PAYLOADS)})
        assert beat.status_code == 200, beat.text
        client.post("/api/auth/token", data={"username": PAYLOADS[0], "password": "wrong-password"})  # audit actor
    fired: list[str] = []
    csp: dict[str, str] = {}
    # study0 is signed, so off the worklist: the worklist shows study1's payload.
    pages = [("/portal/", PAYLOADS[1]), *[(f"/portal/studies/{ids[f'study{i}']}", p) for i, p in enumerate(PAYLOADS)],
             ("/portal/admin/tat", None), ("/portal/admin/edges", PAYLOADS[1][:60]),
             ("/portal/admin/workload", "dr.x"), ("/portal/admin/audit", None),
             ("/portal/roster", PAYLOADS[0] + "医生"), ("/portal/admin/reconcile", None),
             ("/portal/admin/his", None)]
    for payload in PAYLOADS:
        pages.append((f"/portal/?patient={payload}", None))  # a payload in the query string too
    with serve_app(create_app(county)) as server, chromium() as browser:
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        _watch(page, fired, csp)
        log_in(page, server, "boss", PASSWORD)
        for path, shows in pages:
            _visit(page, server + path, fired, shows=shows)
        page.goto(f"{server}/portal/studies/{ids['study0']}")
        page.wait_for_function("t => document.body.innerText.includes(t)", arg="{{7*7}}${7*7}", timeout=WAIT_MS)
        body = page.evaluate("document.body.innerText")
        context.close()
    print(f"row 17 portal: {len(PAYLOADS)} payloads, {len(pages)} page visits, {len(csp)} documents, "
          f"scripts run / not shown as text {len(fired)}, without CSP {len([u for u, c in csp.items() if not c])}")
    assert fired == [], "\n".join(fired)
    assert all(p in body for p in PAYLOADS[:2])  # the report's text and the header's, shown as text
    missing = [url for url, policy in csp.items() if "script-src 'self'" not in policy]
    assert len(csp) >= len(pages) and missing == [], missing


def test_no_payload_runs_on_the_edges_technician_page(edge_settings, spool: Spool, tmp_path: Path):
    for payload in PAYLOADS:
        ds = make_dataset(SpecificCharacterSet="ISO_IR 192", **{k: payload for k in DICOM_TEXT})
        data = encode(ds)
        spool.store(data, ids=InstanceIds(str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                                          str(ds.SeriesInstanceUID), "1.2.840.10008.1.2.1"),
                    priority=Priority.ROUTINE, calling_ae="CT01", peer="127.0.0.1", study=study_info_from(data))
    cached_technician(spool.root, display_name=PAYLOADS[1] + "技师")
    page_server = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                             settings=edge_settings)
    page_server.start()
    fired: list[str] = []
    csp: dict[str, str] = {}
    try:
        base = f"http://127.0.0.1:{page_server.port}"
        with chromium() as browser:
            context = browser.new_context(bypass_csp=True)
            page = context.new_page()
            _watch(page, fired, csp)
            log_in_browser(page, base)
            for lang in ("zh", "en"):
                _visit(page, f"{base}/?lang={lang}", fired, shows=PAYLOADS[1] + "技师")
                body = page.evaluate("document.body.innerText")
                # A name is shown as PN rules read it ('=' separates its component groups).
                assert all(display_name(p) in body for p in PAYLOADS), body[:2000]
            context.close()
    finally:
        page_server.stop()
    assert fired == [], "\n".join(fired)
    assert csp and all("default-src 'none'" in policy and "script-src" not in policy for policy in csp.values())


def test_the_probe_sees_a_payload_that_does_run():
    """The positive control: the same check on a page that does not escape finds the script."""
    fired: list[str] = []
    with chromium() as browser:
        context = browser.new_context(bypass_csp=True)
        page = context.new_page()
        page.set_content(f"<div>{PAYLOADS[0]}</div><div>{PAYLOADS[1]}</div>")
        page.wait_for_function("typeof window.__xss !== 'undefined'", timeout=WAIT_MS)
        if page.evaluate("typeof window.__xss") != "undefined":
            fired.append("ran")
        context.close()
    assert fired == ["ran"]
