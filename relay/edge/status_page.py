"""The technician's local status page: today's studies, their state, the spool, alarms.

Served by the edge process on ``Settings.edge_status_host:edge_status_port``
(loopback by default: the page shows patient names and has no login). Chinese by
default, English with ``?lang=en``. The only state-changing action, "mark STAT", is a
POST carrying a per-process CSRF token, so another web page open in the same
browser cannot trigger it.

Patient names come from the journal's ``studies`` table (decoded from the first
instance's header with its Specific Character Set); they are rendered here and
never logged (uvicorn's access log is off: URLs carry Study UIDs only, but there is
no need for it).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import json
import threading
from dataclasses import dataclass
from datetime import datetime, time as dtime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from relay.config import Settings
from relay.edge.admission import Alarms, disk_state
from relay.edge.outbox import uploaded_bytes
from relay.edge.reports import acknowledge, local_reports
from relay.edge.completeness import StudyPhase, StudyRow
from relay.edge.spool import Spool, SpoolCounts

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
SERVER_STOP_S = 5.0
"""Seconds ``StatusPage.stop`` waits for uvicorn to finish open requests."""

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "影像传输状态", "studies": "今日检查", "time": "检查时间", "received": "接收时间",
        "patient": "患者", "modality": "类型", "ae": "设备", "count": "图像数",
        "state": "状态", "priority": "优先级", "action": "操作", "mark_stat": "标记为急诊",
        "stat": "急诊", "routine": "常规", "urgent": "加急", "spool": "待发送",
        "pending": "待发送图像", "pending_bytes": "待发送数据量", "oldest": "最早未发送",
        "disk_free": "磁盘剩余", "last_error": "最近错误", "alarms": "警报", "none": "无",
        "late": "补发", "no_studies": "今天还没有收到检查。", "failure": "发送失败（将自动重试）",
        "receiving": "接收中", "waiting": "等待发送", "sending": "发送中",
        "at_county": "已到达县医院", "report_back": "报告已返回", "lang_switch": "English",
        "refresh": "每 10 秒自动刷新", "seconds": "秒",
        "reports": "诊断报告", "no_reports": "还没有返回的报告。", "report": "报告", "addendum": "补充报告",
        "critical": "危急值", "critical_alarm": "危急值报告！请立即查看并确认。", "reader": "诊断医师",
        "signed_at": "签发时间", "view_pdf": "查看/打印", "ack": "确认已阅", "acked": "已确认",
        "your_name": "技师姓名", "study": "检查",
    },
    "en": {
        "title": "Image relay status", "studies": "Studies today", "time": "Study time",
        "received": "Received", "patient": "Patient", "modality": "Modality", "ae": "Device",
        "count": "Images", "state": "State", "priority": "Priority", "action": "Action",
        "mark_stat": "Mark STAT", "stat": "STAT", "routine": "routine", "urgent": "urgent",
        "spool": "Waiting to send", "pending": "Pending images",
        "reports": "Reports", "no_reports": "No reports back yet.", "report": "Report", "addendum": "Addendum",
        "critical": "CRITICAL", "critical_alarm": "Critical result! Open and acknowledge it now.",
        "reader": "Reader", "signed_at": "Signed", "view_pdf": "View / print", "ack": "Acknowledge",
        "acked": "Acknowledged", "your_name": "Your name", "study": "Study",
        "pending_bytes": "Pending data", "oldest": "Oldest unsent", "disk_free": "Disk free",
        "last_error": "Last error", "alarms": "Alarms", "none": "none",
        "late": "addition", "no_studies": "No studies received today yet.",
        "failure": "Sending failed (retrying automatically)", "receiving": "receiving",
        "waiting": "waiting to send", "sending": "sending", "at_county": "at the county",
        "report_back": "report back", "lang_switch": "中文", "refresh": "refreshes every 10 s",
        "seconds": "s",
    },
}


_REASONS: list[tuple[tuple[str, ...], dict[str, str]]] = [
    (("401", "403", "credential", "token"),
     {"zh": "县医院拒绝了本站的凭证，请联系管理员",
      "en": "The county refused this site's credential: call the administrator"}),
    (("413",),
     {"zh": "文件太大，县医院拒收，请联系管理员",
      "en": "Too large for the county: call the administrator"}),
    (("422", "sha-256", "sha256"),
     {"zh": "县医院校验未通过，将重新发送", "en": "The county's check failed; sending again"}),
    (("spool file", "missing"),
     {"zh": "本机影像文件损坏或丢失，请联系管理员",
      "en": "The image file on this PC is damaged or missing: call the administrator"}),
    (("connect", "refused", "timeout", "timed out", "unreachable", "network", "dns"),
     {"zh": "无法连接县医院（网络或县医院服务中断），将自动重试",
      "en": "Cannot reach the county (network or county service down); retrying"}),
    (("500", "502", "503", "504"),
     {"zh": "县医院服务暂时故障，将自动重试",
      "en": "The county service has a temporary fault; retrying"}),
]
"""Error text fragments -> plain words, checked in order (first match wins)."""


def plain_reason(error: str | None, lang: str) -> str | None:
    """A failure in words a technician can act on; the raw error is shown beside it."""
    if not error:
        return None
    lowered = error.lower()
    for needles, words in _REASONS:
        if any(needle in lowered for needle in needles):
            return words[lang]
    return TEXT[lang]["failure"]


def display_name(raw: str) -> str:
    """A DICOM Person Name as people write it: the ideographic group if present
    ('Li^Na=李^娜' -> '李娜'), components joined without spaces for Chinese."""
    groups = [g for g in raw.split("=") if g.strip("^ ")]
    if not groups:
        return ""
    name = groups[1] if len(groups) > 1 else groups[0]
    parts = [p for p in name.split("^") if p]
    cjk = any("\u3400" <= ch <= "\u9fff" for ch in name)
    return ("" if cjk else " ").join(parts)


def human_bytes(n: float) -> str:
    """Bytes as B/KB/MB/GB/TB (powers of 1024), one decimal."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"


