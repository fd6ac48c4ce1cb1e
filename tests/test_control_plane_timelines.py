"""Backtrack in the control plane's pure state: target resolution over a volume's timelines
(storage/control_plane_timelines.py) checked against a brute-force oracle of every write and backtrack, and
the records' side (storage/control_plane_history.py): the swap, re-pointed clones, history, expiry,
deletion, the state file."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.control_plane import ControlPlane
from sixfold.storage.control_plane_limits import (
    BACKTRACK_WINDOW_S_DEFAULT,
    BACKTRACK_WINDOW_S_MAX,
    VolumeDeleted,
)
from sixfold.storage.control_plane_timelines import (
    CommitAnswer,
    Timeline,
    chain,
    check_commit_in_window,
    check_time_in_window,
    commit_not_found,
    new_lsn_floor,
    newest_commit,
    pg_answer,
    resolve_lsn,
    shown_now,
    timeline_at,
)
from sixfold.storage.control_plane_values import ClonePlan, VolumeGeometry
from sixfold.storage.control_plane_wire import clone_segment_requests, geometry_to_proto, replacement_request
from sixfold.storage.errors import InvalidRequest, ReadPointOutOfRange, StorageError, UnknownVolume
from sixfold.storage.records import LSN_MAX
from tests.depth import examples

pytestmark = pytest.mark.unit

NODES = [(f"{az}{i}", az) for az in "abc" for i in (1, 2, 3)]
MIB = 2**20
PAGE = 4096
T0_MS = 1_767_000_000_000  # a wall-clock time in 2025


def plane() -> ControlPlane:
    state = ControlPlane()
    for i, (node_id, az) in enumerate(NODES):
        state.register_node(node_id, az, f"127.0.0.1:{7000 + i}", 0.0)
    return state


def root(state: ControlPlane, volume_id: str, pgs: int = 1, window_s: int = 0) -> VolumeGeometry:
    plan = state.plan_create_volume(volume_id, PAGE, MIB, 0.0, created_at_ms=T0_MS, backtrack_window_s=window_s)
    geometry = state.commit_pg_plan(plan)
    for epoch in range(1, pgs):
        grown = state.plan_grow_volume(volume_id, epoch, 0.0)
        assert grown is not None
        geometry = state.commit_pg_plan(grown)
    return geometry


def everyone(plan: ClonePlan) -> set[tuple[int, str]]:
    return {(pg.pg_index, s.node_id) for pg in plan.pgs for s in pg.segments}


def clone(state: ControlPlane, source: str, name: str, branch: int, reads: list[int], at_ms: int) -> VolumeGeometry:
    plan = state.plan_clone(source, name, branch, reads, created_at_ms=at_ms)
    state.reserve_segments(plan.serial, plan.segments())
    return state.commit_clone(plan, everyone(plan))


def backtrack(
    state: ControlPlane,
    name: str,
    target: str,
    to_lsn: int,
    tails: list[int],
    left: tuple[int, list[int], int],
    at_ms: int,
    allocated: int = 0,
) -> VolumeGeometry:
    state.check_backtrack(name, left[0], left[1])
    floor = new_lsn_floor(max(allocated, left[0]), [left[2]], state.own_timelines(name, left[0]), name)
    plan = state.plan_backtrack(name, target, to_lsn, tails, floor)
    state.reserve_segments(plan.serial, plan.segments())
    return state.commit_backtrack(plan, everyone(plan), left, at_ms, to_commit_time_us=at_ms * 1000 - 1)


def refused(error: type[StorageError], fn: Callable[..., Any], *args: object) -> str:
    with pytest.raises(error) as info:
        fn(*args)
    return info.value.message


# ---------------------------------------------------------------------------------------------
# The oracle: every write and backtrack of one volume, kept in full.


@dataclass
class Line:
    """One timeline as the oracle knows it: what it shows, in full."""

    serial: int
    floor: int
    activated_ms: int
    visible: list[tuple[int, int]]  # (lsn, commit time us): inherited, then its own writes
    own: list[tuple[int, int]] = field(default_factory=list)
    end: int | None = None  # the VDL it was left at
    abandoned_ms: int = 0

    def vdl(self) -> int:
        return self.own[-1][0] if self.own else self.floor


class Sim:
    """The real pure state driven through writes and backtracks of volume `v`, beside the oracle."""

    def __init__(self, as_clone: bool) -> None:
        self.state = plane()
        self.clock_ms = T0_MS
        self.allocated = 0
        self.source: list[tuple[int, int]] = []
        if as_clone:  # `v` is a clone of `src` at LSN 6: its history before is not its own
            root(self.state, "src")
            self.source = [(lsn, self.tick()) for lsn in (2, 4, 6)]
            self.allocated = 9  # src wrote on after the branch
            self.clock_ms += 5
            geometry = clone(self.state, "src", "v", 6, [6], self.clock_ms)
            self.lines = [Line(self.serial_of("v"), 6, self.clock_ms, list(self.source))]
        else:
            geometry = root(self.state, "v")
            self.lines = [Line(0, 0, T0_MS, [])]
        self.created_ms = geometry.created_at_ms
        self.clock_ms += 1

    def tick(self) -> int:
        self.clock_ms += 1
        return self.clock_ms * 1000 - 1

    def serial_of(self, record_id: str) -> int:
        return self.state._volumes[record_id].serial  # the test reads the record it checks

    @property
    def current(self) -> Line:
        return self.lines[-1]

    def record_id(self, line: Line) -> str:
        return "v" if line is self.current else f"v~{line.serial}"

    def write(self, count: int, gap: int) -> None:
        for _ in range(count):
            self.allocated = max(self.allocated, self.current.floor) + 1 + gap
            record = (self.allocated, self.tick())
            self.current.own.append(record)
            self.current.visible.append(record)

    def own_records(self, record_id: str) -> list[tuple[int, int]]:
        """The records a timeline wrote itself (the source volume's for `src`)."""
        if record_id == "src":
            return self.source
        return next(line.own for line in self.lines if self.record_id(line) == record_id)

    def shown(self, record_id: str, cap: int) -> list[tuple[int, int]]:
        """What the real records say the timeline shows at `cap`: its chain (rule 1) over the records."""
        by_id = self.state.timeline_map("v", self.current.vdl())
        out = []
        for timeline, upto in chain(by_id, record_id, cap):
            out += [r for r in self.own_records(timeline.timeline_id) if timeline.lsn_floor < r[0] <= upto]
        return sorted(out)

    def owner(self, lsn: int) -> Line | None:
        """Brute force: the timeline whose own allocation range, up to the VDL it ended at, holds `lsn`."""
        owners = [line for line in self.lines if line.floor < lsn <= (line.vdl() if line.end is None else line.end)]
        assert len(owners) <= 1, owners
        return owners[0] if owners else None

    def backtrack_to_lsn(self, lsn: int) -> None:
        own = self.state.own_timelines("v", self.current.vdl())
        expected = self.owner(lsn) if lsn >= 1 else None  # an old timeline's LSN may lie above the current VDL
        if expected is None:
            with pytest.raises((InvalidRequest, ReadPointOutOfRange)):
                resolve_lsn(own, lsn, "v")
            return
        target = resolve_lsn(own, lsn, "v")
        assert target.timeline_id == self.record_id(expected)
        self._backtrack(expected, lsn)

    def backtrack_to_time(self, at_us: int) -> None:
        vdl = self.current.vdl()
        own = self.state.own_timelines("v", vdl)
        if at_us < self.created_ms * 1000:
            with pytest.raises(ReadPointOutOfRange):
                timeline_at(own, at_us, "v", self.created_ms)
            return
        line = next(
            x
            for x in self.lines
            if x.activated_ms * 1000 <= at_us and (not x.abandoned_ms or at_us < x.abandoned_ms * 1000)
        )
        at = timeline_at(own, at_us, "v", self.created_ms)
        assert at.timeline_id == self.record_id(line)
        expected = [r for r in line.visible if r[1] <= at_us]
        found = self.newest_at(at, at_us)
        assert found == (expected[-1] if expected else None)
        if found is None:
            return
        by_id = self.state.timeline_map("v", vdl)
        owner = next(t for t, cap in chain(by_id, at.timeline_id, at.end_lsn) if t.lsn_floor < found[0] <= cap)
        assert shown_now(by_id, own[-1], owner, found[0]) == (found in self.current.visible)
        if self.owner(found[0]) is None:  # a clone's source's history: refused
            with pytest.raises(ReadPointOutOfRange):
                resolve_lsn(own, found[0], "v")
            return
        target_line = self.owner(found[0])
        assert target_line is not None
        assert [r for r in target_line.visible if r[0] <= found[0]] == expected  # the LSN shows the time's state
        self._backtrack(target_line, found[0])

    def newest_at(self, at: Timeline, at_us: int) -> tuple[int, int] | None:
        """Timelines rule 3 over the records: each timeline of the view in turn, its own commits first."""
        by_id = self.state.timeline_map("v", self.current.vdl())
        for timeline, cap in chain(by_id, at.timeline_id, at.end_lsn):
            mine = [
                r for r in self.own_records(timeline.timeline_id) if timeline.lsn_floor < r[0] <= cap and r[1] <= at_us
            ]
            if mine:
                return max(mine)
        return None

    def _backtrack(self, target: Line, lsn: int) -> None:
        state_then = [r for r in target.visible if r[0] <= lsn]
        tails = [state_then[-1][0] if state_then else 0]
        vdl = self.current.vdl()
        current_tail = self.current.visible[-1][0] if self.current.visible else 0
        self.clock_ms += 1
        target_id = self.record_id(target)
        geometry = backtrack(
            self.state, "v", target_id, lsn, tails, (vdl, [current_tail], self.allocated), self.clock_ms
        )
        assert geometry.branch_lsn == lsn and geometry.volume_id == "v"
        self.current.end, self.current.abandoned_ms = vdl, self.clock_ms
        floor = self.state.own_timelines("v", 0)[-1].lsn_floor
        assert floor > self.allocated  # new LSNs go above every LSN ever allocated
        self.allocated = floor
        self.lines.append(Line(self.serial_of("v"), floor, self.clock_ms, list(state_then)))
        assert self.shown("v", floor) == state_then  # the new timeline shows exactly the target's state
        self.clock_ms += 1

    def check(self) -> None:
        assert self.shown("v", self.current.vdl()) == self.current.visible
        for line in self.lines[:-1]:
            assert line.end is not None
            assert self.shown(self.record_id(line), line.end) == line.visible
        history = self.state.history("v")
        assert [t.timeline_id for t in history.timelines] == [self.record_id(line) for line in self.lines]
        assert len(history.backtracks) == len(self.lines) - 1


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(1, 3), st.integers(0, 2)),
        st.tuples(st.just("skip"), st.integers(1, 4), st.just(0)),
        st.tuples(st.just("lsn"), st.integers(0, 10**6), st.just(0)),
        st.tuples(st.just("time"), st.integers(0, 10**6), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=examples(300), deadline=None)
