"""A canary patient goes through the whole bed; then every file is searched for it (issue 13, row 22).

The patient's name is unique to this run, in GB18030 (as Chinese modalities send it) with
its pinyin. After the study is read, signed and back at the township's PACS, the canary's
bytes (UTF-8, GB18030, the pinyin) may be only in the stores meant to hold patient data:
the edges' spools, the townships' PACS folders, the object store's volumes and the
database. Every process log, the proxy's access and error logs, the county processes'
data folders (spooled request bodies are temporary) and files written meanwhile under the
machine's temporary folder must not hold it. Every relay process runs with core dumps
off (a dump would hold the instances in its memory). Named ``zz`` to run last in the bed.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import pydicom

from tests.topology.bed import Topology, fresh_study, storescu
from tests.topology.test_county_topology import _on_worklist, _read_and_sign, _received, _sample

SURNAMES, GIVEN = "赵钱孙李周吴郑王冯陈褚卫蒋沈韩杨", "雀鹂鹃莺鸾鹤鸥鹭鹊鹦鹉翡翠琉璃"


def _canary() -> tuple[str, str, list[bytes]]:
    rng = random.SystemRandom()
    given = "".join(rng.choice(GIVEN) for _ in range(4))
    han = f"{rng.choice(SURNAMES)}^{given}"
    pinyin = f"CANARY^{''.join(rng.choice('BCDFGHJKLMNPQRSTVWXZ') for _ in range(10))}"
    needles = [given.encode("utf-8"), given.encode("gb18030"), pinyin.split("^")[1].encode()]
    return han, pinyin, needles


def _allowed(path: Path, bed: Topology) -> bool:
    stores = [edge.spool for edge in bed.edges.values()] + [edge.pacs_dir for edge in bed.edges.values()]
    return any(path.is_relative_to(store) for store in stores)


def _holding(root: Path, needles: list[bytes], *, since: float | None = None) -> list[Path]:
    found = []
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            try:
                if since is not None and path.stat().st_mtime < since:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if any(n in data for n in needles):
                found.append(path)
    return found


def test_a_canary_patient_is_found_only_in_the_stores_meant_to_hold_it(
        bed: Topology, samples: list[dict[str, str]], tmp_path: Path) -> None:
    started = time.time()
    han, pinyin, needles = _canary()
    edge = bed.edges["qingshan"]
    uid, files = fresh_study(_sample(samples, "DX"), tmp_path / "canary", SpecificCharacterSet="GB18030",
                             PatientName=f"{pinyin}={han}=", PatientID=f"CANARY{int(started)}")
    for path in files:  # the name must really travel as GB18030 bytes
        assert given_bytes(path, needles[1])
    sent = storescu(edge, *files)
    assert sent.returncode == 0, sent.stderr
    with bed.client(bed.token(bed.reader)) as http:
        bed.wait("the canary's study on the worklist", lambda: _on_worklist(http, {uid: edge.site}), timeout=120)
        _read_and_sign(http, bed, uid, template="chest-pa", impression="双肺纹理清晰。")
        http.get(f"/portal/studies/{uid}")  # the study page, as a reader opens it
    bed.wait("the canary's report at the township's PACS", lambda: len(_received(edge).get(uid, [])) >= 2,
             timeout=120)
    assert any(_holding(edge.spool, needles)), "the canary never reached the edge's spool: the search means nothing"

    leaks = [p for p in _holding(bed.workdir, needles) if not _allowed(p, bed)]
    workdir = bed.workdir.resolve()
    leaks += [p for p in _holding(Path(tempfile.gettempdir()), needles, since=started)
              if not p.resolve().is_relative_to(workdir) and "seaweedfs" not in str(p) and "canary" not in p.parts
              and not p.resolve().is_relative_to(tmp_path.resolve())]
    assert leaks == [], f"the canary patient is in {leaks}"

    for proc in bed.procs:
        if proc.name.startswith(("edge", "county", "worker", "mllp")) and proc.proc.poll() is None:
            limits = Path(f"/proc/{proc.proc.pid}/limits").read_text()
            (core,) = [line for line in limits.splitlines() if line.startswith("Max core file size")]
            assert core.split()[4:6] == ["0", "0"], f"{proc.name} may dump core: {core}"


def given_bytes(path: Path, needle: bytes) -> bool:
    return needle in path.read_bytes() and pydicom.dcmread(path).SpecificCharacterSet == "GB18030"
