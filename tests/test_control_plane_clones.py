"""Clones, snapshots and deletion in the control plane's pure state (storage/control_plane_lineage.py and
the parts of storage/control_plane.py it touches): validation, placement, segment ids, delete, the state
file, and the flattened copies of replacement and growth."""

from __future__ import annotations

import json

import pytest

from sixfold.storage import replacement
from sixfold.storage.control_plane import ControlPlane
from sixfold.storage.control_plane_limits import SnapshotInUse, VolumeDeleted
from sixfold.storage.control_plane_lineage import pgs_short_of_quorum
from sixfold.storage.control_plane_values import KIND_SNAPSHOT, KIND_VOLUME, ClonePlan, VolumeGeometry
from sixfold.storage.control_plane_wire import clone_segment_requests, geometry_to_proto, replacement_request
from sixfold.storage.errors import AlreadyExists, InvalidRequest, StorageError, UnknownVolume
from sixfold.storage.records import LSN_MAX
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2

pytestmark = pytest.mark.unit

# Three nodes per AZ: a PG takes six of the nine, so "the source PG's nodes" is a real constraint.
NODES = [(f"{az}{i}", az) for az in "abc" for i in (1, 2, 3)]
MIB = 2**20
PAGE = 4096


def plane(now_ms: float = 0.0) -> ControlPlane:
    state = ControlPlane()
    for i, (node_id, az) in enumerate(NODES):
        state.register_node(node_id, az, f"127.0.0.1:{7000 + i}", now_ms)
    return state


def root(state: ControlPlane, volume_id: str = "src", pgs: int = 2) -> VolumeGeometry:
    geometry = state.commit_pg_plan(state.plan_create_volume(volume_id, PAGE, MIB, 0.0, created_at_ms=5))
    for epoch in range(1, pgs):
        plan = state.plan_grow_volume(volume_id, epoch, 0.0)
        assert plan is not None
        geometry = state.commit_pg_plan(plan)
    return geometry


def everyone(plan: ClonePlan) -> set[tuple[int, str]]:
    return {(pg.pg_index, s.node_id) for pg in plan.pgs for s in pg.segments}


def clone(
    state: ControlPlane,
    source: str,
    name: str,
    branch: int = 100,
    reads: tuple[int, ...] = (90, 80),
    kind: str = KIND_VOLUME,
    snapshot_name: str = "",
) -> VolumeGeometry:
    plan = state.plan_clone(source, name, branch, list(reads), kind, snapshot_name, created_at_ms=1234)
    state.reserve_segments(plan.serial, plan.segments())
    return state.commit_clone(plan, everyone(plan))


def snapshot(state: ControlPlane, source: str, name: str, branch: int = 100, reads: tuple[int, ...] = (90, 80)) -> None:
    clone(state, source, "", branch, reads, kind=KIND_SNAPSHOT, snapshot_name=name)


def test_clone_lives_on_the_source_pgs_nodes_and_names_each_parent() -> None:
    state = plane()
    src = root(state)
    before = {n.node_id: n.segment_count for n in state.nodes(0.0)}
    plan = state.plan_clone("src", "c1", 100, [90, 80], created_at_ms=1234)
    assert state.geometries() == [src]  # planning changes nothing
    assert plan.serial == 1 and state.orphans() == []
    for pg, src_pg in zip(plan.pgs, src.protection_groups):
        assert [s.node_id for s in pg.segments] == [s.node_id for s in src_pg.segments]
        assert {s.segment_id for s in pg.segments} == {f"c1.1/pg-{pg.pg_index:05d}"}
        assert {s.parent_segment_id for s in pg.segments} == {f"src/pg-{pg.pg_index:05d}"}
        assert (pg.first_page, pg.page_count, pg.membership_epoch, pg.has_parent) == (
            src_pg.first_page,
            src_pg.page_count,
            1,
            True,
        )
    requests = clone_segment_requests(plan, plan.pgs[1])
    assert len(requests) == 6
    for r in requests:
        assert (r.segment_id, r.parent_segment_id, r.branch_lsn, r.parent_read_lsn, r.pg_index) == (
            "c1.1/pg-00001",
            "src/pg-00001",
            100,
            80,
            1,
        )
        assert [p.node_id for p in r.peers] == [x.node_id for x in plan.pgs[1].segments]
        assert not r.rebuild

    state.reserve_segments(plan.serial, plan.segments())
    assert len(state.orphans()) == 12  # reserved: a crash now leaves only orphans
    geometry = state.commit_clone(plan, everyone(plan))
    assert state.orphans() == []
    assert (geometry.parent_volume_id, geometry.branch_lsn, geometry.kind, geometry.created_at_ms) == (
        "src",
        100,
        "volume",
        1234,
    )
    assert geometry.geometry_epoch == 2  # one per PG, as growth counts
    assert [pg.parent_read_lsn for pg in geometry.protection_groups] == [90, 80]
    assert state.describe_volume("src").child_volume_ids == ("c1",)
    assert [g.volume_id for g in state.list_volumes()] == ["c1", "src"]
    after = {n.node_id: n.segment_count for n in state.nodes(0.0)}
    assert {n: after[n] - before[n] for n in after} == {
        n: sum(n in [s.node_id for s in pg.segments] for pg in src.protection_groups) for n in after
    }
    proto = geometry_to_proto(geometry)
    assert proto.kind == cp_pb2.VOLUME_KIND_VOLUME and proto.protection_groups[0].has_parent
    assert proto.protection_groups[0].segments[0].parent_segment_id == "src/pg-00000"


