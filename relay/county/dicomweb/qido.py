"""QIDO-RS query parameters (PS3.18 8.3.4): matching keys per level, includefield, paging.

A matching key may be sent as its keyword (``PatientID``) or its tag (``00100020``).
Each level answers the keys the county index holds (PS3.18 10.6.1.2.3 lists the
required ones): studies by StudyInstanceUID, PatientName, PatientID, AccessionNumber,
StudyDate and StudyTime (ranges), ModalitiesInStudy; series by Modality,
SeriesInstanceUID, SeriesNumber; instances by SOPClassUID, SOPInstanceUID,
InstanceNumber (and, under a study, the series keys). A DICOM attribute the index
cannot match (StudyID, ReferringPhysicianName, PerformedProcedureStepStartDate are
not stored) is ignored and named in a ``Warning: 299`` header, so a client can tell
that its filter was not applied. StudyDate and StudyTime are matched each on its own,
not as one combined date-time range.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from starlette.datastructures import QueryParams

from relay.county.errors import BadRequest

STUDY_KEYS = frozenset({"StudyInstanceUID", "PatientName", "PatientID", "AccessionNumber", "StudyDate",
                        "StudyTime", "ModalitiesInStudy"})
SERIES_KEYS = frozenset({"Modality", "SeriesInstanceUID", "SeriesNumber"})
INSTANCE_KEYS = frozenset({"SOPClassUID", "SOPInstanceUID", "InstanceNumber"})
IN_PATH = frozenset({"StudyInstanceUID"})
"""Keys a study-scoped search (…/studies/{uid}/series) answers from its path: see
:func:`names_other_study`."""
ALL = "all"
"""includefield=all: every optional attribute of the level the index holds."""

_CONTROL = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_TIME = re.compile(r"\d{2,6}(\.\d{1,6})?")
_DATE = re.compile(r"\d{8}")


def keyword_of(name: str) -> str | None:
    """The DICOM keyword a parameter names, by keyword or by 8-hex-digit tag; None if none."""
    if _HEX_TAG.fullmatch(name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


@dataclass(frozen=True, slots=True)
class Query:
    """The parameters of one QIDO-RS request, sorted by what the level can do with them."""

    values: dict[str, str]
    """Matching keys this level answers, by keyword (empty values dropped: universal match)."""
    ignored: tuple[str, ...]
    """Attributes sent as matching keys that the index cannot match (reported, not applied)."""
    includes: frozenset[str]
    """Keywords asked for with includefield (``ALL`` among them for all)."""
    fuzzy: bool

    def get(self, keyword: str) -> str | None:
        return self.values.get(keyword)

    def warning(self) -> dict[str, str]:
        """A ``Warning`` header naming what was not applied, or no header."""
        notes = [f"{k} is not a supported matching key and was ignored" for k in self.ignored]
        if self.fuzzy:
            notes.append("fuzzymatching is not supported; literal matching was performed")
        return {"Warning": ", ".join(f'299 relay "{n}"' for n in notes)} if notes else {}


def parse(params: QueryParams, keys: frozenset[str]) -> Query:
    """Sort ``params`` into the matching keys in ``keys``, ignored attributes and includes."""
    values: dict[str, str] = {}
    ignored: list[str] = []
    for name, value in params.multi_items():
        if name in _CONTROL:
            continue
        keyword = keyword_of(name)
        if keyword is None:
            continue  # not a DICOM attribute (a cache-buster, say): not a matching key either
        if keyword not in keys:
            ignored += [keyword] if value and keyword not in ignored else []
        elif value:
            values[keyword] = value
    fuzzy = params.get("fuzzymatching", "").lower() == "true"
    return Query(values=values, ignored=tuple(ignored), includes=_includes(params.getlist("includefield")),
                 fuzzy=fuzzy)


def _includes(raw: Iterable[str]) -> frozenset[str]:
    """includefield values (repeated or comma-separated) as keywords; 400 for a name that is
    neither ``all`` nor a DICOM keyword or tag (PS3.18 8.3.4.3)."""
    found: set[str] = set()
    for name in (part.strip() for value in raw for part in value.split(",")):
        if not name:
            continue
        keyword = ALL if name.lower() == ALL else keyword_of(name)
        if keyword is None:
            raise BadRequest(f"includefield {name!r} is not a DICOM attribute")
        found.add(keyword)
    return frozenset(found)


def names_other_study(q: Query, study_uid: str) -> bool:
    """Whether the request's StudyInstanceUID key rules out the study its path names (then
    nothing matches)."""
    uids = uid_list(q.get("StudyInstanceUID"))
    return bool(uids) and study_uid not in uids


def uid_list(value: str | None) -> list[str]:
    """List of UID matching: UIDs separated by commas or backslashes."""
    return [u for u in (value or "").replace("\\", ",").split(",") if u]


def integer(keyword: str, value: str | None) -> int | None:
    """An IS matching key (single value matching)."""
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise BadRequest(f"{keyword} must be an integer") from None


def date_range(value: str | None, keyword: str = "StudyDate") -> tuple[str | None, str | None] | None:
    """A DA value or range (``lo-hi``, ``lo-``, ``-hi``) as inclusive bounds; 400 for anything
    else (``2026-11-01`` would otherwise read as the range 2026 to 11)."""
    if not value:
        return None
    lo, sep, hi = value.strip().partition("-")
    for part in (lo, hi):
        if part and not _is_date(part):
            raise BadRequest(f"{keyword} must be YYYYMMDD or a range YYYYMMDD-YYYYMMDD (one side may be "
                             f"empty); got {value!r}")
    if not (lo or hi) or (lo and hi and lo > hi):
        raise BadRequest(f"{keyword} {value!r} is not a range from an earlier to a later date")
    return (lo or None, (hi or None) if sep else lo or None)


def _is_date(part: str) -> bool:
    if not _DATE.fullmatch(part):
        return False
    try:
        date(int(part[:4]), int(part[4:6]), int(part[6:]))
    except ValueError:
        return False
    return True


def time_range(value: str | None) -> tuple[str | None, str | None] | None:
    """A TM value or range as bounds that compare as strings against stored ``HHMMSS.FFFFFF``:
    the upper bound is padded with 9s, so ``-1200`` includes 12:00:59.9 and a single value
    ``0800`` matches any time within 08:00."""
    if not value:
        return None
    lo, sep, hi = (part.replace(":", "") for part in value.partition("-"))
    for part in (lo, hi):
        if part and not _TIME.fullmatch(part):
            raise BadRequest("StudyTime must be HHMMSS[.FFFFFF] or a range of them")
    upper = hi if sep else lo
    return (lo or None, _time_ceiling(upper) if upper else None)


def _time_ceiling(value: str) -> str:
    whole, _, fraction = value.partition(".")
    return whole.ljust(6, "9") + "." + fraction.ljust(6, "9")
