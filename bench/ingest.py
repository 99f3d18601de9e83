"""Ingest: DCMTK storescu -> the edge, versus -> DCMTK storescp, versus -> Orthanc.

The same deterministic 300-instance CT (512x512 16-bit, ~512 KB each; bench/ct_series.py),
sent by one `storescu` in one association, alternated target by target in one run,
TCP_NODELAY=1 on both sides (Debian's DCMTK leaves Nagle on). Each trial gets a fresh
receiver with an empty store, so nothing is a duplicate:

* edge: `python -m relay edge` (a real process, embedded defaults, fsync of every file,
  its directory and the journal before each Success; county URL unreachable, so the
  forwarder idles and the page is off)
* storescp: DCMTK `storescp -od DIR` (no fsync: the floor of what a DICOM store costs)
* storescp_fsync: the same under bench/fsync_on_close.c (LD_PRELOAD), which fsyncs
  each file and its folder as storescp closes it, before its response: the edge's
  durability without the edge (no journal)
* orthanc: Debian's Orthanc with a JSON config of its own (it fsyncs by default)

Then 4 concurrent storescu (4 different series) against one edge versus 1, as
throughput (instances per second), and the same for storescp (what the machine's
CPUs and disk allow at all). Reported: medians, and ratios to storescp.
The issue's targets: edge <= 1.25 x storescp, edge <= orthanc, 4 senders >= 1.6 x one.

    .venv/bin/python -m bench.ingest [--trials 5] [--count 300] [--skip-orthanc]

Measured 2026-11-23, session 2 (2 vCPUs, load average ~0.7-0.9; medians of 5):
storescp 0.31 s, storescp+fsync 0.49 s (1.57 x storescp: the fsyncs alone already
exceed the 1.25 x target), edge 0.87 s (2.80 x storescp, 1.78 x storescp+fsync),
orthanc 1.23 s; edge / orthanc 0.71; edge with 4 senders 1.48 x one sender, storescp
1.03 x. Session 1, on pynetdicom's server: edge 5.6 x storescp, 1.9 x Orthanc.
Where an edge instance goes now (~2.9 ms, an in-process split): the C-STORE's 512 KB
arriving ~0.9 ms (hashed as it comes), the write and fsync of file and folder ~1.1 ms,
the journal commit (WAL fsync) ~0.45 ms, the rest < 0.2 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.common import dcmtk_env, free_port, wait_port
from bench.ct_series import write_ct_series
from bench.edge_proc import EdgeProcess
from relay.config import Settings

AE = "RELAY_EDGE"


def send(port: int, files: list[Path]) -> float:
    """Wall time of one storescu sending ``files`` in one association, in seconds."""
    started = time.perf_counter()
    subprocess.run(["storescu", "-aec", AE, "127.0.0.1", str(port), *map(str, files)],
                   check=True, capture_output=True, env=dcmtk_env(), timeout=600)
    return time.perf_counter() - started


def send_parallel(port: int, series: list[list[Path]]) -> float:
    """Wall time of one storescu per series, all at once, in seconds."""
    started = time.perf_counter()
    procs = [subprocess.Popen(["storescu", "-aec", AE, "127.0.0.1", str(port),
                               *map(str, files)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=dcmtk_env()) for files in series]
    codes = [p.wait(600) for p in procs]
    assert codes == [0] * len(procs), codes
    return time.perf_counter() - started


@contextmanager
def edge(folder: Path) -> Iterator[int]:
    port = free_port()
    proc = EdgeProcess(data_dir=folder / "var", port=port, log_path=folder / "edge.log")
    try:
        proc.wait_ready()
        proc.wait_slots(folder / "var" / "edge", Settings().edge_spool_slots)
        yield port
    finally:
        proc.stop()


SHIM_SOURCE = Path(__file__).with_name("fsync_on_close.c")


def build_shim(folder: Path) -> Path:
    """Compile bench/fsync_on_close.c (an LD_PRELOAD shim) with the system C compiler."""
    shim = folder / "fsync_on_close.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim), str(SHIM_SOURCE), "-ldl"],
                   check=True)
    return shim


@contextmanager
def storescp(folder: Path, *, preload: Path | None = None) -> Iterator[int]:
    port, out = free_port(), folder / "storescp"
    out.mkdir()
    env = dcmtk_env() if preload is None else {**dcmtk_env(), "LD_PRELOAD": str(preload)}
    proc = subprocess.Popen(["storescp", "-aet", AE, "-od", str(out), str(port)],
                            env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def orthanc(folder: Path) -> Iterator[int]:
    port, http_port, store = free_port(), free_port(), folder / "orthanc"
    store.mkdir()
    config = {"Name": "bench", "DicomAet": AE, "DicomPort": port, "HttpPort": http_port,
              "StorageDirectory": str(store), "IndexDirectory": str(store),
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomCheckCalledAeTitle": False, "Plugins": []}
    (folder / "orthanc.json").write_text(json.dumps(config))
    proc = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], env=dcmtk_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)


def trial(target: Callable[[Path], Iterator[int]], files: list[Path]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        with target(Path(tmp)) as port:  # type: ignore[attr-defined]
            return send(port, files)


def parallel_trial(target: Callable[[Path], Iterator[int]], series: list[list[Path]]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        with target(Path(tmp)) as port:  # type: ignore[attr-defined]
            return send_parallel(port, series)


def run(*, trials: int, count: int, with_orthanc: bool) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as tmp:
        series = [write_ct_series(Path(tmp) / f"s{n}", count=count, seed=f"bench-ingest-{n}")
                  for n in range(4)]
        shim = build_shim(Path(tmp))
        targets = {"edge": edge, "storescp": storescp,
                   "storescp_fsync": lambda folder: storescp(folder, preload=shim)}
        if with_orthanc:
            targets["orthanc"] = orthanc
        times: dict[str, list[float]] = {
            name: [] for name in [*targets, "edge_x4", "storescp_x4"]}
        for n in range(trials):
            for name, target in targets.items():
                times[name].append(trial(target, series[0]))  # type: ignore[arg-type]
            times["edge_x4"].append(parallel_trial(edge, series))  # type: ignore[arg-type]
            times["storescp_x4"].append(parallel_trial(storescp, series))  # type: ignore[arg-type]
            print(f"trial {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  flush=True)
        return times


def report(times: dict[str, list[float]], *, count: int) -> None:
    med = {name: statistics.median(values) for name, values in times.items()}
    base = med["storescp"]
    print(f"\n{count} instances x {len(times['edge'])} trials, medians (min-max):")
    for name in ("storescp", "storescp_fsync", "edge", "orthanc"):
        if name in med:
            print(f"  {name:14s} {med[name]:6.2f} s ({min(times[name]):.2f}-"
                  f"{max(times[name]):.2f})  {med[name] / base:5.2f} x storescp")
    print(f"  edge / (storescp + fsync of each file and its folder): "
          f"{med['edge'] / med['storescp_fsync']:.2f}")
    one, four = count / med["edge"], 4 * count / med["edge_x4"]
    print(f"  edge, 4 senders at once: {med['edge_x4']:.2f} s for {4 * count} instances: "
          f"{four:.0f}/s vs {one:.0f}/s with one sender = {four / one:.2f} x")
    scp_one, scp_four = count / base, 4 * count / med["storescp_x4"]
    print(f"  storescp, 4 senders at once (this machine's ceiling): {scp_four:.0f}/s vs "
          f"{scp_one:.0f}/s = {scp_four / scp_one:.2f} x")
    if "orthanc" in med:
        print(f"  edge / orthanc: {med['edge'] / med['orthanc']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--skip-orthanc", action="store_true")
    args = parser.parse_args()
    times = run(trials=args.trials, count=args.count, with_orthanc=not args.skip_orthanc)
    report(times, count=args.count)


if __name__ == "__main__":
    main()
