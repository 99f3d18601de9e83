"""Issue 13, row 7 at full size: N outbox events published with confirms while a private
RabbitMQ node is restarted (at 1/3) and SIGKILLed (at 2/3); prints published / in the
queue / lost / duplicates (tests/county/test_broker_restart.py runs 2,000 in the suite).

    .venv/bin/python -m bench.broker_restart --events 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from relay.config import Settings
from relay.county.context import County
from relay.county.db.migrate import upgrade
from tests.conftest import AMQP_URL, PG_ADMIN_DSN
from tests.county.test_broker_restart import broker_faults_trial
from tests.servers import PrivateRabbit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10000)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    name = f"relay_bench_broker_{run}"
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        rabbit = PrivateRabbit()
        try:
            url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
            upgrade(url)
            county = County(Settings(data_dir=Path(tmp) / "var", database_url=url, broker_url=AMQP_URL,
                                     queue_prefix=f"relaybench{run}"))
            started = time.monotonic()
            counts = broker_faults_trial(county, rabbit, args.events)
            county.close()
        finally:
            rabbit.stop()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"events {args.events}: published (confirmed) {counts['published']}, in the queue {counts['in_queue']}, "
          f"confirmed-then-lost {counts['lost']}, duplicates {counts['duplicates']} "
          f"(one clean restart, one SIGKILL; {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
