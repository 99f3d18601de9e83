"""Issue 10's test bed, exercised: the county as a county runs it (tests/topology/bed.py).

Two townships send over HTTPS through the county's private CA, nginx balances two APIs,
two workers serve different queues; studies are read, signed and come back to the right
township's PACS; critical results alert exactly once; a cut WAN delays, never loses.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from tests.conftest import SAMPLES
from tests.edge.techpage import form_token, logged_in
from tests.topology.bed import (Edge, Topology, fetch_verification_keys, fresh_study, storescu,
                                verify_report)

SR_CLASS, PDF_CLASS = "1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.104.1"
SETTLE_S = 10.0
"""Seconds the test keeps listening after the last expected webhook, for a duplicate that
a second sender would post (a few gateway latencies on a loaded machine)."""


def _sample(samples: list[dict[str, str]], modality: str) -> list[Path]:
    return [SAMPLES / s["path"] for s in samples if s["modality"] == modality]


def _send(bed: Topology, edge: Edge, files: list[Path], folder: Path, **attrs: str) -> str:
    uid, paths = fresh_study(files, folder, **attrs)
    sent = storescu(edge, *paths)
    assert sent.returncode == 0, sent.stderr
    return uid


def _on_worklist(http: httpx.Client, wanted: dict[str, str]) -> bool:
    """Every wanted study (uid -> site) is on the worklist under its own township."""
    items = {i["study_instance_uid"]: i for i in http.get("/api/worklist").raise_for_status().json()}
    return all(uid in items and items[uid]["site"] == site for uid, site in wanted.items())


def _read_and_sign(http: httpx.Client, bed: Topology, uid: str, *, template: str, impression: str,
                   critical: bool = False) -> None:
    """What a reader does in the portal, over the API: claim, open, draft, write, sign."""
    http.post(f"/api/worklist/{uid}/claim").raise_for_status()
    http.post(f"/api/worklist/{uid}/open").raise_for_status()
    draft = http.post(f"/api/studies/{uid}/reports", json={"template": template}).raise_for_status().json()
    http.patch(f"/api/reports/{draft['id']}", json={"critical": critical, "impression": impression}
               ).raise_for_status()
    http.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": bed.signing_password}
              ).raise_for_status()


def _received(edge: Edge) -> dict[str, list[tuple[Path, Any]]]:
    """What the township's PACS holds, per study UID: (file, dataset)."""
    out: dict[str, list[tuple[Path, Any]]] = {}
    for path in edge.pacs_files():
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # storescp still writing it
            continue
        out.setdefault(str(ds.StudyInstanceUID), []).append((path, ds))
    return out


def test_the_proxy_balances_both_county_apis_over_tls_from_the_private_ca(bed: Topology) -> None:
    with bed.client() as http:
        for _ in range(6):
            assert http.get("/healthz").status_code == 200
    with pytest.raises(httpx.ConnectError):  # the system's CAs do not know the county's
        httpx.get(f"{bed.county_url}/healthz", timeout=10)
    used = set(bed.nginx.upstreams_used())
    assert used >= {u.removeprefix("http://") for u in bed.api_urls}, used


