"""The administrator's pages in a real browser (Debian's Chromium via Playwright) on real
PostgreSQL, Chinese first: turnaround charts drawn from the API's figures, live SLA
breaches, the edge fleet's alarms, readers' workload, the audit trail; and no admin page
for anyone else."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
import requests
from sqlalchemy import select, update

from relay.county.audit.service import Action, Entry, append
from relay.county.db.models import AuditEvent, EdgeHealth, Instance, Patient, ReadingItem, Site, Study, StudyTransition, User
from relay.dicom.vocab import Role
from tests.browser import chromium, log_in, screenshot_path
from tests.county.test_dicomweb import server  # noqa: F401 - the uvicorn fixture
from tests.factories import make_site, make_user

WAIT_MS = 20_000
ADMIN_PAGES = ["/portal/admin/tat", "/portal/admin/edges", "/portal/admin/workload", "/portal/admin/audit",
               "/portal/admin/his", "/portal/admin/reconcile"]
PATH = ["arrived", "queued", "assigned", "reading", "signed", "delivered", "acknowledged"]
# (site, priority, modality, reader, arrived hours ago, seconds: edge->county, wait, until opened,
#  reading, signed->township, until acknowledged). Reading at qingshan: 10, 12 and 15 minutes,
#  so its median is 12 minutes; at huxi 20 and 30 minutes: 25.
HISTORY = [
    ("qingshan", "stat", "CT", "dr.wang", 60, 240, 300, 60, 600, 40, 900),
    ("qingshan", "routine", "DX", "dr.li", 30, 180, 3600, 300, 720, 50, 1800),
    ("qingshan", "routine", "ECG", "dr.wang", 8, 200, 5400, 120, 900, 45, 600),
    ("huxi", "routine", "CT", "dr.li", 50, 600, 7200, 600, 1200, 90, 2400),
    ("huxi", "stat", "DX", "dr.wang", 20, 420, 420, 90, 1800, 60, 1200),
]
SITES = {"qingshan": "青山镇卫生院", "huxi": "湖西镇卫生院"}
BREACHED_UID = "2.25.777000111"


def _study(s, *, site_id: int, uid: str, priority: str, modality: str, stamps: dict[str, datetime], edge: datetime,
           actor: str) -> Study:
    patient = Patient(patient_id=f"P-{uid[-6:]}", issuer="test", name="")
    s.add(patient)
    s.flush()
    reached = [state for state in PATH if state in stamps]
    study = Study(study_uid=uid, patient_pk=patient.id, site_id=site_id, modalities=modality, priority=priority,
                  state=reached[-1], created_at=stamps["arrived"], updated_at=stamps[reached[-1]])
    s.add(study)
    s.flush()
    s.add(Instance(sop_uid=f"{uid}.1", sha256=hashlib.sha256(uid.encode()).hexdigest(), sop_class_uid="1.2", study_uid=uid,
                   series_uid=f"{uid}.9", object_key="k", size=1, site_id=site_id, priority=priority,
                   edge_received_at=edge, received_at=stamps["arrived"]))
    for state in reached:
        s.add(StudyTransition(study_pk=study.id, state=state, at=stamps[state],
                              actor=actor if state == "signed" else "", detail=""))
    return study


def seed(county) -> None:
    """Two townships with display names, five finished studies over the last 60 hours, and a
    STAT study held by dr.wang, 50 minutes after arrival (its SLA is 30)."""
    now = datetime.now(UTC).replace(microsecond=0)
    site_ids = {name: make_site(county, name)[0] for name in SITES}
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    make_user(county, "dr.li", Role.RADIOLOGIST)
    with county.sessions() as s:
        for name, display in SITES.items():
            s.execute(update(Site).where(Site.name == name).values(display_name=display))
        for i, (site, priority, modality, reader, hours, *gaps) in enumerate(HISTORY):
            edge = now - timedelta(hours=hours)
            at, stamps = edge, {}
            for state, gap in zip(PATH, [gaps[0], 1, *gaps[1:]], strict=True):
                at += timedelta(seconds=gap)
                stamps[state] = at
            _study(s, site_id=site_ids[site], uid=f"2.25.7770002{i}", priority=priority, modality=modality,
                   stamps=stamps, edge=edge, actor=reader)
        arrived = now - timedelta(minutes=50)
        study = _study(s, site_id=site_ids["qingshan"], uid=BREACHED_UID, priority="stat", modality="CT",
                       stamps={"arrived": arrived, "queued": arrived, "assigned": arrived + timedelta(minutes=5)},
                       edge=arrived - timedelta(minutes=4), actor="")
        wang = s.execute(select(User.id).where(User.username == "dr.wang")).scalar_one()
        s.add(ReadingItem(study_pk=study.id, priority_rank=0, queued_at=arrived, assigned_user_id=wang,
                          assigned_at=arrived + timedelta(minutes=5)))
        s.commit()


def _beat(county, site: str, *, ago: timedelta, oldest_unsent_s: float | None, spool: int = 0) -> None:
    """The edge's latest heartbeat as the county recorded it ``ago``."""
    with county.sessions() as s:
        site_id = s.execute(select(Site.id).where(Site.name == site)).scalar_one()
        s.query(EdgeHealth).filter(EdgeHealth.site_id == site_id).delete()
        seen = datetime.now(UTC) - ago
        s.add(EdgeHealth(site_id=site_id, received_at=seen, edge_time=seen - timedelta(seconds=2), clock_offset_s=2.0,
                         spool_instances=spool, spool_bytes=spool * 524_288, oldest_unsent_age_s=oldest_unsent_s,
                         goodput_bps=2_400_000.0, disk_free_bytes=180 * 1024**3, version="0.9.3", last_error=""))
        s.commit()


