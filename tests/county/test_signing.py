"""Report signatures: Ed25519 over the canonical document, keys encrypted at rest,
and `relay verify-report` failing loudly on any tampering."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from relay.county.app import create_app
from relay.county.db.models import SigningKey
from relay.dicom import signing
from relay.dicom.vocab import Role
from tests.factories import make_user
from tests.processes import base_env

DOCUMENT = {
    "study_instance_uid": "2.25.1", "reader": "dr.wang", "signed_at": "2026-11-23T02:20:00+00:00",
    "findings": "双肺纹理清晰，未见明确实质性病变。", "impression": "胸部正位片未见明显异常。",
    "advice": "", "critical": False,
    "instances": [["2.25.11", "8e14e9d2b27c60cca2ae49cb2d50d9db78f3b65123ea1dc05f1efbd88f61fa8a"]],
}


def reader_with_key(client: TestClient, county, password: str = "sign-me-please") -> tuple[dict, str]:
    login = make_user(county, "dr.wang", Role.RADIOLOGIST)
    token = client.post("/api/auth/token", data={"username": "dr.wang", "password": login}).json()["access_token"]
    key = client.post("/api/signing-keys", json={"signing_password": password},
                      headers={"Authorization": f"Bearer {token}"})
    assert key.status_code == 201, key.text
    return key.json(), password


def test_a_signed_report_verifies_with_the_published_keys(county):
    with TestClient(create_app(county)) as client:
        key, password = reader_with_key(client, county)
        published = client.get("/api/signing-keys").json()
    with county.sessions() as s:
        stored = s.query(SigningKey).one()
    assert "ENCRYPTED PRIVATE KEY" in stored.encrypted_private_pem  # never in clear
    # Signed now: after the key became valid (a document dated before it would not verify).
    document = {**DOCUMENT, "signed_at": datetime.now(UTC).isoformat()}
    report = signing.sign(document, signing.unlock(stored.encrypted_private_pem, password))
    signing.verify(signing.SignedReport.from_json(report.to_json()), published)
    assert report.key_id == key["key_id"]


@pytest.mark.parametrize("change", [
    lambda d: d.update(impression="胸部正位片：右下肺炎。"),
    lambda d: d.update(reader="dr.li"),
    lambda d: d["instances"][0].__setitem__(1, "0" * 64),
], ids=["text", "reader", "image-digest"])
def test_any_change_after_signing_fails_verification(county, change):
    with TestClient(create_app(county)) as client:
        _, password = reader_with_key(client, county)
        published = client.get("/api/signing-keys").json()
    with county.sessions() as s:
        stored = s.query(SigningKey).one()
    report = signing.sign(json.loads(json.dumps(DOCUMENT)), signing.unlock(stored.encrypted_private_pem, password))
    change(report.document)
    with pytest.raises(signing.SignatureError, match="changed after signing"):
        signing.verify(report, published)


def test_the_wrong_signing_password_cannot_unlock_the_key(county):
    with TestClient(create_app(county)) as client:
        reader_with_key(client, county)
    with county.sessions() as s:
        stored = s.query(SigningKey).one()
    with pytest.raises(signing.SignatureError, match="wrong signing password"):
        signing.unlock(stored.encrypted_private_pem, "not-my-password")


def test_relay_verify_report_accepts_the_real_one_and_fails_loudly_on_tampering(tmp_path):
    kid, public_pem, encrypted = signing.new_key("sign-me-please")
    report = signing.sign(DOCUMENT, signing.unlock(encrypted, "sign-me-please"))
    county_key = Ed25519PrivateKey.generate()  # the county's key-set key, as `relay keys export` uses it
    keys = signing.KeySet({kid: signing.PublishedKey(kid, public_pem, owner="dr.wang", owner_name="王医生",
                                                     valid_from=datetime(2026, 11, 1, tzinfo=UTC))})
    (tmp_path / "keys.json").write_text(json.dumps(signing.sign_key_set(keys, county_key), ensure_ascii=False))
    pin = signing.fingerprint(county_key.public_key())
    (tmp_path / "report.json").write_text(report.to_json(), encoding="utf-8")
    tampered = json.loads(report.to_json())
    tampered["document"]["impression"] = "正常"
    (tmp_path / "tampered.json").write_text(json.dumps(tampered, ensure_ascii=False), encoding="utf-8")

    def run(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "relay", "verify-report", name, "--keys", "keys.json",
                               "--pin", pin], cwd=tmp_path, env=base_env(), capture_output=True, text=True, timeout=60)

    good, bad = run("report.json"), run("tampered.json")
    assert good.returncode == 0 and "report verifies" in good.stdout
    assert bad.returncode == 1 and "DOES NOT VERIFY" in bad.stderr
