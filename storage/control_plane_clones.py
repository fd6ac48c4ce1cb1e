"""The control plane's time-travel RPCs: CloneVolume, RestoreSnapshot, DeleteVolume, ListSnapshots and
DeleteSnapshot, carried out against the storage nodes.

The adapter half of storage/control_plane_lineage.py (which decides; its rules are cited here).
Under the servicer's lock, in this order:
1. Clone (and restore): plan (validation; nothing changes), reserve the clone's segments and its
   serial (orphans until the commit) and persist, then CreateSegment with the parent fields on every
   healthy node of every PG at once. Each PG needs `WRITE_QUORUM` creations; if one falls short,
   every segment of the clone is dropped where its node answers (the rest stays an orphan that
   healing drops later), that is persisted and the caller gets UNAVAILABLE naming the PG and the
   nodes' refusals. Otherwise the clone is committed and persisted; a node that did not create its
   segment gets it from the lost-copy healing later, flattened.
2. Delete: the state decides (kept, or removed with its freed ancestors) and is persisted; then the
   removed volumes' segments are dropped, one volume after another (a node refuses to drop a
   parent's segment while a child's is still there), each volume's in parallel. A segment whose node
   does not answer stays an orphan for healing to drop.
`ControlPlaneServicer` mixes this in; it supplies the state, the lock, the clocks and persistence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from sixfold.storage.control_plane import ControlPlane
from sixfold.storage.control_plane_calls import SegmentClient, describe_failure, is_gone
from sixfold.storage.control_plane_lineage import display_name, pgs_short_of_quorum, select_snapshots, unknown_volume
from sixfold.storage.control_plane_values import KIND_SNAPSHOT, ClonePlan, Deletion, Orphan, VolumeGeometry
from sixfold.storage.control_plane_wire import clone_segment_requests, geometry_to_proto, kind_from_proto
from sixfold.storage.errors import ReadPointOutOfRange, Unavailable
from sixfold.storage.lineage import BELOW_GC_FLOOR
from sixfold.storage.quorum import COPIES, WRITE_QUORUM
from sixfold.storage.status import detail_of
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2

log = logging.getLogger("sixfold.control_plane")

UNHEALTHY = "unhealthy (no recent heartbeat), not asked"


class CloneRpcs:
    """The time-travel RPCs of `ControlPlaneServicer` (see the module docstring)."""

    # Supplied by the servicer.
    state: ControlPlane
    segment_client: SegmentClient
    clock_ms: Callable[[], float]
    wall_clock_ms: Callable[[], float]
    _lock: asyncio.Lock
    _published: dict[str, VolumeGeometry]
    _install_pending: set[tuple[str, int]]

    async def _persist(self) -> None:
        """Write the state, then publish it (the servicer's; the lock is held)."""
        raise NotImplementedError

    async def CloneVolume(self, request: cp_pb2.CloneVolumeRequest, context: Any) -> cp_pb2.CloneVolumeResponse:
        async with self._lock:
            plan = self.state.plan_clone(
                request.source_volume_id,
                request.volume_id,
                request.branch_lsn,
                list(request.parent_read_lsns),
                kind_from_proto(request.kind),
                request.snapshot_name,
                int(self.wall_clock_ms()),
            )
            geometry = await self._carry_out_clone(plan)
        return cp_pb2.CloneVolumeResponse(geometry=geometry_to_proto(geometry))

    async def RestoreSnapshot(
        self, request: cp_pb2.RestoreSnapshotRequest, context: Any
    ) -> cp_pb2.RestoreSnapshotResponse:
        async with self._lock:
            plan = self.state.plan_restore(request.snapshot_name, request.volume_id, int(self.wall_clock_ms()))
            geometry = await self._carry_out_clone(plan)
        return cp_pb2.RestoreSnapshotResponse(geometry=geometry_to_proto(geometry))

    async def DeleteVolume(self, request: cp_pb2.DeleteVolumeRequest, context: Any) -> cp_pb2.DeleteVolumeResponse:
        async with self._lock:
            deletion = self.state.delete_volume(request.volume_id)
            await self._carry_out_deletion(deletion)
        if deletion.kept_for_clones:
            log.info("deleted volume %s; its segments stay while its clones read them", request.volume_id)
        return cp_pb2.DeleteVolumeResponse(
            kept_for_clones=deletion.kept_for_clones, volumes_dropped=list(deletion.volumes_dropped)
        )

    async def ListSnapshots(self, request: cp_pb2.ListSnapshotsRequest, context: Any) -> cp_pb2.ListSnapshotsResponse:
        if request.volume_id and request.volume_id not in self._published:
            raise unknown_volume(request.volume_id)
        snapshots = select_snapshots(self._published.values(), request.volume_id)
        return cp_pb2.ListSnapshotsResponse(snapshots=[geometry_to_proto(g) for g in snapshots])

    async def DeleteSnapshot(
        self, request: cp_pb2.DeleteSnapshotRequest, context: Any
    ) -> cp_pb2.DeleteSnapshotResponse:
        async with self._lock:
            deletion = self.state.delete_snapshot(request.snapshot_name)
            await self._carry_out_deletion(deletion)
        return cp_pb2.DeleteSnapshotResponse()

    # -- effects --------------------------------------------------------------

    async def _carry_out_clone(self, plan: ClonePlan) -> VolumeGeometry:
        """Rule 1 of this module (lineage rule 5). Caller holds the lock."""
        created, failures = await self._create_clone_segments(plan)
        geometry = self.state.commit_clone(plan, created)
        await self._persist()
        log.info(
            "created %s of volume %s at LSN %d (%d PGs, segment id serial %d)",
            _what(plan),
            plan.source_volume_id,
            plan.branch_lsn,
            len(plan.pgs),
            plan.serial,
        )
        log_not_created(plan, failures)
        return geometry

    async def _create_clone_segments(self, plan: ClonePlan) -> tuple[set[tuple[int, str]], dict[tuple[int, str], str]]:
        """Rule 1 up to the commit: reserve and persist, create every segment, undo all of it (UNAVAILABLE)
        when a PG falls short of a write quorum. Returns (PG index, node id) of the segments created, and why
        each other one was not. Caller holds the lock."""
        assert self._lock.locked()
        volume_keys = getattr(self, "volume_keys", None)
        if volume_keys is not None:  # encryption at rest: the clone keeps its source's data key
            await volume_keys.inherit(plan.volume_id, plan.source_volume_id)
        self.state.reserve_segments(plan.serial, plan.segments())
        await self._persist()
        now = self.clock_ms()
        calls = [(pg.pg_index, s, r) for pg in plan.pgs for s, r in zip(pg.segments, clone_segment_requests(plan, pg))]
        asked = [c for c in calls if self.state.is_healthy(c[1].node_id, now)]
        results = await asyncio.gather(
            *(self.segment_client.create_segment(s.address, r) for _, s, r in asked), return_exceptions=True
        )
        failures = {(i, s.node_id): UNHEALTHY for i, s, _ in calls}
        created = set()
        collected: dict[int, list[str]] = {}  # per PG: the nodes' refusals because the branch point was collected
        for (i, s, _), result in zip(asked, results):
            if isinstance(result, BaseException):
                failures[(i, s.node_id)] = describe_failure(result)
                if isinstance(result, grpc.aio.AioRpcError) and detail_of(result).metadata.get("condition") == (
                    BELOW_GC_FLOOR
                ):
                    collected.setdefault(i, []).append(result.details() or "")
            else:
                created.add((i, s.node_id))
                del failures[(i, s.node_id)]
        short = pgs_short_of_quorum(plan, created)
        if short:
            gone = await self._drop_now([Orphan(s.node_id, s.segment_id) for s in plan.segments()])
            self.state.release_segments(gone)
            await self._persist()
            for i, said in sorted(collected.items()):
                if len(said) > COPIES - WRITE_QUORUM:  # for good: no write quorum can hold the point any more
                    raise ReadPointOutOfRange(
                        f"could not create {display_name(plan.volume_id)} of {display_name(plan.source_volume_id)}: "
                        f"{len(said)} of PG {i}'s segments no longer keep its pages at the branch point ({said[0]}); "
                        "nothing was kept"
                    )
            raise Unavailable(clone_failure_sentence(plan, short, failures))
        return created, failures

    async def _carry_out_deletion(self, deletion: Deletion) -> None:
        """Rule 2 of this module (lineage rules 7-8). Caller holds the lock."""
        assert self._lock.locked()
        await self._persist()
        for volume_id in deletion.volumes_dropped:
            self._install_pending = {key for key in self._install_pending if key[0] != volume_id}
            log.info("removed volume %s; dropping its segments", display_name(volume_id))
        dropped = 0
        for group in deletion.segment_groups:
            for orphan in await self._drop_now(group):
                if orphan in self.state.orphans():
                    self.state.orphan_dropped(orphan)
                    dropped += 1
        if dropped:
            await self._persist()

    async def _drop_now(self, segments: Sequence[Orphan]) -> list[Orphan]:
        """Drop the segments on their healthy nodes at once; returns those now gone (dropped or not found)."""
        now = self.clock_ms()
        asked = [s for s in segments if self.state.is_healthy(s.node_id, now)]
        results = await asyncio.gather(
            *(self.segment_client.drop_segment(self.state.node(s.node_id, now).address, s.segment_id) for s in asked),
            return_exceptions=True,
        )
        gone = []
        for s, result in zip(asked, results):
            if is_gone(result):
                gone.append(s)
            else:
                assert isinstance(result, BaseException), result
                log.info(
                    "could not drop segment %s on node %s yet (%s); healing drops it later",
                    s.segment_id,
                    s.node_id,
                    describe_failure(result),
                )
        return gone


def _what(plan: ClonePlan) -> str:
    if plan.lsn_floor:
        return f"the new timeline of volume {plan.volume_id}"
    return f"snapshot {plan.snapshot_name}" if plan.kind == KIND_SNAPSHOT else f"clone {plan.volume_id}"


def log_not_created(plan: ClonePlan, failures: dict[tuple[int, str], str]) -> None:
    for (pg_index, node_id), why in sorted(failures.items()):
        log.warning(
            "%s PG %d: node %s did not create its segment (%s); it is created again later, flattened",
            _what(plan),
            pg_index,
            node_id,
            why,
        )


def clone_failure_sentence(plan: ClonePlan, short: list[int], failures: dict[tuple[int, str], str]) -> str:
    """Why the clone was not made: each PG short of a write quorum, with its nodes' refusals."""
    parts = []
    for pg_index in short:
        pg = plan.pgs[pg_index]
        refusals = [(s, failures[(pg_index, s.node_id)]) for s in pg.segments if (pg_index, s.node_id) in failures]
        nodes = "; ".join(f"node {s.node_id} ({s.address}): {why}" for s, why in refusals)
        parts.append(
            f"PG {pg_index} was created on {COPIES - len(refusals)} of {COPIES} nodes, fewer than the write "
            f"quorum of {WRITE_QUORUM} ({nodes})"
        )
    source = display_name(plan.source_volume_id)
    of = f" (from {source} at LSN {plan.branch_lsn})" if plan.lsn_floor else f" of {source}"
    return f"could not create {_what(plan)}{of}: {'; '.join(parts)}; nothing was kept; retry once the nodes are back"
