"""WAN benchmark: how much of a township link the edge's bundle upload uses.

    .venv/bin/python -m bench.wan                 # 300-slice CT, 20 Mbit/s, 100 ms RTT
    .venv/bin/python -m bench.wan --instances 100 --cut-every 30 --skip-dcmtk
    .venv/bin/python -m bench.wan --standin       # in-memory stand-in county instead

One run, one emulated link (bench.linkemu: 20 Mbit/s each way, 50 ms each way), one
deterministic CT (512x512 int16 slices of smooth anatomy-like shapes plus noise, so
zstd -3 shrinks it ~2.4x as it does real CT; ~157 MB for 300 slices, generated once
into --data and reused). In the same run:

* ``link capacity``: raw bytes / link rate, the time a perfect sender needs;
* ``dcmtk``: DCMTK storescu -> storescp through the link (TCP_NODELAY=1 both sides):
  the stop-and-wait DICOM peer;
* ``relay <encoding>``: the edge's forwarder (relay.edge.forward, default settings but
  the encoding) -> the REAL county app (`python -m relay county`, embedded defaults, a
  fresh folder and site per trial) through the link; timed from the forwarder's start
  until the county answered complete for every instance;
* ``... cuts``: the same with every connection through the link reset every
  --cut-every seconds (a third of it for zstd, whose transfer is shorter than 30 s).

Goodput is raw instance bytes / elapsed / link rate (so compression can exceed 100 %);
``x raw time`` is elapsed / (raw bytes / link rate). Issue 3's targets: identity >= 95 %
of the link, zstd <= 0.5 x raw time, with cuts >= 85 %. One trial per row (a full run
is ~6 minutes on this machine); use --instances for a quicker, smaller set.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from bench.common import dcmtk_env, free_port, storescu, wait_port
from bench.linkemu import LinkEmulator, parse_delay, parse_rate
from relay.config import Settings
from relay.dicom.header import read_ids
from relay.dicom.vocab import Priority
from relay.edge.forward import Forwarder
from relay.edge.journal import JOURNAL_NAME
from relay.edge.spool import Spool

REPO = Path(__file__).resolve().parents[1]
UID_ROOT = "1.2.826.0.1.3680043.10.1427."
SLICE = 512


# --- data set ------------------------------------------------------------------------------
def _slice_hu(z: int, n_slices: int, rng: np.random.Generator) -> np.ndarray:
    """One axial slice in HU: body ellipse, lungs, spine, smooth texture, CT-like noise."""
    y, x = np.mgrid[0:SLICE, 0:SLICE].astype(np.float32)
    c, t = SLICE / 2, z / n_slices
    img = np.full((SLICE, SLICE), -1000.0, np.float32)
    body = ((x - c) / (180 + 20 * np.sin(t * 3))) ** 2 + ((y - c) / (130 + 10 * np.cos(t * 2))) ** 2 < 1
    img[body] = 40 + 15 * np.sin(x[body] / 40) * np.cos(y[body] / 55 + t)
    for side in (-1, 1):
        lung = ((x - c - side * 80) / (55 + 15 * np.sin(t * 4))) ** 2 + ((y - c + 10) / 75) ** 2 < 1
        img[lung] = -820 + 30 * np.sin(y[lung] / 20)
    img[np.abs(np.hypot(x - c, y - c - 95) - 22) < 7] = 700
    img[np.hypot(x - c, y - c - 95) < 15] = 250
    img[body] += rng.normal(0, 14, int(body.sum()))
    img[~body] += rng.normal(0, 4, int((~body).sum()))
    return np.clip(img + 1024, 0, 4095).astype(np.int16)


def _ct_file(z: int, n_slices: int, rng: np.random.Generator, path: Path) -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{UID_ROOT}2.{z + 1}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{UID_ROOT}0", f"{UID_ROOT}1"
    ds.PatientName, ds.PatientID, ds.Modality = "BENCH^WAN", "BENCH-WAN", "CT"
    ds.StudyDate, ds.InstanceNumber = "20260101", z + 1
    ds.Rows = ds.Columns = SLICE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = _slice_hu(z, n_slices, rng).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def make_ct(folder: Path, n_slices: int) -> list[Path]:
    """The benchmark CT in ``folder`` (made once; same seed, same bytes every time)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"ct{z:04d}.dcm" for z in range(n_slices)]
    if all(p.is_file() for p in paths) and (folder / "DONE").is_file():
        return paths
    rng = np.random.default_rng(20260101)
    for z, path in enumerate(paths):
        _ct_file(z, n_slices, rng, path)
    (folder / "DONE").write_text("ok\n")
    return paths


def make_stat_file(folder: Path) -> Path:
    """One STAT slice of another study, for the preemption probe."""
    path = folder / "stat.dcm"
    if not path.is_file():
        _ct_file(0, 1, np.random.default_rng(7), path)
        ds = dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{UID_ROOT}9.1"
        ds.StudyInstanceUID = f"{UID_ROOT}9"
        ds.save_as(path, enforce_file_format=True)
    return path


