"""sqlmap against a running app, one query parameter at a time: which GET routes take query
parameters (from the app's OpenAPI document, plus the QIDO-RS keys the search routes read
from the query string), a baseline value for each, and sqlmap's verdict parsed from its
output. Shared by tests/security/test_sqlmap.py (a short scan) and bench/sqlmap_scan.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from relay.county.dicomweb import qido

SQLMAP = shutil.which("sqlmap") or str(Path(sys.executable).with_name("sqlmap"))
BASELINE = {"limit": "10", "offset": "0", "before_id": "1000000", "since": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z",
            "start": "2026-12-07", "at": "2026-12-07T08:00:00+08:00", "group_by": "day", "mine": "false",
            "unassigned": "false", "priority": "routine", "state": "queued", "lang": "zh-CN", "window": "40,400",
            "StudyDate": "20261123", "StudyTime": "080000", "SeriesNumber": "1", "InstanceNumber": "1",
            "ModalitiesInStudy": "CT", "Modality": "CT", "modality": "CT"}
"""A value each parameter accepts, so that sqlmap's baseline request is a 200; others get "x"."""
QIDO = {"/dicomweb/studies": qido.STUDY_KEYS,
        "/dicomweb/studies/{study_uid}/series": qido.SERIES_KEYS,
        "/dicomweb/studies/{study_uid}/instances": qido.INSTANCE_KEYS | qido.SERIES_KEYS,
        "/dicomweb/studies/{study_uid}/series/{series_uid}/instances": qido.INSTANCE_KEYS}


@dataclass(frozen=True, slots=True)
class Target:
    path: str
    parameter: str
    url: str
    """The route with its path filled in and the parameter at its baseline value."""


@dataclass(frozen=True, slots=True)
class Verdict:
    target: Target
    injectable: bool
    tested: bool
    """sqlmap ran its tests on the parameter (it did not stop at a connection error)."""
    baseline_status: int
    """The status of the unmodified request: 200, or the scan only probed an error page."""
    output: str


def targets(app: Any, ids: dict[str, str]) -> list[Target]:
    """Every (GET route, query parameter) of ``app``, its path parameters taken from ``ids``."""
    found: list[Target] = []
    for path, operations in app.openapi()["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        names = [p["name"] for p in get.get("parameters", []) if p["in"] == "query"]
        names += sorted(QIDO.get(path, ()))
        concrete = re.sub(r"\{([^}]+)\}", lambda m: ids.get(m.group(1), "1"), path)
        for name in names:
            value = ids.get(name) or BASELINE.get(name, "x")
            found.append(Target(path, name, f"{concrete}?{urlencode({name: value})}"))
    return found


def scan(base: str, target: Target, *, headers: dict[str, str], technique: str = "BT", level: int = 1,
         risk: int = 1, timeout_s: float = 300.0, extra: tuple[str, ...] = ()) -> Verdict:
    """Run sqlmap on one parameter; bounded by ``timeout_s`` (a timeout fails loudly)."""
    baseline = httpx.get(base + target.url, headers=headers, timeout=30).status_code
    with tempfile.TemporaryDirectory(prefix="sqlmap-") as out:
        cmd = [SQLMAP, "-u", base + target.url, "-p", target.parameter, "--batch", "--dbms=PostgreSQL",
               f"--technique={technique}", f"--level={level}", f"--risk={risk}", "--time-sec=2",
               "--flush-session", "--disable-coloring", "--output-dir", out, "--timeout=20", "--retries=1",
               *[f"--header={k}: {v}" for k, v in headers.items()], *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    injectable = bool(re.search(r"sqlmap identified the following injection point|parameter '[^']+' is vulnerable",
                                output))
    tested = "do not appear to be injectable" in output or "is not injectable" in output or injectable
    return Verdict(target, injectable, tested, baseline, output)
