"""HL7 v2 in from the HIS: bytes -> text (MSH-18), text -> orders and patient actions, ACKs.

Pure: no database, no socket. ``relay.county.orders.inbound`` applies what is read here in
one transaction; ``relay.county.orders.mllp`` frames it. hl7apy parses the message into
segments and fields (tolerant: HIS messages rarely validate against the standard's
structures); components are read by position here, so one reader serves v2.3 to v2.8.
The fields read are listed in docs/interfaces/hl7-in.md.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.exceptions import HL7apyException, UnsupportedVersion
from hl7apy.parser import parse_message

from relay.dicom.orders import Order, OrderSource
from relay.dicom.vocab import Priority

# HL7 table 0357 (message error condition codes) used in ERR-3
SEGMENT_SEQUENCE_ERROR = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_VERSION_ID = 203
APPLICATION_INTERNAL_ERROR = 207
_ERROR_TEXT = {100: "Segment sequence error", 101: "Required field missing", 102: "Data type error",
               103: "Table value not found", 200: "Unsupported message type", 203: "Unsupported version ID",
               207: "Application internal error"}

CHARSETS = {"": "utf-8", "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8", "GB 18030-2000": "gb18030",
            "GB18030": "gb18030", "GBK": "gb18030", "ASCII": "ascii"}
"""MSH-18 values taken, and the codec each is decoded (and answered) with. GBK is a
subset of GB 18030, so it is decoded as GB 18030."""

ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}
ADT_TYPES = {("ADT", "A08"), ("ADT", "A40")}
NEW, CHANGE, CANCEL = "new", "change", "cancel"
_CONTROL = {"NW": NEW, "XO": CHANGE, "SC": CHANGE, "CA": CANCEL, "DC": CANCEL}
"""ORC-1 order control codes taken (HL7 table 0119)."""
_PRIORITY = {"S": Priority.STAT, "A": Priority.URGENT, "R": Priority.ROUTINE}
_MODALITY = {"RX": "DX", "NMR": "MR", "NMS": "NM", "EC": "ECG", "RAD": ""}
"""OBR-24 diagnostic service section IDs (HL7 table 0074) that are not DICOM modality codes."""
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DTM = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")


class Nak(Exception):
    """The message is not taken: answered ``code`` (AE or AR) with an ERR segment naming
    ``segment^sequence^field`` and an HL7 table 0357 ``error`` code."""

    def __init__(self, code: str, text: str, *, segment: str = "", sequence: int = 1, field_no: int = 0,
                 error: int = APPLICATION_INTERNAL_ERROR) -> None:
        super().__init__(text)
        self.code, self.text, self.error = code, text, error
        self.segment, self.sequence, self.field_no = segment, sequence, field_no

    @property
    def location(self) -> str:
        if not self.segment:
            return ""
        return f"{self.segment}^{self.sequence}^{self.field_no}" if self.field_no else f"{self.segment}^{self.sequence}"


@dataclass(frozen=True, slots=True)
class Header:
    """What an ACK needs from MSH, read even from a message that is otherwise refused."""

    control_id: str = ""
    message_type: str = ""
    trigger: str = ""
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    processing_id: str = "P"
    version: str = "2.5"
    charset_name: str = ""
    codec: str = "utf-8"


# --- bytes -> text --------------------------------------------------------------------

def _raw_msh(raw: bytes) -> list[str]:
    """MSH's fields read as Latin-1 (every byte a character) before the charset is known;
    MSH-n is element n-1. Only ASCII fields are trusted from this (see ``sniff_header``)."""
    start = raw.find(b"MSH")
    if start < 0 or len(raw) < start + 8:
        return []
    line = re.split(rb"[\r\n]", raw[start:], maxsplit=1)[0].decode("latin-1")
    if len(line) < 8:
        return []
    sep = line[3]
    return line.split(sep) if sep.isprintable() and sep.isascii() else []


def _ascii(value: str) -> str:
    return value if value.isascii() and value.isprintable() else ""


def sniff_header(raw: bytes) -> Header:
    """The MSH fields an ACK echoes, from undecoded bytes (ASCII values only)."""
    f = _raw_msh(raw)
    if not f:
        return Header()

    def get(n: int, comp: int = 0) -> str:
        if n - 1 >= len(f):
            return ""
        comps = f[n - 1].split("~")[0].split("^")
        return _ascii(comps[comp]) if comp < len(comps) else ""

    charset = get(18)
    return Header(control_id=get(10), message_type=get(9), trigger=get(9, 1),
                  sending_application=get(3), sending_facility=get(4), receiving_application=get(5),
                  receiving_facility=get(6), processing_id=get(11) or "P", version=get(12) or "2.5",
                  charset_name=charset, codec=CHARSETS.get(charset.upper(), "utf-8"))


def decode(raw: bytes) -> tuple[str, Header]:
    """The message as text in the character set MSH-18 names (strictly: a byte that does not
    decode refuses the message, AR naming MSH-18, rather than guessing at a name)."""
    header = sniff_header(raw)
    if not _raw_msh(raw):
        raise Nak("AR", "not an HL7 v2 message: no MSH segment", segment="MSH", error=SEGMENT_SEQUENCE_ERROR)
    name = header.charset_name.upper()
    if name not in CHARSETS:
        raise Nak("AR", f"character set {header.charset_name!r} is not supported (UNICODE UTF-8, "
                  "GB 18030-2000, GB18030, GBK)", segment="MSH", field_no=18, error=TABLE_VALUE_NOT_FOUND)
    try:
        text = raw.decode(CHARSETS[name], errors="strict")
    except UnicodeDecodeError as exc:
        said = f"MSH-18 {header.charset_name!r}" if header.charset_name else "no MSH-18 (so UTF-8)"
        raise Nak("AR", f"byte {exc.start} does not decode as {CHARSETS[name]} ({said})",
                  segment="MSH", field_no=18, error=DATA_TYPE_ERROR) from exc
    return text, header


# --- text -> segments --------------------------------------------------------------------

@dataclass(slots=True)
class Segment:
    """One segment: field number -> repetitions, each still escaped ER7."""

    name: str
    sequence: int
    fields: dict[int, list[str]]


@dataclass(slots=True)
class Parsed:
    header: Header
    segments: list[Segment]
    separators: tuple[str, str, str, str, str]
    """field, component, repetition, escape, subcomponent."""

    def first(self, name: str) -> Segment | None:
        return next((s for s in self.segments if s.name == name), None)

    def unescape(self, value: str) -> str:
        fs, cs, rs, esc, ss = self.separators
        if not esc or esc not in value:
            return value
        table = {"F": fs, "S": cs, "R": rs, "E": esc, "T": ss}

        def one(m: re.Match[str]) -> str:
            code = m.group(1)
            if code in table:
                return table[code]
            if code.startswith("X") and len(code) > 1:
                try:
                    return bytes.fromhex(code[1:]).decode("latin-1")
                except ValueError:
                    return ""
            return ""  # formatting escapes (.br, H, N ...) carry no text

        return re.sub(re.escape(esc) + r"([^" + re.escape(esc) + r"]*)" + re.escape(esc), one, value)

    def value(self, seg: Segment | None, field_no: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        """Component ``comp`` (and subcomponent ``sub``) of repetition ``rep`` of a field, unescaped."""
        if seg is None:
            return ""
        reps = seg.fields.get(field_no, [])
        if rep >= len(reps):
            return ""
        _fs, cs, _rs, _esc, ss = self.separators
        comps = reps[rep].split(cs)
        if comp > len(comps):
            return ""
        subs = comps[comp - 1].split(ss)
        return self.unescape(subs[sub - 1]).strip() if sub <= len(subs) else ""

    def reps(self, seg: Segment | None, field_no: int) -> int:
        return len(seg.fields.get(field_no, [])) if seg is not None else 0


def parse(text: str, header: Header) -> Parsed:
    """Segments of the message (hl7apy, tolerant); unparseable -> AR."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r\x00 ")
    if not text.startswith("MSH") or len(text) < 8:
        raise Nak("AR", "the message does not begin with MSH", segment="MSH", error=SEGMENT_SEQUENCE_ERROR)
    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
    except UnsupportedVersion as exc:
        raise Nak("AR", "MSH-12 version is not one hl7apy knows (2.1 to 2.8.2)", segment="MSH", field_no=12,
                  error=UNSUPPORTED_VERSION_ID) from exc
    except (HL7apyException, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
        raise Nak("AR", f"unparseable message: {type(exc).__name__}: {str(exc)[:120]}",
                  segment="MSH", error=SEGMENT_SEQUENCE_ERROR) from exc
    fs, enc = text[3], text[4:8]
    separators = (fs, enc[0], enc[1], enc[2] if len(enc) > 2 else "", enc[3] if len(enc) > 3 else "")
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for child in message.children:
        name = str(child.name)
        counts[name] = counts.get(name, 0) + 1
        fields: dict[int, list[str]] = {}
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
            raise Nak("AR", f"segment {len(segments) + 1} has no valid segment ID", segment=name[:3] or "MSH",
                      sequence=counts[name], error=SEGMENT_SEQUENCE_ERROR)
        for f in child.children:
            number = re.search(r"_(\d+)$", str(f.name))
            if number is None:
                raise Nak("AR", f"field {f.name} of {name} is unreadable", segment=name, sequence=counts[name],
                          error=SEGMENT_SEQUENCE_ERROR)
            fields.setdefault(int(number.group(1)), []).append(f.to_er7())
        segments.append(Segment(name, counts[name], fields))
    return Parsed(header=header, segments=segments, separators=separators)


def read_header(p: Parsed) -> Header:
    """MSH as parsed (the decoded text: Chinese facility names too); required fields checked."""
    msh = p.first("MSH")
    h = p.header
    header = Header(control_id=p.value(msh, 10), message_type=p.value(msh, 9, 1), trigger=p.value(msh, 9, 2),
                    sending_application=p.value(msh, 3), sending_facility=p.value(msh, 4),
                    receiving_application=p.value(msh, 5), receiving_facility=p.value(msh, 6),
                    processing_id=p.value(msh, 11) or "P", version=p.value(msh, 12) or h.version,
                    charset_name=h.charset_name, codec=h.codec)
    p.header = header
    if not header.control_id:
        raise Nak("AR", "MSH-10 message control ID is empty", segment="MSH", field_no=10,
                  error=REQUIRED_FIELD_MISSING)
    if not header.message_type:
        raise Nak("AR", "MSH-9 message type is empty", segment="MSH", field_no=9, error=REQUIRED_FIELD_MISSING)
    return header


# --- segments -> what the message asks -----------------------------------------------------

@dataclass(slots=True)
class OrderAction:
    """One ORC group of an ORM^O01 / OMI^O23: an order to store or cancel."""

    control: str
    order: Order
    site_candidate: str
    """PV1-3.4 (facility) if sent, else PV1-3.1 (point of care): must name a county site."""
    orc_sequence: int = 1


@dataclass(slots=True)
class PatientAction:
    """ADT^A08 (``merge_from`` empty) or ADT^A40 (``merge_from`` the prior ID + issuer)."""

    patient_id: str
    issuer: str
    name: str = ""
    name_pinyin: str = ""
    sex: str = ""
    birth_date: str = ""
    phone: str = ""
    merge_from: tuple[str, str] | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _hl7_time(p: Parsed, raw: str, zone: ZoneInfo, *, where: tuple[str, int, int]) -> str:
    """An HL7 DTM as ISO 8601 with offset (no offset sent: the county's time zone)."""
    if not raw:
        return ""
    m = _DTM.match(raw)
    if not m or not m.group(3):
        seg, seq, no = where
        raise Nak("AE", f"{seg}-{no} {raw!r} is not an HL7 date/time (YYYYMMDD[HHMM[SS]][+ZZZZ])",
                  segment=seg, sequence=seq, field_no=no, error=DATA_TYPE_ERROR)
    y, mo, d, hh, mi, ss, off = m.groups()
    try:
        at = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0), tzinfo=zone)
        if off:
            at = datetime.fromisoformat(f"{at:%Y-%m-%dT%H:%M:%S}{off[:3]}:{off[3:]}")
    except ValueError as exc:
        seg, seq, no = where
        raise Nak("AE", f"{seg}-{no} {raw!r} is not a valid date/time", segment=seg, sequence=seq,
                  field_no=no, error=DATA_TYPE_ERROR) from exc
    return at.isoformat()


