"""The control plane's time-travel RPCs in-process (storage/control_plane_clones.py) with fake storage
nodes: what CreateSegment and DropSegment calls a clone, a failed clone, a snapshot, a restore and a
delete make, what is persisted, the lost-copy healing of a clone's segment, and refusals over gRPC."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.storage.control_plane_limits import SnapshotInUse, VolumeDeleted
from sixfold.storage.control_plane_persistence import load_state
from sixfold.storage.control_plane_server import STATE_FILE_NAME, ControlPlaneServicer, start_control_plane
from sixfold.storage.copies import MISSING_GRACE_MS, MISSING_REPORTS_MIN, HeldCopy, NodeReport
from sixfold.storage.errors import AlreadyExists, InvalidRequest, Unavailable, UnknownVolume
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

pytestmark = pytest.mark.unit

NODES = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]
MIB = 2**20
WALL_MS = 1_767_000_000_000.0


def address(node_id: str) -> str:
    return f"{node_id}:1"


class FakeNodes:
    """Every storage node at once: records CreateSegment and DropSegment by node; a node in `failing`
    refuses CreateSegment; a node refuses to drop a segment that a segment it holds names as parent."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, ss_pb2.CreateSegmentRequest]] = {address(n): {} for n, _ in NODES}
        self.created: list[tuple[str, ss_pb2.CreateSegmentRequest]] = []
        self.dropped: list[tuple[str, str]] = []
        self.failing: set[str] = set()
        self.on_create: Any = None

    async def create_segment(self, at: str, request: ss_pb2.CreateSegmentRequest) -> None:
        if self.on_create is not None:
            self.on_create()
        if at in self.failing:
            raise RuntimeError("disk is on fire")
        self.created.append((at, request))
        self.held[at][request.segment_id] = request

    async def drop_segment(self, at: str, segment_id: str) -> None:
        children = [s for s, r in self.held[at].items() if r.parent_segment_id == segment_id]
        if children:
            raise RuntimeError(f"{segment_id} still has child segments {children}")
        self.dropped.append((at, segment_id))
        self.held[at].pop(segment_id, None)

    async def update_membership(self, at: str, request: ss_pb2.UpdateMembershipRequest) -> ss_pb2.SegmentState:
        return ss_pb2.SegmentState(segment_id=request.segment_id, membership_epoch=request.membership_epoch)

    async def segment_state(self, at: str, segment_id: str) -> ss_pb2.SegmentState:
        return ss_pb2.SegmentState(segment_id=segment_id)


class Clock:
    def __init__(self) -> None:
        self.now_ms = 0.0

    def __call__(self) -> float:
        return self.now_ms


async def servicer(tmp_path: Path, fake: FakeNodes, clock: Clock) -> ControlPlaneServicer:
    cp = ControlPlaneServicer(tmp_path, segment_client=fake, clock_ms=clock, wall_clock_ms=lambda: WALL_MS)
    for node_id, az in NODES:
        await cp.RegisterNode(cp_pb2.RegisterNodeRequest(node_id=node_id, az=az, address=address(node_id)), None)
    await cp.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="src", segment_size_bytes=MIB), None)
    await cp.GrowVolume(cp_pb2.GrowVolumeRequest(volume_id="src", geometry_epoch=1), None)
    fake.created.clear()
    return cp


def clone_request(source: str, name: str, **kw: Any) -> cp_pb2.CloneVolumeRequest:
    return cp_pb2.CloneVolumeRequest(
        source_volume_id=source, volume_id=name, branch_lsn=100, parent_read_lsns=[90, 80], **kw
    )


