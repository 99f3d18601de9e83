"""The technician's page in a real browser while a real study goes to the county:
sent by DCMTK storescu through the edge's SCP, forwarded in chunks to the stand-in
county, the row reads 发送中 n% and then 已到达县医院. Screenshots are kept in
test-artifacts/screenshots/ (edge-status-sending-zh, edge-status-at-county-zh)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page

from relay.config import Settings
from relay.edge.admission import Alarms
from relay.edge.status_page import StatusPage
from tests.browser import chromium, screenshot_path
from tests.edge.conftest import RunningScp
from tests.edge.helpers import wait_until
from tests.edge.standin_county import StandInCounty
from tests.edge.techpage import cached_technician, log_in_browser
from tests.edge.test_wan_transfer import CHUNK, Running, big_instance

Dcmtk = Callable[..., subprocess.CompletedProcess[str]]
STUDY = "1.2.826.0.1.3680043.8.498.4242"


def _row_text(page: Page) -> str:
    page.reload()
    return page.locator("tr", has_text="TOWN_CT").first.inner_text()


def test_the_page_shows_a_real_study_sending_then_at_the_county(
    scp: RunningScp, dcmtk: Dcmtk, standin_county: StandInCounty, edge_settings: Settings,
    tmp_path: Path,
) -> None:
    files = []
    for n in range(16):
        files.append(tmp_path / f"CT{n:02d}.dcm")
        files[-1].write_bytes(big_instance(n, STUDY))
    done = dcmtk("storescu", "-aet", "TOWN_CT", "-aec", "RELAY_EDGE", scp.host, str(scp.port),
                 *map(str, files))
    assert done.returncode == 0, done.stderr

    standin_county.state.chunk_delay_s = 0.15  # ~2 MiB in 64 KiB chunks: ~5 s
    settings = edge_settings.model_copy(update={
        "county_url": standin_county.url, "forward_encoding": "identity",
        "forward_chunk_bytes": CHUNK, "forward_streams": 1})
    status_page = StatusPage(spool=scp.spool, alarms=Alarms(), host="127.0.0.1", port=0,
                             timezone="Asia/Shanghai", technicians=cached_technician(scp.spool.root))
    status_page.start()
    run = Running(scp.spool, settings)
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 700})
            log_in_browser(page, f"http://127.0.0.1:{status_page.port}")
            sending = re.compile(r"发送中\s*([1-9]\d?)%")
            assert wait_until(lambda: bool(sending.search(_row_text(page))), timeout=30,
                              interval=0.2), _row_text(page)
            page.screenshot(path=str(screenshot_path("edge-status-sending-zh")), full_page=True)
            assert "TOWN_CT" in _row_text(page)

            assert wait_until(lambda: scp.spool.counts().pending == 0, timeout=60)
            row = _row_text(page)
            assert "已到达县医院" in row and "发送中" not in row
            page.screenshot(path=str(screenshot_path("edge-status-at-county-zh")), full_page=True)
    finally:
        run.close()
        status_page.stop()