def _pn(p: Parsed, seg: Segment | None, field_no: int, rep: int) -> str:
    """An XPN/XCN repetition as a DICOM PN: family^given^middle^prefix^suffix, trailing ^ cut."""
    parts = [p.value(seg, field_no, c, rep=rep) for c in (1, 2, 3, 5, 4)]
    return "^".join(parts).rstrip("^")


def patient_names(p: Parsed, pid: Segment | None) -> tuple[str, str]:
    """(ideographic, alphabetic) from PID-5's repetitions: XPN-8 name representation code
    (I ideographic, A alphabetic) decides; without it, Chinese characters make a name the
    ideographic one and an all-ASCII one is the pinyin."""
    ideographic = alphabetic = ""
    for rep in range(p.reps(pid, 5)):
        name = _pn(p, pid, 5, rep)
        if not name:
            continue
        kind = p.value(pid, 5, 8, rep=rep).upper()
        if kind not in ("I", "A", "P"):
            kind = "I" if _CJK.search(name) else "A" if name.isascii() else "I"
        if kind == "I" and not ideographic:
            ideographic = name
        elif kind in ("A", "P") and not alphabetic:
            alphabetic = name
    return (ideographic or alphabetic), (alphabetic if ideographic else "")


def patient_identifier(p: Parsed, pid: Segment | None, header: Header, field_no: int = 3,
                       seg_name: str = "PID") -> tuple[str, str]:
    """(ID, issuer) from a CX list: the first repetition that has an assigning authority
    (CX-4.1 namespace ID, else CX-4.2 universal ID); if none has one, the first repetition
    within the sending facility's namespace (MSH-4): the HIS's own IDs."""
    first = ""
    for rep in range(p.reps(pid, field_no)):
        pid_value = p.value(pid, field_no, 1, rep=rep)
        if not pid_value:
            continue
        first = first or pid_value
        authority = p.value(pid, field_no, 4, 1, rep=rep) or p.value(pid, field_no, 4, 2, rep=rep)
        if authority:
            return _fits(pid_value, authority, seg_name, field_no)
    return _fits(first, header.sending_facility, seg_name, field_no) if first else ("", "")