@given(st.booleans(), OPS)
def test_targets_resolve_as_the_brute_force_oracle_says(as_clone: bool, ops: list[tuple[str, int, int]]) -> None:
    sim = Sim(as_clone)
    for op, a, b in ops:
        if op == "write":
            sim.write(a, b)
        elif op == "skip":  # allocated, never durable (a writer's crash, a truncation)
            sim.allocated += a
        elif op == "lsn":
            sim.backtrack_to_lsn(a % (sim.allocated + 3))
        else:
            span_us = (sim.clock_ms - sim.created_ms) * 1000 + 20
            sim.backtrack_to_time(sim.created_ms * 1000 - 10 + a % span_us)
        sim.check()


# ---------------------------------------------------------------------------------------------
# The pure rules one by one.


def line(tid: str, parent: str, branch: int, floor: int, end: int, on: int, off: int = 0) -> Timeline:
    return Timeline(tid, parent, branch, floor, end, on, off)


def test_lsn_refusals_say_why() -> None:
    own = [line("v~1", "src", 50, 50, 80, 10, 20), line("v", "v~1", 70, 90, 120, 20)]
    assert resolve_lsn(own, 75, "v").timeline_id == "v~1"  # forward again on the timeline left
    assert resolve_lsn(own, 95, "v").timeline_id == "v"
    fresh = [own[0], line("v", "v~1", 70, 90, 70, 20)]  # the current timeline has no commit of its own yet
    assert resolve_lsn(fresh, 75, "v").timeline_id == "v~1"  # above its VDL 70, but on the timeline left
    assert "not valid" in refused(InvalidRequest, resolve_lsn, own, 0, "v")
    assert refused(ReadPointOutOfRange, resolve_lsn, own, 121, "v") == (
        "LSN 121 is above volume v's VDL 120: nothing above VDL is durable; backtrack to an LSN at or below it"
    )
    assert refused(ReadPointOutOfRange, resolve_lsn, own, 50, "v") == (
        "LSN 50 is not on a timeline of volume v: v branched from src at LSN 50, and a backtrack stays within the "
        "volume's own history (above LSN 50)"
    )
    assert refused(ReadPointOutOfRange, resolve_lsn, own, 85, "v").startswith(
        "LSN 85 is not on a timeline of volume v: none it showed holds it (it was allocated but never became durable"
    )


