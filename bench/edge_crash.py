"""kill -9 the edge during a 300-instance C-STORE, many times: acknowledged-then-lost = 0.

Each trial: a fresh `python -m relay edge` (embedded defaults, county unreachable so
nothing leaves the spool), DCMTK `storescu -v` sends the same deterministic CT series,
and after a random number of Success responses the edge gets SIGKILL. storescu's log
says which file each response belongs to. The edge is restarted (its recovery runs),
stopped, and its journal checked: every acknowledged SOP Instance UID has a row, every
row's file hashes to the journaled SHA-256, tmp/ is empty, and objects/ holds exactly
the journaled files. tests/edge/test_crash.py runs 3 such trials in the suite.

    .venv/bin/python -m bench.edge_crash [--trials 20] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
from pathlib import Path

import pydicom

from bench.common import free_port, storescu_successes
from bench.ct_series import write_ct_series
from bench.edge_proc import EdgeProcess
from relay.edge.slots import read_exactly

COUNT = 300
STORESCU_TIMEOUT_S = 120.0


def series_uids(paths: list[Path]) -> dict[str, str]:
    """File path -> SOP Instance UID, in sending order."""
    return {str(p): str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
            for p in paths}


def send_and_kill(edge: EdgeProcess, series: dict[str, str], *, kill_after: int) -> list[str]:
    """storescu -v the series; SIGKILL the edge after ``kill_after`` Success responses.
    Returns the SOP Instance UIDs storescu got Success for."""
    acknowledged: list[str] = []
    for path in storescu_successes(edge.port, series, calling_ae="CRASH_CT",
                                   timeout_s=STORESCU_TIMEOUT_S):
        acknowledged.append(series[path])
        if len(acknowledged) == kill_after:
            edge.kill9()
    return acknowledged


def spool_problems(spool_root: Path, acknowledged: list[str]) -> list[str]:
    """Everything that breaks the promise behind a Success; empty when all is well."""
    import sqlite3

    conn = sqlite3.connect(spool_root / "journal.sqlite3")
    try:
        rows = conn.execute("SELECT sop_uid, path, sha256, size FROM instances").fetchall()
    finally:
        conn.close()
    problems = [f"acknowledged, not journaled: {uid}"
                for uid in sorted(set(acknowledged) - {r[0] for r in rows})]
    for _, rel, sha256, size in rows:
        path = spool_root / rel
        if not path.is_file():
            problems.append(f"journaled file missing: {rel}")
        elif hashlib.sha256(read_exactly(path, size)).hexdigest() != sha256:
            problems.append(f"journaled file differs from its SHA-256: {rel}")
    problems += [f"unfinished write left: {p.name}" for p in (spool_root / "tmp").iterdir()]
    on_disk = {p.relative_to(spool_root).as_posix()
               for p in (spool_root / "objects").rglob("*") if p.is_file()}
    problems += [f"file without a journal row: {p}" for p in on_disk - {r[1] for r in rows}]
    return problems


def rows_in_slots(spool_root: Path) -> int:
    """Journaled instances that were written into spool slots (files made ahead)."""
    import sqlite3

    conn = sqlite3.connect(spool_root / "journal.sqlite3")
    try:
        return int(conn.execute("SELECT COUNT(*) FROM instances WHERE path LIKE 'slots/%'").fetchone()[0])
    finally:
        conn.close()


def crash_trial(series: dict[str, str], folder: Path, *, kill_after: int) -> tuple[int, list[str]]:
    """One kill -9 trial in ``folder``; returns (acknowledged count, problems)."""
    data_dir, port = folder / "var", free_port()
    edge = EdgeProcess(data_dir=data_dir, port=port, log_path=folder / "edge.log")
    edge.wait_ready()
    acknowledged = send_and_kill(edge, series, kill_after=kill_after)
    restarted = EdgeProcess(data_dir=data_dir, port=port, log_path=folder / "edge.log")
    try:
        restarted.wait_ready()  # the SCP listens only after recovery ran
    finally:
        code = restarted.stop()
    problems = spool_problems(data_dir / "edge", acknowledged)
    if code != 0:
        problems.append(f"restarted edge exited with {code}")
    return len(acknowledged), problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    lost = 0
    with tempfile.TemporaryDirectory(prefix="bench-crash-") as tmp:
        series = series_uids(write_ct_series(Path(tmp) / "ct", count=COUNT, size=64,
                                             seed="edge-crash"))
        for n in range(args.trials):
            kill_after = rng.randint(1, COUNT - 1)
            trial_dir = Path(tmp) / f"trial{n}"
            trial_dir.mkdir()
            acked, problems = crash_trial(series, trial_dir, kill_after=kill_after)
            lost += len(problems)
            in_slots = rows_in_slots(trial_dir / "var" / "edge")
            print(f"trial {n + 1}: killed after {kill_after}, {acked} acknowledged "
                  f"({in_slots} in slots), {len(problems)} problems {problems[:3]}", flush=True)
    print(f"\n{args.trials} trials: acknowledged-then-lost-or-different = {lost}")
    raise SystemExit(1 if lost else 0)


if __name__ == "__main__":
    main()