def _fits(pid: str, issuer: str, seg_name: str, field_no: int) -> tuple[str, str]:
    """A key is never cut short (two long IDs would become one patient): too long is refused."""
    if len(pid) > 64 or len(issuer) > 128:
        raise Nak("AE", f"{seg_name}-{field_no} patient ID (64) or assigning authority (128) is too long",
                  segment=seg_name, field_no=field_no, error=DATA_TYPE_ERROR)
    return pid, issuer


def _sex(p: Parsed, pid: Segment | None) -> str:
    value = p.value(pid, 8).upper()
    if value in ("", "U", "A", "N"):
        return ""
    if value not in ("M", "F", "O"):
        raise Nak("AE", f"PID-8 {value!r} is not M, F, O or U", segment="PID", field_no=8,
                  error=TABLE_VALUE_NOT_FOUND)
    return value


def _birth_date(p: Parsed, pid: Segment | None) -> str:
    raw = p.value(pid, 7)[:8]
    if raw and (len(raw) != 8 or not raw.isdigit()):
        raise Nak("AE", "PID-7 is not a date (YYYYMMDD)", segment="PID", field_no=7, error=DATA_TYPE_ERROR)
    return raw


def _phone(p: Parsed, pid: Segment | None) -> str:
    return (p.value(pid, 13, 1) or p.value(pid, 13, 12) or
            (p.value(pid, 13, 6) + p.value(pid, 13, 7)))[:32]


