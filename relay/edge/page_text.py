"""The words of the technician's page, Chinese first with English, and failures in
plain words a technician can act on."""

from __future__ import annotations

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
        "acked_pending": "已确认（待上传）", "acked_refused": "已确认，但县医院未接受（请联系管理员）",
        "ack_by": "确认人", "study": "检查",
        "login_title": "技师登录", "username": "用户名", "password": "密码", "login": "登录",
        "logout": "退出登录", "logged_in_as": "当前技师", "login_failed": "用户名或密码错误。",
        "login_locked": "密码错误次数过多，该账号已暂时锁定，请稍后再试或联系管理员。",
        "login_hint": "请使用县医院为本站开设的技师账号登录（断网时也可登录）。",
        "login_critical": "有危急值报告待确认，请登录查看。", "expired": "登录已超时，请重新登录。",
        "register": "登记", "back_to_status": "返回传输状态", "reg_title": "检查登记",
        "reg_hint": "没有 HIS 接口的医院在此登记检查；登记后设备的工作列表（Worklist）立即可见（断网时也可以），联网后自动上传县医院。",
        "reg_name": "姓名", "reg_pinyin": "拼音", "reg_patient_id": "患者ID", "reg_sex": "性别",
        "reg_birth": "出生日期", "reg_phone": "联系电话", "reg_modality": "检查类型", "reg_procedure": "检查项目",
        "reg_diagnosis": "临床诊断", "reg_purpose": "检查目的", "reg_history": "病史摘要",
        "reg_department": "申请科室", "reg_doctor": "申请医生", "reg_submit": "登记",
        "reg_done": "登记成功，检查号：", "reg_invalid": "登记未完成，请按提示修改后重新提交。",
        "reg_today": "今日申请单", "reg_none": "今天还没有申请单。", "reg_accession": "检查号",
        "reg_unidentified": "（无）", "upload_pending": "待上传", "upload_confirmed": "已上传",
        "upload_refused": "县医院未接受（请联系管理员）", "from_county": "来自县医院",
        "order_cancelled": "已取消", "order_completed": "已完成",
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
        "acked": "Acknowledged", "study": "Study",
        "acked_pending": "Acknowledged (waiting to upload)",
        "acked_refused": "Acknowledged, but the county refused it (call the administrator)",
        "ack_by": "By", "login_title": "Technician login", "username": "Username", "password": "Password",
        "login": "Log in", "logout": "Log out", "logged_in_as": "Technician",
        "login_failed": "Wrong username or password.",
        "login_locked": "Too many wrong passwords: this login is locked for a while; try later or call the "
                        "administrator.",
        "login_hint": "Log in with the technician account the county made for this site (works offline too).",
        "login_critical": "A critical result waits for acknowledgement: log in to see it.",
        "expired": "Your login timed out: log in again.",
        "pending_bytes": "Pending data", "oldest": "Oldest unsent", "disk_free": "Disk free",
        "last_error": "Last error", "alarms": "Alarms", "none": "none",
        "late": "addition", "no_studies": "No studies received today yet.",
        "failure": "Sending failed (retrying automatically)", "receiving": "receiving",
        "waiting": "waiting to send", "sending": "sending", "at_county": "at the county",
        "report_back": "report back", "lang_switch": "中文", "refresh": "refreshes every 10 s",
        "seconds": "s",
        "register": "Register", "back_to_status": "Back to status", "reg_title": "Exam registration",
        "reg_hint": "For hospitals without an HIS interface: a registered exam is on the modality's worklist at "
                    "once (also offline) and goes to the county when the network allows.",
        "reg_name": "Name (Chinese)", "reg_pinyin": "Pinyin", "reg_patient_id": "Patient ID", "reg_sex": "Sex",
        "reg_birth": "Birth date", "reg_phone": "Phone", "reg_modality": "Exam type", "reg_procedure": "Procedure",
        "reg_diagnosis": "Clinical diagnosis", "reg_purpose": "Purpose", "reg_history": "History",
        "reg_department": "Department", "reg_doctor": "Ordering doctor", "reg_submit": "Register",
        "reg_done": "Registered, accession number:", "reg_invalid": "Not registered: correct the marked fields.",
        "reg_today": "Today's orders", "reg_none": "No orders today yet.", "reg_accession": "Accession",
        "reg_unidentified": "(none)", "upload_pending": "waiting to upload", "upload_confirmed": "uploaded",
        "upload_refused": "refused by the county (call the administrator)", "from_county": "from the county",
        "order_cancelled": "cancelled", "order_completed": "completed",
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