def _admin_page(browser, server: str, county, path: str, *, lang: str = "zh-CN"):  # noqa: F811
    password = make_user(county, "admin", Role.ADMIN)
    page = browser.new_page(locale=lang, viewport={"width": 1440, "height": 1000})
    page.set_default_timeout(WAIT_MS)
    log_in(page, server, "admin", password, next_path=path)
    return page


def _fig(text: str) -> float:
    return float(text)


def test_the_turnaround_dashboard_draws_the_apis_figures_and_the_live_breaches(server, county):  # noqa: F811
    seed(county)
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/tat")
        page.wait_for_selector("body[data-loaded]")
        assert "运营总览" in page.locator("#nav a.current").inner_text()
        csv_href = page.get_attribute("#csv", "href")
        assert csv_href.startswith("/api/tat.csv?since=")
        window = csv_href.split("?", 1)[1]
        api = page.request.get(f"{server}/api/tat?group_by=site&{window}").json()
        assert set(api["groups"]) == {"qingshan", "huxi"}

        # Every bar of every stage chart is the API's figure, drawn to the chart's scale.
        panels = page.locator("#stage-charts svg.stage-chart")
        assert panels.count() == len(api["stages"])
        checked = 0
        for k in range(panels.count()):
            chart = panels.nth(k)
            stage = chart.get_attribute("data-stage")
            scale, x0, plot_w = (_fig(chart.get_attribute(a)) for a in ("data-scale-max", "data-x0", "data-plot-w"))
            for row in chart.locator("g.row").all():
                want = api["groups"][row.get_attribute("data-group")][stage]
                assert (_fig(row.get_attribute("data-p50")), _fig(row.get_attribute("data-p90")),
                        _fig(row.get_attribute("data-max")), int(row.get_attribute("data-n"))) == \
                    (want["p50_s"], want["p90_s"], want["max_s"], want["n"])
                p50_w = _fig(row.locator("rect.bar-p50").get_attribute("width"))
                p90 = row.locator("rect.bar-p90")
                p90_end = _fig(p90.get_attribute("x")) + _fig(p90.get_attribute("width"))
                assert p50_w == pytest.approx(max(1.0, min(want["p50_s"], scale) / scale * plot_w), abs=0.01)
                assert p90_end == pytest.approx(x0 + min(want["p90_s"], scale) / scale * plot_w, abs=0.01)
                checked += 1
        assert checked == sum(len(stages) for stages in api["groups"].values())

        # What a person reads: the townships by name, reading at qingshan 12 min (median) / 14 min (P90).
        reading = page.locator("#stage-charts svg[data-stage=reading]")
        assert "青山镇卫生院" in reading.text_content() and "湖西镇卫生院" in reading.text_content()
        qingshan = reading.locator("g.row[data-group=qingshan]")
        assert api["groups"]["qingshan"]["reading"]["p50_s"] == 720.0
        assert qingshan.locator(".v50").text_content() == "12分钟" and qingshan.locator(".v90").text_content() == "14分钟"
        assert reading.locator("g.row[data-group=huxi] .v50").text_content() == "25分钟"

        # Where the time goes: each township's stage medians, end to end in one bar.
        for site, stages in api["groups"].items():
            segs = page.locator(f"#stack g.row[data-group={site}] rect.seg")
            drawn_segs = {segs.nth(i).get_attribute("data-stage"): _fig(segs.nth(i).get_attribute("data-value"))
                          for i in range(segs.count())}
            assert drawn_segs == {st: f["p50_s"] for st, f in stages.items()
                                  if st not in ("arrival_to_signature", "end_to_end")}

        # The trend: one point per day of arrival, at the API's p50.
        days = page.request.get(f"{server}/api/tat?group_by=day&{window}").json()["groups"]
        dots = page.locator("#trend svg g.dots-p50_s circle")
        drawn = {dots.nth(i).get_attribute("data-key"): _fig(dots.nth(i).get_attribute("data-value")) for i in range(dots.count())}
        assert drawn == {day: stages["arrival_to_signature"]["p50_s"] for day, stages in days.items() if "arrival_to_signature" in stages}

        # The breached STAT study: where its time is going and who holds it.
        page.wait_for_selector(f"#breaches tr[data-study='{BREACHED_UID}']")
        row = page.locator(f"#breaches tr[data-study='{BREACHED_UID}']").inner_text()
        assert "急诊" in row and "青山镇卫生院" in row and "已分配，未打开" in row and "dr.wang" in row
        assert "分钟" in page.locator(f"#breaches tr[data-study='{BREACHED_UID}'] .overdue").inner_text()
        assert page.locator("#kpi-breaches .v").inner_text() == "1"
        page.screenshot(path=str(screenshot_path("admin-tat-zh")), full_page=True)

        # Grouped by priority: the rows are 急诊 and 常规.
        page.click("#group-by button[data-group=priority]")
        page.wait_for_selector("body[data-loaded^='priority|']")
        labels = page.locator("#stage-charts svg[data-stage=end_to_end] g.row text.label").all_text_contents()
        assert labels == ["急诊", "常规"]
        page.screenshot(path=str(screenshot_path("admin-tat-priority-zh")), full_page=True)

        # 90 days: the trend goes per week (Mondays), still the API's figures.
        page.select_option("#range", "90d")
        page.wait_for_selector("body[data-loaded='priority|90d|arrival_to_signature']")
        assert page.get_attribute("#trend svg", "data-unit") == "week"
        window = page.get_attribute("#csv", "href").split("?", 1)[1]
        weeks = page.request.get(f"{server}/api/tat?group_by=week&{window}").json()["groups"]
        dots = page.locator("#trend svg g.dots-p50_s circle")
        assert [dots.nth(i).get_attribute("data-key") for i in range(dots.count())] == sorted(weeks)
        assert all(date.fromisoformat(week).weekday() == 0 for week in weeks)

        # Dates the administrator picks are days in the site's zone (Asia/Shanghai).
        page.select_option("#range", "custom")
        page.fill("#from", "2026-11-02")
        page.fill("#to", "2026-11-08")
        page.dispatch_event("#to", "change")
        page.wait_for_function("() => document.getElementById('csv').href.includes('2026-11-08T16')")
        assert page.get_attribute("#csv", "href") == (
            "/api/tat.csv?since=2026-11-01T16%3A00%3A00.000Z&until=2026-11-08T16%3A00%3A00.000Z")
        assert "range=custom&group=priority" in page.url and "from=2026-11-02" in page.url

        page.click("#lang-switch")
        page.wait_for_selector("body[data-loaded]")
        assert "Turnaround" in page.locator("#nav a.current").inner_text()
        assert "Time per stage" in page.locator("main").inner_text()
        page.wait_for_selector(f"#breaches tr[data-study='{BREACHED_UID}']")
        assert "assigned, not opened" in page.locator("#breaches").inner_text()
        page.screenshot(path=str(screenshot_path("admin-tat-en")), full_page=True)