def test_clone_of_a_clone_reads_through_the_clone() -> None:
    state = plane()
    root(state)
    clone(state, "src", "c1")
    plan = state.plan_clone("c1", "c2", 150, [120, 80])
    assert plan.serial == 2
    assert {s.parent_segment_id for s in plan.pgs[0].segments} == {"c1.1/pg-00000"}
    state.commit_clone(plan, everyone(plan))
    assert state.describe_volume("c1").child_volume_ids == ("c2",)
    assert state.describe_volume("c2").parent_volume_id == "c1"


@pytest.mark.parametrize(
    "args, error, sentence",
    [
        (("nope", "c", 10, [1, 1]), UnknownVolume, "source volume nope does not exist; `sixfold volume list`"),
        (("src", "src", 10, [1, 1]), AlreadyExists, "volume src already exists"),
        (("src", "Bad", 10, [1, 1]), InvalidRequest, "volume id 'Bad' is not valid"),
        (("src", "c", 0, [0, 0]), InvalidRequest, "branch LSN 0 is not valid: a clone branches at an LSN from 1"),
        (("src", "c", LSN_MAX + 1, [0, 0]), InvalidRequest, f"branch LSN {LSN_MAX + 1} is not valid"),
        (("src", "c", 10, [1]), InvalidRequest, "1 parent read LSNs for the 2 PGs of volume src; give one per PG"),
        (("src", "c", 10, [1, 11]), InvalidRequest, "the parent read LSN 11 of PG 1 is above the branch LSN 10"),
        (("src", "snap", 10, [1, 1]), AlreadyExists, "the name snap is taken by snapshot snap"),
    ],
)
def test_clone_refusals(args: tuple, error: type[StorageError], sentence: str) -> None:
    state = plane()
    root(state)
    snapshot(state, "src", "snap")
    before = state.to_dict()
    with pytest.raises(error) as info:
        state.plan_clone(*args)
    assert info.value.message.startswith(sentence), info.value.message
    assert state.to_dict() == before


def test_snapshot_request_refusals() -> None:
    state = plane()
    root(state)
    with pytest.raises(InvalidRequest, match="snapshot name 'Nope' is not valid"):
        state.plan_clone("src", "", 10, [1, 1], KIND_SNAPSHOT, "Nope")
    with pytest.raises(InvalidRequest, match=r"a snapshot's volume id is internal \(@s\); leave volume_id empty"):
        state.plan_clone("src", "other", 10, [1, 1], KIND_SNAPSHOT, "s")
    with pytest.raises(InvalidRequest, match="snapshot_name names a snapshot"):
        state.plan_clone("src", "c", 10, [1, 1], snapshot_name="s")
    with pytest.raises(AlreadyExists, match="the name src is taken by volume src; a snapshot needs a name"):
        state.plan_clone("src", "", 10, [1, 1], KIND_SNAPSHOT, "src")
    assert state.plan_clone("src", "@s", 10, [1, 1], KIND_SNAPSHOT, "s").volume_id == "@s"


