"""The production-shaped test bed: a county as a county runs it, with two townships.

    storescu ─DICOM─▶ relay edge qingshan ─HTTPS─▶ WAN link ─┐            ┌─▶ relay county :A ─┐
    storescp ◀─SR/PDF─┘ (site credential,      (cut/restore) ├─▶ nginx TLS ┤   (round robin)    ├─▶ PostgreSQL
    storescu ─DICOM─▶ relay edge hekou ────HTTPS─▶ WAN link ─┘  private CA └─▶ relay county :B ─┤   RabbitMQ
    storescp ◀─SR/PDF─┘  RELAY_EDGE_COUNTY_CA_FILE)                                             │   SeaweedFS S3
    findscu, N-ACTION ─▶ edge services AE (worklist, storage commitment)                        │
                         relay worker --queues ingest,render ◀──────────────────────────────────┤
                         relay worker --queues assign,deliver ◀─────────────────────────────────┤
    HIS ─HL7 ORM (MLLP)─▶ relay mllp ───────────────────────────────────────────────────────────┘
    HIS ◀─ORU^R01 (MLLP), DiagnosticReport (FHIR)── the workers' HIS rounds (MllpReceiver, FhirReceiver)
                         critical webhooks ─▶ WebhookReceiver (township gateway, lead's pager)

Every box is a real process on 127.0.0.1 with its log in the run's folder. One database
and one queue prefix of its own, so nothing else in the suite sees it. Sites come from
``relay sites create``, people from ``relay users create``, as an operator makes them.
"""

from __future__ import annotations

import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pydicom
from pydicom.uid import generate_uid

from bench.linkemu import LinkEmulator
from tests.processes import RelayProcess, base_env, wait_for
from tests.servers import SeaweedFS, free_ports
from tests.his_standins import FhirReceiver, MllpReceiver
from tests.topology.hooks import WebhookReceiver
from tests.topology.pki import Pki, make_pki
from tests.topology.proxy import Nginx

TOWNSHIPS = ("qingshan", "hekou")
START_TIMEOUT_S = 120.0
"""Seconds each part may take to come up on a loaded machine (bounded, not asserted)."""
REPORT_POLL_S = "1"
"""RELAY_EDGE_REPORT_POLL_S of the edges: reports are picked up within about a second."""
ESCALATE_MINUTES = "0.2"
"""RELAY_CRITICAL_ESCALATE_MINUTES (12 s): an unacknowledged critical result escalates
within one alert round of the test seeing its webhook."""
PASSWORD = "correct-horse-topology-1"
SIGNING_PASSWORD = "sign-at-the-county-1"


