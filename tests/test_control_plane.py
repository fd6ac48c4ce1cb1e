"""The control plane: its pure state machine, its gRPC servicer in-process (with fake
storage nodes), its process, and (when the storage node exists) six real storage nodes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.storage import control_plane as cp
from sixfold.storage.control_plane import ControlPlane, RegistryFull, UnknownNode
from sixfold.storage.control_plane_server import STATE_FILE_NAME, start_control_plane
from sixfold.storage.errors import AlreadyExists, InvalidRequest, StaleEpoch, Unavailable, UnknownVolume, VolumeFull
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc, storage_service_pb2_grpc
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
NODES = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]
MIB = 2**20
WAIT_S_MAX = 30.0


def six_node_plane(now_ms: float = 0.0, timeout_ms: int = 3000) -> ControlPlane:
    plane = ControlPlane(heartbeat_timeout_ms=timeout_ms)
    for i, (node_id, az) in enumerate(NODES):
        plane.register_node(node_id, az, f"127.0.0.1:{7000 + i}", now_ms)
    return plane


def create(
    plane: ControlPlane, volume_id: str, page_size: int = 0, segment_size_bytes: int = MIB, now_ms: float = 0.0
) -> cp.VolumeGeometry:
    return plane.commit_pg_plan(plane.plan_create_volume(volume_id, page_size, segment_size_bytes, now_ms))


def grow(plane: ControlPlane, volume_id: str, geometry_epoch: int, now_ms: float = 0.0) -> cp.VolumeGeometry:
    plan = plane.plan_grow_volume(volume_id, geometry_epoch, now_ms)
    if plan is None:
        return plane.describe_volume(volume_id)
    return plane.commit_pg_plan(plan)


# ---------------------------------------------------------------------------
# The pure state machine


def test_create_volume_geometry() -> None:
    plane = six_node_plane()
    plan = plane.plan_create_volume("vol-1", 0, 0, 0.0)
    assert plane.list_volumes() == []  # planning changes nothing
    geometry = plane.commit_pg_plan(plan)
    assert (geometry.page_size, geometry.segment_size_bytes, geometry.geometry_epoch) == (4096, 10 * 2**30, 1)
    [pg] = geometry.protection_groups
    assert (pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch) == (0, 0, 10 * 2**30 // 4096, 1)
    assert {s.segment_id for s in pg.segments} == {"vol-1/pg-00000"}
    assert sorted(s.node_id for s in pg.segments) == [n for n, _ in NODES]
    assert {s.address for s in pg.segments} == {f"127.0.0.1:{7000 + i}" for i in range(6)}
    assert all(v.segment_count == 1 for v in plane.nodes(0.0))


def test_grow_adds_one_pg_and_bumps_epoch() -> None:
    plane = six_node_plane()
    create(plane, "v", page_size=8192, segment_size_bytes=MIB)
    geometry = grow(plane, "v", 1)
    assert geometry.geometry_epoch == 2
    pages_per_pg = MIB // 8192
    assert [(pg.pg_index, pg.first_page, pg.page_count) for pg in geometry.protection_groups] == [
        (0, 0, pages_per_pg),
        (1, pages_per_pg, pages_per_pg),
    ]
    assert geometry.protection_groups[1].segments[0].segment_id == "v/pg-00001"
    assert grow(plane, "v", 0).geometry_epoch == 3  # 0 = grow whatever the epoch


def test_grow_is_idempotent_per_epoch() -> None:
    plane = six_node_plane()
    create(plane, "v")
    first = grow(plane, "v", 1)
    again = grow(plane, "v", 1)  # a retry of the same request
    assert again == first and len(again.protection_groups) == 2
    assert all(v.segment_count == 2 for v in plane.nodes(0.0))
    with pytest.raises(InvalidRequest, match="newer than volume v's current epoch 2"):
        plane.plan_grow_volume("v", 7, 0.0)


def test_stale_plan_is_not_committed() -> None:
    plane = six_node_plane()
    create(plane, "v")
    plan_a = plane.plan_grow_volume("v", 1, 0.0)
    plan_b = plane.plan_grow_volume("v", 1, 0.0)
    assert plan_a is not None and plan_b is not None
    plane.commit_pg_plan(plan_a)
    with pytest.raises(StaleEpoch, match="volume v changed"):
        plane.commit_pg_plan(plan_b)
    assert len(plane.describe_volume("v").protection_groups) == 2


def test_volume_full_at_128_tib() -> None:
    plane = six_node_plane()
    create(plane, "big", segment_size_bytes=32 * 2**40)  # 4 PGs of 32 TiB make 128 TiB
    for epoch in (1, 2, 3):
        grow(plane, "big", epoch)
    with pytest.raises(VolumeFull, match=r"^volume big is full: 128 TiB$"):
        plane.plan_grow_volume("big", 4, 0.0)
    assert len(plane.describe_volume("big").protection_groups) == 4


def test_volume_full_at_pg_count_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cp, "PG_COUNT_MAX", 3)
    plane = six_node_plane()
    create(plane, "small", segment_size_bytes=MIB)
    grow(plane, "small", 1)
    grow(plane, "small", 2)
    with pytest.raises(VolumeFull, match="volume small is full: 3 protection groups of 1 MiB"):
        plane.plan_grow_volume("small", 3, 0.0)


@pytest.mark.parametrize("volume_id", ["", "-lead", "Upper", "has_underscore", "a/b", "x" * 64, "sp ace"])
def test_bad_volume_ids(volume_id: str) -> None:
    with pytest.raises(InvalidRequest, match="is not valid"):
        six_node_plane().plan_create_volume(volume_id, 0, 0, 0.0)


def test_good_volume_ids() -> None:
    plane = six_node_plane()
    for volume_id in ["a", "0", "vol-1", "x" * 63]:
        create(plane, volume_id)
    assert [g.volume_id for g in plane.list_volumes()] == sorted(["a", "0", "vol-1", "x" * 63])


@pytest.mark.parametrize("page_size", [256, 1000, 3000, 131072, 65537, 4095])
def test_bad_page_sizes(page_size: int) -> None:
    with pytest.raises(InvalidRequest, match=f"page size {page_size} is not valid"):
        six_node_plane().plan_create_volume("v", page_size, 0, 0.0)


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 16384, 65536])
def test_good_page_sizes(page_size: int) -> None:
    assert create(six_node_plane(), "v", page_size=page_size).page_size == page_size


def test_bad_segment_sizes() -> None:
    plane = six_node_plane()
    with pytest.raises(InvalidRequest, match="not a multiple of the page size 4096"):
        plane.plan_create_volume("v", 4096, 4096 * 3 + 1, 0.0)
    with pytest.raises(InvalidRequest, match="exceeds the volume limit of 128 TiB"):
        plane.plan_create_volume("v", 4096, 256 * 2**40, 0.0)


def test_duplicate_and_unknown_volumes() -> None:
    plane = six_node_plane()
    create(plane, "v")
    with pytest.raises(AlreadyExists, match="volume v already exists"):
        plane.plan_create_volume("v", 0, 0, 0.0)
    with pytest.raises(UnknownVolume, match="volume w does not exist"):
        plane.describe_volume("w")
    with pytest.raises(UnknownVolume):
        plane.plan_grow_volume("w", 0, 0.0)


def test_health_from_heartbeat_age() -> None:
    plane = six_node_plane(now_ms=1000.0, timeout_ms=3000)
    assert all(v.healthy for v in plane.nodes(4000.0))  # registration counts as a heartbeat
    plane.heartbeat("a1", "", 0, 5000.0)
    views = {v.node_id: v for v in plane.nodes(6500.0)}
    assert views["a1"].healthy and views["a1"].last_heartbeat_age_ms == 1500
    assert not views["a2"].healthy and views["a2"].last_heartbeat_age_ms == 5500
    with pytest.raises(Unavailable, match="AZ a has only 1 healthy node"):
        plane.plan_create_volume("v", 0, 0, 6500.0)


def test_heartbeat_from_unknown_node() -> None:
    with pytest.raises(UnknownNode, match=r"^node zz is not registered; register first$"):
        six_node_plane().heartbeat("zz", "127.0.0.1:1", 0, 0.0)


def test_re_registration_updates_address_and_az() -> None:
    plane = six_node_plane()
    plane.register_node("a1", "a", "127.0.0.1:9999", 10.0)
    assert plane.node("a1", 10.0).address == "127.0.0.1:9999"
    assert plane.heartbeat("a1", "127.0.0.1:8888", 0, 20.0) is True
    assert plane.heartbeat("a1", "127.0.0.1:8888", 0, 30.0) is False
    plane.register_node("a1", "d", "127.0.0.1:8888", 40.0)  # no segments yet: may move
    assert plane.node("a1", 40.0).az == "d"
    plane.register_node("a1", "a", "127.0.0.1:8888", 50.0)
    create(plane, "v", now_ms=50.0)
    with pytest.raises(InvalidRequest, match="holds 1 segments in AZ a"):
        plane.register_node("a1", "b", "127.0.0.1:8888", 60.0)
    assert plane.describe_volume("v").protection_groups[0].segments[0].address == "127.0.0.1:8888"


@pytest.mark.parametrize(
    "node_id, az, address",
    [
        ("", "a", "h:1"),
        ("a b", "a", "h:1"),
        ("n", "", "h:1"),
        ("n", "a/b", "h:1"),
        ("n", "a", "nohost"),
        ("n", "a", ":1"),
        ("n", "a", "h:port"),
    ],
)
def test_bad_registrations(node_id: str, az: str, address: str) -> None:
    with pytest.raises(InvalidRequest, match="is not valid"):
        ControlPlane().register_node(node_id, az, address, 0.0)


def test_placement_spreads_across_a_larger_fleet() -> None:
    plane = ControlPlane()
    for az in "abc":
        for i in range(4):
            plane.register_node(f"{az}{i}", az, f"h:{i}", 0.0)
    create(plane, "v")
    for epoch in range(1, 6):
        grow(plane, "v", epoch)
    counts = sorted(v.segment_count for v in plane.nodes(0.0))
    assert counts == [3] * 12  # 6 PGs x 6 segments over 12 nodes


def test_to_dict_from_dict_round_trip() -> None:
    plane = six_node_plane()
    plane.register_node("d1", "c", "127.0.0.1:7777", 0.0)
    create(plane, "v1")
    grow(plane, "v1", 1)
    create(plane, "v2", page_size=512, segment_size_bytes=512 * 8)
    data = plane.to_dict()
    restored = ControlPlane.from_dict(json.loads(json.dumps(data)))
    assert restored.to_dict() == data
    assert restored.list_volumes() == plane.list_volumes()
    assert [v.segment_count for v in restored.nodes(0.0)] == [v.segment_count for v in plane.nodes(0.0)]
    # Heartbeat times are not persisted: nodes are unhealthy until heard from.
    assert not any(v.healthy for v in restored.nodes(0.0))
    restored.heartbeat("a1", "", 0, 5.0)
    assert restored.node("a1", 5.0).healthy and not restored.node("a2", 5.0).healthy
    for node_id, _ in NODES:
        restored.heartbeat(node_id, "", 0, 5.0)
    grow(restored, "v1", 2, now_ms=5.0)
    assert restored.describe_volume("v1").geometry_epoch == 3


def test_registry_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cp, "NODE_COUNT_MAX", 6)
    monkeypatch.setattr(cp, "VOLUME_COUNT_MAX", 1)
    plane = six_node_plane()
    with pytest.raises(RegistryFull, match="6 nodes are registered"):
        plane.register_node("d1", "d", "h:1", 0.0)
    plane.register_node("a1", "a", "h:2", 0.0)  # re-registering is not a new node
    create(plane, "v")
    with pytest.raises(RegistryFull, match="1 volumes exist"):
        plane.plan_create_volume("w", 0, 0, 0.0)


def test_from_dict_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="format version"):
        ControlPlane.from_dict({"format_version": 99, "nodes": [], "volumes": []})


def test_control_plane_is_pure() -> None:
    source = Path(cp.__file__).read_text()
    for forbidden in ("grpc", "lmdb", "time", "random", "threading"):
        assert f"import {forbidden}" not in source and f"from {forbidden}" not in source, forbidden


# ---------------------------------------------------------------------------
# The servicer in-process, with fake storage nodes


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


async def start_fake_nodes(fail: set[str] = frozenset()) -> tuple[dict[str, FakeStorageNode], dict[str, str], list]:
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
        fakes, addresses, node_servers = await start_fake_nodes(fail={"b2"})
        server, port, _ = await start_control_plane("127.0.0.1", 0, tmp_path)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
                stub = cp_stub(channel)
                await register_all(stub, addresses)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="vol", segment_size_bytes=MIB))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "node b2" in info.value.details() and "disk is on fire" in info.value.details()
                assert "volume vol was not created" in info.value.details()
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
                assert f"node c1 ({addresses['c1']})" in info.value.details()
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
                assert "AZ c has only 1 healthy node" in info.value.details()
        finally:
            await server.stop(None)

    asyncio.run(scenario())


# ---------------------------------------------------------------------------
# The process


def wait_for_port_file(path: Path, proc: subprocess.Popen, what: str) -> int:
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before writing {path}")
        time.sleep(0.05)
    raise AssertionError(f"{what} wrote no port file within {WAIT_S_MAX} s")


def stop_process(proc: subprocess.Popen) -> int:
    """Stop a process this test started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def test_control_plane_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "cp.port"
    log_path = tmp_path / "control_plane.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sixfold.tools.cli",
                "control-plane",
                "--data-dir",
                str(tmp_path / "cp"),
                "--port-file",
                str(port_file),
                "--heartbeat-timeout-ms",
                "2000",
            ],
            cwd=REPO_ROOT,
            stderr=log,
            stdout=log,
        )
    try:
        port = wait_for_port_file(port_file, proc, "the control plane")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)
            stub.RegisterNode(cp_pb2.RegisterNodeRequest(node_id="a1", az="a", address="127.0.0.1:1"), timeout=5)
            assert [n.node_id for n in stub.ListNodes(cp_pb2.ListNodesRequest(), timeout=5).nodes] == ["a1"]
    finally:
        returncode = stop_process(proc)
    output = log_path.read_text()
    assert returncode == 0, output
    assert f"control plane serving on 127.0.0.1:{port}" in output
    assert "ERROR" not in output and "Traceback" not in output, output
    assert json.loads((tmp_path / "cp" / STATE_FILE_NAME).read_text())["nodes"][0]["node_id"] == "a1"


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


