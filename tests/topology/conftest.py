"""The production-shaped topology, started once for every test in tests/topology/.

See tests/topology/bed.py for what runs. The bed has its own database and queue prefix;
tests share it, so each sends studies of its own (``fresh_study``) and looks only at them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import PG_ADMIN_DSN, RUN_ID, _reachable
from tests.servers import SeaweedFS
from tests.topology.bed import Topology, topology


@pytest.fixture(scope="package")
def bed(tmp_path_factory: pytest.TempPathFactory, amqp_url: str, seaweed: SeaweedFS) -> Iterator[Topology]:
    _reachable("127.0.0.1", 5432)
    with topology(tmp_path_factory.mktemp("topology"), pg_admin_dsn=PG_ADMIN_DSN, amqp_url=amqp_url,
                  seaweed=seaweed, run_id=RUN_ID) as running:
        yield running