def test_times_resolve_to_the_timeline_shown_then() -> None:
    own = [line("v~0", "", 0, 0, 80, 10, 20), line("v", "v~0", 70, 90, 120, 20)]
    assert timeline_at(own, 10_000, "v", 10).timeline_id == "v~0"
    assert timeline_at(own, 19_999, "v", 10).timeline_id == "v~0"
    assert timeline_at(own, 20_000, "v", 10).timeline_id == "v"
    assert "is before volume v existed (it was created at" in refused(
        ReadPointOutOfRange, timeline_at, own, 9_999, "v", 10
    )
    gone = own[1:]  # the first timeline expired
    assert "showed a timeline that is no longer kept" in refused(
        ReadPointOutOfRange, timeline_at, gone, 15_000, "v", 10
    )


def test_commit_answers_combine_and_know_what_gc_hides() -> None:
    a = CommitAnswer(lsn=40, commit_time_us=400, gc_floor_lsn=10, oldest_commit_time_us=100)
    b = CommitAnswer(lsn=0, commit_time_us=0, gc_floor_lsn=30, oldest_commit_time_us=300)
    assert pg_answer([a, b]) == CommitAnswer(40, 400, 10, 100)
    assert pg_answer([]) is None
    assert newest_commit([a, b], 0, 100) == (a, False)  # b's gone commits are all below 40
    c = CommitAnswer(lsn=0, commit_time_us=0, gc_floor_lsn=60, oldest_commit_time_us=700)
    assert newest_commit([a, c], 0, 100) == (a, True)  # c may have collected a commit in (40, 60]
    assert newest_commit([a, c], 0, 50) == (a, True)
    assert newest_commit([c], 60, 100) == (None, False)  # nothing of this timeline's own lies below 60
    assert newest_commit([c], 0, 100) == (None, True)
    assert commit_not_found("v", 5, 0).message == "volume v has no commit at or before 1970-01-01T00:00:00.000Z"
    assert commit_not_found("v", 5, 1700).message.endswith("(its oldest commit is from 1970-01-01T00:00:00.001Z)")


