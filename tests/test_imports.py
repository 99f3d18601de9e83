"""The layering in pyproject.toml's [tool.importlinter] holds: no import cycles, edge and
county independent, relay.dicom below both, the portal above the county."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def _local_imports(path: Path) -> list[str]:
    """Imports of the project's own modules inside a function (a dodged cycle is a cycle)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            names = [inner.module or ""] if isinstance(inner, ast.ImportFrom) else \
                [a.name for a in inner.names] if isinstance(inner, ast.Import) else []
            if any(n.split(".")[0] in ("relay", "reader_portal") for n in names):
                found.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    return found


def test_county_and_portal_import_their_own_modules_at_the_top() -> None:
    files = sorted((ROOT / "relay" / "county").rglob("*.py")) + sorted((ROOT / "reader_portal").rglob("*.py"))
    assert [hit for f in files for hit in _local_imports(f)] == []
