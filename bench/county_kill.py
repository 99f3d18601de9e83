"""Issue 13, row 6 at full size: a county API process killed between the object write and
the index commit, N trials (tests/county/test_fsck.py runs 3 in the suite).

Each trial: a real `relay county` ingests one instance over HTTP while a lock on
`instances` holds its commit back; SIGKILL; `relay county fsck` must name the orphan; every
second trial `--repair` sets it aside before the retry; the edge's retry must answer
`stored`; a last fsck must be clean. Prints the counts.

    .venv/bin/python -m bench.county_kill --trials 100
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
from tests.county.test_fsck import kill_trial
from tests.factories import make_site
from tests.servers import start_seaweedfs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    name = f"relay_bench_kill_{run}"
    with tempfile.TemporaryDirectory() as tmp, psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        weed = start_seaweedfs(Path(tmp) / "weed")
        try:
            url = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
            upgrade(url)
            settings = Settings(data_dir=Path(tmp) / "var", database_url=url, broker_url=AMQP_URL,
                                store_url=weed.url_for(f"kill-{run}"), queue_prefix=f"relaybench{run}")
            county = County(settings)
            _, token = make_site(county)
            failures, started = [], time.monotonic()
            for trial in range(args.trials):
                try:
                    kill_trial(settings, Path(tmp), token, trial)
                except AssertionError as exc:
                    failures.append((trial, str(exc)[:300]))
                print(f"trial {trial + 1}/{args.trials}: {'ok' if not failures or failures[-1][0] != trial else 'FAIL'}",
                      flush=True)
            county.close()
        finally:
            weed.stop()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"\nkills between object write and commit: {args.trials}; orphan named by fsck and cleared, "
          f"retry stored, final sweep clean: {args.trials - len(failures)}; failed: {len(failures)} "
          f"({time.monotonic() - started:.0f} s)")
    for trial, why in failures:
        print(f"  trial {trial}: {why}")


if __name__ == "__main__":
    main()
