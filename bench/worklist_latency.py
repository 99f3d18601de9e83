"""From `storescu` to every study on the county worklist, on `relay up`'s embedded defaults.

Each trial starts `relay up` in a fresh folder, sends sample_dicom/ with DCMTK's
storescu to the edge and polls /api/worklist until every study is there with its
exact patient name. The peer, in the same run: the same storescu into DCMTK's
storescp (which only stores), so the ratio shows what edge + WAN hop + county
ingest + indexing cost over a bare DICOM store.

    .venv/bin/python -m bench.worklist_latency [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import SAMPLES, dcmtk_env, free_port, storescu, summary, wait_port

POLL_S = 0.1


def expected() -> dict[str, str]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))
    return {f["study_instance_uid"]: f["patient_name"] for f in manifest["files"]}


def _reader_token(base: str, folder: Path) -> str:
    subprocess.run([sys.executable, "-m", "relay", "users", "create", "bench", "--role",
                    "radiologist", "--password-stdin"], input="bench-password\n", text=True,
                   cwd=folder, env=dcmtk_env(), check=True, capture_output=True)
    r = httpx.post(f"{base}/api/auth/token", data={"username": "bench", "password": "bench-password"})
    r.raise_for_status()
    return str(r.json()["access_token"])


def relay_trial() -> float:
    want = expected()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cport, eport = free_port(), free_port()
        env = {**dcmtk_env(), "RELAY_COUNTY_PORT": str(cport), "RELAY_EDGE_PORT": str(eport),
               "RELAY_LOG_LEVEL": "WARNING"}
        up = subprocess.Popen([sys.executable, "-m", "relay", "up"], cwd=folder, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{cport}"
            wait_port(cport, 60)
            wait_port(eport, 60)
            token = _reader_token(base, folder)
            started = time.perf_counter()
            storescu(eport, "RELAY_EDGE", SAMPLES)
            while time.perf_counter() - started < 120:
                items = httpx.get(f"{base}/api/worklist",
                                  headers={"Authorization": f"Bearer {token}"}).json()
                if want.items() <= {i["study_instance_uid"]: i["patient_name"] for i in items}.items():
                    return time.perf_counter() - started
                time.sleep(POLL_S)
            raise TimeoutError("studies did not reach the worklist in 120 s")
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=60)


def storescp_trial() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        scp = subprocess.Popen(["storescp", "+xa", "-od", tmp, str(port)], env=dcmtk_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            started = time.perf_counter()
            storescu(port, "STORESCP", SAMPLES)
            return time.perf_counter() - started
        finally:
            scp.terminate()
            scp.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    relay_s, peer_s = [], []
    for _ in range(args.trials):  # alternated, so drift on the machine hits both alike
        peer_s.append(storescp_trial())
        relay_s.append(relay_trial())
    import statistics

    ratio = statistics.median(relay_s) / statistics.median(peer_s)
    print(f"storescu -> relay edge -> county worklist: {summary(relay_s)}")
    print(f"storescu -> DCMTK storescp (store only):   {summary(peer_s)}")
    print(f"ratio (medians): {ratio:.1f}x")


if __name__ == "__main__":
    main()
