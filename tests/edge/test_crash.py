"""kill -9 the edge (a real `python -m relay edge` process) in the middle of a
300-instance C-STORE from DCMTK storescu, restart it, and check the promise behind
every C-STORE Success: the instance is journaled and its file's bytes hash to the
journaled SHA-256; no unfinished write survives to be forwarded. The 20-trial run
is `python -m bench.edge_crash`; the trial itself lives there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ct_series import write_ct_series
from bench.edge_crash import COUNT, crash_trial, series_uids


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """300 small CT slices, always the same; file path -> SOP Instance UID."""
    folder = tmp_path_factory.mktemp("ct300")
    return series_uids(write_ct_series(folder, count=COUNT, size=64, seed="crash-test"))


@pytest.mark.parametrize("kill_after", [37, 151, 263])
def test_every_acknowledged_instance_survives_kill_9(
    series: dict[str, str], tmp_path: Path, kill_after: int
) -> None:
    acknowledged, problems = crash_trial(series, tmp_path, kill_after=kill_after)

    assert kill_after <= acknowledged < COUNT
    assert problems == []
