"""Reading deadlines (SLA): minutes from arrival at the county to a signed report.

One rule for every place that shows or counts a deadline (the worklist's countdown, the
turnaround dashboard's breaches): the priority's minutes, unless the settings override
them for one of the study's modalities (``RELAY_SLA_OVERRIDES``, e.g. a STAT ECG in 10
minutes rather than 30). A study of several modalities gets the shortest that applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from relay.config import CountySettings
from relay.dicom.vocab import Priority


_PRIORITIES = frozenset(p.value for p in Priority)


def _known(priority: str) -> str:
    return priority if priority in _PRIORITIES else Priority.ROUTINE.value


def split_modalities(modalities: str) -> list[str]:
    """A study's ``modalities`` column ('CT\\SR') as codes."""
    return [m for m in modalities.upper().split("\\") if m]


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """Minutes from arrival to a signed report per priority, with per-modality overrides
    keyed (modality, priority). An unknown priority is treated as routine."""

    stat: float = 30.0
    urgent: float = 120.0
    routine: float = 1440.0
    overrides: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: CountySettings) -> SlaPolicy:
        return cls(stat=settings.sla_stat_minutes, urgent=settings.sla_urgent_minutes,
                   routine=settings.sla_routine_minutes, overrides=settings.sla_override_minutes)

    def _base(self, priority: str) -> float:
        return {"stat": self.stat, "urgent": self.urgent}.get(priority, self.routine)

    def minutes(self, *, priority: str, modalities: str) -> float:
        """The study's SLA in minutes."""
        key = _known(priority)
        found = [self.overrides[(m, key)] for m in split_modalities(modalities) if (m, key) in self.overrides]
        return min(found) if found else self._base(key)

    def due(self, *, priority: str, modalities: str, arrived: datetime) -> datetime:
        """When the study's report is due."""
        return arrived + timedelta(minutes=self.minutes(priority=priority, modalities=modalities))

    def shortest(self, priority: str) -> float:
        """The fewest minutes any study of ``priority`` can have: a safe cutoff for a query
        that narrows candidates before ``due`` decides."""
        key = _known(priority)
        return min([self._base(key), *(m for (_mod, p), m in self.overrides.items() if p == key)])
