"""Segment replacement in the pure control plane (rules 10-13) and the composed quorum sets of
compute.quorum: failure detection, the two-step change, rollback, composition, persistence."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixfold.compute.quorum import READ_QUORUM, WRITE_QUORUM, Membership
from sixfold.storage import control_plane as cp
from sixfold.storage.control_plane import ControlPlane

pytestmark = pytest.mark.unit

HEARTBEAT_MS = 1000
FAILURE_MS = 5000
# Three AZs of three nodes: placement takes the two of each AZ with the smallest ids, x3 is the spare.
NODES = [(f"{az}{i}", az) for az in "abc" for i in (1, 2, 3)]


def plane_with_volume() -> ControlPlane:
    plane = ControlPlane(heartbeat_timeout_ms=HEARTBEAT_MS, failure_timeout_ms=FAILURE_MS, started_ms=0.0)
    for i, (node_id, az) in enumerate(NODES):
        plane.register_node(node_id, az, f"127.0.0.1:{7000 + i}", 0.0)
    plane.commit_pg_plan(plane.plan_create_volume("vol", 0, 2**20, 0.0))
    return plane


def beat(plane: ControlPlane, now_ms: float, *, silent: tuple[str, ...] = ()) -> None:
    for node_id, _ in NODES:
        if node_id not in silent:
            plane.heartbeat(node_id, "", 0, now_ms)


def test_base_placement_leaves_one_spare_per_az() -> None:
    plane = plane_with_volume()
    [pg] = plane.describe_volume("vol").protection_groups
    assert sorted(s.node_id for s in pg.segments) == ["a1", "a2", "b1", "b2", "c1", "c2"]


def test_no_replacement_before_the_failure_timeout() -> None:
    plane = plane_with_volume()
    beat(plane, FAILURE_MS, silent=("a1",))
    assert not plane.is_healthy("a1", FAILURE_MS)  # unhealthy after the heartbeat timeout ...
    assert plane.plan_replacements(FAILURE_MS) == []  # ... but not failed yet


def test_two_step_change_completes() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("a1",))
    [plan] = plane.plan_replacements(now)
    assert (plan.old_node_id, plan.new.node_id, plan.base_membership_epoch, plan.membership_epoch) == ("a1", "a3", 1, 2)
    assert sorted(p.node_id for p in plan.peers) == ["a1", "a2", "a3", "b1", "b2", "c1", "c2"]
    geometry = plane.begin_change(plan)
    assert geometry.membership_epoch == 2
    assert [s.node_id for s in geometry.segments][-1] == "a3" and len(geometry.segments) == 7
    assert [(c.old_node_id, c.new_node_id, c.target_lsn) for c in geometry.changes] == [("a1", "a3", None)]
    assert plane.segment_count("a3") == 1 and plane.segment_count("a1") == 1
    # Already being replaced: no second plan for a1.
    assert plane.plan_replacements(now + 1) == []
    plane.set_change_target("vol", 0, "a1", 500)
    plane.note_progress("vol", 0, "a3", 120)
    [change] = plane.describe_volume("vol").protection_groups[0].changes
    assert (change.target_lsn, change.new_segment_scl) == (500, 120)
    geometry = plane.complete_change("vol", 0, "a1")
    assert geometry.membership_epoch == 3 and geometry.changes == ()
    assert sorted(s.node_id for s in geometry.segments) == ["a2", "a3", "b1", "b2", "c1", "c2"]
    assert plane.segment_count("a1") == 0 and plane.segment_count("a3") == 1
    assert plane.orphans() == [cp.Orphan("a1", "vol/pg-00000")]
    # a1 returning now changes nothing but the orphan list.
    beat(plane, now + 10)
    assert plane.due_rollbacks(now + 10) == []
    plane.orphan_dropped(cp.Orphan("a1", "vol/pg-00000"))
    assert plane.orphans() == []


def test_old_node_returning_rolls_the_change_back() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("b2",))
    [plan] = plane.plan_replacements(now)
    plane.begin_change(plan)
    assert plane.due_rollbacks(now) == []
    beat(plane, now + 100)  # b2 is back
    [(volume_id, pg_index, old, reason)] = plane.due_rollbacks(now + 100)
    assert (volume_id, pg_index, old) == ("vol", 0, "b2") and "back" in reason
    geometry = plane.roll_back_change(volume_id, pg_index, old)
    assert geometry.membership_epoch == 3 and geometry.changes == ()
    assert sorted(s.node_id for s in geometry.segments) == ["a1", "a2", "b1", "b2", "c1", "c2"]
    assert plane.orphans() == [cp.Orphan("b3", "vol/pg-00000")] and plane.segment_count("b3") == 0


def test_new_node_failing_rolls_the_change_back() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("c1",))
    [plan] = plane.plan_replacements(now)
    plane.begin_change(plan)
    later = now + FAILURE_MS + 1
    beat(plane, later, silent=("c1", "c3"))
    [(_, _, old, reason)] = plane.due_rollbacks(later)
    assert old == "c1" and "c3" in reason


def test_two_failures_compose_into_four_quorum_sets() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("a1", "b1"))
    [first] = plane.plan_replacements(now)  # one begin per PG per round
    assert (first.old_node_id, first.new.node_id) == ("a1", "a3")
    [stale] = plane.plan_replacements(now)  # made before the first began: at the old epoch
    plane.begin_change(first)
    with pytest.raises(cp.StaleEpoch):
        plane.begin_change(stale)
    [plan] = plane.plan_replacements(now)
    assert (plan.old_node_id, plan.new.node_id) == ("b1", "b3")
    geometry = plane.begin_change(plan)
    assert geometry.membership_epoch == 3
    membership = Membership.with_changes(
        [s.node_id for s in geometry.segments[:6]], [(c.old_node_id, c.new_node_id) for c in geometry.changes]
    )
    assert {frozenset(s.members) for s in membership.sets} == {
        frozenset(["a1", "a2", "b1", "b2", "c1", "c2"]),
        frozenset(["a3", "a2", "b1", "b2", "c1", "c2"]),
        frozenset(["a1", "a2", "b3", "b2", "c1", "c2"]),
        frozenset(["a3", "a2", "b3", "b2", "c1", "c2"]),
    }
    # With a1 and b1 gone, a write needs all four others of the base set: a2 b2 c1 c2.
    assert membership.write_quorum_met(["a2", "b2", "c1", "c2"])
    assert not membership.write_quorum_met(["a2", "b2", "c1", "a3", "b3"])
    # No third change while two are in flight, even with a third failure.
    beat(plane, now + FAILURE_MS + 2, silent=("a1", "b1", "c1"))
    assert plane.plan_replacements(now + FAILURE_MS + 2) == []
    plane.set_change_target("vol", 0, "b1", 10)
    geometry = plane.complete_change("vol", 0, "b1")
    assert geometry.membership_epoch == 4
    assert [(c.old_node_id, c.new_node_id) for c in geometry.changes] == [("a1", "a3")]
    plane.set_change_target("vol", 0, "a1", 10)
    geometry = plane.complete_change("vol", 0, "a1")
    assert sorted(s.node_id for s in geometry.segments) == ["a2", "a3", "b2", "b3", "c1", "c2"]
    assert geometry.membership_epoch == 5


def test_no_spare_in_the_az_means_no_change() -> None:
    plane = ControlPlane(heartbeat_timeout_ms=HEARTBEAT_MS, failure_timeout_ms=FAILURE_MS)
    for i, (node_id, az) in enumerate(n for n in NODES if not n[0].endswith("3")):
        plane.register_node(node_id, az, f"127.0.0.1:{7000 + i}", 0.0)
    plane.commit_pg_plan(plane.plan_create_volume("vol", 0, 2**20, 0.0))
    now = FAILURE_MS + 1
    for node_id in ("a2", "b1", "b2", "c1", "c2"):
        plane.heartbeat(node_id, "", 0, now)
    assert plane.plan_replacements(now) == []


def test_nodes_never_heard_from_fail_from_the_control_planes_start() -> None:
    plane = ControlPlane.from_dict(plane_with_volume().to_dict(), HEARTBEAT_MS, FAILURE_MS, started_ms=10_000.0)
    assert not plane.is_failed("a1", 10_000.0 + FAILURE_MS)
    assert plane.is_failed("a1", 10_001.0 + FAILURE_MS)


def test_an_empty_pg_can_complete_at_target_zero() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("c1",))
    [plan] = plane.plan_replacements(now)
    plane.begin_change(plan)
    plane.set_change_target("vol", 0, "c1", 0)
    [change] = plane.describe_volume("vol").protection_groups[0].changes
    assert change.target_lsn == 0
    assert plane.complete_change("vol", 0, "c1").membership_epoch == 3


def test_changes_and_orphans_survive_a_restart() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("a1", "c2"))
    [plan] = plane.plan_replacements(now)
    plane.begin_change(plan)
    plane.set_change_target("vol", 0, "a1", 77)
    plane.complete_change("vol", 0, "a1")
    [plan] = plane.plan_replacements(now)
    plane.begin_change(plan)
    restored = ControlPlane.from_dict(json.loads(json.dumps(plane.to_dict())), HEARTBEAT_MS, FAILURE_MS)
    assert restored.describe_volume("vol") == plane.describe_volume("vol")
    assert restored.orphans() == plane.orphans()
    assert {n: restored.segment_count(n) for n, _ in NODES} == {n: plane.segment_count(n) for n, _ in NODES}


# ---------------------------------------------------------------------------
# Composed quorum sets against a brute-force oracle

NAMES = [chr(ord("A") + i) for i in range(10)]


@st.composite
def memberships(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]]]:
    base = draw(st.permutations(NAMES[:6]))
    olds = draw(st.lists(st.sampled_from(base), unique=True, max_size=2))
    news = NAMES[6 : 6 + len(olds)]
    return list(base), list(zip(olds, news))


def oracle_sets(base: list[str], changes: list[tuple[str, str]]) -> set[frozenset[str]]:
    sets = set()
    for k in range(len(changes) + 1):
        for subset in itertools.combinations(changes, k):
            members = set(base)
            for old, new in subset:
                members = (members - {old}) | {new}
            sets.add(frozenset(members))
    return sets


@given(memberships(), st.sets(st.sampled_from(NAMES)))
def test_composed_sets_and_quorums_match_the_oracle(
    m: tuple[list[str], list[tuple[str, str]]], answered: set[str]
) -> None:
    base, changes = m
    membership = Membership.with_changes(base, changes)
    sets = oracle_sets(base, changes)
    assert {frozenset(s.members) for s in membership.sets} == sets
    assert membership.write_quorum_met(answered) == all(len(s & answered) >= WRITE_QUORUM for s in sets)
    assert membership.read_quorum_met(answered) == any(len(s & answered) >= READ_QUORUM for s in sets)


@given(memberships(), st.sets(st.sampled_from(NAMES)), st.sets(st.sampled_from(NAMES)))
def test_a_completed_change_keeps_every_transitional_write_readable(
    m: tuple[list[str], list[tuple[str, str]]], acked: set[str], read: set[str]
) -> None:
    """[P18] 4.1: a write that met the transitional quorum meets every read quorum of the
    membership the change completes to (and of the one it rolls back to)."""
    base, changes = m
    if not changes or not Membership.with_changes(base, changes).write_quorum_met(acked):
        return
    old, new = changes[0]
    rest = changes[1:]
    completed = Membership.with_changes([new if n == old else n for n in base], rest)
    rolled_back = Membership.with_changes(base, rest)
    for after in (completed, rolled_back):
        if after.read_quorum_met(read):
            assert acked & read, (acked, read)


def test_a_reserved_new_segment_is_an_orphan_until_its_change_begins() -> None:
    plane = plane_with_volume()
    now = FAILURE_MS + 1
    beat(plane, now, silent=("a1",))
    [plan] = plane.plan_replacements(now)
    plane.reserve_new_segment(plan)  # what a crash before begin_change leaves behind
    assert plane.orphans() == [cp.Orphan("a3", "vol/pg-00000")]
    restored = ControlPlane.from_dict(json.loads(json.dumps(plane.to_dict())), HEARTBEAT_MS, FAILURE_MS)
    assert restored.orphans() == [cp.Orphan("a3", "vol/pg-00000")]
    assert restored.plan_replacements(now) == []  # a3 holds a segment of the PG still to be dropped
    plane.begin_change(plan)
    assert plane.orphans() == []


def test_a_gap_covered_by_truncation_ranges_counts_as_reached() -> None:
    from sixfold.storage.replacement import reached_target

    assert reached_target(10, [(11, 50)], 40)
    assert reached_target(10, [(30, 60), (11, 29)], 60)
    assert not reached_target(10, [(12, 50)], 40)  # LSN 11 is missing, not truncated
    assert not reached_target(10, [(11, 30)], 40)
    assert reached_target(40, [], 40)
