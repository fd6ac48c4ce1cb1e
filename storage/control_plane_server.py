"""gRPC adapter of the control plane: `ControlPlaneService` over `storage.control_plane`.

The state machine decides; this module carries out its effects in a fixed order:
1. Every mutation runs under one `asyncio.Lock`, so plans never interleave.
2. A new PG is placed (`plan_*`), then `StorageService.CreateSegment` is called
   on its six nodes concurrently. Only when all six succeed is the plan
   committed and the state persisted; otherwise the segments that were created
   are dropped (best effort) and the caller gets UNAVAILABLE naming the node.
3. State is persisted to `<data-dir>/control_plane.json` after every change
   (write a temporary file, flush, fsync, rename, fsync the directory) and
   loaded at start, so volumes and nodes survive a restart.
Heartbeats only touch memory unless they carry a new address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import grpc

from storage import control_plane as cp
from storage.errors import Unavailable
from storage.serving import CHANNEL_OPTIONS, start_server
from storage.v1 import control_plane_service_pb2 as cp_pb2
from storage.v1 import storage_service_pb2 as ss_pb2
from storage.v1 import storage_service_pb2_grpc

log = logging.getLogger("sixfold.control_plane")

STATE_FILE_NAME = "control_plane.json"
HEARTBEAT_INTERVAL_MS_DEFAULT = 500
# One CreateSegment/DropSegment call to a storage node.
SEGMENT_CALL_TIMEOUT_S = 5.0
SERVICE_DESCRIPTOR = cp_pb2.DESCRIPTOR.services_by_name["ControlPlaneService"]


# ---------------------------------------------------------------------------
# Storage node calls


class SegmentClient(Protocol):
    """How the control plane reaches storage nodes (a fake can stand in for tests)."""

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None: ...

    async def drop_segment(self, address: str, segment_id: str) -> None: ...


class GrpcSegmentClient:
    """Calls `StorageService` over a short-lived grpc.aio channel per call (these calls are rare)."""

    def __init__(self, timeout_s: float = SEGMENT_CALL_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = storage_service_pb2_grpc.StorageServiceStub(channel)
            await stub.CreateSegment(request, timeout=self.timeout_s)

    async def drop_segment(self, address: str, segment_id: str) -> None:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = storage_service_pb2_grpc.StorageServiceStub(channel)
            await stub.DropSegment(ss_pb2.DropSegmentRequest(segment_id=segment_id), timeout=self.timeout_s)


def describe_failure(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    return str(error) or type(error).__name__


# ---------------------------------------------------------------------------
# Persistence


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` so that a crash leaves either the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: Path, heartbeat_timeout_ms: int) -> cp.ControlPlane:
    """The persisted state, or an empty one when the file does not exist yet."""
    if not path.exists():
        return cp.ControlPlane(heartbeat_timeout_ms)
    with open(path) as f:
        data = json.load(f)
    return cp.ControlPlane.from_dict(data, heartbeat_timeout_ms)


# ---------------------------------------------------------------------------
# Conversions (protobuf stops here)


def node_to_proto(node: cp.NodeView) -> cp_pb2.NodeInfo:
    return cp_pb2.NodeInfo(
        node_id=node.node_id,
        az=node.az,
        address=node.address,
        health=cp_pb2.NODE_HEALTH_HEALTHY if node.healthy else cp_pb2.NODE_HEALTH_UNHEALTHY,
        last_heartbeat_age_ms=node.last_heartbeat_age_ms,
        segment_count=node.segment_count,
    )


def pg_to_proto(pg: cp.PgGeometry) -> cp_pb2.ProtectionGroup:
    return cp_pb2.ProtectionGroup(
        pg_index=pg.pg_index,
        first_page=pg.first_page,
        page_count=pg.page_count,
        membership_epoch=pg.membership_epoch,
        segments=[
            cp_pb2.SegmentPlacement(segment_id=s.segment_id, node_id=s.node_id, az=s.az, address=s.address)
            for s in pg.segments
        ],
    )


def geometry_to_proto(geometry: cp.VolumeGeometry) -> cp_pb2.VolumeGeometry:
    return cp_pb2.VolumeGeometry(
        volume_id=geometry.volume_id,
        page_size=geometry.page_size,
        segment_size_bytes=geometry.segment_size_bytes,
        geometry_epoch=geometry.geometry_epoch,
        protection_groups=[pg_to_proto(pg) for pg in geometry.protection_groups],
    )


def create_segment_request(plan: cp.PgPlan) -> ss_pb2.CreateSegmentRequest:
    pg = plan.pg
    return ss_pb2.CreateSegmentRequest(
        segment_id=pg.segments[0].segment_id,
        volume_id=plan.volume_id,
        pg_index=pg.pg_index,
        first_page=pg.first_page,
        page_count=pg.page_count,
        page_size=plan.page_size,
        membership_epoch=pg.membership_epoch,
        peers=[ss_pb2.SegmentPeer(node_id=s.node_id, address=s.address) for s in pg.segments],
    )


# ---------------------------------------------------------------------------
# The servicer


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


class ControlPlaneServicer:
    """Implements every RPC of `storage.v1.ControlPlaneService`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        heartbeat_timeout_ms: int = cp.HEARTBEAT_TIMEOUT_MS_DEFAULT,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
        segment_client: SegmentClient | None = None,
        clock_ms: Callable[[], float] = monotonic_ms,
    ) -> None:
        assert 0 < heartbeat_interval_ms < heartbeat_timeout_ms, (heartbeat_interval_ms, heartbeat_timeout_ms)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.data_dir / STATE_FILE_NAME
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.state = load_state(self.state_path, heartbeat_timeout_ms)
        self.segment_client: SegmentClient = segment_client or GrpcSegmentClient()
        self.clock_ms = clock_ms
        self._lock = asyncio.Lock()

    # -- nodes ----------------------------------------------------------------

    async def RegisterNode(self, request: cp_pb2.RegisterNodeRequest, context: Any) -> cp_pb2.RegisterNodeResponse:
        async with self._lock:
            before = self._registration(request.node_id)
            node = self.state.register_node(request.node_id, request.az, request.address, self.clock_ms())
            if (node.az, node.address) != before:
                await self._persist()
                log.info("registered node %s in AZ %s at %s", node.node_id, node.az, node.address)
        return cp_pb2.RegisterNodeResponse(node=node_to_proto(node))

    def _registration(self, node_id: str) -> tuple[str, str] | None:
        try:
            node = self.state.node(node_id, self.clock_ms())
        except cp.UnknownNode:
            return None
        return node.az, node.address

    async def Heartbeat(self, request: cp_pb2.HeartbeatRequest, context: Any) -> cp_pb2.HeartbeatResponse:
        changed = self.state.heartbeat(request.node_id, request.address, request.segment_count, self.clock_ms())
        if changed:
            log.info("node %s moved to %s", request.node_id, request.address)
            async with self._lock:
                await self._persist()
        return cp_pb2.HeartbeatResponse(heartbeat_interval_ms=self.heartbeat_interval_ms)

    async def ListNodes(self, request: cp_pb2.ListNodesRequest, context: Any) -> cp_pb2.ListNodesResponse:
        return cp_pb2.ListNodesResponse(nodes=[node_to_proto(n) for n in self.state.nodes(self.clock_ms())])

    # -- volumes --------------------------------------------------------------

    async def CreateVolume(self, request: cp_pb2.CreateVolumeRequest, context: Any) -> cp_pb2.CreateVolumeResponse:
        async with self._lock:
            plan = self.state.plan_create_volume(
                request.volume_id, request.page_size, request.segment_size_bytes, self.clock_ms()
            )
            geometry = await self._carry_out(plan)
        log.info(
            "created volume %s (page size %d, segment size %s)",
            geometry.volume_id, geometry.page_size, cp.format_bytes(geometry.segment_size_bytes),
        )
        return cp_pb2.CreateVolumeResponse(geometry=geometry_to_proto(geometry))

    async def GrowVolume(self, request: cp_pb2.GrowVolumeRequest, context: Any) -> cp_pb2.GrowVolumeResponse:
        async with self._lock:
            plan = self.state.plan_grow_volume(request.volume_id, request.geometry_epoch, self.clock_ms())
            if plan is None:
                geometry = self.state.describe_volume(request.volume_id)
            else:
                geometry = await self._carry_out(plan)
                log.info(
                    "grew volume %s to %d PGs (geometry epoch %d)",
                    geometry.volume_id, len(geometry.protection_groups), geometry.geometry_epoch,
                )
        return cp_pb2.GrowVolumeResponse(geometry=geometry_to_proto(geometry))

    async def DescribeVolume(
        self, request: cp_pb2.DescribeVolumeRequest, context: Any
    ) -> cp_pb2.DescribeVolumeResponse:
        geometry = self.state.describe_volume(request.volume_id)
        return cp_pb2.DescribeVolumeResponse(geometry=geometry_to_proto(geometry))

    async def ListVolumes(self, request: cp_pb2.ListVolumesRequest, context: Any) -> cp_pb2.ListVolumesResponse:
        return cp_pb2.ListVolumesResponse(volumes=[geometry_to_proto(g) for g in self.state.list_volumes()])

    # -- effects --------------------------------------------------------------

    async def _carry_out(self, plan: cp.PgPlan) -> cp.VolumeGeometry:
        """Rule 2 of this module: create six segments, then commit and persist. Caller holds the lock."""
        assert self._lock.locked()
        await self._create_segments(plan)
        geometry = self.state.commit_pg_plan(plan)
        await self._persist()
        return geometry

    async def _create_segments(self, plan: cp.PgPlan) -> None:
        request = create_segment_request(plan)
        segments = plan.pg.segments
        results = await asyncio.gather(
            *(self.segment_client.create_segment(s.address, request) for s in segments),
            return_exceptions=True,
        )
        failures = [(s, r) for s, r in zip(segments, results) if isinstance(r, BaseException)]
        if not failures:
            return
        created = [s for s, r in zip(segments, results) if not isinstance(r, BaseException)]
        await self._drop_segments(created)
        raise Unavailable(_creation_failure_sentence(plan, failures))

    async def _drop_segments(self, segments: list[cp.SegmentPlacement]) -> None:
        results = await asyncio.gather(
            *(self.segment_client.drop_segment(s.address, s.segment_id) for s in segments),
            return_exceptions=True,
        )
        for s, r in zip(segments, results):
            if isinstance(r, BaseException):
                log.warning("could not drop segment %s on node %s: %s", s.segment_id, s.node_id, describe_failure(r))

    async def _persist(self) -> None:
        assert self._lock.locked()
        await asyncio.to_thread(write_json_atomically, self.state_path, self.state.to_dict())


