"""Body regions as BodyPartExamined (0018,0015) names them, in one normal form.

Devices write the Defined Terms of PS3.16 Annex L (CHEST, HEAD, ABDOMEN, LSPINE…) but
not always in upper case, and some write a synonym (BRAIN, THORAX) or, at townships,
the Chinese name (胸部). Readers' region competences and report templates compare
normal forms, so a reader who reads HEAD is given a BRAIN series and a chest CT is
offered 胸部CT平扫. The synonym table is deliberately short: a value it does not know
is compared as written (upper-cased).
"""

from __future__ import annotations

from collections.abc import Iterable

SYNONYMS: dict[str, str] = {
    "BRAIN": "HEAD", "SKULL": "HEAD", "头颅": "HEAD", "颅脑": "HEAD", "头部": "HEAD",
    "THORAX": "CHEST", "LUNG": "CHEST", "胸部": "CHEST",
    "腹部": "ABDOMEN", "上腹部": "ABDOMEN",
    "C-SPINE": "CSPINE", "颈椎": "CSPINE",
    "L-SPINE": "LSPINE", "腰椎": "LSPINE",
    "膝关节": "KNEE",
}
"""Spelling (upper-cased) -> the Defined Term it means."""


def normalise(value: str) -> str:
    """The region a BodyPartExamined value (or an administrator's entry) means; "" for none."""
    spelled = value.strip().upper()
    return SYNONYMS.get(spelled, spelled)


def region_set(values: Iterable[str]) -> frozenset[str]:
    """The distinct regions of some values, blanks dropped."""
    return frozenset(r for r in (normalise(v) for v in values) if r)


def parse_list(text: str) -> frozenset[str]:
    """Regions from a comma-separated entry such as "head, neck"."""
    return region_set(text.split(","))


def spellings(regions: Iterable[str]) -> frozenset[str]:
    """Every upper-cased value that means one of ``regions``: what a query matches
    ``upper(trim(body_part))`` against."""
    wanted = frozenset(regions)
    return wanted | {spelled for spelled, region in SYNONYMS.items() if region in wanted}


def canonical_list(text: str) -> str:
    """An entry as stored: normalised, in the order given, each region once ("brain, Neck" -> "HEAD,NECK")."""
    return ",".join(dict.fromkeys(r for r in (normalise(v) for v in text.split(",")) if r))