def persisted(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    return data


def test_clone_creates_every_segment_with_its_parent(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        seen_reserved = []
        fake.on_create = lambda: seen_reserved.append(len(persisted(tmp_path)["orphans"]))
        geometry = (await cp.CloneVolume(clone_request("src", "c1"), None)).geometry
        assert seen_reserved == [12] * 12  # reserved on disk before any node was asked
        assert len(fake.created) == 12
        for at, request in fake.created:
            pg = request.pg_index
            assert (request.segment_id, request.parent_segment_id, request.branch_lsn, request.parent_read_lsn) == (
                f"c1.1/pg-{pg:05d}",
                f"src/pg-{pg:05d}",
                100,
                (90, 80)[pg],
            )
            assert f"src/pg-{pg:05d}" in fake.held[at]  # the parent is on the same node
            assert not request.rebuild and len(request.peers) == 6
        assert (geometry.parent_volume_id, geometry.branch_lsn, geometry.kind, geometry.created_at_ms) == (
            "src",
            100,
            cp_pb2.VOLUME_KIND_VOLUME,
            int(WALL_MS),
        )
        assert persisted(tmp_path)["orphans"] == []
        described = (await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="c1"), None)).geometry
        assert described == geometry
        src = (await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="src"), None)).geometry
        assert list(src.child_volume_ids) == ["c1"]
        listed = (await cp.ListVolumes(cp_pb2.ListVolumesRequest(), None)).volumes
        assert [v.volume_id for v in listed] == ["c1", "src"]

        # A clone of the clone reads through it; a snapshot of it too.
        fake.created.clear()
        c2 = (await cp.CloneVolume(clone_request("c1", "c2"), None)).geometry
        assert {r.parent_segment_id for _, r in fake.created} == {"c1.1/pg-00000", "c1.1/pg-00001"}
        assert c2.parent_volume_id == "c1"
        # Restarting keeps all of it.
        restarted = ControlPlaneServicer(tmp_path, segment_client=fake, clock_ms=clock)
        assert restarted._published == cp._published

    asyncio.run(scenario())


