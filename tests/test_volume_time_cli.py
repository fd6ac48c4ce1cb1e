"""The time-travel CLI's argument parsing (pure): LSNs, times and durations, and refusals with sentences."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from sixfold.tools.volume_time_cli import branched_from, lsn_or_time, parse_duration, parse_time_us, window

pytestmark = pytest.mark.unit


def test_times_are_iso_8601_in_utc_unless_offset_now_or_ago() -> None:
    noon = int(datetime(2026, 12, 5, 12, 0, tzinfo=UTC).timestamp() * 1_000_000)
    assert parse_time_us("2026-12-05 12:00:00") == noon
    assert parse_time_us("2026-12-05T12:00:00Z") == noon
    assert parse_time_us("2026-12-05T13:00:00+01:00") == noon
    assert parse_time_us("now", now=100.0) == 100_000_000
    assert parse_time_us("-5m", now=1000.0) == 700_000_000
    for bad in ("yesterday", "2026-13-01", "-5y", "1969-01-01"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_time_us(bad)


def test_an_lsn_or_a_time_and_durations() -> None:
    assert lsn_or_time("200345") == (200345, 0)
    assert lsn_or_time("200_345") == (200345, 0)
    lsn, when = lsn_or_time("2026-12-05 12:00:00")
    assert lsn == 0 and when > 0
    with pytest.raises(argparse.ArgumentTypeError):
        lsn_or_time("0")
    assert parse_duration("24h") == 86400 and parse_duration("90") == 90 and parse_duration("1.5m") == 90
    assert window("7d") == 7 * 86400
    for bad in ("0s", "400d", "soon"):
        with pytest.raises(argparse.ArgumentTypeError):
            window(bad)


def test_volume_status_says_what_a_volume_branched_from() -> None:
    assert branched_from("c1", "vol0", 120) == "clone of vol0 at LSN 120; pages it never wrote are read from vol0 there"
    assert branched_from("r1", "@nightly", 90).startswith("restored from snapshot nightly (LSN 90)")
    assert branched_from("vol0", "vol0~3", 77).startswith("backtracked: shows its earlier timeline up to LSN 77")
    assert branched_from("vol0x", "vol0~3", 77).startswith("clone of vol0~3")  # another volume's name
