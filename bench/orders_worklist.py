"""Order → worklist entry at the modality (issue 12, "Measured"): an HL7 ORM^O01 sent to the
county's `relay mllp` until DCMTK findscu at the township gets it from the edge's worklist,
over an emulated 5 Mbit/s, 300 ms RTT township link, on the production-shaped bed
(tests/topology/bed.py: nginx TLS, two APIs, two workers, two edges). Then the WAN cut:
findscu's answer from the edge's cache. Peer in the same run: DCMTK's own worklist SCP
(wlmscpfs, answering from files) queried by the same findscu, and the link's RTT.

    .venv/bin/python -m bench.orders_worklist [--orders 20] [--sync-s 10]
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.conftest import AMQP_URL, PG_ADMIN_DSN
from tests.edge.mwl import findscu, mwl_query
from tests.his_standins import field, send_mllp
from tests.processes import base_env
from tests.servers import free_ports, start_seaweedfs
from tests.topology.bed import Topology, topology
from tests.topology.test_orders_topology import _orm

POLL_S = 0.2


def _dcmtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=base_env())


def _entries(port: int, accession: str, folder: Path, *, called: str = "RELAY_EDGE") -> int:
    query = mwl_query(charset="GB18030" if called == "RELAY_EDGE" else None, AccessionNumber=accession)
    if called == "RELAY_EDGE":
        found = findscu(_dcmtk, port, query, folder)
    else:  # wlmscpfs: the same findscu, another called AE
        from tests.edge import mwl

        found = mwl.findscu(lambda *a: _dcmtk(*[x if x != "RELAY_EDGE" else called for x in a]), port, query,
                            folder)
    return len(found.responses)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _order_to_worklist(bed: Topology, n: int, work: Path, sync_s: float) -> list[float]:
    edge = bed.edges["qingshan"]
    latencies = []
    rng = random.Random(20261208)
    for i in range(n):
        # An order is found just after a sync round: wait a random part of the period before the
        # next, or every order would arrive at the same phase of the edge's sync.
        time.sleep(rng.uniform(0, sync_s))
        tag = uuid.uuid4().hex[:8].upper()
        ack = send_mllp(bed.mllp_port, _orm(site=edge.site, placer=f"ORD{tag}", accession=f"A{tag}",
                                            patient_id=f"P{tag}"))
        start = time.monotonic()
        assert field(ack, "MSA", 1) == b"AA", ack
        deadline = start + 120
        while _entries(edge.services_port, f"A{tag}", work / f"o{i}-{time.monotonic_ns()}") == 0:
            if time.monotonic() > deadline:
                raise SystemExit(f"order {i} never reached the worklist")
            time.sleep(POLL_S)
        latencies.append(time.monotonic() - start)
        print(f"order {i + 1}/{n}: {latencies[-1]:.2f} s", flush=True)
    return latencies


def _cfind_times(port: int, accession: str, n: int, work: Path, *, called: str = "RELAY_EDGE") -> list[float]:
    times = []
    for i in range(n):
        start = time.monotonic()
        got = _entries(port, accession, work / f"q{called}{i}", called=called)
        times.append(time.monotonic() - start)
        assert got == 1, f"{called}: {got} entries"
    return times


def _wlmscpfs(work: Path, accession: str) -> tuple[subprocess.Popen[bytes], int]:
    """DCMTK's file-based worklist SCP with one entry of the same shape."""
    db = work / "wldb" / "WLAE"
    db.mkdir(parents=True)
    (db / "lockfile").write_text("")
    dump = work / "entry.dump"  # DCMTK's own example entry, with this accession
    example = Path("/usr/share/doc/dcmtk/examples/wlistdb/OFFIS/wklist1.dump").read_text(encoding="latin-1")
    dump.write_text(example.replace("(0008,0050) SH  00000", f"(0008,0050) SH  {accession}"), encoding="latin-1")
    subprocess.run(["dump2dcm", str(dump), str(db / "entry.wl")], check=True, env=base_env())
    port, = free_ports(1)
    proc = subprocess.Popen(["wlmscpfs", "-dfp", str(work / "wldb"), str(port)], env=base_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    return proc, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--sync-s", type=float, default=10.0, help="RELAY_EDGE_ORDER_SYNC_S of the edges")
    parser.add_argument("--queries", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weed = start_seaweedfs(work / "weed")
        try:
            (work / "bed").mkdir()
            with topology(work / "bed", pg_admin_dsn=PG_ADMIN_DSN, amqp_url=AMQP_URL, seaweed=weed,
                          run_id=uuid.uuid4().hex[:8], link_rate_bps=5e6, link_delay_s=0.15,
                          edge_env={"RELAY_EDGE_ORDER_SYNC_S": str(args.sync_s)}) as bed:
                latencies = _order_to_worklist(bed, args.orders, work, args.sync_s)
                edge = bed.edges["qingshan"]
                known = f"A{uuid.uuid4().hex[:8].upper()}"
                send_mllp(bed.mllp_port, _orm(site=edge.site, placer=f"ORD{known[1:]}", accession=known,
                                              patient_id=f"P{known[1:]}"))
                deadline = time.monotonic() + 120
                while _entries(edge.services_port, known, work / f"k{time.monotonic_ns()}") == 0:
                    assert time.monotonic() < deadline
                    time.sleep(POLL_S)
                online = _cfind_times(edge.services_port, known, args.queries, work / "online")
                bed.cut_wan(edge)
                offline = _cfind_times(edge.services_port, known, args.queries, work / "offline")
                bed.restore_wan(edge)
        finally:
            weed.stop()
        proc, port = _wlmscpfs(work, "APEER1")
        try:
            peer = _cfind_times(port, "APEER1", args.queries, work / "peer", called="WLAE")
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    print(f"\norder -> worklist at the modality's C-FIND, 5 Mbit/s 300 ms RTT link, sync every {args.sync_s:g} s, "
          f"n={len(latencies)}: median {statistics.median(latencies):.2f} s, p95 {_pct(latencies, 0.95):.2f} s, "
          f"max {max(latencies):.2f} s")
    print(f"findscu (process start included) against the edge, WAN up: median {statistics.median(online) * 1000:.0f} ms,"
          f" p95 {_pct(online, 0.95) * 1000:.0f} ms; WAN cut (from the edge's cache): median "
          f"{statistics.median(offline) * 1000:.0f} ms, p95 {_pct(offline, 0.95) * 1000:.0f} ms, answered "
          f"{len(offline)}/{len(offline)}")
    print(f"peer, same findscu against DCMTK wlmscpfs: median {statistics.median(peer) * 1000:.0f} ms, "
          f"p95 {_pct(peer, 0.95) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
