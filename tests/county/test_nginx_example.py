"""The shipped nginx example (deploy/nginx/relay-county.conf) as Debian's nginx runs it in
front of the county API (issue 10, point 8): searches' query strings and Referers never
reach its access log, /metrics is refused to other hosts, and the API sees nginx's request
id. TLS is left out here (the certificate lines are taken out); everything else is as shipped."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from bench.common import free_port, serve_app
from reader_portal.app import create_app
from relay.county.context import County
from tests.conftest import REPO

EXAMPLE = REPO / "deploy" / "nginx" / "relay-county.conf"
CANARY = "CANARYZ王小明"
SCRAPE_TOKEN = "nginx-test-metrics-token"


def _patched(api_port: int, https_port: int, http_port: int, log: Path) -> str:
    text = EXAMPLE.read_text(encoding="utf-8")
    for old, new in (("server 127.0.0.1:8000;", f"server 127.0.0.1:{api_port};"),
                     ("listen 443 ssl;", f"listen 127.0.0.1:{https_port};"),
                     ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("/var/log/nginx/relay-access.log", str(log))):
        assert old in text, f"the example no longer has {old!r}: adapt this test"
        text = text.replace(old, new)
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("ssl_certificate"))


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("nginx did not listen")


@pytest.fixture
def proxied(county: County, settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """nginx with the example config in front of the county app: (proxy URL, access log)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is not installed (make peers installs Debian's nginx)"
    scraped = County(settings.model_copy(update={"metrics_token": SCRAPE_TOKEN}))
    log, https_port, http_port = tmp_path / "access.log", free_port(), free_port()
    with serve_app(create_app(scraped)) as api:
        site = tmp_path / "relay-county.conf"
        site.write_text(_patched(int(api.rsplit(":", 1)[1]), https_port, http_port, log), encoding="utf-8")
        temp = "".join(f"{kind}_temp_path {tmp_path / kind};\n" for kind in
                       ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        main = tmp_path / "nginx.conf"
        main.write_text(("user root;\n" if os.geteuid() == 0 else "") +
                        f"daemon off;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'} info;\n"
                        f"events {{}}\nhttp {{\n{temp}include {site};\n}}\n", encoding="utf-8")
        proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(main)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_listening(https_port, proc)
            yield f"http://127.0.0.1:{https_port}", log
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            scraped.close()


def test_the_access_log_keeps_no_patient_search_and_no_referer(proxied):
    base, log = proxied
    referer = {"Referer": f"{base}/portal/?patient={quote(CANARY)}"}  # as a browser encodes it
    ids = []
    for path, params in (("/dicomweb/studies", {"PatientName": f"{CANARY}*"}),
                         ("/api/worklist", {"patient": CANARY}),
                         ("/api/audit", {"actor": CANARY}),
                         ("/portal/", {"patient": CANARY}),
                         ("/api/tat", {"site": CANARY})):
        r = requests.get(f"{base}{path}", params=params, headers={**referer, "Authorization": "Bearer usr_x"},
                         allow_redirects=False, timeout=60)
        ids.append(r.headers.get("x-request-id"))
    deadline = time.monotonic() + 30  # nginx writes a line after its answer: wait for the last one
    while True:
        written = log.read_bytes().decode("utf-8", "replace") if log.exists() else ""
        if all(rid and f"rid={rid}" in written for rid in ids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "/dicomweb/studies" in written and "/api/worklist" in written and "/portal/" in written
    assert "CANARYZ" not in written and "%E7%8E%8B" not in written.upper() and "王" not in written
    assert all(rid and f"rid={rid}" in written for rid in ids), (ids, written)


def test_metrics_are_refused_to_other_hosts_and_served_to_the_monitor(proxied):
    base, _ = proxied
    port = int(base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60, source_address=("127.0.0.2", 0)) as other:
        other.sendall(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        assert other.recv(4096).split(b" ")[1] == b"403"
    assert requests.get(f"{base}/metrics", timeout=60).status_code == 401  # the token is still needed
    r = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}, timeout=60)
    assert r.status_code == 200 and "relay_studies" in r.text