def _person(p: Parsed, seg: Segment | None, field_no: int) -> str:
    """An XCN as the doctor's name text: family + given (no space between Chinese names)."""
    family, given = p.value(seg, field_no, 2), p.value(seg, field_no, 3)
    if not family and not given:
        return ""
    return ("" if _CJK.search(family + given) else " ").join(x for x in (family, given) if x)


def _code_text(p: Parsed, seg: Segment | None, field_no: int) -> str:
    return p.value(seg, field_no, 2) or p.value(seg, field_no, 1)


@dataclass(slots=True)
class _Group:
    orc: Segment
    obr: Segment | None = None
    tq1: Segment | None = None
    ipc: Segment | None = None
    zds: Segment | None = None
    dg1: list[Segment] = field(default_factory=list)
    notes: list[Segment] = field(default_factory=list)
    extra_ipc: int = 0


def _groups(p: Parsed) -> list[_Group]:
    groups: list[_Group] = []
    after_obr = False
    for seg in p.segments:
        if seg.name == "ORC":
            groups.append(_Group(seg))
            after_obr = False
            continue
        if not groups:
            if seg.name in ("OBR", "IPC", "TQ1"):
                raise Nak("AR", f"{seg.name} before any ORC", segment=seg.name, sequence=seg.sequence,
                          error=SEGMENT_SEQUENCE_ERROR)
            continue
        g = groups[-1]
        if seg.name == "OBR":
            if g.obr is not None:
                raise Nak("AE", "more than one OBR in one ORC group", segment="OBR", sequence=seg.sequence,
                          error=SEGMENT_SEQUENCE_ERROR)
            g.obr, after_obr = seg, True
        elif seg.name == "TQ1" and g.tq1 is None:
            g.tq1 = seg
        elif seg.name == "IPC":
            if g.ipc is None:
                g.ipc = seg
            else:
                g.extra_ipc += 1
        elif seg.name == "ZDS" and g.zds is None:
            g.zds = seg
        elif seg.name == "DG1":
            g.dg1.append(seg)
        elif seg.name == "NTE" and after_obr:
            g.notes.append(seg)
    return groups


