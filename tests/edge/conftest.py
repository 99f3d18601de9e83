"""Fixtures of the edge tests: settings under tmp_path, a spool, a running SCP on a
free loopback port, a stand-in county, and DCMTK (which must be installed: a missing
DCMTK fails the tests that need it, it never skips them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.config import Settings
from relay.edge.acceptor import StoreServer
from relay.edge.scp import start_scp, stop_scp
from relay.edge.spool import Spool
from tests.edge.standin_county import TOKEN, StandInCounty

DCMTK_TIMEOUT_S = 30


@pytest.fixture
def edge_settings(tmp_path: Path) -> Settings:
    """Settings for one test: state under tmp_path, SCP on an ephemeral port, fast retries."""
    return Settings(
        data_dir=tmp_path / "var", edge_host="127.0.0.1", edge_port=0,
        edge_ae_title="RELAY_EDGE", county_url="http://127.0.0.1:9", edge_site_token=TOKEN,
        edge_network_timeout=10.0, forward_retry_min=0.05, forward_retry_max=0.2,
        forward_timeout=5.0, edge_study_quiet_s=0.0, edge_study_stat_quiet_s=0.0,
        edge_status_port=0, edge_spool_slots=8, edge_services_port=0,
    )


@pytest.fixture
def spool(edge_settings: Settings) -> Iterator[Spool]:
    with Spool(edge_settings.edge_spool_dir) as opened:
        yield opened


@dataclass
class RunningScp:
    server: StoreServer
    spool: Spool
    host: str
    port: int


@pytest.fixture
def scp(edge_settings: Settings, spool: Spool) -> Iterator[RunningScp]:
    server = start_scp(edge_settings, spool)
    host, port = server.server_address[:2]
    try:
        yield RunningScp(server=server, spool=spool, host=host, port=port)
    finally:
        stop_scp(server, grace_s=1.0)


@pytest.fixture
def standin_county() -> Iterator[StandInCounty]:
    standin = StandInCounty()
    try:
        yield standin
    finally:
        standin.close()


@pytest.fixture(scope="session")
def dcmtk() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runner for DCMTK tools; fails (never skips) when DCMTK is not installed."""
    missing = [tool for tool in ("echoscu", "storescu", "dcmdump") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"DCMTK is required (apt-get install dcmtk); missing: {missing}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # Debian's DCMTK leaves Nagle on; without this every C-STORE waits ~55 ms.
        env = dict(os.environ, TCP_NODELAY="1")
        return subprocess.run(list(args), env=env, capture_output=True, text=True,
                              timeout=DCMTK_TIMEOUT_S, check=False)

    return run