def test_write_quorum_per_pg() -> None:
    state = plane()
    root(state)
    plan = state.plan_clone("src", "c", 100, [90, 80])
    all_created = everyone(plan)
    pg1 = [s.node_id for s in plan.pgs[1].segments]
    assert pgs_short_of_quorum(plan, all_created) == []
    two_missing = all_created - {(1, pg1[0]), (1, pg1[1])}
    assert pgs_short_of_quorum(plan, two_missing) == []
    assert pgs_short_of_quorum(plan, two_missing - {(1, pg1[2])}) == [1]
    # Committed with two copies missing: those are placed without a parent (created again, flattened).
    state.reserve_segments(plan.serial, plan.segments())
    geometry = state.commit_clone(plan, two_missing)
    parents = {s.node_id: s.parent_segment_id for s in geometry.protection_groups[1].segments}
    assert parents == {n: "" if n in pg1[:2] else "src/pg-00001" for n in pg1}
    assert state.placed_on(pg1[0]) >= {"c.1/pg-00001"}
    assert state.orphans() == []


def test_segment_ids_never_repeat_across_incarnations() -> None:
    state = plane()
    root(state, "v", pgs=1)
    # A failed clone leaves orphans (and uses up its serial): the retry gets other ids.
    failed = state.plan_clone("v", "c", 10, [5])
    state.reserve_segments(failed.serial, failed.segments())
    retry = state.plan_clone("v", "c", 10, [5])
    assert {s.segment_id for s in failed.segments()} == {"c.1/pg-00000"}
    assert {s.segment_id for s in retry.segments()} == {"c.2/pg-00000"}
    # A root volume deleted while a node still holds its segment: a new one of the name takes a serial.
    assert state.delete_volume("v").volumes_dropped == ("v",)
    plan = state.plan_create_volume("v", PAGE, MIB, 0.0)
    assert plan.serial == 2 and plan.pg.segments[0].segment_id == "v.2/pg-00000"  # the retry was only planned
    # Once the old segments are gone, the plain ids are free again.
    for orphan in state.orphans():
        state.orphan_dropped(orphan)
    assert state.plan_create_volume("v", PAGE, MIB, 0.0).pg.segments[0].segment_id == "v/pg-00000"


def test_delete_keeps_a_volume_its_clones_read_and_drops_freed_ancestors() -> None:
    state = plane()
    root(state)
    clone(state, "src", "c1")
    clone(state, "c1", "c2", 150, (120, 80))
    assert state.delete_volume("src").kept_for_clones
    assert state.delete_volume("src").kept_for_clones  # asking again answers the same
    assert state.delete_volume("c1").kept_for_clones
    assert [g.volume_id for g in state.list_volumes()] == ["c2"]
    assert state.describe_volume("src").deleted  # the state still knows it (healing needs it)
    with pytest.raises(AlreadyExists, match=r"^volume c1 was deleted but is kept for its clones c2; choose another"):
        state.plan_create_volume("c1", 0, MIB, 0.0)
    with pytest.raises(VolumeDeleted, match=r"^volume src was deleted; it is kept only because its clones c1 still"):
        state.plan_clone("src", "x", 10, [1, 1])
    with pytest.raises(VolumeDeleted, match="volume c1 was deleted"):
        state.plan_grow_volume("c1", 0, 0.0)
    assert state.orphans() == []

    deletion = state.delete_volume("c2")
    assert not deletion.kept_for_clones and deletion.volumes_dropped == ("c2", "c1", "src")
    assert [{o.segment_id.split("/")[0] for o in group} for group in deletion.segment_groups] == [
        {"c2.2"},
        {"c1.1"},
        {"src"},
    ]
    assert len(state.orphans()) == 3 * 12  # every segment, children first
    assert state.geometries() == [] and all(n.segment_count == 0 for n in state.nodes(0.0))
    with pytest.raises(UnknownVolume, match=r"^volume c2 does not exist; `sixfold volume list` shows the volumes$"):
        state.delete_volume("c2")


def test_delete_stops_at_a_live_ancestor() -> None:
    state = plane()
    root(state)
    clone(state, "src", "c1")
    clone(state, "src", "c2")
    state.delete_volume("src")
    assert state.delete_volume("c1").volumes_dropped == ("c1",)
    assert state.describe_volume("src").child_volume_ids == ("c2",)
    assert state.delete_volume("c2").volumes_dropped == ("c2", "src")


