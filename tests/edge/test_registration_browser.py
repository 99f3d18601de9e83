"""A technician registers an exam on the edge's page in a real browser, with the county
unreachable: the form's labels work, an empty name is refused in Chinese, and the
registered exam is listed as 待上传 with its accession number.
Screenshot: test-artifacts/screenshots/edge-registration-zh."""

from __future__ import annotations

from relay.config import Settings
from relay.edge.admission import Alarms
from relay.edge.orders import OrderCache
from relay.edge.spool import Spool
from relay.edge.status_page import StatusPage
from tests.browser import chromium, screenshot_path
from tests.edge.techpage import cached_technician, log_in_browser


def test_a_technician_registers_an_exam_in_the_browser_with_the_wan_down(edge_settings: Settings,
                                                                          spool: Spool) -> None:
    settings = edge_settings.model_copy(update={"edge_site": "township-a", "edge_site_code": "XZA",
                                                "county_url": "http://127.0.0.1:9"})
    cache = OrderCache(spool.root)
    server = StatusPage(spool=spool, alarms=Alarms(), host="127.0.0.1", port=0, timezone="Asia/Shanghai",
                        settings=settings, technicians=cached_technician(spool.root), orders=cache)
    server.start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            base = f"http://127.0.0.1:{server.port}"
            log_in_browser(page, base)
            with page.expect_navigation():
                page.get_by_role("link", name="登记").click()
            page.get_by_label("检查项目").fill("胸部正位")
            with page.expect_navigation():
                page.get_by_role("button", name="登记").click()
            assert "请填写姓名。" in page.locator("#e-patient_name").inner_text()
            page.get_by_label("姓名").fill("王 小明")
            page.get_by_label("拼音").fill("wang xiaoming")
            page.get_by_label("性别").select_option("M")
            page.get_by_label("检查类型").select_option("DX")
            page.get_by_label("临床诊断").fill("咳嗽待查")
            page.get_by_label("优先级").select_option("stat")
            with page.expect_navigation():
                page.get_by_role("button", name="登记").click()
            accession = page.locator(".done .accession").inner_text()
            row = page.locator("table.orders tr.order", has_text=accession).inner_text()
            assert "王小明" in row and "待上传" in row and "急诊" in row
            page.screenshot(path=str(screenshot_path("edge-registration-zh")), full_page=True)
    finally:
        server.stop()
    [registered] = cache.orders()
    assert (registered.order.accession_number, registered.order.patient_name, registered.order.priority) == (
        accession, "王^小明", "stat")