def test_the_csv_link_downloads_the_per_study_rows(server, county):  # noqa: F811
    seed(county)
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/tat")
        page.wait_for_selector("body[data-loaded]")
        with page.expect_download() as download:
            page.click("#csv")
        text = download.value.path().read_text(encoding="utf-8-sig")
    lines = text.strip().splitlines()
    assert lines[0].startswith("study_instance_uid,site,modality,priority,reader")
    assert len(lines) == 1 + len(HISTORY) + 1 and any(BREACHED_UID in line for line in lines)


def test_the_fleet_page_flags_a_silent_edge_red_and_an_old_spool_amber_and_refreshes(server, county):  # noqa: F811
    for name in ("qingshan", "huxi", "baishi", "lianhua"):
        make_site(county, name)
    with county.sessions() as s:
        s.execute(update(Site).where(Site.name == "qingshan").values(display_name="青山镇卫生院"))
        s.commit()
    _beat(county, "qingshan", ago=timedelta(seconds=20), oldest_unsent_s=40.0, spool=12)
    _beat(county, "huxi", ago=timedelta(minutes=25), oldest_unsent_s=None)
    _beat(county, "baishi", ago=timedelta(seconds=30), oldest_unsent_s=2 * 3600.0, spool=340)
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/edges")
        page.wait_for_selector("#fleet tr[data-site=huxi]")
        huxi = page.locator("#fleet tr[data-site=huxi]")
        assert huxi.get_attribute("class") == "alarm-red" and "静默" in huxi.inner_text() and "分钟前" in huxi.inner_text()
        baishi = page.locator("#fleet tr[data-site=baishi]")
        assert baishi.get_attribute("class") == "alarm-amber" and "积压" in baishi.inner_text()
        assert "2小时" in baishi.inner_text() and "340 幅" in baishi.inner_text()
        never = page.locator("#fleet tr[data-site=lianhua]")
        assert never.get_attribute("class") == "alarm-red" and "从未上报" in never.inner_text()
        fine = page.locator("#fleet tr[data-site=qingshan]")
        assert fine.get_attribute("class") == "" and "正常" in fine.inner_text() and "青山镇卫生院" in fine.inner_text()
        assert "0.9.3" in fine.inner_text() and "2.3 MB/s" in fine.inner_text() and "180 GB" in fine.inner_text()
        # Alarms first: the red ones, then the amber one, then the healthy one.
        order = page.locator("#fleet tbody tr").evaluate_all("rows => rows.map(r => r.dataset.site)")
        assert order == ["huxi", "lianhua", "baishi", "qingshan"]
        assert page.locator("#kpi-silent .v").inner_text() == "2" and page.locator("#kpi-stale .v").inner_text() == "1"
        page.screenshot(path=str(screenshot_path("admin-edges-zh")), full_page=True)

        # huxi's edge comes back: the page sees it on its next refresh, without a reload.
        _beat(county, "huxi", ago=timedelta(seconds=1), oldest_unsent_s=None)
        page.wait_for_selector("#fleet tr[data-site=huxi]:not(.alarm-red)", timeout=40_000)
        assert "正常" in page.locator("#fleet tr[data-site=huxi]").inner_text()


