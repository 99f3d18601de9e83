"""Offer a server exactly one TLS version and see whether it takes it (the matrix's row 15).

OpenSSL 3 refuses TLS 1.0/1.1 by default at security level 1 on both sides, so a probe
that "fails to connect" could be the client's own refusal, and a test built on it could
never fail. ``old_tls_works`` therefore first shakes hands with a control server that
accepts old versions: only if that succeeds does a refusal by the real server mean anything.
"""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from pathlib import Path

OLD = ("TLSv1", "TLSv1_1")


def _client(version: str) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        v = getattr(ssl.TLSVersion, version)
        context.minimum_version = context.maximum_version = v
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def negotiated(host: str, port: int, version: str, *, timeout: float = 10.0) -> str | None:
    """The version the server agreed to when offered only ``version``; None if it refused."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with _client(version).wrap_socket(raw, server_hostname=host) as tls:
                return tls.version()
    except (ssl.SSLError, ConnectionError, OSError):
        return None


def old_tls_works(cert: Path, key: Path) -> None:
    """Assert that this machine's client can speak each old version to a server willing to."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(str(cert), str(key))
        server.minimum_version = ssl.TLSVersion.TLSv1
        server.set_ciphers("DEFAULT:@SECLEVEL=0")
    for version in OLD:
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            got = negotiated("127.0.0.1", port, version)
        finally:
            thread.join(10)
            listener.close()
        assert got is not None, f"the probe cannot speak {version} even to a willing server: a refusal proves nothing"
