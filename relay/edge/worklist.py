"""Modality Worklist (MWL) C-FIND SCP: the township's modalities ask the edge for their orders.

Answered from the edge's order cache (relay.edge.orders) only, so it works while the WAN
is down. A service of the edge's services AE (relay.edge.dimse_services). Matching as in
PS3.4 K.6 (single value with * and ? wildcards, date and time ranges, UID lists,
universal matching for empty keys); only scheduled orders are returned. The answer's
Specific Character Set is the one the query named (GB18030, GBK, ISO_IR 192), else
``edge_mwl_default_charset``. Keys the edge does not support are left out of the answer,
which then comes with Pending 0xFF01; a query that cannot be read is refused (0xA900 or
0xC000), logged with AE titles and tags only. The conformance statement is
docs/interfaces/mwl.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import evt
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from relay.dicom.orders import Order, OrderStatus
from relay.edge.dimse_services import EventHandler
from relay.edge.orders import OrderCache, local_date_time

log = logging.getLogger(__name__)

PENDING, PENDING_WARNING, CANCELLED = 0xFF00, 0xFF01, 0xFE00
IDENTIFIER_MISMATCH, UNABLE_TO_PROCESS = 0xA900, 0xC000
ANSWER_CHARSETS = ("GB18030", "GBK", "ISO_IR 192")
"""Character sets a query may ask its answer in (each encodes every Chinese name)."""
LO_MAX = 64
PRIORITY = {"stat": "STAT", "urgent": "HIGH", "routine": "ROUTINE"}
"""Requested Procedure Priority (0040,1003) of each relay.dicom.vocab.Priority."""


def person_name(order: Order) -> str:
    """PN of the patient: 'Wang^Xiaoming=王^小明' (alphabetic = ideographic) when the pinyin
    is known; else the Chinese name in the first group ('王^小明'), which GB18030 and UTF-8
    allow and which the modalities that show only the first group still show. A name
    the HIS already sent with '=' groups is answered as sent."""
    if "=" in order.patient_name or not order.patient_name_pinyin:
        return order.patient_name
    return f"{order.patient_name_pinyin}={order.patient_name}"


def _sps(order: Order, day: str, at: str) -> dict[str, Any]:
    return {
        "Modality": order.modality, "ScheduledStationAETitle": order.scheduled_station_ae,
        "ScheduledProcedureStepStartDate": day, "ScheduledProcedureStepStartTime": at,
        "ScheduledProcedureStepDescription": order.procedure_description[:LO_MAX],
        "ScheduledProcedureStepID": order.scheduled_step_id or order.accession_number,
        "ScheduledPerformingPhysicianName": "", "ScheduledProcedureStepStatus": "SCHEDULED",
        "ScheduledStationName": "", "ScheduledProcedureStepLocation": "",
    }


def _top(order: Order) -> dict[str, Any]:
    return {
        "AccessionNumber": order.accession_number, "ReferencedStudySequence": Sequence([]),
        "PatientName": person_name(order), "PatientID": order.patient_id,
        "IssuerOfPatientID": order.patient_id_issuer[:LO_MAX], "PatientBirthDate": order.patient_birth_date,
        "PatientSex": order.patient_sex, "PatientTelephoneNumbers": order.patient_phone[:16],
        "StudyInstanceUID": order.study_instance_uid,
        "RequestedProcedureDescription": order.procedure_description[:LO_MAX],
        "RequestedProcedureID": order.requested_procedure_id or order.accession_number,
        "RequestedProcedurePriority": PRIORITY.get(order.priority, "ROUTINE"),
        "ReferringPhysicianName": order.ordering_doctor, "RequestingPhysician": order.ordering_doctor,
        "RequestingService": order.ordering_department[:LO_MAX],
        "AdmittingDiagnosesDescription": order.clinical_diagnosis[:LO_MAX],
        "ReasonForTheRequestedProcedure": order.exam_purpose[:LO_MAX],
        "AdditionalPatientHistory": order.history_summary,
    }


TOP_KEYS = frozenset(_top(Order("", "", "", "", "", "", "")))
SPS_KEYS = frozenset(_sps(Order("", "", "", "", "", "", ""), "", ""))
SPS = "ScheduledProcedureStepSequence"
TOP_MATCHED = frozenset({"PatientName", "PatientID", "IssuerOfPatientID", "AccessionNumber", "PatientSex",
                         "RequestedProcedureID", "StudyInstanceUID"})
SPS_MATCHED = frozenset({"Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                         "ScheduledProcedureStepStartTime", "ScheduledProcedureStepStatus"})


class QueryError(Exception):
    """The query cannot be answered; ``status`` is the C-FIND failure to send."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def glob(pattern: str, value: str, *, fold: bool = False) -> bool:
    """PS3.4 C.2.2.2.4 wildcard matching: * any run, ? one character, else literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL if fold else re.DOTALL) is not None


def _in_range(query: str, value: str, width: int) -> bool:
    """Single value or range ('A-B', 'A-', '-B') of dates (width 8) or times (6), compared
    as digits; a single time matches the times it is a prefix of ('08' is 08:xx:xx)."""
    def digits(text: str) -> str:
        return text.split(".")[0].replace(":", "").strip()
    v = digits(value)
    if "-" not in query:
        return v.startswith(digits(query))
    low, _, high = (digits(part) for part in query.partition("-"))
    return (not low or v >= (low + "0" * width)[:width]) and (not high or v <= (high + "9" * width)[:width])


def name_matches(query: str, order: Order) -> bool:
    """PatientName: against the Chinese name, the pinyin and the answered PN (also without
    component carets); a query with '=' groups matches group by group."""
    chinese = order.patient_name.split("=")[1] if "=" in order.patient_name else order.patient_name
    pinyin = order.patient_name_pinyin or (order.patient_name.split("=")[0] if "=" in order.patient_name else "")
    if "=" in query:
        alpha, ideo = (query.split("=") + [""])[:2]
        return (not alpha or glob(alpha, pinyin, fold=True)) and (not ideo or glob(ideo, chinese, fold=True))
    candidates = {chinese, pinyin, person_name(order)}
    candidates |= {c.replace("^", "") for c in candidates} | {c.replace("^", " ").strip() for c in candidates}
    return any(glob(query, c, fold=True) for c in candidates if c)


def _text(element: DataElement) -> list[str]:
    value = element.value
    if value is None:
        return []
    if isinstance(value, Sequence):
        raise QueryError(f"{element.keyword or element.tag} is a sequence", IDENTIFIER_MISMATCH)
    values = list(value) if isinstance(value, MultiValue) else [value]
    return [str(v).strip() for v in values if str(v).strip()]


@dataclass
class Query:
    """A decoded MWL query: what to match, what to answer, what was not supported."""

    charset: str
    top: set[str] = field(default_factory=set)
    sps: set[str] | None = None
    """Keys asked inside the Scheduled Procedure Step Sequence (None: the sequence was not asked)."""
    match_top: dict[str, list[str]] = field(default_factory=dict)
    match_sps: dict[str, list[str]] = field(default_factory=dict)
    unsupported: list[str] = field(default_factory=list)
    """Tags or keywords the answer leaves out or does not match on (no values: no patient data)."""

    def _take(self, element: DataElement, known: frozenset[str], matched: frozenset[str],
              asked: set[str], criteria: dict[str, list[str]]) -> None:
        keyword, tag = element.keyword, element.tag
        if tag.element == 0 or keyword == "SpecificCharacterSet":
            return
        if keyword not in known:
            self.unsupported.append(keyword or str(tag))
            return
        asked.add(keyword)
        if element.VR == "SQ":
            return
        values = _text(element)
        if values and keyword in matched:
            criteria[keyword] = values
        elif values:
            self.unsupported.append(keyword)  # answered, but not matched on (universal)

    def matches(self, order: Order, zone: ZoneInfo, now: datetime) -> bool:
        if order.status != OrderStatus.SCHEDULED.value:
            return False
        day, at = local_date_time(order, zone, now)
        fields: dict[str, Callable[[str], bool]] = {
            "PatientName": lambda q: name_matches(q, order),
            "PatientID": lambda q: glob(q, order.patient_id),
            "IssuerOfPatientID": lambda q: glob(q, order.patient_id_issuer),
            "AccessionNumber": lambda q: glob(q, order.accession_number),
            "PatientSex": lambda q: glob(q, order.patient_sex),
            "RequestedProcedureID": lambda q: glob(q, order.requested_procedure_id or order.accession_number),
            "StudyInstanceUID": lambda q: q == order.study_instance_uid,
            "Modality": lambda q: glob(q, order.modality, fold=True),
            "ScheduledStationAETitle": lambda q: glob(q, order.scheduled_station_ae),
            "ScheduledProcedureStepStartDate": lambda q: _in_range(q, day, 8),
            "ScheduledProcedureStepStartTime": lambda q: not at or _in_range(q, at, 6),
            "ScheduledProcedureStepStatus": lambda q: glob(q, "SCHEDULED", fold=True),
        }
        criteria = {**self.match_top, **self.match_sps}
        return all(any(fields[key](q) for q in values) for key, values in criteria.items())

    def answer(self, order: Order, zone: ZoneInfo, now: datetime) -> Dataset:
        """The identifier of one match: the asked keys only, in the query's character set."""
        ds = Dataset()
        ds.SpecificCharacterSet = self.charset
        for key, value in _top(order).items():
            if key in self.top:
                setattr(ds, key, value)
        if self.sps is not None:
            day, at = local_date_time(order, zone, now)
            item = Dataset()
            for key, value in _sps(order, day, at).items():
                if key in self.sps:
                    setattr(item, key, value)
            ds.ScheduledProcedureStepSequence = Sequence([item])
        return ds