# --- peers ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    name: str
    seconds: float
    raw_bytes: int
    wire_bytes: int
    note: str = ""


def run_dcmtk(folder: Path, *, rate: float, delay: float, tmp: Path) -> Row:
    """storescu -> (link) -> storescp, both with TCP_NODELAY=1."""
    port, out = free_port(), tmp / "storescp"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-od", str(out), "-aet", "STORESCP", str(port)],
                           env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        with LinkEmulator("127.0.0.1", port, rate_bps=rate, delay_s=delay) as emu:
            started = time.perf_counter()
            storescu(emu.listen_port, "STORESCP", folder)
            seconds = time.perf_counter() - started
            wire = emu.stats().bytes_up
    finally:
        scp.terminate()
        scp.wait(10)
    raw = sum(p.stat().st_size for p in folder.glob("*.dcm"))
    received = len(list(out.iterdir()))
    return Row("dcmtk storescu->storescp", seconds, raw, wire, f"{received} files at storescp")


class County:
    """The real county app in a fresh folder, with one site; ``token`` is its credential."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True)
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(RELAY_DATA_DIR=str(folder / "var"), RELAY_COUNTY_PORT=str(self.port),
                   RELAY_LOG_LEVEL="WARNING")
        relay = [sys.executable, "-m", "relay"]
        made = subprocess.run([*relay, "sites", "create", "bench-township"], cwd=REPO, env=env,
                              capture_output=True, text=True, check=True, timeout=120)
        self.token = made.stdout.strip().splitlines()[-1].strip()
        self.log = (folder / "county.log").open("wb")
        self.proc = subprocess.Popen([*relay, "county"], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_port(self.port, timeout=60)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


class StandIn:
    """The tests' in-memory stand-in county (tests/edge/standin_county.py), for when the
    real county's bundle endpoints are not usable; say so next to any number it gives."""

    def __init__(self, folder: Path) -> None:
        from tests.edge.standin_county import TOKEN, StandInCounty

        self._county = StandInCounty()
        self.port, self.token = self._county.port, TOKEN

    def close(self) -> None:
        self._county.close()


def _fill_spool(spool: Spool, files: list[Path]) -> None:
    for path in files:
        data = path.read_bytes()
        spool.store(data, ids=read_ids(data), priority=Priority.ROUTINE, calling_ae="BENCH_CT",
                    peer="127.0.0.1:0")


def _cutter(emu: LinkEmulator, every: float, done: threading.Event, cuts: list[int]) -> None:
    while not done.wait(every):
        emu.cut()
        cuts.append(1)


def run_relay(files: list[Path], *, encoding: str, rate: float, delay: float, tmp: Path,
              cut_every: float | None, standin: bool = False,
              probe: tuple[Path, float] | None = None,
              knobs: dict[str, str] | None = None) -> Row:
    """Edge forwarder -> (link) -> county; elapsed until every instance is vouched for."""
    county: County | StandIn = (StandIn if standin else County)(tmp / "county")
    spool = Spool(tmp / "edge")
    try:
        _fill_spool(spool, files)
        with LinkEmulator("127.0.0.1", county.port, rate_bps=rate, delay_s=delay) as emu:
            settings = Settings(data_dir=tmp / "edge-var", edge_site_token=county.token,
                                county_url=f"http://127.0.0.1:{emu.listen_port}",
                                forward_encoding=encoding, **(knobs or {}))
            deadline = 10 * sum(p.stat().st_size for p in files) * 8 / rate + 60
            seconds, cuts, stat = _forward_all(spool, settings, emu, cut_every, deadline,
                                               probe)
            wire = emu.stats().bytes_up
        stored = spool.counts()
    finally:
        spool.close()
        county.close()
    raw = sum(p.stat().st_size for p in files)
    name = f"relay {encoding}" + (f", cut every {cut_every:.0f} s" if cut_every else "")
    name += " [stand-in]" if standin else ""
    note = f"{stored.sent} sent, {stored.pending} pending" + (f", {cuts} cuts" if cut_every else "")
    if probe:
        note += (f", STAT slice stored at {probe[1]:.0f} s: at county after {stat[0]:.1f} s"
                 if stat else ", STAT probe did not finish")
    return Row(name, seconds, raw, wire, note)


def _stat_probe(spool: Spool, probe: tuple[Path, float], done: threading.Event,
                out: list[float]) -> None:
    """``probe[1]`` s into the transfer, store the STAT slice ``probe[0]``; append the
    seconds until the county vouched for it."""
    if done.wait(probe[1]):
        return
    ds_bytes = probe[0].read_bytes()
    stored = spool.store(ds_bytes, ids=read_ids(ds_bytes), priority=Priority.STAT,
                         calling_ae="BENCH_DR", peer="127.0.0.1:0")
    started = time.perf_counter()
    while not done.is_set():
        if _is_sent(spool.root, stored.entry_id):
            out.append(time.perf_counter() - started)
            return
        time.sleep(0.02)