class Tool:
    """A non-relay child process (DCMTK storescp) with its log kept, like RelayProcess."""

    def __init__(self, name: str, args: list[str], *, cwd: Path, logdir: Path) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, cwd=cwd, env=base_env(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    role: str
    site: str | None = None


@dataclass
class Edge:
    """One township: its edge, its WAN link to the county, its PACS and its technician."""

    site: str
    dicom_port: int
    status_port: int
    services_port: int
    """The edge's pynetdicom AE: Modality Worklist C-FIND and Storage Commitment."""
    pacs_ae: str
    pacs_port: int
    pacs_dir: Path
    """Where the township's storescp writes what it receives (SR, Encapsulated PDF)."""
    spool: Path
    technician: Account
    link: LinkEmulator
    process: RelayProcess
    pacs: Tool

    @property
    def status_url(self) -> str:
        """The technician's page of this edge (plain HTTP on the township LAN)."""
        return f"http://127.0.0.1:{self.status_port}"

    services_ae: str = "RELAY_EDGE"

    def pacs_files(self) -> list[Path]:
        return sorted(p for p in self.pacs_dir.iterdir() if p.is_file() and not p.name.startswith("."))


@dataclass
class Topology:
    county_url: str
    """https://127.0.0.1:PORT: nginx, TLS from the private CA, in front of both APIs."""
    ca_file: Path
    edges: dict[str, Edge]
    webhooks: WebhookReceiver
    reader: Account
    admin: Account
    signing_password: str
    api_urls: list[str]
    """The two APIs' own plain-HTTP addresses (behind the proxy; for checks only)."""
    nginx: Nginx
    mllp_port: int
    """`relay mllp`: where the HIS sends orders (HL7 v2 over MLLP)."""
    his_mllp: MllpReceiver
    """The HIS's own MLLP port, taking ORU^R01 (RELAY_HIS_MLLP)."""
    his_fhir: FhirReceiver
    """The HIS's FHIR server, taking DiagnosticReports (RELAY_HIS_FHIR_URL)."""
    env: dict[str, str]
    """The county processes' environment (database, broker, store, queue prefix, webhooks)."""
    workdir: Path
    procs: list[Any] = field(default_factory=list)

    def client(self, bearer: str | None = None, *, timeout: float = 60.0) -> httpx.Client:
        """An HTTPS client to the county through the proxy, trusting only the private CA."""
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        trust = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.county_url, verify=trust, headers=headers, timeout=timeout)

    def token(self, account: Account) -> str:
        with self.client() as http:
            r = http.post("/api/auth/token", data={"username": account.username, "password": account.password})
            r.raise_for_status()
            return str(r.json()["access_token"])

    def cut_wan(self, edge: Edge | str) -> None:
        """Take the township's WAN down: open connections are reset, new ones refused."""
        self._edge(edge).link.down()

    def restore_wan(self, edge: Edge | str) -> None:
        self._edge(edge).link.up()

    def _edge(self, edge: Edge | str) -> Edge:
        return self.edges[edge] if isinstance(edge, str) else edge

    def wait(self, what: str, check: Any, *, timeout: float = 90.0) -> None:
        """wait_for with every process of the bed watched and its log in the failure."""
        wait_for(what, check, timeout=timeout, procs=self.procs)

    def relay(self, *args: str, stdin: str = "", timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a ``relay`` command with the county's environment (as an operator would)."""
        return run_relay(self.env, self.workdir, *args, stdin=stdin, timeout=timeout)


def run_relay(env: dict[str, str], cwd: Path, *args: str, stdin: str = "",
              timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "relay", *args], env=env, cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"relay {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def storescu(edge: Edge, *paths: Path, calling_ae: str = "MODALITY1") -> subprocess.CompletedProcess[str]:
    """DCMTK storescu as the township's modality: every file, one association."""
    return subprocess.run(
        ["storescu", "-xr", "-aet", calling_ae, "-aec", "RELAY_EDGE", "+sd", "+r", "+sp", "*.dcm",
         "127.0.0.1", str(edge.dicom_port), *map(str, paths)],
        capture_output=True, text=True, timeout=120, env=base_env())


def echoscu(port: int) -> bool:
    return subprocess.run(["echoscu", "-aec", "RELAY_EDGE", "127.0.0.1", str(port)], capture_output=True,
                          timeout=30, env=base_env()).returncode == 0


def fresh_study(sources: list[Path], dest: Path, **attrs: str) -> tuple[str, list[Path]]:
    """Copies of sample files as a new study (new Study, Series and SOP Instance UIDs, kept
    consistent across the files), so every test sends its own study; ``attrs`` set other
    attributes (e.g. AccessionNumber). Pixel data and transfer syntax are untouched."""
    dest.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    study_uid, written = "", []
    for i, source in enumerate(sources):
        ds = pydicom.dcmread(source)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            old = str(getattr(ds, keyword))
            setattr(ds, keyword, mapping.setdefault(old, generate_uid()))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
        path = dest / f"{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        study_uid = str(ds.StudyInstanceUID)
        written.append(path)
    return study_uid, written


def fetch_verification_keys(topology: Topology, dest: Path) -> tuple[Path, str]:
    """The key set a township checks reports against, and the fingerprint it pinned: the
    county's operator runs ``relay keys fingerprint`` (handed to the township once) and
    ``relay keys export``, as the README's deployment says."""
    pin = topology.relay("keys", "fingerprint").stdout.strip().split()[-1]
    topology.relay("keys", "export", "--out", str(dest))
    return dest, pin


def verify_report(path: Path, keys: tuple[Path, str]) -> subprocess.CompletedProcess[str]:
    """``relay verify-report FILE --keys KEYSET --pin FPR`` as the township runs it."""
    keyset, pin = keys
    return subprocess.run([sys.executable, "-m", "relay", "verify-report", str(path), "--keys", str(keyset),
                           "--pin", pin], capture_output=True, text=True, env=base_env(), timeout=60)


# --- bringing it up --------------------------------------------------------------------


@contextmanager
def _database(admin_dsn: str, name: str) -> Iterator[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _delete_queues(amqp_url: str, prefix: str) -> None:
    """Remove the bed's durable queues from the shared RabbitMQ (after its workers stopped)."""
    import pika

    from relay.config import Settings
    from relay.county.jobs import QUEUES, queue_name

    settings = Settings(queue_prefix=prefix)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()
        for kind in QUEUES:
            channel.queue_delete(queue_name(settings, kind))
    finally:
        conn.close()


def _site_token(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1]


def _make_people(env: dict[str, str], cwd: Path) -> tuple[dict[str, str], list[Account]]:
    """Sites and logins through the CLI, in parallel (each command is a cold Python start)."""
    accounts = [Account("dr.topo", PASSWORD, "radiologist"), Account("admin.topo", PASSWORD, "admin"),
                *(Account(f"tech.{site}", PASSWORD, "technician", site) for site in TOWNSHIPS)]
    sites = {site: subprocess.Popen([sys.executable, "-m", "relay", "sites", "create", site], env=env, cwd=cwd,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for site in TOWNSHIPS}
    tokens = {}
    for site, proc in sites.items():
        out, err = proc.communicate(timeout=START_TIMEOUT_S)
        assert proc.returncode == 0, f"relay sites create {site}: {out}\n{err}"
        tokens[site] = _site_token(out)
    users = []
    for a in accounts:
        args = [sys.executable, "-m", "relay", "users", "create", a.username, "--role", a.role, "--password-stdin"]
        if a.site:
            args += ["--site", a.site]
        if a.role == "radiologist":
            args += ["--on-duty"]
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdin is not None
        proc.stdin.write(a.password + "\n")
        proc.stdin.close()
        users.append((a, proc))
    for a, proc in users:
        proc.wait(timeout=START_TIMEOUT_S)
        assert proc.returncode == 0, f"relay users create {a.username}: {proc.stdout.read() if proc.stdout else ''}" \
                                     f"{proc.stderr.read() if proc.stderr else ''}"
    return tokens, accounts


@contextmanager
def topology(workdir: Path, *, pg_admin_dsn: str, amqp_url: str, seaweed: SeaweedFS,
             run_id: str, link_rate_bps: float | None = None, link_delay_s: float = 0.0,
             edge_env: dict[str, str] | None = None) -> Iterator[Topology]:
    """Start the whole bed, yield it, stop it; every wait bounded, every log kept in ``workdir``.
    ``link_*`` shape each township's WAN (bench/orders_worklist.py: 5 Mbit/s, 150 ms each way);
    ``edge_env`` overrides the edges' settings (RELAY_* names)."""
    with ExitStack() as stack:
        db_url = stack.enter_context(_database(pg_admin_dsn, f"relay_topo_{run_id}"))
        stack.callback(_delete_queues, amqp_url, f"relaytopo{run_id}")
        webhooks = WebhookReceiver()
        stack.callback(webhooks.stop)
        his_mllp, his_fhir = MllpReceiver(), FhirReceiver()
        stack.callback(his_mllp.stop)
        stack.callback(his_fhir.stop)
        api_ports = free_ports(2)
        proxy_port, mllp_port = free_ports(2)
        county_env = base_env(database_url=db_url, broker_url=amqp_url,
                              store_url=seaweed.url_for(f"relay-topo-{run_id}"),
                              queue_prefix=f"relaytopo{run_id}", data_dir=str(workdir / "county"),
                              critical_webhook_url=webhooks.township_url, critical_escalation_url=webhooks.lead_url,
                              critical_escalate_minutes=ESCALATE_MINUTES, log_level="INFO",
                              his_mllp_bind=f"127.0.0.1:{mllp_port}", his_mllp=his_mllp.address,
                              his_fhir_url=his_fhir.url, his_retry_base_s="2", his_retry_max_s="10")
        run_relay(county_env, workdir, "db", "upgrade", timeout=START_TIMEOUT_S)
        tokens, accounts = _make_people(county_env, workdir)
        pki = make_pki(workdir / "pki")
        procs: list[Any] = []

        def spawn(part: Any) -> Any:
            procs.append(part)
            stack.callback(part.stop)
            return part

        api_urls = [f"http://127.0.0.1:{p}" for p in api_ports]
        for i, port in enumerate(api_ports):
            spawn(RelayProcess(f"county{i}", ["county", "--no-migrate"], cwd=workdir, logdir=workdir,
                               env={**county_env, "RELAY_COUNTY_PORT": str(port),
                                    "RELAY_DATA_DIR": str(workdir / f"county{i}")}))
        for name, queues in (("worker-ingest-render", "ingest,render"), ("worker-assign-deliver", "assign,deliver")):
            spawn(RelayProcess(name, ["worker", "--concurrency", "1", "--queues", queues], cwd=workdir,
                               logdir=workdir, env={**county_env, "RELAY_DATA_DIR": str(workdir / name)}))
        spawn(RelayProcess("mllp", ["mllp"], cwd=workdir, logdir=workdir,
                           env={**county_env, "RELAY_DATA_DIR": str(workdir / "mllp")}))
        nginx = spawn(Nginx(workdir / "nginx", port=proxy_port, upstreams=api_ports, pki=pki))
        bed = Topology(county_url=f"https://127.0.0.1:{proxy_port}", ca_file=pki.ca, edges={}, webhooks=webhooks,
                       reader=accounts[0], admin=accounts[1], signing_password=SIGNING_PASSWORD,
                       api_urls=api_urls, nginx=nginx, mllp_port=mllp_port, his_mllp=his_mllp, his_fhir=his_fhir,
                       env=county_env, workdir=workdir, procs=procs)
        try:
            _wait_county_up(bed)
            bed.edges.update({site: _start_edge(workdir, site, i, token=tokens[site], pki=pki, proxy_port=proxy_port,
                                                technician=next(a for a in accounts if a.site == site), spawn=spawn,
                                                stack=stack, link=(link_rate_bps, link_delay_s),
                                                extra_env=edge_env or {})
                              for i, site in enumerate(TOWNSHIPS)})
            _wait_edges_up(bed)
            with bed.client(bed.token(bed.reader)) as http:
                http.post("/api/signing-keys", json={"signing_password": SIGNING_PASSWORD}).raise_for_status()
            yield bed
        finally:
            _stop_together(procs)
            _report_tracebacks(procs)


def _start_edge(workdir: Path, site: str, index: int, *, token: str, pki: Pki, proxy_port: int,
                technician: Account, spawn: Any, stack: ExitStack,
                link: tuple[float | None, float] = (None, 0.0), extra_env: dict[str, str] | None = None) -> Edge:
    dicom_port, status_port, pacs_port, services_port = free_ports(4)
    rate_bps, delay_s = link
    wan = LinkEmulator("127.0.0.1", proxy_port, rate_bps=rate_bps, delay_s=delay_s)
    link_port = wan.start()
    stack.callback(wan.stop)
    pacs_dir = workdir / f"pacs-{site}"
    pacs_dir.mkdir(parents=True, exist_ok=True)
    pacs_ae = f"PACS{index + 1}"
    pacs = spawn(Tool(f"storescp-{site}", ["storescp", "+xa", "-aet", pacs_ae, "-od", str(pacs_dir), str(pacs_port)],
                      cwd=workdir, logdir=workdir))
    data_dir = workdir / f"edge-{site}"
    env = base_env(data_dir=str(data_dir), edge_site=site, edge_site_token=token, edge_port=str(dicom_port),
                   edge_status_port=str(status_port), county_url=f"https://127.0.0.1:{link_port}",
                   edge_county_ca_file=str(pki.ca), edge_report_destinations=f"{pacs_ae}@127.0.0.1:{pacs_port}",
                   edge_report_poll_s=REPORT_POLL_S, edge_heartbeat_s="10", forward_retry_max="5",
                   edge_technicians_poll_s="5", edge_ack_retry_s="2", edge_services_port=str(services_port),
                   edge_order_sync_s="2", edge_site_code=f"T{index + 1}", log_level="INFO")
    env.update(extra_env or {})
    process = spawn(RelayProcess(f"edge-{site}", ["edge"], env=env, cwd=workdir, logdir=workdir))
    return Edge(site=site, dicom_port=dicom_port, status_port=status_port, services_port=services_port,
                pacs_ae=pacs_ae, pacs_port=pacs_port,
                pacs_dir=pacs_dir, spool=data_dir / "edge", technician=technician, link=wan, process=process,
                pacs=pacs)


def _wait_county_up(bed: Topology) -> None:
    for url in bed.api_urls:
        bed.wait(f"county API {url}", lambda u=url: httpx.get(f"{u}/healthz", timeout=10).status_code == 200,
                 timeout=START_TIMEOUT_S)

    def through_proxy() -> bool:
        with bed.client(timeout=10) as http:
            return http.get("/healthz").status_code == 200

    bed.wait("the county over HTTPS through nginx", through_proxy, timeout=START_TIMEOUT_S)
    bed.wait("relay mllp listening", lambda: _listening(bed.mllp_port), timeout=START_TIMEOUT_S)
    for proc in bed.procs:
        if proc.name.startswith("worker"):
            bed.wait(f"{proc.name} ready", lambda p=proc: " ready." in p.log(), timeout=START_TIMEOUT_S)


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def _wait_edges_up(bed: Topology) -> None:
    for edge in bed.edges.values():
        bed.wait(f"edge {edge.site} C-ECHO", lambda e=edge: echoscu(e.dicom_port), timeout=START_TIMEOUT_S)
        bed.wait(f"edge {edge.site} services C-ECHO", lambda e=edge: echoscu(e.services_port),
                 timeout=START_TIMEOUT_S)
        bed.wait(f"edge {edge.site} status page",
                 lambda e=edge: httpx.get(e.status_url + "/login", timeout=10).status_code == 200,
                 timeout=START_TIMEOUT_S)


STOP_GRACE_S = 30.0
"""Seconds every part together gets to exit after its stop signal; stragglers are then
killed by their own stop()."""


def _stop_together(procs: list[Any]) -> None:
    """Signal every part at once (edges first), then wait: a sequential stop costs the sum
    of each part's graceful shutdown."""
    for p in sorted(procs, key=lambda p: not p.name.startswith("edge")):
        if p.proc.poll() is None:
            p.proc.send_signal(signal.SIGQUIT if isinstance(p, Nginx) else signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for p in procs:
        try:
            p.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass


def _report_tracebacks(procs: list[Any]) -> None:
    """At teardown, print the tail of every log that holds a traceback (pytest shows it on failure)."""
    for p in procs:
        try:
            text = p.log()
        except OSError:
            continue
        if "Traceback" in text:
            print(f"--- {p.name} ---\n{text[-6000:]}")

