"""What a reader reads: modalities and body regions. Automatic assignment and claim-next
both hand a reader only studies that fit.

A study fits when one of its modalities is the reader's and, if its series name a body
part (BodyPartExamined), one of those regions is the reader's. An empty competence on
either axis means any; a study that names no modality or no body part is judged on the
other axis alone (an ECG carries no body part: its modality decides).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from relay.county.db.models import User
from relay.dicom import body_parts


@dataclass(frozen=True, slots=True)
class Competence:
    modalities: frozenset[str] = frozenset()
    """Upper-case modality codes (CT, DX, ECG…); empty: any."""
    regions: frozenset[str] = frozenset()
    """Normalised body regions (see relay.dicom.body_parts); empty: any."""

    @classmethod
    def of(cls, user: User) -> Competence:
        return cls(parse_modalities(user.competences), body_parts.parse_list(user.body_regions))

    def reads(self, *, modalities: str, regions: Collection[str]) -> bool:
        """Whether a study with these modalities (backslash-separated, as indexed) and these
        normalised body regions of its series fits."""
        wanted = {m for m in modalities.split("\\") if m}
        by_modality = not self.modalities or not wanted or bool(wanted & self.modalities)
        by_region = not self.regions or not regions or bool(self.regions.intersection(regions))
        return by_modality and by_region


def parse_modalities(text: str) -> frozenset[str]:
    return frozenset(m.strip().upper() for m in text.split(",") if m.strip())