def test_a_pg_short_of_a_write_quorum_undoes_the_clone(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        before = persisted(tmp_path)
        fake.failing = {address("a1"), address("b1"), address("c1")}
        with pytest.raises(Unavailable) as info:
            await cp.CloneVolume(clone_request("src", "c1"), None)
        sentence = info.value.message
        assert sentence.startswith("could not create clone c1 of src: PG 0 was created on 3 of 6 nodes, fewer than ")
        assert "the write quorum of 4 (node a1 (a1:1): disk is on fire; node b1 (b1:1): disk is on fire;" in sentence
        assert "PG 1 was created on 3 of 6 nodes" in sentence and sentence.endswith(
            "nothing was kept; retry once the nodes are back"
        )
        assert sorted(fake.dropped) == sorted((address(n), f"c1.1/pg-{pg:05d}") for n, _ in NODES for pg in (0, 1))
        assert all(not s.startswith("c1") for held in fake.held.values() for s in held)
        after = persisted(tmp_path)
        assert after["volumes"] == before["volumes"] and after["orphans"] == []
        assert after["next_serial"] == before["next_serial"] + 1  # the ids are used up, never reused
        assert [v.volume_id for v in (await cp.ListVolumes(cp_pb2.ListVolumesRequest(), None)).volumes] == ["src"]

        # The name is still free; two nodes refusing still leave a write quorum: recorded, without parent there.
        fake.failing = {address("a1"), address("b2")}
        geometry = (await cp.CloneVolume(clone_request("src", "c1"), None)).geometry
        for pg in geometry.protection_groups:
            parents = {s.node_id: s.parent_segment_id for s in pg.segments}
            assert parents["a1"] == parents["b2"] == "" and parents["a2"] == f"src/pg-{pg.pg_index:05d}"
            assert pg.segments[0].segment_id == f"c1.2/pg-{pg.pg_index:05d}"

    asyncio.run(scenario())


def test_a_crash_mid_clone_leaves_only_orphans(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        on_disk: list[str] = []
        fake.on_create = lambda: on_disk.append((tmp_path / STATE_FILE_NAME).read_text())
        await cp.CloneVolume(clone_request("src", "c1"), None)
        # What a control plane that crashed while the nodes were creating the segments restarts from:
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        (crashed / STATE_FILE_NAME).write_text(on_disk[0])
        fake.on_create = None
        restarted = ControlPlaneServicer(crashed, segment_client=fake, clock_ms=clock)
        assert [v.volume_id for v in (await restarted.ListVolumes(cp_pb2.ListVolumesRequest(), None)).volumes] == [
            "src"
        ]
        assert len(restarted.state.orphans()) == 12
        for node_id, _ in NODES:
            await restarted.Heartbeat(cp_pb2.HeartbeatRequest(node_id=node_id), None)
        await restarted.heal_once()
        assert restarted.state.orphans() == []
        assert all(not s.startswith("c1.") for held in fake.held.values() for s in held)
        geometry = (await restarted.CloneVolume(clone_request("src", "c1"), None)).geometry
        assert geometry.protection_groups[0].segments[0].segment_id == "c1.2/pg-00000"

    asyncio.run(scenario())


def test_unhealthy_nodes_are_not_asked(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        clock.now_ms = 5000.0  # past the heartbeat timeout: only nodes heard from since are healthy
        for node_id in ("a1", "a2", "b1", "b2"):
            await cp.Heartbeat(cp_pb2.HeartbeatRequest(node_id=node_id), None)
        await cp.CloneVolume(clone_request("src", "c1"), None)  # AZ c down: a write quorum remains
        assert {at for at, _ in fake.created} == {address(n) for n in ("a1", "a2", "b1", "b2")}
        clock.now_ms = 9000.0
        await cp.Heartbeat(cp_pb2.HeartbeatRequest(node_id="a2"), None)
        with pytest.raises(Unavailable, match="node a1 \\(a1:1\\): unhealthy \\(no recent heartbeat\\), not asked"):
            await cp.CloneVolume(clone_request("src", "c2"), None)

    asyncio.run(scenario())


def test_lost_copy_of_a_clone_segment_is_created_again_flattened(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        await cp.CloneVolume(clone_request("src", "c1"), None)
        fake.created.clear()
        del fake.held[address("b1")]["c1.1/pg-00000"]  # b1 lost its copy
        for _ in range(MISSING_REPORTS_MIN):
            clock.now_ms += MISSING_GRACE_MS
            for node_id, _az in NODES:
                held = {s: HeldCopy(s) for s in fake.held[address(node_id)]}
                cp.state.heartbeat(node_id, "", len(held), clock.now_ms, NodeReport(held))
        await cp.heal_once()
        [(at, request)] = fake.created
        assert at == address("b1") and request.segment_id == "c1.1/pg-00000" and request.rebuild
        assert (request.parent_segment_id, request.branch_lsn, request.parent_read_lsn) == ("", 0, 0)
        pg = (await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="c1"), None)).geometry.protection_groups[0]
        parents = {s.node_id: s.parent_segment_id for s in pg.segments}
        assert parents["b1"] == "" and parents["b2"] == "src/pg-00000" and pg.has_parent
        c1_file = next(v for v in persisted(tmp_path)["volumes"] if v["volume_id"] == "c1")
        assert "b1" not in c1_file["protection_groups"][0]["parent_node_ids"]

    asyncio.run(scenario())


def test_snapshots_restore_and_deletion(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        snap = cp_pb2.VOLUME_KIND_SNAPSHOT
        for name, lsn in (("s2", 100), ("s1", 50)):
            request = cp_pb2.CloneVolumeRequest(
                source_volume_id="src", branch_lsn=lsn, parent_read_lsns=[lsn, 40], kind=snap, snapshot_name=name
            )
            geometry = (await cp.CloneVolume(request, None)).geometry
            assert (geometry.volume_id, geometry.snapshot_name, geometry.kind) == (f"@{name}", name, snap)
        listed = (await cp.ListSnapshots(cp_pb2.ListSnapshotsRequest(), None)).snapshots
        assert [(g.snapshot_name, g.branch_lsn) for g in listed] == [("s1", 50), ("s2", 100)]
        assert [v.volume_id for v in (await cp.ListVolumes(cp_pb2.ListVolumesRequest(), None)).volumes] == ["src"]
        with pytest.raises(UnknownVolume, match="volume zz does not exist"):
            await cp.ListSnapshots(cp_pb2.ListSnapshotsRequest(volume_id="zz"), None)

        fake.created.clear()
        restored = (
            await cp.RestoreSnapshot(cp_pb2.RestoreSnapshotRequest(snapshot_name="s2", volume_id="r"), None)
        ).geometry
        assert (restored.parent_volume_id, restored.branch_lsn) == ("@s2", 100)
        assert {(r.parent_segment_id, r.parent_read_lsn) for _, r in fake.created} == {
            ("@s2.1/pg-00000", 100),
            ("@s2.1/pg-00001", 40),
        }
        with pytest.raises(SnapshotInUse, match=r"^snapshot s2 is in use: r still read its data"):
            await cp.DeleteSnapshot(cp_pb2.DeleteSnapshotRequest(snapshot_name="s2"), None)
        with pytest.raises(InvalidRequest, match="s2 is a snapshot; delete it with"):
            await cp.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="s2"), None)
        with pytest.raises(AlreadyExists, match="the name s1 is taken by snapshot s1"):
            await cp.CloneVolume(clone_request("src", "s1"), None)

        # The source deleted: kept (its snapshots read it), hidden, refused by DescribeVolume.
        reply = await cp.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="src"), None)
        assert reply.kept_for_clones and list(reply.volumes_dropped) == []
        assert [v.volume_id for v in (await cp.ListVolumes(cp_pb2.ListVolumesRequest(), None)).volumes] == ["r"]
        with pytest.raises(VolumeDeleted) as info:
            await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="src"), None)
        assert info.value.message == (
            "volume src was deleted; it is kept only because its clones snapshot s1, snapshot s2 still read its data"
        )
        with pytest.raises(AlreadyExists, match="volume src was deleted but is kept for its clones snapshot s1"):
            await cp.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="src"), None)
        assert fake.dropped == []

        await cp.DeleteSnapshot(cp_pb2.DeleteSnapshotRequest(snapshot_name="s1"), None)
        reply = await cp.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="r"), None)
        assert list(reply.volumes_dropped) == ["r"] and not reply.kept_for_clones
        fake.dropped.clear()
        await cp.DeleteSnapshot(cp_pb2.DeleteSnapshotRequest(snapshot_name="s2"), None)
        # The snapshot's segments first, then its deleted source's, on every node.
        order = [s.split("/")[0] for _, s in fake.dropped]
        assert order == ["@s2.1"] * 12 + ["src"] * 12
        assert all(held == {} for held in fake.held.values())
        data = persisted(tmp_path)
        assert data["volumes"] == [] and data["orphans"] == []
        assert all(n.segment_count == 0 for n in (await cp.ListNodes(cp_pb2.ListNodesRequest(), None)).nodes)

    asyncio.run(scenario())


