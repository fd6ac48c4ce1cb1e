"""gRPC adapter of the control plane: `ControlPlaneService` over `storage.control_plane`.

The state machine decides; this module carries out its effects in a fixed order:
1. Every mutation runs under one `asyncio.Lock`, so plans never interleave.
2. A new PG is placed (`plan_*`), then `StorageService.CreateSegment` is called
   on its six nodes concurrently. Only when all six succeed is the plan
   committed and the state persisted; otherwise the segments that were created
   are dropped (best effort) and the caller gets UNAVAILABLE naming the node.
3. State is persisted to `<data-dir>/control_plane.json` after every change
   (write a temporary file, flush, fsync, rename, fsync the directory) and
   loaded at start, so volumes and nodes survive a restart
   (storage/control_plane_persistence.py).
4. Healing (`heal_once`, every `heal_interval_s`, under the same lock) carries
   out rules 10-14 of storage.control_plane: storage/control_plane_healing.py
   says in which order, storage/replacement.py decides.
5. Clones, snapshots and deletion (storage/control_plane_clones.py carries them
   out, storage/control_plane_lineage.py decides). A new volume whose segment ids
   take a serial reserves them first, as a clone does (lineage rule 2).
   ListVolumes shows neither snapshots nor deleted volumes; DescribeVolume refuses
   a deleted one (FAILED_PRECONDITION).
6. Backtrack, history and time resolution (storage/control_plane_backtrack.py
   carries them out, storage/control_plane_history.py and
   storage/control_plane_timelines.py decide). ListVolumes does not show a
   timeline a backtrack left and DescribeVolume refuses one (INVALID_ARGUMENT).
Heartbeats only touch memory unless they carry a new address.

The parts: storage nodes are reached through storage/control_plane_calls.py,
protobuf is converted in storage/control_plane_wire.py. Their names are importable
from here as well.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from sixfold.storage import control_plane as cp
from sixfold.storage.control_plane_backtrack import BacktrackRpcs
from sixfold.storage.control_plane_calls import (
    SEGMENT_CALL_TIMEOUT_S,
    GrpcSegmentClient,
    SegmentClient,
    WindowedSegmentClient,
    describe_failure,
)
from sixfold.storage.control_plane_healing import HEAL_INTERVAL_S, Healing
from sixfold.storage.control_plane_keys import KeyRpcs
from sixfold.storage.control_plane_limits import VolumeDeleted, hidden_timeline_sentence
from sixfold.storage.control_plane_persistence import STATE_FILE_NAME, load_state, write_json_atomically
from sixfold.storage.control_plane_wire import (
    DISK_CONDITION_NAMES,
    DISK_CONDITIONS,
    create_segment_request,
    geometry_to_proto,
    node_to_proto,
    pg_to_proto,
    report_from_proto,
)
from sixfold.storage.errors import InvalidRequest, Unavailable
from sixfold.storage.quorum import COPIES, FENCING_SEGMENTS_MIN
from sixfold.storage.serving import start_server
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2

__all__ = [  # the names importers use, wherever they now live
    "DISK_CONDITIONS",
    "DISK_CONDITION_NAMES",
    "FENCING_SEGMENTS_MIN",
    "HEAL_INTERVAL_S",
    "HEARTBEAT_INTERVAL_MS_DEFAULT",
    "SEGMENT_CALL_TIMEOUT_S",
    "STATE_FILE_NAME",
    "ControlPlaneServicer",
    "GrpcSegmentClient",
    "SegmentClient",
    "describe_failure",
    "geometry_to_proto",
    "load_state",
    "node_to_proto",
    "pg_to_proto",
    "start_control_plane",
    "write_json_atomically",
]

log = logging.getLogger("sixfold.control_plane")

HEARTBEAT_INTERVAL_MS_DEFAULT = 500
HELD_SEGMENTS_MAX = 100_000  # segments one heartbeat may list
SERVICE_DESCRIPTOR = cp_pb2.DESCRIPTOR.services_by_name["ControlPlaneService"]


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


def wall_ms() -> float:
    """Milliseconds since the Unix epoch: a volume's creation time (lineage rule 1)."""
    return time.time() * 1000.0


