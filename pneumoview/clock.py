"""The one clock: every timestamp PneumoView records is ISO 8601 UTC with a ``Z``, to the microsecond.

``2026-12-01T21:55:00.123456Z`` sorts as text in time order (SQLite ``ORDER BY``, file names)
and is read back by :func:`parse_utc`.
"""

from __future__ import annotations

from datetime import datetime, timezone

FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> str:
    """Now, as ISO 8601 UTC with a ``Z``, to the microsecond."""
    return format_utc(datetime.now(timezone.utc))


def format_utc(moment: datetime) -> str:
    """A timezone-aware ``datetime`` in :data:`FORMAT`; a naive one is refused (its zone is unknown)."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return moment.astimezone(timezone.utc).strftime(FORMAT)


def parse_utc(text: str) -> datetime:
    """ISO 8601 text (``Z`` or an offset; older records without microseconds too) -> aware UTC datetime."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return moment.astimezone(timezone.utc)