def _creation_failure_sentence(
    plan: cp.PgPlan, failures: list[tuple[cp.SegmentPlacement, BaseException]]
) -> str:
    outcome = "was not created" if plan.creates_volume else "did not grow"
    what = f"volume {plan.volume_id} {outcome}"
    nodes = "; ".join(f"node {s.node_id} ({s.address}): {describe_failure(e)}" for s, e in failures)
    return (
        f"could not create segment {plan.pg.segments[0].segment_id} on {len(failures)} of 6 nodes, so the {what}: "
        f"{nodes}; retry once the node is back or the control plane has marked it unhealthy"
    )


async def start_control_plane(
    host: str,
    port: int,
    data_dir: str | os.PathLike[str],
    heartbeat_timeout_ms: int = cp.HEARTBEAT_TIMEOUT_MS_DEFAULT,
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
    segment_client: SegmentClient | None = None,
) -> tuple[grpc.aio.Server, int, ControlPlaneServicer]:
    """Load the state in `data_dir` and serve the control plane. Returns (server, bound port, servicer)."""
    servicer = ControlPlaneServicer(data_dir, heartbeat_timeout_ms, heartbeat_interval_ms, segment_client)
    server, bound, _health = await start_server(host, port, [(SERVICE_DESCRIPTOR, servicer, cp_pb2)])
    return server, bound, servicer
