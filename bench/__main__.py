"""`python -m bench` (`make bench`): every benchmark of the README's table, in order,
each with the arguments its row names. Long (tens of minutes): each compares with its
peers in the same run, so run it on a machine doing nothing else."""

from __future__ import annotations

import subprocess
import sys

RUNS: list[list[str]] = [
    ["bench.worklist_latency", "--trials", "2"],
    ["bench.ingest", "--trials", "5"],
    ["bench.slots_ab", "--trials", "4"],
    ["bench.edge_crash", "--trials", "20"],
    ["bench.wan"],
    ["bench.link_check"],
    ["bench.county", "--studies", "100000"],
    ["bench.dashboard", "--studies", "1000000", "--requests", "20"],
]


def main() -> int:
    failed = []
    for args in RUNS:
        print(f"\n=== python -m {' '.join(args)}", flush=True)
        if subprocess.run([sys.executable, "-m", *args], check=False).returncode != 0:
            failed.append(args[0])
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