@dataclass(frozen=True, slots=True)
class PageDeps:
    """What the page reads: the open spool, the alarms, and the site's zone."""

    spool: Spool
    alarms: Alarms
    zone: ZoneInfo
    csrf_token: str
    settings: Settings | None = None
    """For the reports section (fetched reports, acknowledgements to the county)."""


def start_of_today(zone: ZoneInfo, now: datetime) -> datetime:
    """Midnight of today in the site's zone (studies are listed from then)."""
    local = now.astimezone(zone)
    return datetime.combine(local.date(), dtime(0, 0), tzinfo=zone)


def _local(iso_utc: str | None, zone: ZoneInfo) -> str:
    if not iso_utc:
        return ""
    return datetime.fromisoformat(iso_utc).astimezone(zone).strftime("%H:%M:%S")


def _study_time(row: StudyRow) -> str:
    t = row.study_time
    return f"{t[0:2]}:{t[2:4]}:{t[4:6]}".rstrip(":") if len(t) >= 4 else ""


def _view(row: StudyRow, zone: ZoneInfo, lang: str) -> dict[str, Any]:
    return {
        "uid": row.study_uid, "name": display_name(row.patient_name),
        "time": _study_time(row), "received": _local(row.first_at, zone),
        "modality": row.modality, "ae": row.calling_ae, "count": row.instance_count,
        "phase": row.phase.value, "percent": row.percent_sent,
        "sending": row.phase is StudyPhase.SENDING, "stat": row.priority.rank == 0,
        "priority": row.priority.value, "late": row.late_count, "error": row.last_error,
        "reason": plain_reason(row.last_error, lang),
    }


def _summary(counts: SpoolCounts, deps: PageDeps, lang: str = "zh") -> dict[str, Any]:
    disk = disk_state(deps.spool.root)
    age = counts.oldest_pending_age_s
    return {
        "pending": counts.pending, "pending_bytes": human_bytes(counts.pending_bytes),
        "oldest_s": None if age is None else int(age), "last_error": counts.last_error,
        "last_reason": plain_reason(counts.last_error, lang),
        "disk_free": f"{human_bytes(disk.free_bytes)} ({disk.free_percent:.0f}%)",
        "alarms": [msg for msg, _ in deps.alarms.active().values()],
    }


