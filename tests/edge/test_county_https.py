"""The edge talks to a county behind HTTPS whose certificate comes from the 医共体's
private CA (``RELAY_EDGE_COUNTY_CA_FILE``): uploads use the same trust as heartbeats
and report pickup. The county is the real app under uvicorn with TLS, on PostgreSQL,
RabbitMQ and S3; the CA and certificate are made by the test."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from relay.config import Settings
from relay.county.app import create_app
from relay.county.db.models import Instance
from relay.edge.forward import Forwarder
from relay.edge.http import county_client
from relay.edge.spool import Spool
from tests.edge.helpers import journal_rows, wait_until
from tests.edge.test_forward import spool_instance
from tests.factories import make_site
from tests.servers import free_port


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def private_ca(folder: Path) -> dict[str, Path]:
    """A county CA (PEM) and a server certificate it signed for 127.0.0.1 / localhost."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    valid = {"not_valid_before": now - dt.timedelta(minutes=1), "not_valid_after": now + dt.timedelta(days=1)}
    ca = (x509.CertificateBuilder().subject_name(_name("医共体 Test CA")).issuer_name(_name("医共体 Test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(_name("county")).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(valid["not_valid_before"]).not_valid_after(valid["not_valid_after"])
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.SubjectAlternativeName([
                  x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                  critical=False)
              .sign(ca_key, hashes.SHA256()))
    paths = {"ca": folder / "ca.crt", "crt": folder / "county.crt", "key": folder / "county.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["crt"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


@contextmanager
def https_county(county, pki: dict[str, Path]) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The county app under uvicorn with TLS on a free loopback port; its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(county), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False,
                                           ssl_certfile=str(pki["crt"]), ssl_keyfile=str(pki["key"])))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn with TLS did not start"
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_uploads_reach_an_https_county_signed_by_the_private_ca(
    county, edge_settings: Settings, spool: Spool, tmp_path: Path
) -> None:
    pki = private_ca(tmp_path)
    _, token = make_site(county, "township-a")
    with https_county(county, pki) as url:
        settings = edge_settings.model_copy(update={
            "county_url": url, "edge_county_ca_file": pki["ca"], "edge_site_token": token,
            "edge_site": "township-a"})
        with county_client(settings) as client:  # the heartbeat's path trusts the CA
            assert client.get("/healthz").status_code == 200
        uid = spool_instance(spool)
        stop = threading.Event()
        forwarder = Forwarder(spool=spool, settings=settings)
        thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
        thread.start()
        try:
            sent = wait_until(lambda: all(r["sent_at"] for r in journal_rows(spool.root)), timeout=60)
        finally:
            stop.set()
            spool.wake()
            thread.join(30)
        errors = [r["last_error"] for r in journal_rows(spool.root)]
    assert sent, f"not forwarded over HTTPS: {errors}"
    with county.sessions() as s:
        assert s.execute(select(Instance.sop_uid).where(Instance.sop_uid == uid)).scalar_one() == uid


def test_uploads_through_a_man_in_the_middle_with_another_cas_certificate_are_refused_and_kept(
    county, edge_settings: Settings, spool: Spool, tmp_path: Path
) -> None:
    """The matrix's row 15: the edge trusts only the 医共体's CA. A proxy presenting a
    certificate for 127.0.0.1 from another CA (an attacker's, or a mis-issued one) gets no
    upload: the instance stays unsent in the spool, the error names the certificate."""
    (tmp_path / "county").mkdir()
    (tmp_path / "attacker").mkdir()
    county_pki, attacker = private_ca(tmp_path / "county"), private_ca(tmp_path / "attacker")
    _, token = make_site(county, "township-a")
    with https_county(county, attacker) as url:  # answers like the county, with the attacker's certificate
        settings = edge_settings.model_copy(update={
            "county_url": url, "edge_county_ca_file": county_pki["ca"], "edge_site_token": token,
            "edge_site": "township-a", "forward_retry_max": 1})
        spool_instance(spool)
        stop = threading.Event()
        forwarder = Forwarder(spool=spool, settings=settings)
        thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
        thread.start()
        try:
            tried = wait_until(lambda: any(r["attempts"] for r in journal_rows(spool.root)), timeout=60)
        finally:
            stop.set()
            spool.wake()
            thread.join(30)
    rows = journal_rows(spool.root)
    assert tried and all(not r["sent_at"] for r in rows), rows
    assert any("CERTIFICATE_VERIFY_FAILED" in (r["last_error"] or "") or "certificate" in (r["last_error"] or "")
               for r in rows), rows
    with county.sessions() as s:
        assert s.execute(select(Instance.sop_uid)).first() is None, "an upload got through the man in the middle"
