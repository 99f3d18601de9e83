"""Debian's nginx as the county's TLS-terminating proxy, run as the test's own process.

Its prefix, configuration, pid file, temp folders and logs live in the test's folder
(``nginx -p DIR -c nginx.conf -e logs/error.log -g 'daemon off;'``); the system
service is never touched. The access log records the upstream that served each
request, so a test can see the round robin.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from tests.topology.pki import Pki

ACCESS_LOG_FORMAT = '$remote_addr "$request_method $uri" $status upstream=$upstream_addr'
"""No query strings in the log ($uri, not $request): QIDO searches carry patient names."""


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        raise RuntimeError("no nginx: apt-get install -y nginx (it is in the Makefile's APT_PEERS)")
    return found


def nginx_conf(prefix: Path, *, port: int, upstreams: list[int], pki: Pki) -> str:
    # As root, nginx's workers would drop to www-data, which cannot enter pytest's 0700
    # folders to write proxy temp files; run them as whoever runs the test instead.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
    temps = "\n".join(f"    {kind}_temp_path {prefix / 'temp' / kind};"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""{user}worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'logs' / 'error.log'} notice;
events {{ worker_connections 512; }}
http {{
    log_format relay '{ACCESS_LOG_FORMAT}';
    access_log {prefix / 'logs' / 'access.log'} relay;
{temps}
    upstream county {{
{servers}
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name relay.county.test;
        ssl_certificate     {pki.server_cert};
        ssl_certificate_key {pki.server_key};
        ssl_protocols       TLSv1.2 TLSv1.3;
        client_max_body_size 2g;
        proxy_request_buffering off;
        proxy_read_timeout  300s;
        proxy_send_timeout  300s;
        location / {{
            proxy_pass http://county;
            proxy_http_version 1.1;
            proxy_set_header Connection        "";
            proxy_set_header Host              $host;
            proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground in ``prefix``, with .name/.proc/.log()/.stop() like RelayProcess."""

    def __init__(self, prefix: Path, *, port: int, upstreams: list[int], pki: Pki) -> None:
        self.name = "nginx"
        self.pki = pki
        self.prefix = prefix
        for sub in ("logs", "temp"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(nginx_conf(prefix, port=port, upstreams=upstreams, pki=pki))
        self.error_log = prefix / "logs" / "error.log"
        self.access_log = prefix / "logs" / "access.log"
        self._out = open(prefix / "logs" / "stdout.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [nginx_binary(), "-p", str(prefix), "-c", str(self.conf), "-e", str(self.error_log),
             "-g", "daemon off;"], stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)

    def log(self) -> str:
        parts = []
        for path in (self.prefix / "logs" / "stdout.log", self.error_log):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                parts.append(f"(no {path.name})")
        return "\n".join(parts)

    def upstreams_used(self) -> list[str]:
        """The upstream address of each logged request, in order."""
        try:
            lines = self.access_log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line.rsplit("upstream=", 1)[1] for line in lines if "upstream=" in line]

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._out.close()
        return self.proc.returncode