def test_a_study_from_each_township_is_signed_and_returns_to_that_townships_pacs_only(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    plan = {"qingshan": (_sample(samples, "DX"), "chest-pa", "双肺纹理清晰，心影不大。"),
            "hekou": (_sample(samples, "CT"), "head-ct-plain", "颅内未见明显异常密度影。")}
    uids = {site: _send(bed, bed.edges[site], files, tmp_path / site) for site, (files, _, _) in plan.items()}
    with bed.client(bed.token(bed.reader)) as http:
        bed.wait("both townships' studies on the worklist, each under its township",
                 lambda: _on_worklist(http, {uid: site for site, uid in uids.items()}), timeout=120)
        for site, (_, template, impression) in plan.items():
            _read_and_sign(http, bed, uids[site], template=template, impression=impression)

    def back_home() -> bool:
        return all(len(_received(bed.edges[site]).get(uid, [])) >= 2 for site, uid in uids.items())

    bed.wait("the SR and the PDF of each study at its own township's PACS", back_home, timeout=120)
    keys = fetch_verification_keys(bed, tmp_path / "keys.json")
    for site, uid in uids.items():
        other = next(e for name, e in bed.edges.items() if name != site)
        assert uid not in _received(other), f"{site}'s report reached {other.site}'s PACS"
        objects = _received(bed.edges[site])[uid]
        assert sorted(str(ds.SOPClassUID) for _, ds in objects) == sorted([SR_CLASS, PDF_CLASS])
        for path, ds in objects:
            verified = verify_report(path, keys)
            assert verified.returncode == 0, verified.stderr
            assert f"study {uid}" in verified.stdout and bed.reader.username in verified.stdout, verified.stdout


def test_a_critical_result_alerts_the_township_and_escalates_to_the_lead_exactly_once(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    """Two workers and two APIs run; each alert must still go out once (issue 10, point 5).
    Nobody at the township acknowledges, so after RELAY_CRITICAL_ESCALATE_MINUTES it escalates."""
    edge = bed.edges["qingshan"]
    uid = _send(bed, edge, _sample(samples, "DX"), tmp_path / "critical")
    with bed.client(bed.token(bed.reader)) as http:
        bed.wait("the critical study on the worklist", lambda: _on_worklist(http, {uid: edge.site}), timeout=120)
        _read_and_sign(http, bed, uid, template="chest-pa", impression="右侧气胸，肺组织压缩约30%。", critical=True)
    hooks = bed.webhooks
    bed.wait("the township's critical-result webhook",
             lambda: hooks.received("/township", study_instance_uid=uid), timeout=120)
    bed.wait("the escalation to the on-duty lead", lambda: hooks.received("/lead", study_instance_uid=uid),
             timeout=150)
    deadline = max(h.at for h in hooks.received(study_instance_uid=uid)) + SETTLE_S
    bed.wait("a settling period after the last alert", lambda: time.monotonic() >= deadline,
             timeout=SETTLE_S + 30)
    township = hooks.received("/township", study_instance_uid=uid)
    lead = hooks.received("/lead", study_instance_uid=uid)
    sent = ([h.body["event"] for h in township], [h.body["event"] for h in lead])
    assert sent == (["critical.result"], ["critical.escalated"]), (
        f"the township was alerted {len(township)} times and the lead paged {len(lead)} times "
        f"(arrival offsets {[round(h.at - township[0].at, 2) for h in township + lead]} s): "
        f"{[h.body for h in township + lead]}")


def _journal(edge: Edge, study_uid: str) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(edge.spool / "journal.sqlite3", timeout=30) as db:
        return db.execute("SELECT state, attempts, last_error FROM instances WHERE study_uid = ?",
                          (study_uid,)).fetchall()


def test_a_study_sent_while_the_townships_wan_is_down_arrives_once_it_is_back(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    edge = bed.edges["hekou"]
    files = _sample(samples, "CT")
    bed.cut_wan(edge)
    try:
        uid = _send(bed, edge, files, tmp_path / "offline")  # the edge still accepts: it is on the LAN
        bed.wait("the edge to try the upload and fail on the cut link",
                 lambda: any(attempts > 0 for _, attempts, _ in _journal(edge, uid)), timeout=120)
        with bed.client(bed.token(bed.reader)) as http:
            assert not _on_worklist(http, {uid: edge.site})
    finally:
        bed.restore_wan(edge)
    with bed.client(bed.token(bed.reader)) as http:
        bed.wait("the study on the worklist after the WAN is back", lambda: _on_worklist(http, {uid: edge.site}),
                 timeout=150)

        def indexed() -> int:
            r = http.get(f"/dicomweb/studies/{uid}/instances")
            return len(r.json()) if r.status_code == 200 else 0

        bed.wait("every instance of the study indexed", lambda: indexed() >= len(files), timeout=120)
        assert indexed() == len(files)
    assert {state for state, _, _ in _journal(edge, uid)} == {"sent"}


def _delivery_at_the_edge(edge: Edge, study_uid: str) -> int | None:
    """The county's delivery id of ``study_uid``'s report once the edge has fetched it."""
    for folder in (edge.spool / "reports").glob("*"):
        meta = folder / "delivery.json"
        if meta.exists() and json.loads(meta.read_text(encoding="utf-8")).get("study_instance_uid") == study_uid:
            return int(folder.name)
    return None


def test_a_critical_result_acknowledged_while_the_wan_is_cut_reaches_the_county_once_after(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    """The technician logs in from the edge's cache and acknowledges with the WAN down; the
    page says 已确认（待上传）; when the link is back the county records it once, under the
    technician's username, and audits it (issue 10, point 4)."""
    edge = bed.edges["hekou"]
    uid = _send(bed, edge, _sample(samples, "DX"), tmp_path / "ack")
    with bed.client(bed.token(bed.reader)) as http:
        bed.wait("the critical study on the worklist", lambda: _on_worklist(http, {uid: edge.site}), timeout=120)
        _read_and_sign(http, bed, uid, template="chest-pa", impression="右侧气胸，肺组织压缩约30%。", critical=True)
    bed.wait("the signed report fetched by the township's edge",
             lambda: _delivery_at_the_edge(edge, uid) is not None, timeout=120)
    delivery_id = _delivery_at_the_edge(edge, uid)
    bed.cut_wan(edge)
    try:
        with logged_in(edge.status_url, edge.technician.username, edge.technician.password) as page:
            html = page.get("/").text
            answer = page.post(f"/reports/{delivery_id}/ack", data={"csrf": form_token(html), "lang": "zh"})
            assert answer.status_code == 303, answer.text
            assert "已确认（待上传）" in page.get("/").text
            with bed.client(bed.token(bed.admin)) as http:
                r = http.get(f"/api/audit?action=report.acknowledge&object_id={uid}")
                assert r.status_code == 200 and r.json() == [], "the county heard of it with the WAN cut"
    finally:
        bed.restore_wan(edge)
    with logged_in(edge.status_url, edge.technician.username, edge.technician.password) as page:
        bed.wait("the page to say the county has the acknowledgement",
                 lambda: "待上传" not in page.get("/").text, timeout=120)
        assert "已确认" in page.get("/").text
    with bed.client(bed.token(bed.admin)) as http:
        audited = http.get(f"/api/audit?action=report.acknowledge&object_id={uid}").json()
    assert [e["actor"] for e in audited] == [edge.technician.username]


def test_the_countys_https_refuses_tls_below_1_2(bed: Topology) -> None:
    """Row 15 of the matrix, at the proxy every edge and browser talks to."""
    from urllib.parse import urlsplit

    from tests.tls_probe import OLD, negotiated, old_tls_works

    old_tls_works(bed.nginx.pki.server_cert, bed.nginx.pki.server_key)
    where = urlsplit(bed.county_url)
    for version in OLD:
        assert negotiated("127.0.0.1", int(where.port or 443), version) is None, f"nginx accepted {version}"
    assert negotiated("127.0.0.1", int(where.port or 443), "TLSv1_2") == "TLSv1.2"
