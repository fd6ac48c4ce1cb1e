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
4. Healing (`heal_once`, every `heal_interval_s`, under the same lock) carries
   out rules 10-13 of storage.control_plane in this order: roll back the
   changes that must roll back, drop orphan segments whose node answers, begin
   replacements for failed nodes, then move each change in flight forward.
   Beginning: CreateSegment on the new node at the next membership epoch with
   every segment as its peers (it starts hydrating by gossip), then commit and
   persist. Measuring the target: install the epoch (UpdateMembership) on every
   healthy segment of the PG; once at least three segments of the base set
   hold it, no write quorum of the older epoch can form any more (4 + 3 > 6),
   and every write acknowledged under it is at or below the highest SCL those
   three report; that SCL is the target. Completing: once the new segment's
   SCL reaches the target, commit, persist and install the next epoch.
   Every commit is persisted before its effects reach the storage nodes.
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

from sixfold.storage import control_plane as cp
from sixfold.storage.copies import HeldCopy, NodeReport
from sixfold.storage.errors import InvalidRequest, Unavailable
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2
from sixfold.storage.v1 import storage_service_pb2_grpc

log = logging.getLogger("sixfold.control_plane")

STATE_FILE_NAME = "control_plane.json"
HEARTBEAT_INTERVAL_MS_DEFAULT = 500
HEAL_INTERVAL_S = 0.5
HELD_SEGMENTS_MAX = 100_000  # segments one heartbeat may list
# A membership epoch must reach this many base-set segments before the target is measured.
FENCING_SEGMENTS_MIN = 3
# One CreateSegment/DropSegment call to a storage node.
SEGMENT_CALL_TIMEOUT_S = 5.0
SERVICE_DESCRIPTOR = cp_pb2.DESCRIPTOR.services_by_name["ControlPlaneService"]


# ---------------------------------------------------------------------------
# Storage node calls


class SegmentClient(Protocol):
    """How the control plane reaches storage nodes (a fake can stand in for tests)."""

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None: ...

    async def drop_segment(self, address: str, segment_id: str) -> None: ...

    async def update_membership(self, address: str, request: ss_pb2.UpdateMembershipRequest) -> ss_pb2.SegmentState: ...

    async def segment_state(self, address: str, segment_id: str) -> ss_pb2.SegmentState: ...


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

    async def update_membership(self, address: str, request: ss_pb2.UpdateMembershipRequest) -> ss_pb2.SegmentState:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = storage_service_pb2_grpc.StorageServiceStub(channel)
            return (await stub.UpdateMembership(request, timeout=self.timeout_s)).state

    async def segment_state(self, address: str, segment_id: str) -> ss_pb2.SegmentState:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = storage_service_pb2_grpc.StorageServiceStub(channel)
            reply = await stub.GetSegmentState(
                ss_pb2.GetSegmentStateRequest(segment_id=segment_id), timeout=self.timeout_s
            )
            return reply.state


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


def load_state(path: Path, heartbeat_timeout_ms: int, failure_timeout_ms: int, started_ms: float) -> cp.ControlPlane:
    """The persisted state, or an empty one when the file does not exist yet."""
    if not path.exists():
        return cp.ControlPlane(heartbeat_timeout_ms, failure_timeout_ms, started_ms)
    with open(path) as f:
        data = json.load(f)
    return cp.ControlPlane.from_dict(data, heartbeat_timeout_ms, failure_timeout_ms, started_ms)


# ---------------------------------------------------------------------------
# Conversions (protobuf stops here)


DISK_CONDITION_NAMES = {
    ss_pb2.DISK_CONDITION_OK: "ok",
    ss_pb2.DISK_CONDITION_FULL: "disk_full",
    ss_pb2.DISK_CONDITION_IO_ERROR: "io_error",
    ss_pb2.DISK_CONDITION_FAILED: "failed",
}
DISK_CONDITIONS = {name: value for value, name in DISK_CONDITION_NAMES.items()}


