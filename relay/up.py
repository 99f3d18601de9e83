"""`relay up`: the whole relay on one machine, on embedded defaults, supervised."""

from __future__ import annotations

import logging
import socket
import threading
import time

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from relay.config import Settings
from relay.county.context import County
from relay.county.db.migrate import upgrade
from relay.demo import SAMPLE_DICOM, ensure_demo_users, ensure_edge_site
from relay.send import dicom_files, send_files
from relay.supervise import Child, Supervisor, child_env, relay_argv

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
"""How long `relay up` waits for the API and the edge to answer before giving up, in seconds."""


def _wait_ready(settings: Settings, stop: threading.Event) -> bool:
    deadline = time.monotonic() + READY_TIMEOUT_S
    api = edge = False
    ae = AE(ae_title="RELAY_UP")
    ae.add_requested_context(Verification)
    while time.monotonic() < deadline and not stop.is_set() and not (api and edge):
        try:
            api = api or httpx.get(f"{settings.county_base_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            pass
        if not edge:
            assoc = ae.associate(settings.edge_host, settings.edge_port, ae_title=settings.edge_ae_title)
            if assoc.is_established:
                edge = getattr(assoc.send_c_echo(), "Status", None) == 0
                assoc.release()
        stop.wait(0.5)
    return api and edge


def _demo(settings: Settings, county: County) -> None:
    logins = ensure_demo_users(county, settings)
    files = dicom_files([SAMPLE_DICOM])
    results = send_files(files, host=settings.edge_host, port=settings.edge_port,
                         called_ae=settings.edge_ae_title, calling_ae="DEMO_MODALITY")
    ok = sum(1 for r in results if r.status == 0)
    lines = [
        "",
        f"  示范数据已发送 / demo data sent: {ok}/{len(results)} instances from {SAMPLE_DICOM}",
        f"  阅片门户 / portal:  {settings.county_base_url}/portal/",
        f"  API 文档 / API docs: {settings.county_base_url}/docs",
        f"  边缘节点 / edge DICOM: {settings.edge_ae_title}@{settings.edge_host}:{settings.edge_port}",
        *([f"  技师页面 / technician's page: http://{settings.edge_status_host}:{settings.edge_status_port}/ "
           "(技师账号 tech / log in as tech)"] if settings.edge_status_port > 0 else []),
        "  登录 / logins:",
        *[f"    {role.value:<12} {user:<8} {password}" for user, password, role in logins],
        "  Ctrl-C 停止 / to stop",
        "",
    ]
    print("\n".join(lines), flush=True)


UP_STUDY_QUIET_S = 5.0
"""Quiet period of a study under `relay up`, in seconds, unless configured: modality, edge
and county share one machine there, and a minute's wait (the production default, for
modalities that send series a while apart) would make the demo look stuck."""


UP_TECHNICIANS_POLL_S = 10.0
"""Seconds between the edge's fetches of technician logins under `relay up`, unless
configured: the demo's technician is made after the edge started, and should be able to
log in to the technician's page within seconds, not the production 5 minutes."""


def _one_machine_defaults(settings: Settings) -> dict[str, str]:
    defaults = {}
    if "edge_study_quiet_s" not in settings.model_fields_set:
        defaults["RELAY_EDGE_STUDY_QUIET_S"] = str(UP_STUDY_QUIET_S)
    if "edge_technicians_poll_s" not in settings.model_fields_set:
        defaults["RELAY_EDGE_TECHNICIANS_POLL_S"] = str(UP_TECHNICIANS_POLL_S)
    return defaults


PORT_PROBE_TIMEOUT_S = 1.0
"""Seconds `relay up` waits for a connection to one of its ports before calling it
free. A listener on this machine answers at once (accept or refuse)."""

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


def listening(host: str, port: int, *, timeout_s: float = PORT_PROBE_TIMEOUT_S) -> bool:
    """Whether something accepts TCP connections at ``host:port``.

    A connection, not a bind: the TIME_WAIT sockets a just-stopped run leaves behind
    make a plain bind fail for a minute although nothing listens, and the servers
    themselves bind with SO_REUSEADDR, so they start fine on such a port."""
    target = _WILDCARDS.get(host, host)
    try:
        with socket.create_connection((target, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def busy_ports(settings: Settings) -> list[str]:
    """The addresses `relay up` needs that something else already listens on."""
    wanted = [("county API", settings.county_host, settings.county_port),
              ("edge DICOM", settings.edge_host, settings.edge_port)]
    if settings.edge_status_port > 0:
        wanted.append(("technician's page", settings.edge_status_host, settings.edge_status_port))
    return [f"{what} {host}:{port}" for what, host, port in wanted if listening(host, port)]


def run_up(settings: Settings, *, demo: bool, stop: threading.Event) -> int:
    """Prepare the embedded state, run edge + county + worker, and supervise them."""
    busy = busy_ports(settings)
    if busy:
        # Otherwise the readiness check would be answered by whatever holds the ports
        # (another `relay up`, say) and this one would look healthy while it is not.
        log.error("cannot start: already in use: %s (another relay running? set RELAY_COUNTY_PORT, "
                  "RELAY_EDGE_PORT, RELAY_EDGE_STATUS_PORT)", ", ".join(busy))
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    data_dir = str(settings.data_dir.resolve())
    upgrade(settings.resolved_database_url)
    county = County(settings)
    token = settings.edge_site_token or ensure_edge_site(county, settings)
    # The edge under `relay up` always forwards to the county it runs beside.
    env = child_env({"RELAY_DATA_DIR": data_dir, "RELAY_EDGE_SITE_TOKEN": token,
                     "RELAY_COUNTY_URL": settings.county_base_url, **_one_machine_defaults(settings)})
    supervisor = Supervisor([
        Child("county", relay_argv("county")),
        Child("worker", relay_argv("worker", "--concurrency", "1")),
        Child("edge", relay_argv("edge")),
    ], env=env)
    supervisor.stop = stop
    runner = threading.Thread(target=supervisor.run, name="supervisor")
    runner.start()
    if not _wait_ready(settings, stop):
        if not stop.is_set():
            log.error("the relay did not become ready in %.0fs; stopping", READY_TIMEOUT_S)
        stop.set()
        runner.join()
        return 1
    log.info("relay is up: portal %s/portal/", settings.county_base_url)
    if demo:
        _demo(settings, county)
    while runner.is_alive():
        runner.join(timeout=0.5)
    county.close()
    return 0
