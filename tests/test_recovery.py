"""Recovery arithmetic (compute/recovery.py): the volume chain walk, truncation and where allocation resumes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.compute.recovery import PgRecovered, SegmentReport, plan_recovery
from sixfold.storage.records import LogRecord, PayloadKind
from sixfold.storage.segment import TruncationRange
from tests.depth import examples

pytestmark = pytest.mark.unit


def rec(lsn: int, prev: int, cpl: bool = False, epoch: int = 1) -> LogRecord:
    return LogRecord(lsn, lsn, PayloadKind.PATCH, 0, b"x", prev, prev, 0, epoch, cpl)


def report(scl: int, hint: int = 0, highest: int = 0, ranges: tuple[TruncationRange, ...] = ()) -> SegmentReport:
    return SegmentReport("s", scl, max(highest, scl), 1, hint, ranges)


def test_walk_stops_at_a_hole_and_vdl_is_the_last_cpl() -> None:
    # PG 0 holds 1, 3, 5(cpl), 7; PG 1 holds 2, 4(cpl) and its best segment is complete only to 4.
    pg0 = PgRecovered("a1", 7, [rec(1, 0), rec(3, 2), rec(5, 4, cpl=True), rec(7, 6)])
    pg1 = PgRecovered("b1", 4, [rec(2, 1), rec(4, 3, cpl=True), rec(6, 5, cpl=True)])
    plan = plan_recovery([report(7), report(4)], {0: pg0, 1: pg1}, epoch=2, lal=100)
    assert (plan.vcl, plan.vdl) == (5, 5)  # 6 is above PG 1's SCL: the chain stops at 5
    assert [r.lsn for r, _ in plan.readopt] == [1, 2, 3, 4, 5]
    assert plan.truncation == TruncationRange(6, 105, 2)
    assert plan.next_lsn == 106


def test_the_walk_starts_at_the_highest_vdl_hint() -> None:
    pg0 = PgRecovered("a1", 12, [rec(11, 10), rec(12, 11, cpl=True)])
    plan = plan_recovery([report(12, hint=10)], {0: pg0}, epoch=3, lal=50)
    assert (plan.floor, plan.vdl) == (10, 12)
    assert [r.lsn for r, _ in plan.readopt] == [11, 12]


def test_truncated_records_do_not_continue_the_chain() -> None:
    old = TruncationRange(3, 100, 2)
    pg0 = PgRecovered("a1", 200, [rec(1, 0, cpl=True), rec(3, 1, cpl=True), rec(101, 1, epoch=2, cpl=True)])
    plan = plan_recovery([report(200, ranges=(old,))], {0: pg0}, epoch=3, lal=100)
    assert plan.vdl == 101  # 3 (epoch 1) is void under [3, 100]@2; the epoch-2 record 101 follows 1
    assert old in plan.known_truncations


def test_an_earlier_writer_whose_window_started_above_vdl_is_truncated_whole() -> None:
    """A writer that opened at floor 500 (its range ended there) may allocate up to 500 + LAL even while
    VDL is still 0: the next writer must truncate and allocate above that, not above VDL + LAL.
    (The simulator found this: two writers allocated the same LSN.)"""
    opened = TruncationRange(1, 500, 1)
    pg0 = PgRecovered("a1", 0, [])
    plan = plan_recovery([report(0, ranges=(opened,))], {0: pg0}, epoch=2, lal=500)
    assert plan.vdl == 0
    assert plan.truncation == TruncationRange(1, 1000, 2)
    assert plan.next_lsn == 1001


def test_a_timeline_whose_lsns_start_at_a_floor_far_above_vdl_is_truncated_up_to_the_floor() -> None:
    """A backtrack's new timeline branches at 500 with an LSN floor of 5,000 (every segment reports it as its
    highest LSN). Its first writer allocates above the floor; its range must reach the floor, or the next
    writer's range (LAL past the first one's) would not cover the first one's window: both would allocate the
    same LSNs. (The simulator found this with time travel on.)"""
    floor_reports = [report(500, hint=500, highest=5_000)]
    first = plan_recovery(floor_reports, {0: PgRecovered("a1", 500, [])}, epoch=2, lal=100)
    assert first.truncation == TruncationRange(501, 5_000, 2) and first.next_lsn == 5_001
    second = plan_recovery(
        [report(500, hint=500, highest=5_000, ranges=(first.truncation,))], {0: PgRecovered("a1", 500, [])}, 3, 100
    )
    assert second.truncation == TruncationRange(501, 5_100, 3)  # the first writer's whole window, 5,001-5,100
    assert second.next_lsn == 5_101


@settings(max_examples=examples(300), deadline=None)
@given(
    vdl=st.integers(0, 10_000),
    ends=st.lists(st.integers(1, 20_000), max_size=3),
    highest=st.lists(st.integers(0, 30_000), min_size=1, max_size=3),
    lal=st.integers(1, 1_000),
    used=st.integers(0, 1_000),
    seen=st.booleans(),
)
def test_the_next_recovery_covers_every_lsn_the_last_writer_could_allocate(
    vdl: int, ends: list[int], highest: list[int], lal: int, used: int, seen: bool
) -> None:
    """Oracle: writer 1 recovers from any reports, then allocates any prefix of its window (at most LAL LSNs
    from where it starts, compute.volume_log rule 1); writer 2 recovers with VDL unchanged, whether or not its
    read quorum saw writer 1's records. Every LSN writer 1 could have taken is in writer 2's range, and writer
    2 allocates above them all."""
    ranges = tuple(TruncationRange(vdl + 1, max(vdl + 1, e), 1) for e in ends)
    reports = [report(vdl, hint=vdl, highest=h, ranges=ranges) for h in highest]
    first = plan_recovery(reports, {0: PgRecovered("a1", vdl, [])}, epoch=2, lal=lal)
    window = range(first.next_lsn, first.next_lsn + lal)  # the LSNs writer 1 may allocate
    top_written = first.next_lsn - 1 + min(used, lal)
    after = [
        report(vdl, hint=vdl, highest=max(h, top_written if seen else 0), ranges=(*ranges, first.truncation))
        for h in highest
    ]
    second = plan_recovery(after, {0: PgRecovered("a1", vdl, [])}, epoch=3, lal=lal)
    assert second.truncation.start_lsn == vdl + 1
    assert second.truncation.end_lsn >= window[-1], (first, second)
    assert second.next_lsn > window[-1]