def order_actions(p: Parsed, zone: ZoneInfo) -> list[OrderAction]:
    """One action per ORC group of an ORM^O01 / OMI^O23 (see docs/interfaces/hl7-in.md)."""
    h = p.header
    omi = h.message_type == "OMI"
    pid, pv1 = p.first("PID"), p.first("PV1")
    groups = _groups(p)
    if not groups:
        raise Nak("AE", "no ORC segment", segment="ORC", error=SEGMENT_SEQUENCE_ERROR)
    if pid is None:
        raise Nak("AE", "no PID segment", segment="PID", error=SEGMENT_SEQUENCE_ERROR)
    patient_id, patient_issuer = patient_identifier(p, pid, h)
    name, pinyin = patient_names(p, pid)
    site = p.value(pv1, 3, 4) or p.value(pv1, 3, 1)
    actions = []
    for g in groups:
        orc, obr, seq = g.orc, g.obr, g.orc.sequence
        code = p.value(orc, 1).upper()
        if code not in _CONTROL:
            raise Nak("AE", f"ORC-1 order control {code!r} is not NW, XO, SC, CA or DC", segment="ORC",
                      sequence=seq, field_no=1, error=TABLE_VALUE_NOT_FOUND)
        placer = p.value(orc, 2, 1) or p.value(obr, 2, 1)
        if not placer:
            raise Nak("AE", "no placer order number (ORC-2 / OBR-2)", segment="ORC", sequence=seq, field_no=2,
                      error=REQUIRED_FIELD_MISSING)
        issuer = p.value(orc, 2, 2) or p.value(obr, 2, 2) or h.sending_facility
        if len(placer) > 64 or len(issuer) > 128:
            raise Nak("AE", "placer order number (64) or its issuer (128) is too long", segment="ORC",
                      sequence=seq, field_no=2, error=DATA_TYPE_ERROR)
        if not issuer:
            raise Nak("AE", "no issuer of the placer order number (ORC-2.2 / MSH-4)", segment="ORC",
                      sequence=seq, field_no=2, error=REQUIRED_FIELD_MISSING)
        if _CONTROL[code] != CANCEL and obr is None:
            raise Nak("AE", "no OBR in the ORC group", segment="OBR", sequence=seq, error=SEGMENT_SEQUENCE_ERROR)
        ipc, tq1 = g.ipc, g.tq1
        obr_seq = obr.sequence if obr is not None else seq
        accession = (p.value(ipc, 1) or p.value(obr, 18)) if omi else p.value(obr, 18)
        if _CONTROL[code] != CANCEL and not accession:
            where = ("IPC", ipc.sequence if ipc else 1, 1) if omi else ("OBR", obr_seq, 18)
            raise Nak("AE", f"no accession number ({where[0]}-{where[2]})", segment=where[0], sequence=where[1],
                      field_no=where[2], error=REQUIRED_FIELD_MISSING)
        if len(accession) > 16:
            where = ("IPC", ipc.sequence if ipc else 1, 1) if omi and p.value(ipc, 1) else ("OBR", obr_seq, 18)
            raise Nak("AE", "accession number longer than 16 characters (DICOM SH)", segment=where[0],
                      sequence=where[1], field_no=where[2], error=DATA_TYPE_ERROR)
        if _CONTROL[code] != CANCEL and not site:
            raise Nak("AE", "PV1-3 names no performing township (point of care / facility)", segment="PV1",
                      field_no=3, error=REQUIRED_FIELD_MISSING)
        priority_code = (p.value(orc, 7, 6) or p.value(obr, 27, 6) or p.value(tq1, 9)).upper()
        when_raw, where = next(((v, w) for v, w in (
            (p.value(orc, 7, 4), ("ORC", seq, 7)), (p.value(obr, 27, 4), ("OBR", obr_seq, 27)),
            (p.value(tq1, 7), ("TQ1", tq1.sequence if tq1 else 1, 7)), (p.value(obr, 7), ("OBR", obr_seq, 7)))
            if v), ("", ("ORC", seq, 7)))
        modality = (p.value(ipc, 5) or p.value(obr, 24)).upper()
        modality = _MODALITY.get(modality, modality)[:16]
        diagnosis = "；".join(t for t in (_code_text(p, d, 3) for d in g.dg1) if t) or _code_text(p, obr, 31)
        history = "\n".join(t for t in ("".join(p.value(n, 3, rep=r) for r in range(p.reps(n, 3)))
                                        for n in g.notes) if t)
        extra = {k: v for k, v in {
            "filler_order_number": p.value(orc, 3, 1) or p.value(obr, 3, 1),
            "ordering_provider_id": p.value(orc, 12, 1) or p.value(obr, 16, 1),
            "visit_number": p.value(pv1, 19, 1),
            "patient_class": p.value(pv1, 2, 1),
            "placer_group_number": p.value(orc, 4, 1),
        }.items() if v}
        if g.extra_ipc:
            extra["ignored_ipc_segments"] = str(g.extra_ipc)
        uid, uid_at = (p.value(g.zds, 1), ("ZDS", g.zds.sequence if g.zds else 1, 1)) if p.value(g.zds, 1) else \
            (p.value(ipc, 3), ("IPC", ipc.sequence if ipc else 1, 3))
        if uid and (len(uid) > 64 or not _UID.match(uid)):
            raise Nak("AE", f"{uid_at[0]}-{uid_at[2]} is not a DICOM UID", segment=uid_at[0], sequence=uid_at[1],
                      field_no=uid_at[2], error=DATA_TYPE_ERROR)
        station, station_at = (p.value(ipc, 9), ("IPC", 9)) if p.value(ipc, 9) else (p.value(obr, 21), ("OBR", 21))
        if len(station) > 16:
            raise Nak("AE", f"{station_at[0]}-{station_at[1]} is longer than an AE title (16)",
                      segment=station_at[0], sequence=ipc.sequence if ipc and station_at[0] == "IPC" else obr_seq,
                      field_no=station_at[1], error=DATA_TYPE_ERROR)
        order = Order(
            placer_order_number=placer, placer_issuer=issuer, accession_number=accession,
            site=site, patient_id=patient_id, patient_id_issuer=patient_issuer, patient_name=name,
            patient_name_pinyin=pinyin, patient_sex=_sex(p, pid), patient_birth_date=_birth_date(p, pid),
            patient_phone=_phone(p, pid), modality=modality, procedure_code=p.value(obr, 4, 1)[:64],
            procedure_description=p.value(obr, 4, 2)[:256], clinical_diagnosis=diagnosis,
            exam_purpose=p.value(obr, 13), history_summary=history,
            ordering_department=(_code_text(p, orc, 17) or p.value(pv1, 10))[:128],
            ordering_doctor=(_person(p, orc, 12) or _person(p, obr, 16))[:128],
            priority=_PRIORITY.get(priority_code, Priority.ROUTINE).value,
            scheduled_at=_hl7_time(p, when_raw, zone, where=where),
            scheduled_station_ae=station,
            requested_procedure_id=(p.value(ipc, 2) or p.value(obr, 19))[:16],
            scheduled_step_id=(p.value(ipc, 4) or p.value(obr, 20))[:16],
            study_instance_uid=uid,
            source=OrderSource.HL7.value, extra=extra)
        actions.append(OrderAction(control=_CONTROL[code], order=order, site_candidate=site, orc_sequence=seq))
    return actions


