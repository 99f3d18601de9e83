"""Issue 5's done-when: a study sent by storescu to an edge comes back to the township's
PACS (DCMTK storescp) as a signed SR and PDF that `relay verify-report` accepts, and the
technician acknowledges it on the edge's page. Every part is a real process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pydicom

from relay.dicom.vocab import Role
from tests.conftest import SAMPLES
from tests.factories import make_user
from tests.edge.techpage import log_in
from tests.processes import base_env, wait_for
from tests.servers import free_port
from tests.test_end_to_end import launch_relay, storescu, token

SIGNING_PASSWORD = "sign-me-please"


def township_pacs(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    """DCMTK storescp as the township's PACS, accepting every transfer syntax."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "+xa", "-aet", "TOWNPACS", "-od", str(folder), str(port)],
                            env=base_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, port


def sign_first_study(base: str, county, study_uid: str) -> None:
    auth = {"Authorization": f"Bearer {token(base, 'dr.wang', make_user(county, 'dr.wang', Role.RADIOLOGIST))}"}
    httpx.post(f"{base}/api/signing-keys", json={"signing_password": SIGNING_PASSWORD}, headers=auth).raise_for_status()
    httpx.post(f"{base}/api/worklist/{study_uid}/claim", headers=auth).raise_for_status()
    httpx.post(f"{base}/api/worklist/{study_uid}/open", headers=auth).raise_for_status()
    draft = httpx.post(f"{base}/api/studies/{study_uid}/reports", json={"template": "chest-pa"}, headers=auth).json()
    httpx.patch(f"{base}/api/reports/{draft['id']}", json={"critical": True,
                "impression": "右侧气胸，肺组织压缩约30%。"}, headers=auth).raise_for_status()
    httpx.post(f"{base}/api/reports/{draft['id']}/sign", json={"signing_password": SIGNING_PASSWORD},
               headers=auth, timeout=60).raise_for_status()


def verify_report(path: Path, keys: Path, pin: str) -> subprocess.CompletedProcess[str]:
    """`relay verify-report` as the township runs it, on a file its PACS received, with the
    county's exported key set and the fingerprint it pinned."""
    return subprocess.run([sys.executable, "-m", "relay", "verify-report", str(path), "--keys", str(keys),
                           "--pin", pin], capture_output=True, text=True, env=base_env(), timeout=60)


def export_keys(tmp_path: Path, settings, out: Path) -> str:
    """At the county: `relay keys fingerprint` (what the township pins) and `relay keys export`."""
    env = base_env(data_dir=str(tmp_path / "var"), database_url=settings.resolved_database_url)

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "relay", "keys", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    pin = run("fingerprint").strip()
    run("export", "--out", str(out))
    return pin


def test_a_signed_report_comes_back_to_the_township_pacs_and_is_acknowledged(tmp_path, settings, county, samples):
    pacs, pacs_port = township_pacs(tmp_path / "townpacs")
    dx = next(s for s in samples if s["modality"] == "DX")
    try:
        with launch_relay(tmp_path, settings, county, edge_report_destinations=f"TOWNPACS@127.0.0.1:{pacs_port}",
                          edge_report_poll_s="1", edge_technicians_poll_s="1", edge_ack_retry_s="1") as relay:
            tech_password = make_user(county, "tech.qs", Role.TECHNICIAN, site="qingshan")
            assert storescu(relay["edge_port"], SAMPLES / dx["path"]).returncode == 0
            base = relay["base"]
            reader = token(base, "reader0", make_user(county, "reader0", Role.RADIOLOGIST))
            wait_for("the chest study on the worklist", lambda: any(
                i["study_instance_uid"] == dx["study_instance_uid"] for i in httpx.get(
                    f"{base}/api/worklist", headers={"Authorization": f"Bearer {reader}"}).json()),
                timeout=60, procs=relay["procs"])
            sign_first_study(base, county, dx["study_instance_uid"])
            received = lambda: sorted((tmp_path / "townpacs").glob("*"))  # noqa: E731
            wait_for("the SR and the Encapsulated PDF at the township PACS", lambda: len(received()) >= 2,
                     timeout=60, procs=relay["procs"])
            objects = [pydicom.dcmread(f) for f in received()]
            assert {str(o.SOPClassUID) for o in objects} == {"1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.104.1"}
            assert all(o.StudyInstanceUID == dx["study_instance_uid"] and o.PatientName == dx["patient_name"] for o in objects)
            keys = tmp_path / "keyset.json"
            pin = export_keys(tmp_path, settings, keys)
            sr_file = next(f for f, o in zip(received(), objects) if o.Modality == "SR")
            pdf_file = next(f for f, o in zip(received(), objects) if o.Modality == "DOC")
            for path, carrier in ((sr_file, "Basic Text SR"), (pdf_file, "Encapsulated PDF"),
                                  (next((relay["spool"] / "reports").rglob("signed.json")), "signed JSON")):
                verified = verify_report(path, keys, pin)
                assert verified.returncode == 0, verified.stderr
                assert f"report verifies ({carrier}): study {dx['study_instance_uid']}" in verified.stdout
            edited = pydicom.dcmread(sr_file)
            impression = next(i for i in edited.ContentSequence
                              if i.ConceptNameCodeSequence[0].CodeMeaning == "Impressions").ContentSequence[0]
            impression.TextValue = impression.TextValue.replace("30%", "20%")  # one character
            edited.save_as(tmp_path / "edited-sr.dcm")
            refused = verify_report(tmp_path / "edited-sr.dcm", keys, pin)
            assert refused.returncode == 1 and "REPORT DOES NOT VERIFY" in refused.stderr, refused.stdout
            technician = httpx.Client(base_url=relay["page"])
            wait_for("the county's technician able to log in at the edge",
                     lambda: log_in(technician, "tech.qs", tech_password).status_code == 303,
                     timeout=60, procs=relay["procs"])
            page = technician.get("/").text
            assert "危急值报告" in page  # the township is alarmed until someone acknowledges
            csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
            delivery = re.search(r'action="/reports/(\d+)/ack"', page).group(1)
            ack = technician.post(f"/reports/{delivery}/ack", data={"csrf": csrf, "lang": "zh"})
            assert ack.status_code in (200, 303)
            assert "危急值报告" not in technician.get("/").text
            wait_for("the acknowledgement at the county", lambda: "待上传" not in technician.get("/").text,
                     timeout=60, procs=relay["procs"])
            technician.close()
    finally:
        pacs.terminate()
        pacs.wait(10)
    with county.sessions() as s:
        from sqlalchemy import select
        from relay.county.db.models import Study, StudyTransition
        study = s.execute(select(Study).where(Study.study_uid == dx["study_instance_uid"])).scalar_one()
        states = [t.state for t in s.execute(select(StudyTransition).where(StudyTransition.study_pk == study.id)
                                             .order_by(StudyTransition.id)).scalars()]
    assert study.state == "acknowledged"
    assert states == ["arrived", "queued", "assigned", "reading", "signed", "delivered", "acknowledged"]