def test_the_window() -> None:
    now_ms = T0_MS + 100_000_000
    start_us = now_ms * 1000 - 86400 * 1_000_000
    check_time_in_window(start_us, now_ms, 86400, "v")
    assert "outside volume v's backtrack window of 1 d: the oldest point" in refused(
        ReadPointOutOfRange, check_time_in_window, start_us - 1, now_ms, 86400, "v"
    )
    check_commit_in_window(5, start_us, now_ms, 86400, "v")
    assert refused(ReadPointOutOfRange, check_commit_in_window, 5, start_us - 1, now_ms, 7200, "v").startswith(
        "LSN 5 was committed at "
    )
    assert "carries no commit time" in refused(ReadPointOutOfRange, check_commit_in_window, 5, 0, now_ms, 60, "v")


def test_the_next_floor_is_above_everything_allocated() -> None:
    own = [line("v~0", "", 0, 0, 80, 10, 20), line("v", "v~0", 70, 900, 950, 20)]
    assert new_lsn_floor(960, [970, 955], own, "v") == 971
    assert new_lsn_floor(0, [], own, "v") == 901
    assert "used up its LSNs" in refused(InvalidRequest, new_lsn_floor, LSN_MAX, [], own, "v")


# ---------------------------------------------------------------------------------------------
# The records: swap, clones that follow, history, expiry, deletion, the state file.