def _is_sent(root: Path, entry_id: int) -> bool:
    conn = sqlite3.connect(root / JOURNAL_NAME)
    try:
        row = conn.execute("SELECT state FROM instances WHERE id = ?", (entry_id,)).fetchone()
    finally:
        conn.close()
    return bool(row) and row[0] == "sent"


def _forward_all(spool: Spool, settings: Settings, emu: LinkEmulator,
                 cut_every: float | None, deadline_s: float,
                 probe: tuple[Path, float] | None = None) -> tuple[float, int, list[float]]:
    """Forward until the spool is empty (or ``deadline_s`` passed); (seconds, cuts,
    STAT latency if probed)."""
    stop, done, cuts, stat = threading.Event(), threading.Event(), [], []
    if probe:
        threading.Thread(target=_stat_probe, args=(spool, probe, done, stat),
                         daemon=True).start()
    forwarder = Forwarder(spool=spool, settings=settings, rng=random.Random(1))
    thread = threading.Thread(target=forwarder.run, args=(stop,), daemon=True)
    started = time.perf_counter()
    thread.start()
    if cut_every:
        threading.Thread(target=_cutter, args=(emu, cut_every, done, cuts), daemon=True).start()
    while spool.counts().pending and time.perf_counter() - started < deadline_s:
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    done.set()
    stop.set()
    spool.wake()
    thread.join(30)
    return seconds, len(cuts), stat


# --- report --------------------------------------------------------------------------------
def print_table(rows: list[Row], *, rate: float) -> None:
    print(f"\n{'peer':38} {'seconds':>8} {'raw MB':>8} {'wire MB':>8} {'goodput':>8} "
          f"{'x raw time':>10}  note")
    for row in rows:
        ideal = row.raw_bytes * 8 / rate
        print(f"{row.name:38} {row.seconds:8.1f} {row.raw_bytes / 1e6:8.1f} "
              f"{row.wire_bytes / 1e6:8.1f} {100 * ideal / row.seconds:7.1f}% "
              f"{row.seconds / ideal:10.2f}  {row.note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wan", description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300, help="CT slices (default 300)")
    parser.add_argument("--rate", type=parse_rate, default=20e6, help="link rate (default 20mbit)")
    parser.add_argument("--delay", type=parse_delay, default=0.05,
                        help="one-way delay (default 50ms, i.e. 100 ms RTT)")
    parser.add_argument("--cut-every", type=float, default=30.0,
                        help="seconds between cuts in the cut rows (default 30)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "relay-bench-wan-ct",
                        help="folder of the generated CT (reused between runs)")
    parser.add_argument("--skip-dcmtk", action="store_true", help="leave out the DCMTK peer")
    parser.add_argument("--stat-at", type=float, default=10.0,
                        help="in the zstd row, store one STAT slice this many seconds into "
                        "the routine transfer and report when the county has it (default 10)")
    parser.add_argument("--standin", action="store_true",
                        help="use the tests' in-memory stand-in county instead of the real app")
    parser.add_argument("--rows", default="identity,zstd,identity-cuts,zstd-cuts",
                        help="relay rows to run (default all four)")
    parser.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE",
                        help="edge setting for the relay rows, e.g. forward_streams=3 "
                        "(repeatable; default: the settings' defaults)")
    parser.add_argument("--verbose", action="store_true", help="edge log lines at INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    files = make_ct(args.data / str(args.instances), args.instances)
    stat_file = make_stat_file(args.data)
    rate = float(args.rate)
    capacity = sum(p.stat().st_size for p in files)
    rows = [Row("link capacity (raw bytes / rate)", capacity * 8 / rate, capacity, capacity)]
    trials = [t for t in [("identity", None), ("zstd", None), ("identity", args.cut_every),
                          ("zstd", args.cut_every / 3)]
              if f"{t[0]}{'-cuts' if t[1] else ''}" in args.rows.split(",")]
    with tempfile.TemporaryDirectory(prefix="relay-bench-wan-") as tmp:
        if not args.skip_dcmtk:
            rows.append(run_dcmtk(files[0].parent, rate=rate, delay=args.delay, tmp=Path(tmp)))
            print_table(rows[-1:], rate=rate)
        for n, (encoding, cut_every) in enumerate(trials):
            rows.append(run_relay(files, encoding=encoding, rate=rate, delay=args.delay,
                                  tmp=Path(tmp) / f"trial{n}", cut_every=cut_every,
                                  standin=args.standin,
                                  knobs=dict(kv.split("=", 1) for kv in args.set),
                                  probe=(stat_file, args.stat_at)
                                  if encoding == "zstd" and not cut_every else None))
            print_table(rows[-1:], rate=rate)
    print(f"\nlink {rate / 1e6:.0f} Mbit/s, RTT {2000 * args.delay:.0f} ms, "
          f"{len(files)} instances, {capacity / 1e6:.1f} MB")
    print_table(rows, rate=rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