def page_context(deps: PageDeps, *, lang: str, now: datetime) -> dict[str, Any]:
    """Everything the template shows, in plain values."""
    studies = deps.spool.studies(since=start_of_today(deps.zone, now), now=now,
                                 uploading=uploaded_bytes(deps.spool.root))
    names = {row.study_uid: _view(row, deps.zone, lang)["name"] for row in studies}
    reports = [_report_view(item, deps, names) for item in (local_reports(deps.settings) if deps.settings else [])]
    return {
        "t": TEXT[lang], "lang": lang, "csrf": deps.csrf_token,
        "studies": [_view(row, deps.zone, lang) for row in studies],
        "summary": _summary(deps.spool.counts(now=now), deps, lang),
        "reports": reports, "critical_open": any(r["critical"] and not r["acked"] for r in reports),
    }


def _report_view(item: dict[str, Any], deps: PageDeps, names: dict[str, str]) -> dict[str, Any]:
    assert deps.settings is not None
    folder = deps.settings.edge_spool_dir / "reports" / str(item["delivery_id"])
    signed = datetime.fromisoformat(item["signed_at"]).astimezone(deps.zone).strftime("%m-%d %H:%M")
    return {"id": item["delivery_id"], "kind": item["kind"], "critical": item["critical"],
            "reader": item["reader"], "signed": signed, "name": names.get(item["study_instance_uid"], ""),
            "study": item["study_instance_uid"], "pdf": (folder / "pdf.pdf").exists(),
            "acked": (folder / "ack.json").exists()}


def _lang(value: str | None) -> str:
    return "en" if value == "en" else "zh"


def build_app(deps: PageDeps) -> FastAPI:
    """The page's app: GET / (HTML), POST /studies/{uid}/stat, GET /api/summary (JSON,
    no patient data)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, lang: str | None = None) -> Response:
        context = page_context(deps, lang=_lang(lang), now=datetime.now(deps.zone))
        return templates.TemplateResponse(request, "status.html", context)

    @app.post("/studies/{study_uid}/stat")
    def mark_stat(study_uid: str, csrf: str = Form(""), lang: str = Form("zh")) -> Response:
        if not hmac.compare_digest(csrf, deps.csrf_token):
            return JSONResponse({"detail": "bad or missing CSRF token"}, status_code=403)
        if not deps.spool.mark_study_stat(study_uid, reason="technician"):
            return JSONResponse({"detail": "unknown study"}, status_code=404)
        log.info("study %s marked STAT by the technician", study_uid)
        return RedirectResponse(f"/?lang={_lang(lang)}", status_code=303)

    @app.get("/reports/{delivery_id}/pdf")
    def report_pdf(delivery_id: int) -> Response:
        path = _report_folder(deps, delivery_id) / "pdf.pdf"
        if not path.is_file():
            return JSONResponse({"detail": "no PDF for this report"}, status_code=404)
        return Response(path.read_bytes(), media_type="application/pdf")

    @app.post("/reports/{delivery_id}/ack")
    def ack_report(delivery_id: int, csrf: str = Form(""), by: str = Form(""), lang: str = Form("zh")) -> Response:
        if not hmac.compare_digest(csrf, deps.csrf_token):
            return JSONResponse({"detail": "bad or missing CSRF token"}, status_code=403)
        if deps.settings is None or not by.strip():
            return JSONResponse({"detail": "say who acknowledges"}, status_code=400)
        acknowledge(deps.settings, delivery_id, by.strip())
        (_report_folder(deps, delivery_id) / "ack.json").write_text(json.dumps({"by": by.strip()}, ensure_ascii=False))
        log.info("report delivery %d acknowledged at the township", delivery_id)
        return RedirectResponse(f"/?lang={_lang(lang)}", status_code=303)

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        return _summary(deps.spool.counts(), deps)

    return app


def _report_folder(deps: PageDeps, delivery_id: int) -> Path:
    assert deps.settings is not None
    return deps.settings.edge_spool_dir / "reports" / str(int(delivery_id))


class StatusPage:
    """The page served by uvicorn in a background thread; ``stop()`` ends it."""

    def __init__(self, *, spool: Spool, alarms: Alarms, host: str, port: int,
                 timezone: str, settings: Settings | None = None) -> None:
        deps = PageDeps(spool=spool, alarms=alarms, zone=ZoneInfo(timezone),
                        csrf_token=secrets.token_urlsafe(24), settings=settings)
        config = uvicorn.Config(build_app(deps), host=host, port=port, access_log=False,
                                log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="relay-status-page",
                                        daemon=True)

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Start serving; returns once the socket listens (or raises after ``timeout_s``)."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            if self.server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not self.server.started:
            raise RuntimeError("status page did not start (port in use?)")

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(SERVER_STOP_S)