class ControlPlaneServicer(BacktrackRpcs, KeyRpcs, Healing):
    """Implements every RPC of `storage.v1.ControlPlaneService`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        heartbeat_timeout_ms: int = cp.HEARTBEAT_TIMEOUT_MS_DEFAULT,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
        segment_client: SegmentClient | None = None,
        clock_ms: Callable[[], float] = monotonic_ms,
        failure_timeout_ms: int = cp.FAILURE_TIMEOUT_MS_DEFAULT,
        wall_clock_ms: Callable[[], float] = wall_ms,
    ) -> None:
        assert 0 < heartbeat_interval_ms < heartbeat_timeout_ms, (heartbeat_interval_ms, heartbeat_timeout_ms)
        self.data_dir = Path(data_dir)
        self.state_path = self.data_dir / STATE_FILE_NAME
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.clock_ms = clock_ms
        self.wall_clock_ms = wall_clock_ms
        self.state = self._load_state(heartbeat_timeout_ms, failure_timeout_ms, clock_ms())
        self.segment_client: SegmentClient = WindowedSegmentClient(
            segment_client or GrpcSegmentClient(), self._backtrack_window_of
        )
        self._lock = asyncio.Lock()
        self._heal_task: asyncio.Task[None] | None = None
        # Geometries as last persisted: readers never see a change that a crash could still undo.
        self._published: dict[str, cp.VolumeGeometry] = {}
        self._install_pending: set[tuple[str, int]] = set()  # PGs whose last install missed a healthy segment
        self._publish()

    def _backtrack_window_of(self, volume_id: str) -> int:
        return self.state.backtrack_window_of(volume_id)  # the state object of the moment (a reload replaces it)

    def _load_state(self, heartbeat_timeout_ms: int, failure_timeout_ms: int, started_ms: float) -> cp.ControlPlane:
        """The state at start (the simulator overrides this and `_persist` to keep it in memory)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return load_state(self.state_path, heartbeat_timeout_ms, failure_timeout_ms, started_ms)

    # -- nodes ----------------------------------------------------------------

    async def RegisterNode(self, request: cp_pb2.RegisterNodeRequest, context: Any) -> cp_pb2.RegisterNodeResponse:
        if self._registration(request.node_id) == (request.az, request.address):
            # A node back where it was (a restart on its port): nothing to persist, so it counts as heard from at
            # once, as a heartbeat does, not after a healing round that holds the lock while a slow node answers.
            node = self.state.register_node(request.node_id, request.az, request.address, self.clock_ms())
            return cp_pb2.RegisterNodeResponse(node=node_to_proto(node))
        async with self._lock:
            before = self._registration(request.node_id)
            node = self.state.register_node(request.node_id, request.az, request.address, self.clock_ms())
            if (node.az, node.address) != before:
                await self._persist()
                log.info("registered node %s in AZ %s at %s", node.node_id, node.az, node.address)
                self._reinstall_peers(node.node_id)
        return cp_pb2.RegisterNodeResponse(node=node_to_proto(node))

    def _registration(self, node_id: str) -> tuple[str, str] | None:
        try:
            node = self.state.node(node_id, self.clock_ms())
        except cp.UnknownNode:
            return None
        return node.az, node.address

    async def Heartbeat(self, request: cp_pb2.HeartbeatRequest, context: Any) -> cp_pb2.HeartbeatResponse:
        if len(request.segments) > HELD_SEGMENTS_MAX:
            raise InvalidRequest(f"a heartbeat lists {len(request.segments)} segments; at most {HELD_SEGMENTS_MAX}")
        changed = self.state.heartbeat(
            request.node_id,
            request.address,
            request.segment_count,
            self.clock_ms(),
            report_from_proto(request) if request.segments_reported else None,
        )
        if changed:
            log.info("node %s moved to %s", request.node_id, request.address)
            async with self._lock:
                await self._persist()
            self._reinstall_peers(request.node_id)
        return cp_pb2.HeartbeatResponse(heartbeat_interval_ms=self.heartbeat_interval_ms)

    def _reinstall_peers(self, node_id: str) -> None:
        """A node moved: every segment of its PGs learns the new address (UpdateMembership at the same epoch
        carries the peers) at the next healing round; writers follow DescribeVolume."""
        for key in self.state.pgs_of_node(node_id):
            self._install_pending.add(key)

    async def ListNodes(self, request: cp_pb2.ListNodesRequest, context: Any) -> cp_pb2.ListNodesResponse:
        return cp_pb2.ListNodesResponse(nodes=[node_to_proto(n) for n in self.state.nodes(self.clock_ms())])

    # -- volumes --------------------------------------------------------------

    async def CreateVolume(self, request: cp_pb2.CreateVolumeRequest, context: Any) -> cp_pb2.CreateVolumeResponse:
        async with self._lock:
            plan = self.state.plan_create_volume(
                request.volume_id,
                request.page_size,
                request.segment_size_bytes,
                self.clock_ms(),
                int(self.wall_clock_ms()),
                request.backtrack_window_s,
            )
            if plan.serial:  # module rule 5: dropped later unless committed
                self.state.reserve_segments(plan.serial, plan.pg.segments)
                await self._persist()
            geometry = await self._carry_out(plan)
        log.info(
            "created volume %s (page size %d, segment size %s)",
            geometry.volume_id,
            geometry.page_size,
            cp.format_bytes(geometry.segment_size_bytes),
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
                    geometry.volume_id,
                    len(geometry.protection_groups),
                    geometry.geometry_epoch,
                )
        return cp_pb2.GrowVolumeResponse(geometry=geometry_to_proto(geometry))

    async def DescribeVolume(
        self, request: cp_pb2.DescribeVolumeRequest, context: Any
    ) -> cp_pb2.DescribeVolumeResponse:
        if self.state.is_left_timeline(request.volume_id):
            raise InvalidRequest(hidden_timeline_sentence(request.volume_id))
        geometry = self._published.get(request.volume_id)
        if geometry is None:
            self.state.describe_volume(request.volume_id)  # raises UnknownVolume (or the id's error)
            raise Unavailable(f"volume {request.volume_id} is being created; try again in a moment")
        if geometry.deleted:
            raise VolumeDeleted(self.state.deleted_sentence(request.volume_id))
        return cp_pb2.DescribeVolumeResponse(geometry=geometry_to_proto(geometry))

    async def ListVolumes(self, request: cp_pb2.ListVolumesRequest, context: Any) -> cp_pb2.ListVolumesResponse:
        return cp_pb2.ListVolumesResponse(
            volumes=[geometry_to_proto(g) for _, g in sorted(self._published.items()) if g.listed]
        )

    # -- healing (module rule 4) -----------------------------------------------------

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
        """Write the state, then publish it: what DescribeVolume shows is always on disk first."""
        assert self._lock.locked()
        await asyncio.to_thread(write_json_atomically, self.state_path, self.state.to_dict())
        self._publish()

    def _publish(self) -> None:
        """Call only when every change to the state is persisted (right after `_persist`, or when only
        display-only progress changed)."""
        self._published = {g.volume_id: g for g in self.state.geometries()}