def test_backtrack_swaps_the_name_and_keeps_the_old_timeline_hidden() -> None:
    state = plane()
    before = root(state, "v", pgs=2)
    clone(state, "v", "c1", 50, [40, 50], T0_MS + 1)
    old_ids = [pg.segments[0].segment_id for pg in before.protection_groups]
    geometry = backtrack(state, "v", "v", 30, [30, 20], (100, [90, 100], 120), T0_MS + 10, allocated=130)
    assert geometry.parent_volume_id == "v~0" and geometry.branch_lsn == 30
    assert [pg.segments[0].segment_id for pg in geometry.protection_groups] == ["v.2/pg-00000", "v.2/pg-00001"]
    assert {s.parent_segment_id for s in geometry.protection_groups[1].segments} == {"v/pg-00001"}
    left = state.describe_volume("v~0")
    assert [pg.segments[0].segment_id for pg in left.protection_groups] == old_ids  # its segments stay
    assert state.describe_volume("c1").parent_volume_id == "v~0"  # the clone follows the timeline it reads
    assert [g.volume_id for g in state.list_volumes()] == ["c1", "v"]
    assert left.child_volume_ids == ("c1", "v")
    timelines = state.own_timelines("v", 140)
    assert [(t.timeline_id, t.lsn_floor, t.end_lsn, t.abandoned_at_ms) for t in timelines] == [
        ("v~0", 0, 100, T0_MS + 10),
        ("v", 131, 140, 0),
    ]
    plan = state.plan_backtrack("v", "v", 135, [135, 20], 150)
    request = clone_segment_requests(plan, plan.pgs[0])[0]
    assert (request.lsn_floor, request.branch_lsn, request.parent_segment_id) == (150, 135, "v.2/pg-00000")
    assert geometry_to_proto(geometry).backtrack_window_s == BACKTRACK_WINDOW_S_DEFAULT
    # Its segments are kept whole: a replacement names the volume and the segment ids they always had.
    for node_id, _ in NODES:
        if node_id != left.protection_groups[0].segments[0].node_id:
            state.heartbeat(node_id, "", 0, 20_000.0)
    plans = {p.volume_id: p for p in state.plan_replacements(20_000.0) if p.pg_index == 0}
    request = replacement_request(plans["v~0"])
    assert (request.volume_id, request.segment_id) == ("v", "v/pg-00000")
    # Nobody can describe, clone, grow or delete the left timeline as a volume.
    assert "is a timeline volume v left by a backtrack" in refused(InvalidRequest, state.delete_volume, "v~0")
    assert "left by a backtrack" in refused(InvalidRequest, state.plan_grow_volume, "v~0", 0, 0.0)
    assert "left by a backtrack" in refused(InvalidRequest, state.plan_clone, "v~0", "c2", 10, [10])
    assert "left by a backtrack" in refused(InvalidRequest, state.check_backtrack, "v~0", 10, [10])


def test_history_moves_forward_again_and_expiry_drops_what_nothing_reads() -> None:
    state = plane()
    root(state, "v", window_s=3600)
    backtrack(state, "v", "v", 30, [30], (100, [100], 100), T0_MS + 10)  # v~0 left, v = serial 1 from v~0 at 30
    backtrack(state, "v", "v~0", 80, [80], (110, [110], 110), T0_MS + 20)  # forward again on v~0
    history = state.history("v")
    assert history.backtrack_window_s == 3600
    assert [(t.timeline_id, t.parent_timeline_id, t.branch_lsn) for t in history.timelines] == [
        ("v~0", "", 0),
        ("v~1", "v~0", 30),
        ("v", "v~0", 80),
    ]
    assert [(b.from_timeline_id, b.from_vdl, b.to_timeline_id, b.to_lsn) for b in history.backtracks] == [
        ("v~0", 100, "v~1", 30),
        ("v~1", 110, "v", 80),
    ]
    assert state.expire_timelines(T0_MS + 20 + 3_599_999).volumes_dropped == ()
    dropped = state.expire_timelines(T0_MS + 20 + 3_600_000)
    assert dropped.volumes_dropped == ("v~1",)  # v~0 stays: v reads through it
    assert {o.segment_id for o in state.orphans()} == {"v.1/pg-00000"}
    history = state.history("v")
    assert [t.timeline_id for t in history.timelines] == ["v~0", "v"]
    assert [(b.from_timeline_id, b.to_timeline_id) for b in history.backtracks] == []  # both touched v~1


