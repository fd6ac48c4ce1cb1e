"""The pure rules behind issue 10's defences: epochs and their bounds, checked segment metadata, the
lost-copy watch, the rebuild target, and recovery's checked arithmetic. Hypothesis against brute force
where there is maths."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.compute.recovery import NewerRecovery, PgRecovered, SegmentReport, next_epoch, plan_recovery
from sixfold.storage.copies import CopyWatch, HeldCopy, NodeReport
from sixfold.storage.epochs import EPOCH_MAX
from sixfold.storage.errors import ChecksumMismatch, InvalidRequest, VolumeFull
from sixfold.storage.records import LSN_MAX, LSN_STEP_MAX, make_record, validate_shape
from sixfold.storage.repair import REBUILD_PEERS_MIN, PeerView, rebuild_target
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.segment_load import merge_copies
from sixfold.storage.truncation import TRUNCATION_SPAN_MAX, TruncationRange
from tests.depth import examples

pytestmark = pytest.mark.unit


def meta(**changes: object) -> SegmentMeta:
    m = SegmentMeta("vol/pg-00000", "vol", 0, 0, 64, 4096, membership_epoch=1, seg_no=3)
    for k, v in changes.items():
        setattr(m, k, v)
    return m


# -- LSN bounds and checked arithmetic -------------------------------------------------------------------


def test_records_near_the_top_of_the_lsn_space_or_far_past_their_predecessor_are_refused() -> None:
    for lsn, prev in ((LSN_MAX + 1, LSN_MAX), (2**64 - 2, 2**64 - 3), (LSN_STEP_MAX + 2, 1)):
        record = make_record(lsn, 0, b"x", prev_volume_lsn=prev, prev_pg_lsn=prev, epoch=1)
        with pytest.raises(InvalidRequest):
            validate_shape(record, 4096)
    validate_shape(make_record(LSN_STEP_MAX + 1, 0, b"x", prev_volume_lsn=1, prev_pg_lsn=1), 4096)


def test_truncation_ranges_out_of_bounds_are_refused() -> None:
    for r in (
        TruncationRange(1, 2**64 - 2, 2),
        TruncationRange(5, 5 + TRUNCATION_SPAN_MAX, 2),
        TruncationRange(5, 6, EPOCH_MAX + 1),
        TruncationRange(5, 6, 0),
    ):
        with pytest.raises(InvalidRequest):
            r.validate()


def report(epoch: int = 1, highest: int = 0, ranges: tuple[TruncationRange, ...] = ()) -> SegmentReport:
    return SegmentReport(
        "s", scl=highest, highest_lsn=highest, volume_epoch=epoch, vdl_hint=0, truncation_ranges=ranges
    )


def test_recovery_arithmetic_stays_inside_the_lsn_and_epoch_space() -> None:
    near_top = TruncationRange(LSN_MAX - 10, LSN_MAX - 1, 3)
    with pytest.raises(VolumeFull, match="used up its LSNs"):
        plan_recovery([report(3, 0, (near_top,))], {0: PgRecovered("s", 0)}, epoch=4, lal=500)
    plan = plan_recovery(
        [report(3, 0, (TruncationRange(100, LSN_MAX - 1000, 3),))], {0: PgRecovered("s", 0)}, epoch=4, lal=500
    )
    assert plan.truncation.end_lsn <= LSN_MAX and plan.next_lsn == plan.truncation.end_lsn + 1
    with pytest.raises(VolumeFull, match="used up its epochs"):
        next_epoch([report(EPOCH_MAX)])
    assert next_epoch([report(4)], refused=9) == 10


def test_a_recovery_older_than_a_truncation_it_reads_starts_again() -> None:
    with pytest.raises(NewerRecovery):
        plan_recovery([report(5, 0, (TruncationRange(10, 20, 6),))], {0: PgRecovered("s", 0)}, epoch=6, lal=500)


# -- segment metadata --------------------------------------------------------------------------------------


metas = st.builds(
    meta,
    scl=st.integers(0, LSN_MAX),
    highest_lsn=st.integers(0, LSN_MAX),
    volume_epoch=st.integers(0, EPOCH_MAX),
    vdl_hint=st.integers(0, LSN_MAX),
    rebuilding=st.booleans(),
    truncation_ranges=st.lists(
        st.builds(
            lambda s, n, e: TruncationRange(s, s + n, e),
            st.integers(1, 10**9),
            st.integers(0, 10**6),
            st.integers(1, 99),
        ),
        max_size=4,
    ),
    peers=st.lists(st.lists(st.text("abc123", min_size=1, max_size=4), min_size=2, max_size=2), max_size=5),
)


@settings(max_examples=examples(60))
@given(metas, st.data())
def test_metadata_round_trips_and_any_flipped_byte_is_caught(m: SegmentMeta, data: st.DataObject) -> None:
    raw = m.to_bytes()
    assert SegmentMeta.from_bytes(raw) == m
    index = data.draw(st.integers(0, len(raw) - 1))
    mask = data.draw(st.integers(1, 255))
    rotten = bytearray(raw)
    rotten[index] ^= mask
    with pytest.raises(ChecksumMismatch):
        SegmentMeta.from_bytes(bytes(rotten))


def test_metadata_that_checks_but_breaks_a_bound_is_not_trusted() -> None:
    for bad in (
        meta(scl=LSN_MAX + 1),
        meta(volume_epoch=EPOCH_MAX + 1),
        meta(chain_anchor_lsn=5),
        meta(seg_no=0),
        meta(page_size=1000),
    ):
        with pytest.raises(ChecksumMismatch, match="does not make sense"):
            SegmentMeta.from_bytes(bad.to_bytes())


def test_two_copies_that_differ_merge_the_safe_way() -> None:
    a = meta(
        scl=50,
        volume_epoch=4,
        truncation_ranges=[TruncationRange(10, 20, 3)],
        chain_anchor_lsn=5,
        retention_horizon_lsn=5,
        scl_high_water=50,
        vdl_hint=40,
        pinned_lsns=[7],
    )
    b = meta(
        scl=90,
        volume_epoch=6,
        volume_epoch_owner="w6",
        truncation_ranges=[TruncationRange(30, 40, 5)],
        chain_anchor_lsn=3,
        retention_horizon_lsn=8,
        scl_high_water=90,
        vdl_hint=60,
        pinned_lsns=[9],
    )
    m = merge_copies(a, b)
    assert m is not None
    assert (m.volume_epoch, m.volume_epoch_owner) == (6, "w6")
    assert set(m.truncation_ranges) == {TruncationRange(10, 20, 3), TruncationRange(30, 40, 5)}
    assert (m.chain_anchor_lsn, m.retention_horizon_lsn, m.vdl_hint, m.scl_high_water) == (3, 8, 40, 90)
    assert m.pinned_lsns == [7, 9] and m.scl == 50
    assert merge_copies(a, meta(seg_no=4)) is None  # not the same rows: neither is trusted


# -- lost copies (control plane) ------------------------------------------------------------------------------


def test_a_copy_missing_from_enough_reports_for_long_enough_is_due_and_a_report_listing_it_ends_that() -> None:
    watch = CopyWatch(grace_ms=1000, reports_min=3)
    placed = {"v/pg-00000", "v/pg-00001"}
    held = NodeReport({"v/pg-00001": HeldCopy("v/pg-00001")})
    watch.note_report("a1", held, placed, 0)
    watch.note_report("a1", held, placed, 500)
    assert watch.due(2000) == []  # two reports only
    watch.note_report("a1", held, placed, 900)
    assert watch.due(900) == [] and watch.due(1000) == [("a1", "v/pg-00000")]
    assert watch.of("a1", placed, 900).missing == () and not watch.of("a1", placed, 900).degraded
    assert watch.of("a1", placed, 1000).missing == ("v/pg-00000",) and watch.of("a1", placed, 1000).degraded
    watch.note_report("a1", NodeReport({s: HeldCopy(s, whole=False) for s in placed}), placed, 1100)
    assert watch.due(5000) == []
    copies = watch.of("a1", placed, 5000)
    assert copies.missing == () and copies.rebuilding == ("v/pg-00000", "v/pg-00001") and copies.degraded
    watch.note_report("a1", NodeReport({}, disk="disk_full", disk_detail="full"), set(), 1200)
    assert watch.of("a1", set(), 1300).degraded and watch.due(10_000) == []  # nothing placed: nothing missing


# -- the rebuild target ---------------------------------------------------------------------------------------


@settings(max_examples=examples(300))
@given(st.data())
def test_the_rebuild_target_covers_every_write_a_lost_copy_may_have_acknowledged(data: st.DataObject) -> None:
    """Oracle: six segments, `me` among them, lost everything. Every acknowledged LSN is on a write quorum (4)
    that may include me; a peer's SCL (or high water, if it lost a record since) is at least every LSN it
    holds. Any REBUILD_PEERS_MIN answering peers give a target at least every acknowledged LSN."""
    peers = ["p1", "p2", "p3", "p4", "p5"]
    acked = sorted(data.draw(st.lists(st.integers(1, 1000), min_size=1, max_size=5, unique=True)))
    holds: dict[str, set[int]] = {p: set() for p in peers}
    for lsn in acked:
        quorum = data.draw(st.sampled_from(list(itertools.combinations(["me", *peers], 4))))
        for p in quorum:
            if p != "me":
                holds[p].add(lsn)
    views = []
    for p in peers:
        high = max(holds[p], default=0)
        lost_one = data.draw(st.booleans())
        scl = data.draw(st.integers(0, high)) if lost_one else high + data.draw(st.integers(0, 5))
        views.append(PeerView(p, scl, (), high_water=high))
    answered = data.draw(st.lists(st.sampled_from(views), min_size=REBUILD_PEERS_MIN, max_size=5, unique=True))
    target = rebuild_target(answered)
    assert target is not None and target >= acked[-1]
    assert rebuild_target(answered[: REBUILD_PEERS_MIN - 1]) is None
    rebuilding = [PeerView(v.node_id, v.scl, (), high_water=v.high_water, rebuilding=True) for v in answered]
    assert rebuild_target(rebuilding) is None  # peers rebuilding themselves do not count