def test_snapshots_list_restore_and_delete() -> None:
    state = plane()
    root(state)
    root(state, "other", pgs=1)
    snapshot(state, "src", "s-b", 100, (90, 80))
    snapshot(state, "src", "s-a", 60, (50, 40))
    snapshot(state, "other", "s-c", 7, (7,))
    assert [g.volume_id for g in state.list_volumes()] == ["other", "src"]  # snapshots are not volumes
    assert [g.snapshot_name for g in state.list_snapshots()] == ["s-a", "s-b", "s-c"]
    listed = state.list_snapshots("src")
    assert [(g.volume_id, g.kind, g.branch_lsn, g.parent_volume_id) for g in listed] == [
        ("@s-a", KIND_SNAPSHOT, 60, "src"),
        ("@s-b", KIND_SNAPSHOT, 100, "src"),
    ]
    assert geometry_to_proto(listed[0]).kind == cp_pb2.VOLUME_KIND_SNAPSHOT
    assert state.describe_volume("src").child_volume_ids == ("@s-a", "@s-b")
    with pytest.raises(UnknownVolume, match="volume nope does not exist"):
        state.list_snapshots("nope")
    with pytest.raises(AlreadyExists, match="the name s-a is taken by snapshot s-a"):
        state.plan_create_volume("s-a", 0, MIB, 0.0)
    with pytest.raises(
        InvalidRequest, match=r"^s-a is a snapshot; delete it with `sixfold volume snapshot delete s-a`$"
    ):
        state.delete_volume("s-a")
    with pytest.raises(InvalidRequest, match="@s-a is a snapshot"):
        state.delete_volume("@s-a")
    with pytest.raises(InvalidRequest, match="a snapshot never grows"):
        state.plan_grow_volume("@s-a", 0, 0.0)

    plan = state.plan_restore("s-b", "r1", created_at_ms=9)
    assert (plan.source_volume_id, plan.branch_lsn, [pg.parent_read_lsn for pg in plan.pgs]) == ("@s-b", 100, [90, 80])
    assert {s.parent_segment_id for s in plan.pgs[0].segments} == {"@s-b.1/pg-00000"}
    state.reserve_segments(plan.serial, plan.segments())
    state.commit_clone(plan, everyone(plan))
    with pytest.raises(UnknownVolume, match=r"^snapshot zz does not exist; `sixfold volume snapshot list` shows"):
        state.plan_restore("zz", "r2")

    before = state.to_dict()
    with pytest.raises(SnapshotInUse, match=r"^snapshot s-b is in use: r1 still read its data \(restored from it\)"):
        state.delete_snapshot("s-b")
    assert state.to_dict() == before
    # The source deleted: kept for its snapshots; the restored volume gone, then the snapshot: all dropped.
    assert state.delete_volume("src").kept_for_clones
    assert state.delete_volume("r1").volumes_dropped == ("r1",)  # stops at the (live) snapshot
    assert state.delete_snapshot("s-a").volumes_dropped == ("@s-a",)
    assert state.delete_snapshot("s-b").volumes_dropped == ("@s-b", "src")
    with pytest.raises(UnknownVolume, match="snapshot s-b does not exist"):
        state.delete_snapshot("s-b")


def test_state_file_round_trip_and_an_old_file() -> None:
    state = plane()
    root(state)
    clone(state, "src", "c1")
    snapshot(state, "c1", "s1", 100, (100, 80))
    state.delete_volume("src")
    plan = state.plan_clone("c1", "c2", 100, [90, 80])
    state.reserve_segments(plan.serial, plan.segments())  # a clone in progress: orphans and the serial
    data = json.loads(json.dumps(state.to_dict()))
    restored = ControlPlane.from_dict(data)
    assert restored.to_dict() == data
    assert restored.geometries() == state.geometries()
    assert restored.plan_clone("c1", "c3", 100, [90, 80]).serial == plan.serial + 1

    old = {
        "format_version": 1,
        "nodes": [{"node_id": n, "az": az, "address": f"h:{i}"} for i, (n, az) in enumerate(NODES[:6])],
        "volumes": [
            {
                "volume_id": "vol",
                "page_size": PAGE,
                "segment_size_bytes": MIB,
                "geometry_epoch": 1,
                "protection_groups": [
                    {
                        "pg_index": 0,
                        "first_page": 0,
                        "page_count": MIB // PAGE,
                        "membership_epoch": 1,
                        "node_ids": [n for n, _ in NODES[:6]],
                        "changes": [],
                    }
                ],
            }
        ],
        "orphans": [],
    }
    loaded = ControlPlane.from_dict(old)
    [geometry] = loaded.list_volumes()
    assert (geometry.kind, geometry.parent_volume_id, geometry.created_at_ms, geometry.deleted) == (
        "volume",
        "",
        0,
        False,
    )
    assert {s.segment_id for s in geometry.protection_groups[0].segments} == {"vol/pg-00000"}
    assert loaded.to_dict()["next_serial"] == 1