def test_the_workload_page_shows_each_readers_open_items_reads_and_median_time(server, county):  # noqa: F811
    seed(county)
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/workload")
        page.wait_for_selector("#workload tr[data-reader]")
        api = {r["reader"]: r for r in page.request.get(f"{server}/api/readers/workload").json()}
        assert api["dr.wang"]["holding"] == 1 and api["dr.wang"]["signed_7d"] == 3
        wang = page.locator("#workload tr[data-reader='dr.wang'] td").all_inner_texts()
        assert wang[:4] == ["dr.wang", "1", str(api["dr.wang"]["signed_today"]), "3"]
        assert wang[5] == "15分钟"  # dr.wang read for 10, 15 and 30 minutes
        li = page.locator("#workload tr[data-reader='dr.li'] td").all_inner_texts()
        assert li[1] == "0" and li[3] == "2" and li[5] == "16分钟"  # 12 and 20 minutes
        bars = page.locator("#chart-holding g.row")
        assert {bars.nth(i).get_attribute("data-key"): bars.nth(i).get_attribute("data-value")
                for i in range(bars.count())} == {"dr.wang": "1", "dr.li": "0"}
        assert page.locator("#chart-median g.row[data-key='dr.wang']").get_attribute("data-value") == \
            str(int(api["dr.wang"]["median_read_s"]))
        assert page.locator("#kpi-holding .v").inner_text() == "1"
        page.screenshot(path=str(screenshot_path("admin-workload-zh")), full_page=True)


