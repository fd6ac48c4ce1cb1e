"""The control plane's healing rounds (rule 4 of storage.control_plane_server): roll back, drop
orphans, create lost copies again, begin replacements, measure targets and complete changes.

The adapter half of segment replacement: `storage.control_plane` records, `storage.replacement`
decides, and this module talks to the storage nodes, in this order each round:
0. drop the timelines backtracks left whose window has passed (storage/control_plane_backtrack.py);
1. roll back the changes that must roll back (and install the new epoch);
2. drop orphan segments whose node answers;
3. create lost copies again on their (healthy) nodes, rebuilding (a clone's as a flattened copy,
   without its parent: storage/control_plane_lineage.py rule 6);
4. begin replacements for failed nodes: reserve the new segment (an orphan until its change
   begins, so a crash leaves nothing behind), CreateSegment on the new node at the next
   membership epoch with every segment as its peers (it starts hydrating by gossip), then
   commit and persist;
5. move each change in flight forward. Measuring the target: install the epoch
   (UpdateMembership) on every healthy segment of the PG; storage/replacement.py rule 6 turns
   what the segments report into the target. Completing: once the new segment has reached it
   (rule 7), commit, persist and install the next epoch.
Every commit is persisted before its effects reach the storage nodes.

`Healing` is a part of `ControlPlaneServicer` (it mixes in), kept here so that the servicer's
module holds the RPCs alone; the servicer supplies the state, the lock and persistence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from sixfold.storage import replacement
from sixfold.storage.control_plane import ControlPlane
from sixfold.storage.control_plane_calls import SegmentClient, describe_failure
from sixfold.storage.control_plane_values import (
    CopyRepair,
    MembershipChange,
    PgGeometry,
    ProtectionGroup,
    ReplacementPlan,
)
from sixfold.storage.control_plane_wire import (
    copy_repair_request,
    held_lsns,
    peers_to_proto,
    replacement_request,
    truncation_ranges,
)
from sixfold.storage.errors import StaleEpoch
from sixfold.storage.quorum import FENCING_SEGMENTS_MIN
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

log = logging.getLogger("sixfold.control_plane")

HEAL_INTERVAL_S = 0.5


class Healing:
    """The healing rounds of `ControlPlaneServicer` (see the module docstring)."""

    # Supplied by the servicer.
    state: ControlPlane
    segment_client: SegmentClient
    clock_ms: Callable[[], float]
    _lock: asyncio.Lock
    _heal_task: asyncio.Task[None] | None
    _install_pending: set[tuple[str, int]]  # PGs whose last install missed a healthy segment

    async def _persist(self) -> None:
        """Write the state, then publish it (the servicer's; the lock is held)."""
        raise NotImplementedError

    def _publish(self) -> None:
        """Show display-only progress (the servicer's)."""
        raise NotImplementedError

    async def _expire_timelines(self) -> None:
        """Rule 0 (storage/control_plane_backtrack.py's; the lock is held)."""
        raise NotImplementedError

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
            await self._expire_timelines()
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

    async def _begin(self, plan: ReplacementPlan) -> None:
        request = replacement_request(plan)
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
        except StaleEpoch as error:  # the PG moved on meanwhile: the reservation drops what was created
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

    async def _recreate_copy(self, repair: CopyRepair) -> None:
        """Rule 14 of storage.control_plane: a healthy node lost its copy; create it again there, rebuilding
        from its peers (it counts towards no read quorum until it has caught up). A clone's segment is
        created again without its parent, a flattened copy (storage/control_plane_lineage.py rule 6)."""
        request = copy_repair_request(repair)
        if self.state.flatten_copy(repair.volume_id, repair.pg_index, repair.node_id):
            await self._persist()  # lineage rule 6: the record says "no parent" before the node holds it
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

    async def _install(self, volume_id: str, geometry: PgGeometry) -> dict[str, ss_pb2.SegmentState]:
        """Install the PG's membership epoch on every healthy segment; return the states of those that took it."""
        now = self.clock_ms()
        peers = peers_to_proto(geometry.segments)
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

    async def _measure_target(self, volume_id: str, pg: ProtectionGroup, change: MembershipChange) -> None:
        geometry = self.state.describe_volume(volume_id).protection_groups[pg.pg_index]
        installed = await self._install(volume_id, geometry)
        measured = replacement.measure_target(pg.node_ids, {n: held_lsns(s) for n, s in installed.items()})
        target = measured.target_lsn
        if target is None:  # storage/replacement.py rule 6: too few hold the epoch to fence the older one
            log.info(
                "volume %s PG %d: membership epoch %d reached %d base segments, need %d; retrying",
                volume_id,
                pg.pg_index,
                geometry.membership_epoch,
                measured.holding,
                FENCING_SEGMENTS_MIN,
            )
            return
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

    async def _check_hydrated(self, volume_id: str, pg: ProtectionGroup, change: MembershipChange) -> None:
        new = self.state.node(change.new_node_id, self.clock_ms())
        try:
            state = await self.segment_client.segment_state(new.address, self.state.segment_id(volume_id, pg.pg_index))
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
        if not replacement.reached_target(state.scl, truncation_ranges(state), change.target_lsn):
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
        held = self.state.held_orphans()
        for orphan in self.state.orphans():
            if orphan in held or not self.state.is_healthy(orphan.node_id, now):
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
