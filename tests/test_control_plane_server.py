"""The control plane's gRPC servicer in-process, with fake storage nodes (storage/control_plane_server.py),
and the wiring of its `sixfold control-plane` subcommand."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.storage.control_plane_server import STATE_FILE_NAME, start_control_plane
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

pytestmark = pytest.mark.unit

NODES = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]
MIB = 2**20


def details(info: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> str:
    return info.value.details() or ""


class FakeStorageNode:
    """Serves CreateSegment/DropSegment of StorageService (others: UNIMPLEMENTED)."""

    def __init__(self, fail_create: bool = False) -> None:
        self.fail_create = fail_create
        self.segments: dict[str, ss_pb2.CreateSegmentRequest] = {}
        self.dropped: list[str] = []

    async def CreateSegment(self, request: ss_pb2.CreateSegmentRequest, context: Any) -> ss_pb2.CreateSegmentResponse:
        if self.fail_create:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "disk is on fire")
        created = request.segment_id not in self.segments
        self.segments[request.segment_id] = request
        return ss_pb2.CreateSegmentResponse(created=created)

    async def DropSegment(self, request: ss_pb2.DropSegmentRequest, context: Any) -> ss_pb2.DropSegmentResponse:
        self.dropped.append(request.segment_id)
        self.segments.pop(request.segment_id, None)
        return ss_pb2.DropSegmentResponse()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def unimplemented(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by the fake")

        return unimplemented


async def start_fake_nodes(
    fail: frozenset[str] = frozenset(),
) -> tuple[dict[str, FakeStorageNode], dict[str, str], list]:
    fakes, addresses, servers = {}, {}, []
    descriptor = ss_pb2.DESCRIPTOR.services_by_name["StorageService"]
    for node_id, _az in NODES:
        fake = FakeStorageNode(fail_create=node_id in fail)
        server, port, _ = await start_server("127.0.0.1", 0, [(descriptor, fake, ss_pb2)])
        fakes[node_id], addresses[node_id] = fake, f"127.0.0.1:{port}"
        servers.append(server)
    return fakes, addresses, servers


async def stop_all(servers: list) -> None:
    await asyncio.gather(*(s.stop(None) for s in servers))


def cp_stub(channel: grpc.aio.Channel) -> control_plane_service_pb2_grpc.ControlPlaneServiceStub:
    return control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)


async def register_all(stub: Any, addresses: dict[str, str]) -> None:
    for node_id, az in NODES:
        await stub.RegisterNode(cp_pb2.RegisterNodeRequest(node_id=node_id, az=az, address=addresses[node_id]))


def test_server_registers_creates_grows_and_survives_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        fakes, addresses, node_servers = await start_fake_nodes()
        server, port, _ = await start_control_plane("127.0.0.1", 0, tmp_path)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = cp_stub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Heartbeat(cp_pb2.HeartbeatRequest(node_id="a1"))
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                assert info.value.details() == "node a1 is not registered; register first"

                await register_all(stub, addresses)
                reply = await stub.Heartbeat(cp_pb2.HeartbeatRequest(node_id="a1", address=addresses["a1"]))
                assert reply.heartbeat_interval_ms == 500
                nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
                assert [n.node_id for n in nodes] == [n for n, _ in NODES]
                assert all(n.health == cp_pb2.NODE_HEALTH_HEALTHY and n.segment_count == 0 for n in nodes)

                created = await stub.CreateVolume(
                    cp_pb2.CreateVolumeRequest(volume_id="vol", page_size=4096, segment_size_bytes=MIB)
                )
                geometry = created.geometry
                assert geometry.geometry_epoch == 1 and len(geometry.protection_groups) == 1
                assert {s.node_id for s in geometry.protection_groups[0].segments} == set(fakes)
                for fake in fakes.values():
                    request = fake.segments["vol/pg-00000"]
                    assert (
                        request.volume_id,
                        request.pg_index,
                        request.first_page,
                        request.page_count,
                        request.page_size,
                        request.membership_epoch,
                    ) == ("vol", 0, 0, 256, 4096, 1)

                grown = (await stub.GrowVolume(cp_pb2.GrowVolumeRequest(volume_id="vol", geometry_epoch=1))).geometry
                again = (await stub.GrowVolume(cp_pb2.GrowVolumeRequest(volume_id="vol", geometry_epoch=1))).geometry
                assert grown == again and grown.geometry_epoch == 2 and len(grown.protection_groups) == 2
                assert all("vol/pg-00001" in fake.segments for fake in fakes.values())
                assert grown.protection_groups[1].first_page == 256
                # Two clients growing from the same epoch at once: one PG is added, not two.
                racing = await asyncio.gather(
                    *(stub.GrowVolume(cp_pb2.GrowVolumeRequest(volume_id="vol", geometry_epoch=2)) for _ in range(2))
                )
                assert [len(r.geometry.protection_groups) for r in racing] == [3, 3]
                grown = racing[0].geometry

                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="vol"))
                assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="Bad_Id"))
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="nope"))
                assert info.value.code() == grpc.StatusCode.NOT_FOUND

                nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
                assert all(n.segment_count == 3 for n in nodes)
            await server.stop(None)

            persisted = json.loads((tmp_path / STATE_FILE_NAME).read_text())
            assert [v["volume_id"] for v in persisted["volumes"]] == ["vol"]

            server, port, _ = await start_control_plane("127.0.0.1", 0, tmp_path)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = cp_stub(channel)
                described = (await stub.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="vol"))).geometry
                assert described == grown
                listed = (await stub.ListVolumes(cp_pb2.ListVolumesRequest())).volumes
                assert list(listed) == [grown]
                nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
                assert all(n.health == cp_pb2.NODE_HEALTH_UNHEALTHY and n.segment_count == 3 for n in nodes)
                await stub.Heartbeat(cp_pb2.HeartbeatRequest(node_id="b2", address=addresses["b2"]))
                nodes = {n.node_id: n for n in (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes}
                assert nodes["b2"].health == cp_pb2.NODE_HEALTH_HEALTHY
        finally:
            await server.stop(None)
            await stop_all(node_servers)

    asyncio.run(scenario())


def test_server_create_fails_cleanly_when_a_node_fails(tmp_path: Path) -> None:
    async def scenario() -> None:
        fakes, addresses, node_servers = await start_fake_nodes(fail=frozenset({"b2"}))
        server, port, _ = await start_control_plane("127.0.0.1", 0, tmp_path)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = cp_stub(channel)
                await register_all(stub, addresses)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="vol", segment_size_bytes=MIB))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "node b2" in details(info) and "disk is on fire" in details(info)
                assert "volume vol was not created" in details(info)
                for node_id, fake in fakes.items():
                    assert fake.segments == {}, node_id
                    assert fake.dropped == ([] if node_id == "b2" else ["vol/pg-00000"]), node_id
                assert list((await stub.ListVolumes(cp_pb2.ListVolumesRequest())).volumes) == []
                nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
                assert all(n.segment_count == 0 for n in nodes)

                # A node that does not answer at all is named the same way.
                await node_servers[NODES.index(("c1", "c"))].stop(None)
                fakes["b2"].fail_create = False
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="vol", segment_size_bytes=MIB))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert f"node c1 ({addresses['c1']})" in details(info)
        finally:
            await server.stop(None)
            await stop_all(node_servers)

    asyncio.run(scenario())


def test_server_reports_unplaceable_volume(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, port, _ = await start_control_plane("127.0.0.1", 0, tmp_path)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = cp_stub(channel)
                for node_id, az in NODES[:5]:
                    await stub.RegisterNode(cp_pb2.RegisterNodeRequest(node_id=node_id, az=az, address="127.0.0.1:1"))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="vol"))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "AZ c has only 1 healthy node" in details(info)
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_cli_wires_the_control_plane_subcommand() -> None:
    from sixfold.storage.control_plane_main import heartbeat_interval_ms
    from sixfold.tools.cli import build_parser

    parser = build_parser("control-plane")
    args = parser.parse_args(["control-plane", "--data-dir", "d"])
    assert (args._module, args.host, args.port, args.port_file, args.heartbeat_timeout_ms) == (
        "sixfold.storage.control_plane_main",
        "127.0.0.1",
        0,
        None,
        3000,
    )
    assert heartbeat_interval_ms(args) == 500
    short = parser.parse_args(["control-plane", "--data-dir", "d", "--heartbeat-timeout-ms", "600"])
    assert heartbeat_interval_ms(short) == 200
    explicit = parser.parse_args(["control-plane", "--data-dir", "d", "--heartbeat-interval-ms", "50"])
    assert heartbeat_interval_ms(explicit) == 50
