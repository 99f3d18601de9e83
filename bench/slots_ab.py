"""The edge's spool slots on versus off: the same edge, the same 300-instance CT, alternated.

Each trial starts a fresh `python -m relay edge` (a real process) in its own folder,
once with ``RELAY_EDGE_SPOOL_SLOTS=0`` (every instance a new file, fsynced with its
folder) and once with a pool of ``--slots`` files made ahead of time, and times one
DCMTK `storescu` sending the series (TCP_NODELAY on both sides). With the pool, the
trial starts only when the pool is full, as on an edge that has been running.

    .venv/bin/python -m bench.slots_ab [--trials 4] [--slots 400] [--count 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.common import free_port
from bench.ct_series import write_ct_series
from bench.edge_proc import EdgeProcess
from bench.ingest import send


def trial(files: list[Path], *, slots: int) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-slots-") as tmp:
        folder, port = Path(tmp), free_port()
        edge = EdgeProcess(data_dir=folder / "var", port=port, log_path=folder / "edge.log",
                           relay_edge_spool_slots=str(slots))
        try:
            edge.wait_ready()
            if slots:
                edge.wait_slots(folder / "var" / "edge", slots)
            return send(port, files)
        finally:
            edge.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--slots", type=int, default=400)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        files = write_ct_series(Path(tmp) / "ct", count=args.count, seed="bench-slots")
        for n in range(args.trials):
            times["off"].append(trial(files, slots=0))
            times["on"].append(trial(files, slots=args.slots))
            print(f"trial {n + 1}: off {times['off'][-1]:.2f} s, on {times['on'][-1]:.2f} s", flush=True)
    off, on = statistics.median(times["off"]), statistics.median(times["on"])
    print(f"medians: no slots {off:.2f} s, {args.slots} slots {on:.2f} s: {on / off:.2f} x")


if __name__ == "__main__":
    main()