def test_delete_drops_the_left_timelines_nothing_else_reads() -> None:
    state = plane()
    root(state, "v")
    backtrack(state, "v", "v", 30, [30], (100, [100], 100), T0_MS + 10)  # v~0 left; v: serial 1, LSNs above 101
    snapshot_plan = state.plan_clone("v", "", 108, [108], "snapshot", "s1", T0_MS + 12)
    state.reserve_segments(snapshot_plan.serial, snapshot_plan.segments())
    state.commit_clone(snapshot_plan, everyone(snapshot_plan))
    backtrack(state, "v", "v", 105, [105], (110, [110], 110), T0_MS + 20)  # v~1 left, with snapshot s1 on it
    assert state.describe_volume("@s1").parent_volume_id == "v~1"
    assert [g.snapshot_name for g in state.list_snapshots("v")] == ["s1"]
    deletion = state.delete_volume("v")
    assert deletion.volumes_dropped == ("v",) and not deletion.kept_for_clones
    assert sorted(state._volumes) == ["@s1", "v~0", "v~1"]  # s1 still reads through both
    assert "does not exist" in refused(UnknownVolume, state.history, "v")
    for orphan in state.orphans():
        state.orphan_dropped(orphan)
    # A new volume of the name takes a fresh serial while segments of an earlier one are recorded (rule 5).
    assert state.plan_create_volume("v", PAGE, MIB, 0.0).serial > 0
    assert state.delete_snapshot("s1").volumes_dropped == ("@s1", "v~1", "v~0")
    for orphan in state.orphans():
        state.orphan_dropped(orphan)
    assert state.plan_create_volume("v", PAGE, MIB, 0.0).serial == 0


def test_refusals_on_the_records() -> None:
    state = plane()
    root(state, "v", pgs=2)
    assert "does not exist" in refused(UnknownVolume, state.check_backtrack, "w", 10, [1, 1])
    assert "2 PGs of volume v" in refused(InvalidRequest, state.check_backtrack, "v", 10, [1])
    assert "above the current VDL 10" in refused(InvalidRequest, state.check_backtrack, "v", 10, [11, 1])
    clone(state, "v", "c", 50, [50, 40], T0_MS)
    assert "is below LSN 50" in refused(InvalidRequest, state.check_backtrack, "c", 49, [49, 40])
    state.delete_volume("v")
    assert "was deleted" in refused(VolumeDeleted, state.check_backtrack, "v", 10, [1, 1])
    assert refused(InvalidRequest, state.plan_create_volume, "w", PAGE, MIB, 0.0, 0, BACKTRACK_WINDOW_S_MAX + 1) == (
        "backtrack window 31622401 s is not valid: use 1 s to 31622400 s (366 days), or 0 for 24 h"
    )
    assert state.plan_create_volume("w", PAGE, MIB, 0.0, 0, BACKTRACK_WINDOW_S_MAX).backtrack_window_s == (
        BACKTRACK_WINDOW_S_MAX
    )


def test_state_file_round_trip_and_old_files_load() -> None:
    state = plane()
    root(state, "v", window_s=7200)
    clone(state, "v", "c1", 50, [50], T0_MS + 1)
    backtrack(state, "v", "v", 30, [30], (100, [100], 120), T0_MS + 10)
    data = json.loads(json.dumps(state.to_dict()))
    again = ControlPlane.from_dict(data)
    assert again.to_dict() == data and again.geometries() == state.geometries()
    assert again.history("v") == state.history("v")
    assert again.describe_volume("v").backtrack_window_s == 7200
    # A file written before timelines existed: default window, floor at the branch, activated when created.
    state = plane()
    root(state, "v")
    clone(state, "v", "c1", 50, [50], T0_MS + 1)
    old = json.loads(json.dumps(state.to_dict()))
    for v in old["volumes"]:
        for key in ("backtrack_window_s", "lsn_floor", "activated_at_ms", "abandoned_at_ms", "end_lsn", "end_tails"):
            del v[key]
        del v["lsn_high"], v["backtracks"]
    loaded = ControlPlane.from_dict(old)
    c1 = loaded._volumes["c1"]
    assert (c1.backtrack_window_s, c1.lsn_floor, c1.activated_at_ms) == (BACKTRACK_WINDOW_S_DEFAULT, 50, T0_MS + 1)
    assert loaded.to_dict() == state.to_dict()