def test_delete_of_an_unreachable_node_leaves_an_orphan_then_a_new_volume_takes_other_ids(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clock = FakeNodes(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        clock.now_ms = 5000.0
        for node_id, _ in NODES[1:]:
            await cp.Heartbeat(cp_pb2.HeartbeatRequest(node_id=node_id), None)
        reply = await cp.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="src"), None)
        assert list(reply.volumes_dropped) == ["src"]
        assert sorted(o.segment_id for o in cp.state.orphans()) == ["src/pg-00000", "src/pg-00001"]
        with pytest.raises(UnknownVolume):
            await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="src"), None)
        await cp.Heartbeat(cp_pb2.HeartbeatRequest(node_id="a1"), None)  # back; its old segments still there
        geometry = (
            await cp.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="src", segment_size_bytes=MIB), None)
        ).geometry
        assert geometry.protection_groups[0].segments[0].segment_id == "src.1/pg-00000"
        load_state(tmp_path / STATE_FILE_NAME, 3000, 10_000, 0.0)  # the file loads
        await cp.heal_once()  # a1 answers now: the old segments are dropped, the new one stays
        assert cp.state.orphans() == []
        assert "src.1/pg-00000" in fake.held[address("a1")] and "src/pg-00000" not in fake.held[address("a1")]

    asyncio.run(scenario())


