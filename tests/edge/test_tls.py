"""Optional DICOM TLS on the modality side, with real certificates and real peers."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from relay.config import Settings
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.edge.factories import ct_dataset
from tests.edge.helpers import journal_rows
from tests.processes import base_env


def _cert(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
          *, ca: bool) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _pki(folder: Path) -> dict[str, Path]:
    """A county CA, the edge's server certificate and a modality's client certificate."""
    ca_key, edge_key, modality_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("County Relay Test CA", ca_key, None, ca=True)
    paths = {"ca": _write(folder, "ca", ca, ca_key)[0]}
    paths["edge_crt"], paths["edge_key"] = _write(folder, "edge", _cert("localhost", edge_key, (ca.subject, ca_key), ca=False), edge_key)
    paths["mod_crt"], paths["mod_key"] = _write(folder, "modality", _cert("CT01", modality_key, (ca.subject, ca_key), ca=False), modality_key)
    return paths


def _client_context(pki: dict[str, Path], *, with_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"]))
    if with_cert:
        context.load_cert_chain(str(pki["mod_crt"]), str(pki["mod_key"]))
    return context


def _associate(port: int, context: ssl.SSLContext | None):
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.network_timeout = 5
    tls = (context, "localhost") if context else None
    return ae.associate("127.0.0.1", port, ae_title="RELAY_EDGE", tls_args=tls)


def _start(edge_settings: Settings, pki: dict[str, Path], *, mutual: bool):
    settings = edge_settings.model_copy(update={
        "edge_tls_cert": pki["edge_crt"], "edge_tls_key": pki["edge_key"],
        "edge_tls_client_ca": pki["ca"] if mutual else None})
    spool = Spool(settings.edge_spool_dir)
    server = start_scp(settings, spool)
    return server, spool, server.server_address[1]


def test_a_modality_stores_over_tls_and_a_plain_association_is_refused(edge_settings, tmp_path):
    pki = _pki(tmp_path)
    server, spool, port = _start(edge_settings, pki, mutual=False)
    try:
        assoc = _associate(port, _client_context(pki, with_cert=False))
        assert assoc.is_established
        assert assoc.send_c_store(ct_dataset()).Status == 0x0000
        assoc.release()
        assert len(journal_rows(spool.root)) == 1
        assert not _associate(port, None).is_established
    finally:
        stop_scp(server, grace_s=1.0)
        spool.close()


def test_with_mutual_tls_a_modality_without_a_certificate_is_refused(edge_settings, tmp_path):
    pki = _pki(tmp_path)
    server, spool, port = _start(edge_settings, pki, mutual=True)
    try:
        assert not _associate(port, _client_context(pki, with_cert=False)).is_established
        with_cert = _associate(port, _client_context(pki, with_cert=True))
        assert with_cert.is_established
        with_cert.release()
    finally:
        stop_scp(server, grace_s=1.0)
        spool.close()


def test_dcmtk_echoscu_speaks_tls_to_the_edge(edge_settings, tmp_path):
    pki = _pki(tmp_path)
    server, spool, port = _start(edge_settings, pki, mutual=True)
    try:
        done = subprocess.run(["echoscu", "+tls", str(pki["mod_key"]), str(pki["mod_crt"]), "+cf", str(pki["ca"]),
                               "-aec", "RELAY_EDGE", "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=30, env=base_env())
        assert done.returncode == 0, done.stderr
    finally:
        stop_scp(server, grace_s=1.0)
        spool.close()


def test_the_edge_refuses_tls_below_1_2(edge_settings, tmp_path):
    """Row 15 of the matrix: TLS 1.0 and 1.1 offered alone are refused; 1.2 is taken."""
    from tests.tls_probe import OLD, negotiated, old_tls_works

    pki = _pki(tmp_path)
    old_tls_works(pki["edge_crt"], pki["edge_key"])
    server, _, port = _start(edge_settings, pki, mutual=False)
    try:
        for version in OLD:
            assert negotiated("127.0.0.1", port, version) is None, f"the edge accepted {version}"
        assert negotiated("127.0.0.1", port, "TLSv1_2") == "TLSv1.2"
    finally:
        stop_scp(server)
