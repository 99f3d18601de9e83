"""The edge's clock: the current UTC time and the journal's timestamp format.

One module both the spool and the study tracker (``completeness``) read, so neither
imports the other for it. Named as the county's clock is (``now_utc``).
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO 8601, so that string order is time order in SQL."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
