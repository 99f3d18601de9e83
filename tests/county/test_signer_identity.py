"""Issue 10, point 3: a signature proves who signed. A key belongs to one reader, its
published record names that reader, its validity and its revocation; a report verifies
only if the reader it names owns the key and the key was valid when it was signed. Only
readers make keys and sign; an administrator revokes. The trusted path is offline: the
county's key set signed by a key outside the database, whose fingerprint the township
pins (`relay keys export`, `relay verify-report --keys KEYSET --pin FPR`)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from relay.county.app import create_app
from relay.county.db.models import SigningKey, User
from relay.dicom import signing
from relay.dicom.vocab import Role
from tests.county.test_delivery import signed_study
from tests.county.test_dicomweb import server  # noqa: F401 - the county under uvicorn
from tests.county.test_reading import queue_studies
from tests.county.test_reports import login
from tests.processes import base_env

PASSWORD = "sign-me-please"


def unlocked(county, username: str):
    """The reader's newest private key, unlocked as the signing service does."""
    with county.sessions() as s:
        key = s.execute(select(SigningKey).join(User, User.id == SigningKey.user_id)
                        .where(User.username == username).order_by(SigningKey.id.desc())).scalars().first()
        return signing.unlock(key.encrypted_private_pem, PASSWORD)


def signed_file(client, headers, uid: str) -> signing.SignedReport:
    (report,) = [r for r in client.get(f"/api/studies/{uid}/reports", headers=headers).json() if r["status"] == "signed"]
    return signing.SignedReport.from_json(client.get(f"/api/reports/{report['id']}/signed", headers=headers).text)


def record_of(published: dict, key_id: str) -> dict:
    (found,) = [k for k in published["keys"] if k["key_id"] == key_id]
    return found


def rename(county, username: str, display_name: str) -> None:
    with county.sessions() as s:
        s.execute(select(User).where(User.username == username)).scalar_one().display_name = display_name
        s.commit()


def test_the_published_record_names_the_keys_owner_its_validity_and_revocation(county):
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        rename(county, "dr.wang", "王建国")
        before = datetime.now(UTC)
        made = client.post("/api/signing-keys", json={"signing_password": PASSWORD}, headers=dr)
        assert made.status_code == 201
        published = client.get("/api/signing-keys").json()
    record = record_of(published, made.json()["key_id"])
    assert record["owner"] == {"username": "dr.wang", "display_name": "王建国"}
    assert datetime.fromisoformat(record["valid_from"]) >= before - timedelta(seconds=1)
    assert record["valid_until"] is None and record["revoked_at"] is None and record["revocation_reason"] == ""
    assert "BEGIN PUBLIC KEY" in record["public_pem"] and "PRIVATE" not in json.dumps(published)


def test_a_report_signed_by_reader_a_verifies_and_the_same_document_naming_reader_b_does_not(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, deliver=False)  # signed by dr.wang
        dr_li = login(client, county, "dr.li", Role.RADIOLOGIST)
        client.post("/api/signing-keys", json={"signing_password": PASSWORD}, headers=dr_li)
        wang = login(client, county, "dr.wang2", Role.RADIOLOGIST)  # any logged-in reader may fetch it
        report = signed_file(client, wang, uid)
        published = client.get("/api/signing-keys").json()
    signing.verify(report, published)
    assert report.document["reader"] == "dr.wang"
    # dr.wang's key, a valid signature, but the document says dr.li signed it.
    forged = signing.sign({**report.document, "reader": "dr.li"}, unlocked(county, "dr.wang"))
    assert forged.key_id == report.key_id
    with pytest.raises(signing.SignatureError, match="belongs to dr.wang"):
        signing.verify(forged, published)


def test_a_key_revoked_before_the_signing_time_fails_and_one_revoked_after_still_verifies(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, deliver=False)
        dr = login(client, county, "dr.wang2", Role.RADIOLOGIST)
        report = signed_file(client, dr, uid)
        admin = login(client, county, "boss", Role.ADMIN)
        revoked = client.post(f"/api/signing-keys/{report.key_id}/revoke", json={"reason": "离职"}, headers=admin)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["revocation_reason"] == "离职" and revoked.json()["revoked_at"]
        again = client.post(f"/api/signing-keys/{report.key_id}/revoke", json={"reason": "again"}, headers=admin)
        assert again.status_code == 409
        published = client.get("/api/signing-keys").json()
        trail = client.get("/api/audit", params={"limit": 100}, headers=admin).json()
        # A revoked key signs nothing more at the county.
        (later,) = queue_studies(county, 1)
        wang = {"Authorization": _token(client, "dr.wang")}
        client.post(f"/api/worklist/{later}/claim", headers=wang)
        draft = client.post(f"/api/studies/{later}/reports", json={"template": "chest-pa"}, headers=wang).json()
        refused = client.post(f"/api/reports/{draft['id']}/sign", json={"signing_password": PASSWORD}, headers=wang)
        assert refused.status_code == 409 and "signing key" in refused.json()["detail"]
    record = record_of(published, report.key_id)
    assert record["revoked_at"] and record["revocation_reason"] == "离职"
    assert ("boss", "signing_key.revoke", "signing_key", report.key_id) in [
        (e["actor"], e["action"], e["object_type"], e["object_id"]) for e in trail]
    signing.verify(report, published)  # signed before the revocation: still the reader's signature
    after = datetime.fromisoformat(record["revoked_at"]) + timedelta(minutes=1)
    stolen = signing.sign({**report.document, "signed_at": after.isoformat()}, unlocked(county, "dr.wang"))
    with pytest.raises(signing.SignatureError, match="revoked"):
        signing.verify(stolen, published)


