"""Portal strings: Chinese (zh-CN) first, English as a choice."""

from __future__ import annotations

DEFAULT_LANG = "zh-CN"

STRINGS: dict[str, dict[str, str]] = {
    "zh-CN": {
        "title": "县域影像心电诊断中心", "worklist": "待诊断列表", "login": "登录",
        "username": "用户名", "password": "密码", "logout": "退出",
        "patient_name": "姓名", "patient_id": "患者ID", "modality": "检查类型",
        "site": "乡镇卫生院", "priority": "优先级", "state": "状态", "study_time": "检查时间",
        "arrived": "到达时间", "description": "检查描述", "empty": "暂无待诊断检查",
        "login_failed": "用户名或密码错误", "stat": "急诊", "urgent": "加急", "routine": "常规",
        "queued": "待分配", "assigned": "已分配", "reading": "诊断中",
        "partial": "本页为早期版本：仅显示待诊断列表，阅片与报告功能开发中。",
        "other_lang": "English", "sla": "时限", "overdue": "已超时", "left": "剩余",
        "minutes": "分钟", "hours": "小时",
    },
    "en": {
        "title": "County imaging and ECG reading centre", "worklist": "Worklist", "login": "Log in",
        "username": "Username", "password": "Password", "logout": "Log out",
        "patient_name": "Name", "patient_id": "Patient ID", "modality": "Modality",
        "site": "Township", "priority": "Priority", "state": "State", "study_time": "Exam time",
        "arrived": "Arrived", "description": "Description", "empty": "Nothing waiting to be read",
        "login_failed": "Wrong username or password", "stat": "STAT", "urgent": "Urgent",
        "routine": "Routine", "queued": "Queued", "assigned": "Assigned", "reading": "Reading",
        "partial": "Early version: this page only lists the worklist; viewer and reports are coming.",
        "other_lang": "中文", "sla": "SLA", "overdue": "overdue", "left": "left",
        "minutes": "min", "hours": "h",
    },
}


def strings(lang: str | None) -> tuple[str, dict[str, str]]:
    """The language to use and its strings; anything unknown falls back to Chinese."""
    chosen = lang if lang in STRINGS else DEFAULT_LANG
    return chosen, STRINGS[chosen]