# ---------------------------------------------------------------------------
# Six real storage nodes (storage/node_main.py) against the control plane

NODE_MAIN_MISSING = importlib.util.find_spec("sixfold.storage.node_main") is None


@pytest.mark.skipif(NODE_MAIN_MISSING, reason="storage/node_main.py does not exist yet")
def test_six_real_storage_nodes(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, cp_port, _ = await start_control_plane("127.0.0.1", 0, tmp_path / "cp")
        procs: list[tuple[str, subprocess.Popen]] = []
        try:
            for node_id, az in NODES:
                procs.append((node_id, start_storage_node(tmp_path, node_id, az, cp_port)))
            ports = {}
            for node_id, proc in procs:
                ports[node_id] = await asyncio.to_thread(
                    wait_for_port_file, tmp_path / f"{node_id}.port", proc, f"storage node {node_id}"
                )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cp_port}") as channel:
                stub = cp_stub(channel)
                await wait_until_healthy(stub, len(NODES))
                geometry = (
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="real", segment_size_bytes=MIB))
                ).geometry
                geometry = (
                    await stub.GrowVolume(
                        cp_pb2.GrowVolumeRequest(volume_id="real", geometry_epoch=geometry.geometry_epoch)
                    )
                ).geometry
                assert len(geometry.protection_groups) == 2
                for placement in geometry.protection_groups[1].segments:
                    assert placement.address.endswith(f":{ports[placement.node_id]}")
                    await check_segment_exists(placement.address, placement.segment_id)
                nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
                assert all(n.segment_count == 2 for n in nodes)
        finally:
            for _node_id, proc in procs:
                stop_process(proc)
            await server.stop(None)
        for node_id, _ in procs:
            log = (tmp_path / f"{node_id}.log").read_text()
            assert "Traceback" not in log, log

    asyncio.run(scenario())


def start_storage_node(tmp_path: Path, node_id: str, az: str, cp_port: int) -> subprocess.Popen:
    log = open(tmp_path / f"{node_id}.log", "w")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sixfold.tools.cli",
                "storage-node",
                "--node-id",
                node_id,
                "--az",
                az,
                "--data-dir",
                str(tmp_path / node_id),
                "--port",
                "0",
                "--port-file",
                str(tmp_path / f"{node_id}.port"),
                "--control-plane",
                f"127.0.0.1:{cp_port}",
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


async def wait_until_healthy(stub: Any, count: int) -> None:
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline:
        nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
        if sum(n.health == cp_pb2.NODE_HEALTH_HEALTHY for n in nodes) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} storage nodes registered and healthy within {WAIT_S_MAX} s")


async def check_segment_exists(address: str, segment_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        reply = await stub.GetSegmentState(ss_pb2.GetSegmentStateRequest(segment_id=segment_id), timeout=5)
        assert reply.state.segment_id == segment_id
        assert reply.state.volume_id == "real" and reply.state.pg_index == 1