def answer_charset(asked: list[str], default: str) -> str:
    for charset in ANSWER_CHARSETS:
        if charset in asked:
            return charset
    return default


def parse_query(identifier: Dataset, *, default_charset: str) -> Query:
    """Read the query's keys (names decoded in its own character set, or the default one
    when it names none). QueryError for a query the SOP class cannot have."""
    asked = identifier.get("SpecificCharacterSet")
    asked_list = [] if asked is None else [str(v) for v in (asked if isinstance(asked, MultiValue) else [asked])]
    if not any(asked_list):  # decode its names as the answer will be encoded (raw elements convert lazily)
        implicit, little = identifier.original_encoding
        identifier.set_original_encoding(implicit, little, convert_encodings(default_charset))
    query = Query(charset=answer_charset(asked_list, default_charset))
    for element in identifier:
        if element.keyword == SPS:
            query.sps = set()
            items = element.value if isinstance(element.value, Sequence) else None
            if items is None or len(items) > 1:
                raise QueryError("ScheduledProcedureStepSequence is not a sequence of at most one item",
                                 IDENTIFIER_MISMATCH)
            if len(items) == 0:
                query.sps = set(SPS_KEYS)
            for inner in items[0] if items else []:
                query._take(inner, SPS_KEYS, SPS_MATCHED, query.sps, query.match_sps)
            continue
        query._take(element, TOP_KEYS, TOP_MATCHED, query.top, query.match_top)
    return query