def node_to_proto(node: cp.NodeView) -> cp_pb2.NodeInfo:
    copies = node.copies
    if not node.healthy:
        health = cp_pb2.NODE_HEALTH_UNHEALTHY
    else:
        health = cp_pb2.NODE_HEALTH_DEGRADED if copies.degraded else cp_pb2.NODE_HEALTH_HEALTHY
    return cp_pb2.NodeInfo(
        node_id=node.node_id,
        az=node.az,
        address=node.address,
        health=health,
        last_heartbeat_age_ms=node.last_heartbeat_age_ms,
        segment_count=node.segment_count,
        condition=DISK_CONDITIONS.get(copies.disk, ss_pb2.DISK_CONDITION_UNSPECIFIED),
        condition_detail=copies.disk_detail,
        segments_missing=copies.missing,
        segments_rebuilding=copies.rebuilding,
    )


def report_from_proto(request: cp_pb2.HeartbeatRequest) -> NodeReport:
    """What a heartbeat says the node holds (storage/copies.py rule 1)."""
    held = {
        h.segment_id: HeldCopy(h.segment_id, h.membership_epoch, h.scl, h.whole, h.rebuilding) for h in request.segments
    }
    return NodeReport(held, DISK_CONDITION_NAMES.get(request.condition, "ok"), request.condition_detail[:1000])


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
        changes=[
            cp_pb2.MembershipChange(
                old_node_id=c.old_node_id,
                new_node_id=c.new_node_id,
                target_lsn=c.target_lsn or 0,
                target_measured=c.target_lsn is not None,
                new_segment_scl=c.new_segment_scl,
            )
            for c in pg.changes
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
        failure_timeout_ms: int = cp.FAILURE_TIMEOUT_MS_DEFAULT,
    ) -> None:
        assert 0 < heartbeat_interval_ms < heartbeat_timeout_ms, (heartbeat_interval_ms, heartbeat_timeout_ms)
        self.data_dir = Path(data_dir)
        self.state_path = self.data_dir / STATE_FILE_NAME
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.clock_ms = clock_ms
        self.state = self._load_state(heartbeat_timeout_ms, failure_timeout_ms, clock_ms())
        self.segment_client: SegmentClient = segment_client or GrpcSegmentClient()
        self._lock = asyncio.Lock()
        self._heal_task: asyncio.Task[None] | None = None
        # Geometries as last persisted: readers never see a change that a crash could still undo.
        self._published: dict[str, cp.VolumeGeometry] = {}
        self._install_pending: set[tuple[str, int]] = set()  # PGs whose last install missed a healthy segment
        self._publish()

    def _load_state(self, heartbeat_timeout_ms: int, failure_timeout_ms: int, started_ms: float) -> cp.ControlPlane:
        """The state at start (the simulator overrides this and `_persist` to keep it in memory)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return load_state(self.state_path, heartbeat_timeout_ms, failure_timeout_ms, started_ms)

    # -- nodes ----------------------------------------------------------------

    async def RegisterNode(self, request: cp_pb2.RegisterNodeRequest, context: Any) -> cp_pb2.RegisterNodeResponse:
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
                request.volume_id, request.page_size, request.segment_size_bytes, self.clock_ms()
            )
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
        geometry = self._published.get(request.volume_id)
        if geometry is None:
            self.state.describe_volume(request.volume_id)  # raises UnknownVolume (or the id's error)
            raise Unavailable(f"volume {request.volume_id} is being created; try again in a moment")
        return cp_pb2.DescribeVolumeResponse(geometry=geometry_to_proto(geometry))

    async def ListVolumes(self, request: cp_pb2.ListVolumesRequest, context: Any) -> cp_pb2.ListVolumesResponse:
        return cp_pb2.ListVolumesResponse(
            volumes=[geometry_to_proto(self._published[v]) for v in sorted(self._published)]
        )

    # -- healing (module rule 4) -----------------------------------------------------

    def start_healing(self, interval_s: float = HEAL_INTERVAL_S) -> None:
        self._heal_task = asyncio.create_task(self._heal_loop(interval_s), name="heal")

    async def stop_healing(self) -> None:
        await cancel_and_wait(self._heal_task)

    async def _heal_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.heal_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("healing round failed; trying again in %.1f s", interval_s)

    async def heal_once(self) -> None:
        async with self._lock:
            now = self.clock_ms()
            for volume_id, pg_index, old, reason in self.state.due_rollbacks(now):
                geometry = self.state.roll_back_change(volume_id, pg_index, old)
                await self._persist()
                log.warning(
                    "volume %s PG %d: rolled back the replacement of node %s (%s); membership epoch %d",
                    volume_id,
                    pg_index,
                    old,
                    reason,
                    geometry.membership_epoch,
                )
                await self._install(volume_id, geometry)
            await self._drop_orphans(now)
            for repair in self.state.plan_copy_repairs(now):
                await self._recreate_copy(repair)
            for plan in self.state.plan_replacements(now):
                await self._begin(plan)
            for volume_id, pg, change in self.state.changes_in_flight():
                if change.target_lsn is None:
                    await self._measure_target(volume_id, pg, change)
                else:
                    await self._check_hydrated(volume_id, pg, change)
            for volume_id, pg_index in sorted(self._install_pending):
                geometry = self.state.describe_volume(volume_id).protection_groups[pg_index]
                await self._install(volume_id, geometry)

    async def _begin(self, plan: cp.ReplacementPlan) -> None:
        request = ss_pb2.CreateSegmentRequest(
            segment_id=plan.new.segment_id,
            volume_id=plan.volume_id,
            pg_index=plan.pg_index,
            first_page=plan.first_page,
            page_count=plan.page_count,
            page_size=plan.page_size,
            membership_epoch=plan.membership_epoch,
            peers=[ss_pb2.SegmentPeer(node_id=p.node_id, address=p.address) for p in plan.peers],
        )
        self.state.reserve_new_segment(plan)  # dropped later unless the change begins
        await self._persist()
        try:
            await self.segment_client.create_segment(plan.new.address, request)
        except Exception as error:  # noqa: BLE001 - any failure: try another round
            log.warning(
                "volume %s PG %d: could not create the replacement segment on node %s: %s",
                plan.volume_id,
                plan.pg_index,
                plan.new.node_id,
                describe_failure(error),
            )
            return
        try:
            geometry = self.state.begin_change(plan)
        except cp.StaleEpoch as error:  # the PG moved on meanwhile: the reservation drops what was created
            log.info("volume %s PG %d: %s", plan.volume_id, plan.pg_index, error.message)
            return
        await self._persist()
        log.warning(
            "volume %s PG %d: node %s failed; replacing it with node %s (membership epoch %d)",
            plan.volume_id,
            plan.pg_index,
            plan.old_node_id,
            plan.new.node_id,
            geometry.membership_epoch,
        )

    async def _recreate_copy(self, repair: cp.CopyRepair) -> None:
        """Rule 14 of storage.control_plane: a healthy node lost its copy; create it again there, rebuilding
        from its peers (it counts towards no read quorum until it has caught up)."""
        request = ss_pb2.CreateSegmentRequest(
            segment_id=repair.segment_id,
            volume_id=repair.volume_id,
            pg_index=repair.pg_index,
            first_page=repair.first_page,
            page_count=repair.page_count,
            page_size=repair.page_size,
            membership_epoch=repair.membership_epoch,
            rebuild=True,
            peers=[ss_pb2.SegmentPeer(node_id=p.node_id, address=p.address) for p in repair.peers],
        )
        try:
            await self.segment_client.create_segment(repair.address, request)
        except Exception as error:  # noqa: BLE001 - any failure: the next round tries again
            log.warning(
                "volume %s PG %d: node %s lost its copy %s; creating it again failed: %s; trying again",
                repair.volume_id,
                repair.pg_index,
                repair.node_id,
                repair.segment_id,
                describe_failure(error),
            )
            return
        self.state.copies.recreating(repair.node_id, repair.segment_id)
        log.warning(
            "volume %s PG %d: node %s lost its copy %s; created it again, rebuilding from its peers",
            repair.volume_id,
            repair.pg_index,
            repair.node_id,
            repair.segment_id,
        )

    async def _install(self, volume_id: str, geometry: cp.PgGeometry) -> dict[str, ss_pb2.SegmentState]:
        """Install the PG's membership epoch on every healthy segment; return the states of those that took it."""
        now = self.clock_ms()
        peers = [ss_pb2.SegmentPeer(node_id=s.node_id, address=s.address) for s in geometry.segments]
        targets = [s for s in geometry.segments if self.state.is_healthy(s.node_id, now)]
        request = ss_pb2.UpdateMembershipRequest(
            segment_id=geometry.segments[0].segment_id, membership_epoch=geometry.membership_epoch, peers=peers
        )
        results = await asyncio.gather(
            *(self.segment_client.update_membership(s.address, request) for s in targets),
            return_exceptions=True,
        )
        installed = {}
        for s, r in zip(targets, results):
            if isinstance(r, BaseException):
                log.info(
                    "volume %s PG %d: membership epoch %d not installed on node %s: %s",
                    volume_id,
                    geometry.pg_index,
                    geometry.membership_epoch,
                    s.node_id,
                    describe_failure(r),
                )
            else:
                installed[s.node_id] = r
        # Every healthy segment should hold the epoch and the peer list (gossip uses it): retry each round.
        key = (volume_id, geometry.pg_index)
        if len(installed) < len(targets):
            self._install_pending.add(key)
        else:
            self._install_pending.discard(key)
        return installed

    async def _measure_target(self, volume_id: str, pg: cp.ProtectionGroup, change: cp.MembershipChange) -> None:
        geometry = self.state.describe_volume(volume_id).protection_groups[pg.pg_index]
        installed = await self._install(volume_id, geometry)
        base = {n: installed[n] for n in pg.node_ids if n in installed}
        if len(base) < FENCING_SEGMENTS_MIN:
            log.info(
                "volume %s PG %d: membership epoch %d reached %d base segments, need %d; retrying",
                volume_id,
                pg.pg_index,
                geometry.membership_epoch,
                len(base),
                FENCING_SEGMENTS_MIN,
            )
            return
        # scl_high_water: a segment whose SCL scrubbing lowered since (a quarantined record) still
        # counts what it once held; truncated LSNs (never durable) are not counted.
        target = max(max(state.scl, state.scl_high_water) for state in base.values())
        self.state.set_change_target(volume_id, pg.pg_index, change.old_node_id, target)
        await self._persist()
        log.info(
            "volume %s PG %d: node %s must reach SCL %d to replace node %s",
            volume_id,
            pg.pg_index,
            change.new_node_id,
            target,
            change.old_node_id,
        )
        new_state = installed.get(change.new_node_id)
        if new_state is not None:
            self.state.note_progress(volume_id, pg.pg_index, change.new_node_id, new_state.scl)
            self._publish()

    async def _check_hydrated(self, volume_id: str, pg: cp.ProtectionGroup, change: cp.MembershipChange) -> None:
        new = self.state.node(change.new_node_id, self.clock_ms())
        try:
            state = await self.segment_client.segment_state(new.address, cp.segment_id_for(volume_id, pg.pg_index))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:  # its node answers but lost the segment: give up
                geometry = self.state.roll_back_change(volume_id, pg.pg_index, change.old_node_id)
                await self._persist()
                log.warning(
                    "volume %s PG %d: node %s no longer holds the new segment (%s); rolled back the "
                    "replacement of node %s; membership epoch %d",
                    volume_id,
                    pg.pg_index,
                    new.node_id,
                    error.details(),
                    change.old_node_id,
                    geometry.membership_epoch,
                )
                await self._install(volume_id, geometry)
            else:
                log.info(
                    "volume %s PG %d: cannot ask node %s how far it hydrated: %s",
                    volume_id,
                    pg.pg_index,
                    new.node_id,
                    describe_failure(error),
                )
            return
        except Exception as error:  # noqa: BLE001 - ask again next round
            log.info(
                "volume %s PG %d: cannot ask node %s how far it hydrated: %s",
                volume_id,
                pg.pg_index,
                new.node_id,
                describe_failure(error),
            )
            return
        self.state.note_progress(volume_id, pg.pg_index, change.new_node_id, state.scl)
        self._publish()
        assert change.target_lsn is not None
        if state.scl < change.target_lsn and not _truncated(state, change.target_lsn):
            return
        geometry = self.state.complete_change(volume_id, pg.pg_index, change.old_node_id)
        await self._persist()
        log.warning(
            "volume %s PG %d: node %s replaced node %s (SCL %d >= target %d); membership epoch %d",
            volume_id,
            pg.pg_index,
            change.new_node_id,
            change.old_node_id,
            state.scl,
            change.target_lsn,
            geometry.membership_epoch,
        )
        await self._install(volume_id, geometry)

    async def _drop_orphans(self, now: float) -> None:
        for orphan in self.state.orphans():
            if not self.state.is_healthy(orphan.node_id, now):
                continue
            node = self.state.node(orphan.node_id, now)
            try:
                await self.segment_client.drop_segment(node.address, orphan.segment_id)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    log.info(
                        "could not drop orphan segment %s on node %s yet: %s",
                        orphan.segment_id,
                        orphan.node_id,
                        describe_failure(error),
                    )
                    continue
            except Exception as error:  # noqa: BLE001 - try again next round
                log.info(
                    "could not drop orphan segment %s on node %s yet: %s",
                    orphan.segment_id,
                    orphan.node_id,
                    describe_failure(error),
                )
                continue
            self.state.orphan_dropped(orphan)
            await self._persist()
            log.info(
                "dropped segment %s from node %s: no quorum set holds it any more", orphan.segment_id, orphan.node_id
            )

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
        """Write the state, then publish it: what DescribeVolume shows is always on disk first."""
        assert self._lock.locked()
        await asyncio.to_thread(write_json_atomically, self.state_path, self.state.to_dict())
        self._publish()

    def _publish(self) -> None:
        """Call only when every change to the state is persisted (right after `_persist`, or when only
        display-only progress changed)."""
        self._published = {g.volume_id: g for g in self.state.list_volumes()}


