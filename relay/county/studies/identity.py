"""Which patient a study belongs to: the one place the patient key is made.

A patient is a Patient ID within the namespace of its issuer: the Issuer of Patient ID
when the instance names one, else the township that assigned the ID (``site:NAME``).
A study without a usable Patient ID (absent, blank, or not decodable with its Specific
Character Set) is nobody's but its own: its key is scoped to its Study Instance UID
(``study:UID``), so it is never merged with another study, never by name, and never
listed as another study's prior. Emergencies and unregistered patients come this way
from real modalities; an empty ID is "unknown", not a value everyone without one shares.
"""

from __future__ import annotations

from dataclasses import dataclass

SITE_SCOPE = "site:"
"""Issuer prefix of a Patient ID only unique within the township that assigned it."""
STUDY_SCOPE = "study:"
"""Issuer prefix of a study without a usable Patient ID: a patient of its own."""
SENT_SCOPE = "dicom:"
"""Prefix kept in front of a sent Issuer of Patient ID that happens to begin like one of
ours, so that no modality can name itself into another township's or study's patient."""
_RESERVED = (SITE_SCOPE, STUDY_SCOPE, SENT_SCOPE)

ID_LENGTH, ISSUER_LENGTH = 64, 128
"""Column widths of ``patients.patient_id`` and ``patients.issuer`` (LO is 64 characters)."""


@dataclass(frozen=True, slots=True)
class PatientKey:
    """The natural key of a ``patients`` row: (patient_id, issuer) as stored."""

    patient_id: str
    """The Patient ID as sent; "" when the study had no usable one."""
    issuer: str

    @property
    def identified(self) -> bool:
        """Whether a real Patient ID names this patient (else: one study's own)."""
        return is_identified(self.issuer)


def usable(value: str) -> str | None:
    """``value`` (a decoded LO) if it can identify anything, else None: blank, or
    decoded with replacement characters (the bytes did not fit the character set, so
    two different IDs may read the same), or carrying control characters LO forbids."""
    text = value.strip()
    if not text or "\ufffd" in text or any(ord(c) < 0x20 and c != "\x1b" for c in text):
        return None
    return text


def patient_key(*, patient_id: str, issuer_of_patient_id: str, site_name: str, study_uid: str) -> PatientKey:
    """The key of the patient a study's instance belongs to (see the module docstring).

    An issuer that is present but undecodable leaves the ID's namespace unknown: the
    study is then its own patient too, rather than guessed into the township's."""
    pid = usable(patient_id)
    issuer = usable(issuer_of_patient_id)
    if pid is None or len(pid) > ID_LENGTH or (issuer is None and issuer_of_patient_id.strip()):
        return PatientKey(patient_id="", issuer=f"{STUDY_SCOPE}{study_uid}")
    if issuer is None:
        return PatientKey(patient_id=pid, issuer=f"{SITE_SCOPE}{site_name}"[:ISSUER_LENGTH])
    if issuer.startswith(_RESERVED):
        issuer = SENT_SCOPE + issuer
    if len(issuer) > ISSUER_LENGTH:  # cut, two issuers could become one: not a key
        return PatientKey(patient_id="", issuer=f"{STUDY_SCOPE}{study_uid}")
    return PatientKey(patient_id=pid, issuer=issuer)


def is_identified(issuer: str) -> bool:
    """Whether a stored issuer belongs to a patient named by a Patient ID."""
    return not issuer.startswith(STUDY_SCOPE)


def shown_issuer(issuer: str) -> str:
    """The Issuer of Patient ID to show or send for a stored issuer: "" where the county
    made the scope up (a township's own IDs, a study without an ID)."""
    if issuer.startswith((SITE_SCOPE, STUDY_SCOPE)):
        return ""
    return issuer.removeprefix(SENT_SCOPE)


def normal_name(name: str) -> str:
    """A DICOM PN compared as a reader reads it: empty trailing components and groups
    dropped ("王^小明^^" is "王^小明")."""
    groups = [g.rstrip("^").strip() for g in name.split("=")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def names_differ(a: str, b: str) -> bool:
    """Whether two PN values name the patient differently (an empty one differs from none)."""
    na, nb = normal_name(a), normal_name(b)
    return bool(na and nb) and na != nb