class WorklistService:
    """The MWL C-FIND SCP over an order cache (a relay.edge.dimse_services service)."""

    def __init__(self, cache: OrderCache, *, timezone: str, default_charset: str = "GB18030") -> None:
        self.cache = cache
        self.zone = ZoneInfo(timezone)
        self.default_charset = default_charset

    def contexts(self) -> list[PresentationContext]:
        return [build_context(ModalityWorklistInformationFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]

    def handlers(self) -> list[EventHandler]:
        return [(evt.EVT_C_FIND, self.handle_find)]

    def handle_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        """pynetdicom's EVT_C_FIND handler: yields (status, identifier); never raises."""
        started = time.perf_counter()
        calling, peer = str(event.assoc.requestor.ae_title).strip(), str(event.assoc.requestor.address)
        try:
            query = parse_query(event.identifier, default_charset=self.default_charset)
            now = datetime.now(self.zone)
            found = [c.order for c in self.cache.orders() if query.matches(c.order, self.zone, now)]
            answers = [query.answer(order, self.zone, now) for order in found]
        except QueryError as exc:
            log.warning("MWL C-FIND from ae=%s peer=%s refused 0x%04X: %s", calling, peer, exc.status, exc)
            yield exc.status, None
            return
        except Exception as exc:  # an undecodable identifier, or a fault of ours: no trace of the data
            log.warning("MWL C-FIND from ae=%s peer=%s failed 0x%04X: %s", calling, peer, UNABLE_TO_PROCESS,
                        type(exc).__name__)
            yield UNABLE_TO_PROCESS, None
            return
        status = PENDING_WARNING if query.unsupported else PENDING
        log.info("MWL C-FIND from ae=%s peer=%s matches=%d charset=%s unsupported=%s ms=%.1f", calling, peer,
                 len(answers), query.charset, ",".join(sorted(set(query.unsupported))) or "-",
                 (time.perf_counter() - started) * 1000)
        for answer in answers:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield status, answer
