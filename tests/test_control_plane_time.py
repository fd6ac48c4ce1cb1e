"""FindCommit and the backtrack RPCs over gRPC (storage/control_plane_backtrack.py), with the fake storage nodes
of tests/test_control_plane_backtrack.py: a time resolves to the newest commit on what the volume showed then,
refusals say why with their status, and a clone's history starts at its branch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.storage.control_plane_calls import GrpcSegmentClient, TimelineSegmentClient
from sixfold.storage.control_plane_limits import CommitNotFound
from sixfold.storage.control_plane_server import start_control_plane
from sixfold.storage.control_plane_timelines import when
from sixfold.storage.errors import ReadPointOutOfRange
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc
from tests.test_control_plane_backtrack import NODES, Clocks, FakeNodes, address, back, refused, servicer, us

pytestmark = pytest.mark.unit


def test_find_commit_and_a_clone_cannot_leave_its_own_history(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        cp = await servicer(tmp_path, fake, clocks)

        def find(at_us: int, vdl: int = 30, volume_id: str = "v") -> Any:
            request = cp_pb2.FindVolumeCommitRequest(volume_id=volume_id, at_time_us=at_us, current_vdl=vdl)
            return cp.FindVolumeCommit(request, None)

        reply = await find(us(260))
        assert (reply.lsn, reply.commit_time_us, reply.timeline_id) == (25, us(250), "v")
        assert "is before volume v existed" in await refused(ReadPointOutOfRange, find(us(-1)))
        assert (await refused(CommitNotFound, find(us(50)))).startswith(
            f"volume v has no commit at or before {when(us(50))}"
        )
        for segment in fake.everywhere("v/pg-00000") + fake.everywhere("v/pg-00001"):
            segment.horizon = 22  # 10, 15, 20 and 21 collected
        assert await refused(ReadPointOutOfRange, find(us(240))) == (
            f"the commits of volume v at or before {when(us(240))} are no longer kept (the oldest it keeps is from "
            f"{when(us(250))}): older records were garbage-collected; choose a later time"
        )
        for segment in fake.everywhere("v/pg-00000") + fake.everywhere("v/pg-00001"):
            segment.horizon = 0
        await cp.Backtrack(back(to_lsn=21), None)
        # What v showed at a time before the backtrack, and whether v shows it still.
        assert (await find(us(220), vdl=36)).timeline_id == "v"  # 21: the new timeline shows it too
        reply = await find(us(310), vdl=36)
        assert (reply.lsn, reply.timeline_id) == (30, "v~0")  # 30: only on the timeline left
        # A clone starts its own history at its branch.
        clone = cp_pb2.CloneVolumeRequest(
            source_volume_id="v", volume_id="c1", branch_lsn=36, parent_read_lsns=[21, 15]
        )
        await cp.CloneVolume(clone, None)
        assert (await cp.VolumeHistory(cp_pb2.VolumeHistoryRequest(volume_id="c1"), None)).timelines[
            0
        ].parent_timeline_id == "v"
        assert "a backtrack stays within the volume's own history" in await refused(
            ReadPointOutOfRange, cp.Backtrack(back(to_lsn=21, vdl=36, tails=(21, 15), volume_id="c1"), None)
        )

    asyncio.run(scenario())


def test_refusals_over_grpc_carry_their_status(tmp_path: Path) -> None:
    assert isinstance(GrpcSegmentClient(), TimelineSegmentClient)

    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        await servicer(tmp_path, fake, clocks)  # the state a served control plane loads
        server, port, _ = await start_control_plane(
            "127.0.0.1", 0, tmp_path, segment_client=fake, heal_interval_s=0, wall_clock_ms=clocks.wall
        )
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)
                for node_id, az in NODES:
                    await stub.RegisterNode(
                        cp_pb2.RegisterNodeRequest(node_id=node_id, az=az, address=address(node_id))
                    )
                cases = [
                    (stub.Backtrack(back(to_lsn=21, volume_id="w")), grpc.StatusCode.NOT_FOUND),
                    (stub.Backtrack(back()), grpc.StatusCode.INVALID_ARGUMENT),
                    (stub.Backtrack(back(to_lsn=31)), grpc.StatusCode.OUT_OF_RANGE),
                    (stub.Backtrack(back(to_lsn=20)), grpc.StatusCode.INVALID_ARGUMENT),
                    (stub.VolumeHistory(cp_pb2.VolumeHistoryRequest(volume_id="w")), grpc.StatusCode.NOT_FOUND),
                    (
                        stub.FindVolumeCommit(cp_pb2.FindVolumeCommitRequest(volume_id="v", at_time_us=us(50))),
                        grpc.StatusCode.NOT_FOUND,
                    ),
                    (
                        stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="x", backtrack_window_s=10**9)),
                        grpc.StatusCode.INVALID_ARGUMENT,
                    ),
                ]
                for call, code in cases:
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await call
                    assert info.value.code() == code, info.value.details()
                    assert info.value.details() and "Traceback" not in (info.value.details() or "")
                reply = await stub.Backtrack(back(to_lsn=21))
                assert reply.from_timeline_id == "v~0"
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="v~0"))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                found = await stub.FindVolumeCommit(cp_pb2.FindVolumeCommitRequest(volume_id="v", at_time_us=us(260)))
                assert (found.lsn, found.timeline_id) == (25, "v~0")  # only v~0 shows 25: v branched at 21
        finally:
            await server.stop(None)

    asyncio.run(scenario())