def _truncated(state: ss_pb2.SegmentState, target: int) -> bool:
    """Whether every LSN in (SCL, target] lies in a truncation range the segment holds: LSNs a recovery
    truncated were never durable, so the new segment lacks no acknowledged write below the target (an
    idle volume would otherwise keep the change waiting for writes that carry SCL past the range)."""
    covered = state.scl
    for r in sorted(state.truncation_ranges, key=lambda r: r.start_lsn):
        if r.start_lsn <= covered + 1 <= r.end_lsn + 1:
            covered = max(covered, r.end_lsn)
    return covered >= target


def _creation_failure_sentence(plan: cp.PgPlan, failures: list[tuple[cp.SegmentPlacement, BaseException]]) -> str:
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
    failure_timeout_ms: int = cp.FAILURE_TIMEOUT_MS_DEFAULT,
    heal_interval_s: float = HEAL_INTERVAL_S,
) -> tuple[grpc.aio.Server, int, ControlPlaneServicer]:
    """Load the state in `data_dir` and serve the control plane. Returns (server, bound port, servicer).

    `heal_interval_s` 0 leaves healing off (rule 4)."""
    servicer = ControlPlaneServicer(
        data_dir, heartbeat_timeout_ms, heartbeat_interval_ms, segment_client, failure_timeout_ms=failure_timeout_ms
    )
    server, bound, _health = await start_server(host, port, [(SERVICE_DESCRIPTOR, servicer, cp_pb2)])
    if heal_interval_s > 0:
        servicer.start_healing(heal_interval_s)
    return server, bound, servicer