def patient_action(p: Parsed) -> PatientAction:
    """ADT^A08 (PID) or ADT^A40 (PID + MRG-1): never on an empty ID."""
    h = p.header
    pid = p.first("PID")
    patient_id, issuer = patient_identifier(p, pid, h)
    if not patient_id:
        raise Nak("AE", "PID-3 has no usable patient ID", segment="PID", field_no=3, error=REQUIRED_FIELD_MISSING)
    name, pinyin = patient_names(p, pid)
    action = PatientAction(patient_id=patient_id, issuer=issuer, name=name, name_pinyin=pinyin,
                           sex=_sex(p, pid), birth_date=_birth_date(p, pid), phone=_phone(p, pid))
    if h.trigger == "A40":
        mrg = p.first("MRG")
        prior_id, prior_issuer = patient_identifier(p, mrg, h, field_no=1, seg_name="MRG")
        if not prior_id:
            raise Nak("AE", "MRG-1 has no usable prior patient ID", segment="MRG", field_no=1,
                      error=REQUIRED_FIELD_MISSING)
        if (prior_id, prior_issuer) == (action.patient_id, action.issuer):
            raise Nak("AE", "MRG-1 names the same patient as PID-3", segment="MRG", field_no=1,
                      error=TABLE_VALUE_NOT_FOUND)
        action.merge_from = (prior_id, prior_issuer)
    return action