def test_an_admin_searches_the_audit_log_pages_through_it_and_verifies_the_chain(server, county):  # noqa: F811
    make_user(county, "dr.wang", Role.RADIOLOGIST)
    assert requests.post(f"{server}/api/auth/token", data={"username": "dr.wang", "password": "wrong-password"}).status_code == 401
    for i in range(60):
        append(county.sessions, Entry(actor="dr.wang", role="radiologist", action=Action.STUDY_RETRIEVE,
                                      object_type="study", object_id=f"2.25.555{i:03d}", source="10.8.0.7"))
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/audit")
        page.wait_for_selector("body[data-loaded]")
        first = page.locator("#audit tbody tr").first
        assert first.get_attribute("data-action") == "login" and "admin" in first.inner_text()

        page.select_option("#f-action", "login.failed")
        page.click("#do-search")
        page.wait_for_selector("#audit tbody tr[data-action='login.failed']")
        rows = page.locator("#audit tbody tr")
        assert rows.count() == 1 and "dr.wang" in rows.first.inner_text() and "登录失败" in rows.first.inner_text()

        page.select_option("#f-action", "")
        page.fill("#f-actor", "dr.wang")
        page.click("#do-search")
        page.wait_for_selector("#audit tbody tr[data-action='study.retrieve']")
        first_page = page.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.id))")
        assert len(first_page) == 50 and "调阅影像" in page.locator("#audit tbody tr").first.inner_text()
        assert "2.25.555059" in page.locator("#audit tbody tr").first.inner_text()  # newest first
        page.screenshot(path=str(screenshot_path("admin-audit-zh")), full_page=True)
        page.click("#next")
        page.wait_for_selector("body[data-loaded^='1|']")
        second_page = page.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.id))")
        assert len(second_page) == 11 and not set(first_page) & set(second_page)  # 60 retrievals + the failed login
        assert "第 2 页" in page.locator("#page-no").inner_text() and page.locator("#next").is_disabled()
        page.click("#prev")
        page.wait_for_selector("body[data-loaded^='0|']")
        assert page.locator("#audit tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.id))") == first_page

        # The ATNA export takes the search's filters: dr.wang's 61 events as DICOM audit messages.
        assert "actor=dr.wang" in page.get_attribute("#atna-export", "href")
        with page.expect_download() as download:
            page.click("#atna-export")
        xml = download.value.path().read_text(encoding="utf-8")
        assert xml.startswith("<?xml") and xml.count("<AuditMessage>") == 61 and "2.25.555059" in xml

        page.fill("#f-object", "2.25.555007")
        page.click("#do-search")
        page.wait_for_function("() => document.querySelectorAll('#audit tbody tr').length === 1")
        assert "2.25.555007" in page.locator("#audit tbody tr").inner_text()

        page.click("#verify")
        page.wait_for_selector("#verify-result.ok-box")
        assert "审计链完整" in page.locator("#verify-result").inner_text()
        page.screenshot(path=str(screenshot_path("admin-audit-verified-zh")), full_page=True)


def test_the_verify_button_names_the_first_altered_audit_event(server, county, pg_url):  # noqa: F811
    for i in range(4):
        append(county.sessions, Entry(actor="dr.wang", role="radiologist", action=Action.STUDY_OPEN,
                                      object_type="study", object_id=f"2.25.888{i}"))
    with county.sessions() as s:
        third = s.execute(select(AuditEvent.id).order_by(AuditEvent.id).offset(2).limit(1)).scalar_one()
    # Someone with database access edits a row behind the append-only trigger's back.
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.execute("UPDATE audit_events SET actor = 'someone-else' WHERE id = %s", (third,))
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/audit")
        page.wait_for_selector("body[data-loaded]")
        page.click("#verify")
        page.wait_for_selector("#verify-result.bad-box")
        text = page.locator("#verify-result").inner_text()
        assert "审计链异常" in text and f"#{third}" in text
        assert page.locator("#audit tr.tampered").get_attribute("data-id") == str(third)
        page.screenshot(path=str(screenshot_path("admin-audit-tampered-zh")), full_page=True)


