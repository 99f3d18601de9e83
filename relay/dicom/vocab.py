"""Closed vocabularies shared by the edge and the county."""

from __future__ import annotations

import enum


class Priority(enum.StrEnum):
    """How urgently a study must be read. Ordered: STAT is read first."""

    STAT = "stat"
    """Emergency (危急/急诊): read within minutes; overtakes everything."""
    URGENT = "urgent"
    """Urgent (加急): read within hours."""
    ROUTINE = "routine"
    """Routine (常规): read within a day."""

    @property
    def rank(self) -> int:
        """Sort key: lower is more urgent."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_dimse(cls, value: int | None) -> "Priority":
        """Map the C-STORE Priority field (PS3.7 9.3.1.1) to a reading priority.

        HIGH (0x0001) is STAT; MEDIUM (0x0000, the default) and LOW (0x0002) are routine.
        """
        return cls.STAT if value == 0x0001 else cls.ROUTINE


_PRIORITY_RANK = {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}


class StudyState(enum.StrEnum):
    """Where a study is on its way from the modality to the signed report."""

    RECEIVING = "receiving"
    """The edge has instances and the study is not yet quiet."""
    FORWARDING = "forwarding"
    """The edge is sending the study to the county."""
    ARRIVED = "arrived"
    """The county holds the instances the edge announced."""
    QUEUED = "queued"
    """On the reading queue, not yet given to a reader."""
    ASSIGNED = "assigned"
    """Given to a reader who has not opened it yet."""
    READING = "reading"
    """Opened by the reader."""
    SIGNED = "signed"
    """The report is signed."""
    DELIVERED = "delivered"
    """The report is at the township edge."""
    ACKNOWLEDGED = "acknowledged"
    """The technician saw or printed the report."""


class IngestOutcome(enum.StrEnum):
    """What the county did with one uploaded instance."""

    STORED = "stored"
    """New instance: object written, index row committed."""
    DUPLICATE = "duplicate"
    """Same SOP Instance UID with the same bytes as before: nothing changed."""
    QUARANTINED = "quarantined"
    """Same SOP Instance UID with different bytes: kept aside for the administrator."""


class Role(enum.StrEnum):
    """What a login may do."""

    ADMIN = "admin"
    """Administrator of the county medical community (医共体管理员)."""
    RADIOLOGIST = "radiologist"
    """County radiologist or ECG reader (诊断医师)."""
    TECHNICIAN = "technician"
    """Township technician (技师), bound to one site."""


class ReportStatus(enum.StrEnum):
    """Where one report revision is: still edited, or signed and fixed."""

    DRAFT = "draft"
    """Being written by its reader; nobody else sees it, it can still change."""
    SIGNED = "signed"
    """Signed by its reader: fixed, delivered to the township, corrected only by an addendum."""


class ReportKind(enum.StrEnum):
    """What a report revision is to the study; it travels in the signed document."""

    REPORT = "report"
    """The study's first report."""
    ADDENDUM = "addendum"
    """A later revision (补充报告) that corrects or completes a signed report."""


class BundleState(enum.StrEnum):
    """Where an upload bundle is at the county (``relay.dicom.wire``, steps 1 to 3)."""

    OPEN = "open"
    """Opened by the edge; the county holds some of its bytes and takes more chunks."""
    COMPLETE = "complete"
    """Every byte held and every instance ingested; the results are final."""