def test_replacing_a_clone_segment_makes_a_flattened_copy() -> None:
    state = ControlPlane(heartbeat_timeout_ms=1000, failure_timeout_ms=2000)
    for i, (node_id, az) in enumerate(NODES):
        state.register_node(node_id, az, f"h:{i}", 0.0)
    root(state, pgs=1)
    geometry = clone(state, "src", "c1", reads=(90,))
    old = geometry.protection_groups[0].segments[0].node_id
    for node_id, _ in NODES:
        if node_id != old:
            state.heartbeat(node_id, "", 0, 3000.0)
    plans = [p for p in state.plan_replacements(3000.0) if p.volume_id == "c1"]
    [plan] = plans
    request = replacement_request(plan)
    assert (request.parent_segment_id, request.branch_lsn, request.parent_read_lsn) == ("", 0, 0)
    pg = state.begin_change(plan)
    assert {s.node_id: s.parent_segment_id for s in pg.segments}[plan.new.node_id] == ""
    state.set_change_target("c1", 0, old, 100)
    pg = state.complete_change("c1", 0, old)
    parents = {s.node_id: s.parent_segment_id for s in pg.segments}
    assert old not in parents and parents[plan.new.node_id] == ""
    assert sum(p == "src/pg-00000" for p in parents.values()) == 5
    assert old not in state.pg("c1", 0).parent_node_ids
    replacement.checked(state.pg("c1", 0))


def test_growing_a_clone_adds_pgs_without_a_parent() -> None:
    state = plane()
    root(state, pgs=1)
    clone(state, "src", "c1", reads=(90,))
    plan = state.plan_grow_volume("c1", 1, 0.0)
    assert plan is not None and plan.pg.segments[0].segment_id == "c1.1/pg-00001"
    grown = state.commit_pg_plan(plan)
    assert grown.geometry_epoch == 2
    new = grown.protection_groups[1]
    assert not new.has_parent and new.parent_read_lsn == 0 and {s.parent_segment_id for s in new.segments} == {""}
    assert grown.protection_groups[0].has_parent


def test_a_replaced_parent_segment_a_clone_still_reads_through_waits_for_it() -> None:
    """src <- c1 <- c2 on the same six nodes. The node `old` fails; src's and c1's replacements complete but
    c2's rolls back (the node came back first), so c2's segment on `old` still reads through c1's there, which
    reads through src's. Those two orphans are held (the node would refuse to drop them) until c2 leaves the
    node (here: c2 is deleted); then they all go. (The simulator found them stuck: `--replace --time-travel`.)"""
    state = ControlPlane(heartbeat_timeout_ms=1000, failure_timeout_ms=2000)
    for i, (node_id, az) in enumerate(NODES):
        state.register_node(node_id, az, f"h:{i}", 0.0)
    root(state, pgs=1)
    geometry = clone(state, "src", "c1", reads=(90,))
    clone(state, "c1", "c2", branch=200, reads=(150,))
    old = geometry.protection_groups[0].segments[0].node_id
    for node_id, _ in NODES:
        if node_id != old:
            state.heartbeat(node_id, "", 0, 3000.0)
    plans = {p.volume_id: p for p in state.plan_replacements(3000.0)}
    assert set(plans) == {"src", "c1", "c2"}
    for volume_id, plan in plans.items():
        state.begin_change(plan)
        if volume_id != "c2":
            state.set_change_target(volume_id, 0, old, 100)
            state.complete_change(volume_id, 0, old)
    state.roll_back_change("c2", 0, old)  # `old` is back before c2's replacement completed
    held = {(o.node_id, o.segment_id) for o in state.held_orphans()}
    assert held == {(old, "src/pg-00000"), (old, "c1.1/pg-00000")}
    assert (plans["c2"].new.node_id, "c2.2/pg-00000") in {(o.node_id, o.segment_id) for o in state.orphans()}
    assert (plans["c2"].new.node_id, "c2.2/pg-00000") not in held  # the rolled-back new segment goes now
    # c2 is deleted: its segment on `old` is an orphan nothing reads through, and nothing holds the others.
    state.delete_volume("c2")
    assert (old, "c2.2/pg-00000") in {(o.node_id, o.segment_id) for o in state.orphans()}
    assert state.held_orphans() == set()