def _creation_failure_sentence(plan: cp.PgPlan, failures: list[tuple[cp.SegmentPlacement, BaseException]]) -> str:
    outcome = "was not created" if plan.creates_volume else "did not grow"
    what = f"volume {plan.volume_id} {outcome}"
    nodes = "; ".join(f"node {s.node_id} ({s.address}): {describe_failure(e)}" for s, e in failures)
    return (
        f"could not create segment {plan.pg.segments[0].segment_id} on {len(failures)} of {COPIES} nodes, "
        f"so the {what}: {nodes}; retry once the node is back or the control plane has marked it unhealthy"
    )


async def start_control_plane(
    host: str,
    port: int,
    data_dir: str | os.PathLike[str],
    heartbeat_timeout_ms: int = cp.HEARTBEAT_TIMEOUT_MS_DEFAULT,
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
    segment_client: SegmentClient | None = None,
    failure_timeout_ms: int = cp.FAILURE_TIMEOUT_MS_DEFAULT,
    heal_interval_s: float = HEAL_INTERVAL_S,
    wall_clock_ms: Callable[[], float] = wall_ms,
) -> tuple[grpc.aio.Server, int, ControlPlaneServicer]:
    """Load the state in `data_dir` and serve the control plane. Returns (server, bound port, servicer).

    `heal_interval_s` 0 leaves healing off (rule 4)."""
    servicer = ControlPlaneServicer(
        data_dir,
        heartbeat_timeout_ms,
        heartbeat_interval_ms,
        segment_client,
        failure_timeout_ms=failure_timeout_ms,
        wall_clock_ms=wall_clock_ms,
    )
    server, bound, _health = await start_server(host, port, [(SERVICE_DESCRIPTOR, servicer, cp_pb2)])
    if heal_interval_s > 0:
        servicer.start_healing(heal_interval_s)
    return server, bound, servicer