def _token(client, username: str) -> str:
    r = client.post("/api/auth/token", data={"username": username, "password": "correct-horse-1"})
    return f"Bearer {r.json()['access_token']}"


def test_a_revocation_can_name_when_the_key_was_compromised_and_reports_signed_since_then_fail(county):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, deliver=False)
        admin = login(client, county, "boss", Role.ADMIN)
        report = signed_file(client, admin, uid)
        since = datetime.fromisoformat(report.document["signed_at"]) - timedelta(seconds=1)
        future = client.post(f"/api/signing-keys/{report.key_id}/revoke", headers=admin,
                             json={"reason": "密码泄露", "effective_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
        assert future.status_code == 400
        assert client.post(f"/api/signing-keys/{report.key_id}/revoke", headers=admin,
                           json={"reason": "密码泄露", "effective_at": since.isoformat()}).status_code == 200
        published = client.get("/api/signing-keys").json()
    with pytest.raises(signing.SignatureError, match="revoked"):
        signing.verify(report, published)


def test_an_admin_can_neither_make_a_key_nor_sign_with_one(county):
    (uid,) = queue_studies(county, 1)
    with TestClient(create_app(county)) as client:
        admin = login(client, county, "boss", Role.ADMIN)
        made = client.post("/api/signing-keys", json={"signing_password": PASSWORD}, headers=admin)
        assert made.status_code == 403 and made.headers["content-type"] == "application/problem+json"
        # A key an administrator made before this rule (an old database) still signs nothing.
        kid, public_pem, encrypted = signing.new_key(PASSWORD)
        with county.sessions() as s:
            boss = s.execute(select(User).where(User.username == "boss")).scalar_one()
            s.add(SigningKey(key_id=kid, user_id=boss.id, public_pem=public_pem, encrypted_private_pem=encrypted,
                             created_at=datetime.now(UTC)))
            s.commit()
        client.post(f"/api/worklist/{uid}/claim", headers=admin)
        draft = client.post(f"/api/studies/{uid}/reports", json={"template": "chest-pa"}, headers=admin)
        assert draft.status_code in (201, 403)
        if draft.status_code == 201:
            sign = client.post(f"/api/reports/{draft.json()['id']}/sign", json={"signing_password": PASSWORD},
                               headers=admin)
            assert sign.status_code == 403 and sign.headers["content-type"] == "application/problem+json"
        tech = login(client, county, "tech.a", Role.TECHNICIAN, site="township-a")
        assert client.post("/api/signing-keys", json={"signing_password": PASSWORD}, headers=tech).status_code == 403


def test_a_readers_new_key_ends_the_validity_of_the_previous_one(county):
    with TestClient(create_app(county)) as client:
        dr = login(client, county, "dr.wang", Role.RADIOLOGIST)
        first = client.post("/api/signing-keys", json={"signing_password": PASSWORD}, headers=dr).json()
        second = client.post("/api/signing-keys", json={"signing_password": PASSWORD}, headers=dr).json()
        published = client.get("/api/signing-keys").json()
    old, new = record_of(published, first["key_id"]), record_of(published, second["key_id"])
    assert old["valid_until"] is not None and new["valid_until"] is None
    assert datetime.fromisoformat(old["valid_until"]) <= datetime.fromisoformat(new["valid_from"])


def relay(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "relay", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def county_env(settings, tmp_path: Path, **extra: str) -> dict[str, str]:
    return base_env(data_dir=str(tmp_path / "var"), database_url=settings.resolved_database_url,
                    county_keyset_key_file=str(tmp_path / "secret" / "keyset-key.pem"), **extra)


def test_the_exported_key_set_verifies_with_its_pin_and_is_refused_tampered_or_under_another_pin(
    county, settings, tmp_path,
):
    with TestClient(create_app(county)) as client:
        uid = signed_study(client, county, deliver=False)
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        (tmp_path / "report.json").write_text(signed_file(client, dr, uid).to_json(), encoding="utf-8")
    env = county_env(settings, tmp_path)
    printed = relay("keys", "fingerprint", cwd=tmp_path, env=env)
    assert printed.returncode == 0, printed.stderr
    pin = printed.stdout.strip()
    key_file = tmp_path / "secret" / "keyset-key.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert relay("keys", "fingerprint", cwd=tmp_path, env=env).stdout.strip() == pin  # the same key, not a new one
    exported = relay("keys", "export", "--out", "keyset.json", cwd=tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    keyset = json.loads((tmp_path / "keyset.json").read_text())
    assert "dr.wang" in json.dumps(keyset) and "PRIVATE" not in json.dumps(keyset)

    township = base_env(data_dir=str(tmp_path / "township"))  # no database: offline
    good = relay("verify-report", "report.json", "--keys", "keyset.json", "--pin", pin, cwd=tmp_path, env=township)
    assert good.returncode == 0 and "report verifies (signed JSON)" in good.stdout and "dr.wang" in good.stdout, good.stderr
    by_env = relay("verify-report", "report.json", "--keys", "keyset.json", cwd=tmp_path,
                   env={**township, "RELAY_COUNTY_KEYSET_PIN": pin})
    assert by_env.returncode == 0, by_env.stderr

    other = tmp_path / "other-key.pem"
    other_pin = relay("keys", "fingerprint", cwd=tmp_path, env={**env, "RELAY_COUNTY_KEYSET_KEY_FILE": str(other)})
    assert other_pin.stdout.strip() != pin
    wrong = relay("verify-report", "report.json", "--keys", "keyset.json", "--pin", other_pin.stdout.strip(),
                  cwd=tmp_path, env=township)
    assert wrong.returncode == 1 and "pinned" in wrong.stderr, wrong.stderr

    # The key set now says dr.wang's key is dr.li's: its signature no longer holds.
    (tmp_path / "tampered.json").write_text(json.dumps(keyset, ensure_ascii=False).replace('"dr.wang"', '"dr.li"'),
                                            encoding="utf-8")
    tampered = relay("verify-report", "report.json", "--keys", "tampered.json", "--pin", pin, cwd=tmp_path, env=township)
    assert tampered.returncode == 1 and "key set" in tampered.stderr, tampered.stderr

    unpinned = relay("verify-report", "report.json", "--keys", "keyset.json", cwd=tmp_path, env=township)
    assert unpinned.returncode == 1 and "--pin" in unpinned.stderr
    (tmp_path / "bare.json").write_text(json.dumps({k["key_id"]: k["public_pem"] for k in keyset["key_set"]["keys"]}))
    bare = relay("verify-report", "report.json", "--keys", "bare.json", "--pin", pin, cwd=tmp_path, env=township)
    assert bare.returncode == 1 and "relay keys export" in bare.stderr


def test_a_loose_key_set_key_file_is_refused(tmp_path, settings):
    loose = tmp_path / "loose.pem"
    env = {**county_env(settings, tmp_path), "RELAY_COUNTY_KEYSET_KEY_FILE": str(loose)}
    assert relay("keys", "fingerprint", cwd=tmp_path, env=env).returncode == 0
    os.chmod(loose, 0o644)
    refused = relay("keys", "fingerprint", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and "0600" in refused.stderr


def test_verify_report_against_a_county_url_says_it_trusts_that_server(server, county, tmp_path):
    import httpx

    with httpx.Client(base_url=server, timeout=60) as client:
        uid = signed_study(client, county, deliver=False)
        dr = login(client, county, "dr.li", Role.RADIOLOGIST)
        report = signed_file(client, dr, uid)
    (tmp_path / "report.json").write_text(report.to_json(), encoding="utf-8")
    township = base_env(data_dir=str(tmp_path / "township"))
    checked = relay("verify-report", "report.json", "--county", server, cwd=tmp_path, env=township)
    assert checked.returncode == 0 and "report verifies" in checked.stdout, checked.stderr
    assert "WARNING" in checked.stderr and f"trusts the keys served by {server}" in checked.stderr
    forged = signing.sign({**report.document, "reader": "dr.li"}, unlocked(county, "dr.wang"))
    (tmp_path / "forged.json").write_text(forged.to_json(), encoding="utf-8")
    refused = relay("verify-report", "forged.json", "--county", server, cwd=tmp_path, env=township)
    assert refused.returncode == 1 and "belongs to dr.wang" in refused.stderr  # owner checks still apply
