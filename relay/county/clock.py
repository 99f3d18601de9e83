"""The county's clock: aware UTC datetimes. A leaf, so every package can read the time
without importing another domain."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)