def test_refusals_over_grpc_keep_the_server_serving(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = FakeNodes()
        server, port, _ = await start_control_plane("127.0.0.1", 0, tmp_path, segment_client=fake, heal_interval_s=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)
                for node_id, az in NODES:
                    await stub.RegisterNode(
                        cp_pb2.RegisterNodeRequest(node_id=node_id, az=az, address=address(node_id))
                    )
                await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="src", segment_size_bytes=MIB))
                cases = [
                    (stub.CloneVolume(clone_request("nope", "c")), grpc.StatusCode.NOT_FOUND),
                    (stub.CloneVolume(clone_request("src", "src")), grpc.StatusCode.ALREADY_EXISTS),
                    (stub.CloneVolume(clone_request("src", "c")), grpc.StatusCode.INVALID_ARGUMENT),  # 2 LSNs, 1 PG
                    (stub.CloneVolume(clone_request("src", "c", kind=7)), grpc.StatusCode.INVALID_ARGUMENT),
                    (stub.RestoreSnapshot(cp_pb2.RestoreSnapshotRequest(snapshot_name="s")), grpc.StatusCode.NOT_FOUND),
                    (stub.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="zz")), grpc.StatusCode.NOT_FOUND),
                    (stub.DeleteSnapshot(cp_pb2.DeleteSnapshotRequest(snapshot_name="zz")), grpc.StatusCode.NOT_FOUND),
                ]
                for call, code in cases:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert info.value.code() == code, info.value.details()
                    assert info.value.details() and "Traceback" not in (info.value.details() or "")
                request = cp_pb2.CloneVolumeRequest(
                    source_volume_id="src", volume_id="c", branch_lsn=9, parent_read_lsns=[3]
                )
                reply = await stub.CloneVolume(request)
                assert reply.geometry.protection_groups[0].parent_read_lsn == 3
                await stub.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="src"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="src"))
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert (
                    info.value.details()
                    == "volume src was deleted; it is kept only because its clones c still read its data"
                )
                reply2 = await stub.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="c"))
                assert list(reply2.volumes_dropped) == ["c", "src"]
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_a_branch_point_the_nodes_collected_meanwhile_is_refused_out_of_range_not_unavailable(tmp_path: Path) -> None:
    """GC may pass the branch point between the compute node's look-up and CreateSegment: when more nodes of a PG
    refuse it as collected than a write quorum leaves, that is final (OUT_OF_RANGE), not 'retry later'."""
    import grpc

    from sixfold.storage.errors import ReadPointOutOfRange
    from sixfold.storage.lineage import BELOW_GC_FLOOR, LineageRefused
    from sixfold.storage.status import status_code, trailing_metadata_of

    refusal = LineageRefused(
        "segment c1.1/pg-00000 cannot be created as a clone of segment src/pg-00000: src/pg-00000 no longer keeps "
        "its pages at LSN 90: its GC floor is 95; clone at a later LSN",
        {"segment_id": "c1.1/pg-00000", "parent_segment_id": "src/pg-00000", "condition": BELOW_GC_FLOOR},
    )

    class Collected(FakeNodes):
        async def create_segment(self, at: str, request: ss_pb2.CreateSegmentRequest) -> None:
            if request.pg_index == 0 and at in self.failing:
                raise grpc.aio.AioRpcError(
                    status_code(refusal),
                    grpc.aio.Metadata(),
                    grpc.aio.Metadata(*trailing_metadata_of(refusal)),
                    refusal.message,
                )
            await super().create_segment(at, request)

    async def scenario() -> None:
        fake, clock = Collected(), Clock()
        cp = await servicer(tmp_path, fake, clock)
        fake.failing = {address(n) for n in ("a1", "a2", "b1")}  # three of PG 0's six: no write quorum left
        with pytest.raises(ReadPointOutOfRange) as info:
            await cp.CloneVolume(clone_request("src", "c1"), None)
        assert "3 of PG 0's segments no longer keep its pages at the branch point" in info.value.message
        assert "its GC floor is 95" in info.value.message and info.value.message.endswith("nothing was kept")
        assert all(not s.startswith("c1") for held in fake.held.values() for s in held)  # nothing half made
        fake.failing = {address(n) for n in ("a1", "a2")}  # two: a write quorum still holds it
        await cp.CloneVolume(clone_request("src", "c1"), None)

    asyncio.run(scenario())