def test_the_verify_button_names_a_cut_tail_against_the_signed_checkpoint(server, county, pg_url):  # noqa: F811
    from relay.county.audit.checkpoint import write_checkpoint

    for i in range(6):
        append(county.sessions, Entry(actor="dr.wang", role="radiologist", action=Action.STUDY_OPEN,
                                      object_type="study", object_id=f"2.25.777{i}"))
    assert write_checkpoint(settings=county.settings, sessions=county.sessions) is not None
    with county.sessions() as s:
        fourth = s.execute(select(AuditEvent.id).order_by(AuditEvent.id).offset(3).limit(1)).scalar_one()
    # A DBA cuts the two newest events (the chain that is left still links).
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
        conn.execute("DELETE FROM audit_events WHERE id > %s", (fourth,))
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_append_only")
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/audit")
        page.wait_for_selector("body[data-loaded]")
        page.click("#verify")
        page.wait_for_selector("#verify-result.bad-box")
        text = page.locator("#verify-result").inner_text()
        assert "审计链异常" in text and f"记录 #{fourth} 之后缺少 2 条记录" in text
        page.screenshot(path=str(screenshot_path("admin-audit-cut-tail-zh")), full_page=True)


@pytest.mark.parametrize("role", [Role.RADIOLOGIST, Role.TECHNICIAN])
def test_the_admin_pages_are_forbidden_to_other_roles(server, county, role):  # noqa: F811
    make_site(county, "qingshan")
    password = make_user(county, "someone", role, site="qingshan")
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN")
        log_in(page, server, "someone", password)
        nav = page.locator("#nav").inner_text()
        assert not any(label in nav for label in ("运营总览", "前置机", "阅片工作量", "审计日志", "HIS 回传", "身份核对"))
        for path in ADMIN_PAGES:
            response = page.goto(f"{server}{path}")
            assert response is not None and response.status == 403, path
            assert "运营总览" not in page.content()


def test_an_anonymous_visitor_is_sent_to_the_login_and_back(server, county):  # noqa: F811
    password = make_user(county, "admin", Role.ADMIN)
    with chromium() as browser:
        page = browser.new_page(locale="zh-CN")
        page.goto(f"{server}/portal/admin/edges")
        page.wait_for_url("**/portal/login?next=**")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", password)
        page.click("form#login button[type=submit]")
        page.wait_for_url(f"{server}/portal/admin/edges")
        assert [a.strip() for a in page.locator("#nav a").all_inner_texts()][-6:] == [
            "运营总览", "前置机", "阅片工作量", "审计日志", "HIS 回传", "身份核对"]


def test_the_pages_say_so_when_there_is_nothing_yet(server, county):  # noqa: F811
    with chromium() as browser:
        page = _admin_page(browser, server, county, "/portal/admin/tat")
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.reload()
        page.wait_for_selector("body[data-loaded]")
        page.wait_for_selector("#breaches td:has-text('没有超时检查')")
        assert page.locator("#stage-charts .panel p:has-text('所选时段内暂无数据')").count() == 8
        assert page.locator("#load-error").is_hidden() and page.locator("#kpi-sign-p50 .v").inner_text() == "—"
        page.screenshot(path=str(screenshot_path("admin-tat-empty-zh")), full_page=True)
        for path, empty in (("edges", "尚未登记乡镇前置机"), ("workload", "暂无医师工作量数据")):
            page.goto(f"{server}/portal/admin/{path}")
            page.wait_for_selector(f"td:has-text('{empty}')")
        assert errors == []


def test_every_audit_action_has_a_label_in_both_languages():
    from reader_portal.i18n import STRINGS

    missing = [(lang, a.value) for lang, t in STRINGS.items() for a in Action if f"act_{a.value}" not in t]
    assert missing == []


@pytest.mark.parametrize(("lang", "word"), [("zh-CN", "更新于 "), ("en", "Updated ")])
def test_every_admin_page_says_when_it_was_updated_with_the_time_filled_in(server, county, lang, word):  # noqa: F811
    password = make_user(county, "admin", Role.ADMIN)
    with chromium() as browser:
        page = browser.new_page(locale=lang, viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(WAIT_MS)
        log_in(page, server, "admin", password, next_path=f"/portal/admin/edges?lang={lang}")
        for path in ("tat", "edges", "workload"):
            page.goto(f"{server}/portal/admin/{path}?lang={lang}")
            page.wait_for_selector("body[data-loaded]")
            updated = page.locator("#updated").inner_text()
            assert updated.startswith(word) and "{" not in updated, (path, updated)
            assert any(c.isdigit() for c in updated), (path, updated)