# --- ACK ------------------------------------------------------------------------------------

def _escape(value: str, seps: tuple[str, str, str, str, str] = ("|", "^", "~", "\\", "&")) -> str:
    fs, cs, rs, esc, ss = seps
    out = value.replace(esc, f"{esc}E{esc}")
    for ch, code in ((fs, "F"), (cs, "S"), (rs, "R"), (ss, "T")):
        out = out.replace(ch, f"{esc}{code}{esc}")
    return out.replace("\r", " ").replace("\n", " ")


def build_ack(header: Header, code: str, *, text: str = "", nak: Nak | None = None,
              now: datetime | None = None) -> bytes:
    """An original-mode ACK (MSA-1 ``code``; MSA-2 the message's MSH-10; ERR when refused),
    encoded in the message's character set. Built with hl7apy's v2.5 structures (ERR-2
    location, ERR-3 code, ERR-4 severity, ERR-8 user message); MSH-12 echoes the message's."""
    ack = Message("ACK", version="2.5", validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = ack.msh
    msh.msh_3 = _escape(header.receiving_application or "RELAY")
    msh.msh_4 = _escape(header.receiving_facility or "COUNTY")
    msh.msh_5 = _escape(header.sending_application)
    msh.msh_6 = _escape(header.sending_facility)
    msh.msh_7 = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    msh.msh_9 = f"ACK^{_escape(header.trigger)}^ACK" if header.trigger else "ACK"
    msh.msh_10 = uuid.uuid4().hex[:20]
    msh.msh_11 = _escape(header.processing_id or "P")
    msh.msh_12 = _escape(header.version or "2.5")
    if header.charset_name.upper() in CHARSETS:
        msh.msh_18 = _escape(header.charset_name)
    msa = ack.add_segment("MSA")
    msa.msa_1 = code
    msa.msa_2 = _escape(header.control_id)
    if text or nak is not None:
        msa.msa_3 = _escape((nak.text if nak else text)[:80])
    if nak is not None:
        err = ack.add_segment("ERR")
        if nak.segment:
            err.err_2 = "^".join(_escape(x) for x in nak.location.split("^"))
        err.err_3 = f"{nak.error}^{_ERROR_TEXT.get(nak.error, 'Error')}^HL70357"
        err.err_4 = "E"
        err.err_8 = _escape(nak.text)
    body = str(ack.to_er7()) + "\r"
    return body.encode(header.codec, errors="replace")
