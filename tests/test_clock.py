"""The one clock: one format, UTC, round trip."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pneumoview.clock import format_utc, parse_utc, utc_now


def test_one_format_that_sorts_and_parses_back() -> None:
    now = utc_now()
    assert now.endswith("Z") and len(now) == len("2026-12-01T21:55:00.123456Z")
    assert abs(parse_utc(now) - datetime.now(timezone.utc)) < timedelta(seconds=5)
    paris = datetime(2026, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_utc(paris) == "2026-01-01T00:00:00.000000Z"
    assert format_utc(paris) < utc_now()
    assert parse_utc("2026-11-27T20:00:00+00:00") == datetime(2026, 11, 27, 20, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        format_utc(datetime(2026, 1, 1))  # naive: zone unknown
