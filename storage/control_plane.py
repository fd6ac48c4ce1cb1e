"""The control plane's state machine: node registry, health, volume geometry.

Pure: no gRPC, LMDB, clock or randomness. The caller passes the time (`now_ms`,
milliseconds on any monotonic clock) and carries out the effects (creating
segments on nodes, persisting `to_dict()`), as etcd's raft leaves I/O to its
caller. Everything that changes this state lives here.

Rules
1. Nodes. A node registers with (node_id, az, address). Registering again is
   idempotent and updates the address (a node restarted on a new port) and the
   AZ, except that a node holding segments may not change AZ: that would break
   rule 6 for every PG it is in. Registering counts as a heartbeat.
2. Health. A node is healthy iff it has sent a heartbeat (or registered) since
   this control plane started and the last one is at most
   `heartbeat_timeout_ms` old. Heartbeat times are not persisted: after a
   restart every node is unhealthy until it is heard from again.
3. Heartbeats come only from registered nodes (`UnknownNode` otherwise, so the
   node knows to register). A heartbeat may carry a new address.
4. Segment counts are those of placements recorded here (rule 6), never the
   count a node reports; the reported count is kept only for display.
5. Volumes. `volume_id` matches `VOLUME_ID_PATTERN`; `page_size` is a power of
   two in [PAGE_SIZE_MIN, PAGE_SIZE_MAX] (default 4096); `segment_size_bytes`
   is a positive multiple of `page_size`, at most VOLUME_BYTES_MAX (default
   10 GiB). Both are fixed at creation.
6. Geometry. A volume is a list of PGs; PG i covers pages
   [i * pages_per_pg, (i + 1) * pages_per_pg), pages_per_pg =
   segment_size_bytes // page_size. Its six segments, all with segment id
   `f"{volume_id}/pg-{i:05d}"` (with a serial in some cases: lineage rule 2), sit
   on six distinct nodes, two per AZ in three AZs (see `storage.placement`). A
   PG's membership epoch starts at 1.
7. A new volume has one PG and geometry epoch 1. Each growth appends exactly
   one PG and bumps the geometry epoch by one. Growth is idempotent per epoch:
   a caller passing a geometry epoch older than the current one gets the
   current geometry back without growing; 0 means "grow whatever the epoch";
   an epoch newer than the current one is an invalid request.
8. A volume holds at most VOLUME_BYTES_MAX bytes and PG_COUNT_MAX PGs; growth
   beyond is `VolumeFull`. At most NODE_COUNT_MAX nodes and VOLUME_COUNT_MAX
   volumes are recorded (`RegistryFull`).
9. Two-phase changes. `plan_create_volume` / `plan_grow_volume` validate and
   place, changing nothing; the caller creates the six segments and only then
   calls `commit_pg_plan`, which re-checks the plan still applies. A plan whose
   segments could not all be created is simply dropped.
10. Failure. A node has failed when nothing has been heard from it for
   `failure_timeout_ms` (>= the heartbeat timeout), counting from this control
   plane's start when it has not been heard from since.
11. Segment replacement ([P18] 4.1). A PG has a base set of six nodes and at
   most `MEMBERSHIP_CHANGES_MAX` changes in flight, each (old -> new). Its
   quorum sets are the base set with every subset of the changes applied:
   ABCDEF -> (ABCDEF, ABCDEG); a second change composes, giving four sets. For
   a failed base node that is not already being replaced, `plan_replacements`
   picks a healthy node of the same AZ holding no segment of the PG and no
   segment still to be dropped (fewest segments, then node id); with none, the
   PG waits (storage/replacement.py rules 1-3 decide). The caller creates the
   new segment, then `begin_change`.
12. Each step bumps the PG's membership epoch: beginning a change, completing
   it (the new node takes the old one's place in the base set) and rolling it
   back (the new node leaves). A change completes only once it has a target
   LSN (the caller measures it after installing the new epoch on enough
   segments: storage/replacement.py rule 6) and the new segment's SCL has reached it.
13. A change rolls back when its old node is healthy again before it
   completes, or when its new node fails. The segment a node no longer holds
   in any set (the old one after completion, the new one after a rollback) is
   recorded as an orphan, dropped by the caller once its node answers, unless a
   clone's segment on that node still reads through it (`held_orphans`): it
   waits until that reader goes.
14. Copies (storage/copies.py): heartbeats report the segments a node holds
   and its disk's condition; a placement a healthy node's reports lack for a
   while is a lost copy, created again on the same node (`plan_copy_repairs`,
   `CopyRepair`), and a node whose disk is not fine or whose copies are not
   whole is shown degraded.
15. Time travel: clones, snapshots and deleting volumes are `storage.control_plane_lineage`'s
   rules (the `Lineage` class this one builds on keeps the volume records); backtrack, the
   timelines it leaves and their expiry are `storage.control_plane_history`'s (`Timelines`).

Where the parts live: limits and validation in `storage.control_plane_limits`,
the values in `storage.control_plane_values`, the membership changes of rules 10-13 in
`storage.control_plane_membership` (`Membership`) and their decisions in
`storage.replacement`, the state file format in `storage.control_plane_state_file`,
the quorum constants in `storage.quorum`. Their public names are importable from
here as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sixfold.storage.control_plane_history import Timelines
from sixfold.storage.control_plane_limits import (
    FAILURE_TIMEOUT_MS_DEFAULT,
    HEARTBEAT_TIMEOUT_MS_DEFAULT,
    RegistryFull,
    UnknownNode,
    check_volume_room,
    format_bytes,
    resolve_backtrack_window,
    resolve_page_size,
    resolve_segment_size,
    timeline_name,
    validate_volume_id,
    volume_full_sentence,
)
from sixfold.storage.control_plane_membership import Membership
from sixfold.storage.control_plane_state_file import (
    STATE_FORMAT_VERSION,
    check_format_version,
    next_serial_from_dict,
    node_from_dict,
    orphans_from_dict,
    pg_from_dict,
    state_to_dict,
    volume_from_dict,
)
from sixfold.storage.control_plane_values import (
    MEMBERSHIP_EPOCH_INITIAL,
    ChangeView,
    CopyRepair,
    MembershipChange,
    NodeView,
    Orphan,
    PgGeometry,
    PgPlan,
    ProtectionGroup,
    ReplacementPlan,
    SegmentPlacement,
    Volume,
    VolumeGeometry,
    segment_id_for,
)
from sixfold.storage.errors import InvalidRequest, StaleEpoch, VolumeFull
from sixfold.storage.placement import Candidate, choose_pg_nodes
from sixfold.storage.quorum import COPIES, MEMBERSHIP_CHANGES_MAX

GEOMETRY_EPOCH_INITIAL = 1

__all__ = [  # the names importers use, wherever they now live
    "FAILURE_TIMEOUT_MS_DEFAULT",
    "HEARTBEAT_TIMEOUT_MS_DEFAULT",
    "MEMBERSHIP_CHANGES_MAX",
    "STATE_FORMAT_VERSION",
    "ChangeView",
    "ControlPlane",
    "CopyRepair",
    "MembershipChange",
    "NodeView",
    "Orphan",
    "PgGeometry",
    "PgPlan",
    "ProtectionGroup",
    "RegistryFull",
    "ReplacementPlan",
    "SegmentPlacement",
    "StaleEpoch",
    "UnknownNode",
    "VolumeGeometry",
    "format_bytes",
    "segment_id_for",
]


class ControlPlane(Timelines, Membership):
    """Node registry and volume geometries (see the rules above)."""

    def __init__(
        self,
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS_DEFAULT,
        failure_timeout_ms: int = FAILURE_TIMEOUT_MS_DEFAULT,
        started_ms: float = 0.0,
    ) -> None:
        super().__init__(heartbeat_timeout_ms, failure_timeout_ms, started_ms)
        # The new segment's SCL last seen, per (volume, pg, new node): display only, not persisted.
        self._progress: dict[tuple[str, int, str], int] = {}

    # -- placements on the nodes (rules 4 and 14) -------------------------------

    def placed_on(self, node_id: str) -> set[str]:
        """Every segment placed on the node: in a PG's base set or the new one of a change in flight."""
        return {self.segment_id(volume_id, pg.pg_index) for volume_id, pg in self._pgs() if node_id in pg.all_node_ids}

    def pgs_of_node(self, node_id: str) -> list[tuple[str, int]]:
        return sorted((volume_id, pg.pg_index) for volume_id, pg in self._pgs() if node_id in pg.all_node_ids)

    def plan_copy_repairs(self, now_ms: float) -> list[CopyRepair]:
        """Rule 14: the lost copies on healthy nodes that are due to be created again."""
        plans = []
        by_id = {
            segment_id_for(v.volume_id, pg.pg_index, v.serial): (v, pg)
            for v in self._volumes.values()
            for pg in v.protection_groups
        }
        for node_id, segment_id in self.copies.due(now_ms):
            found = by_id.get(segment_id)
            if found is None or node_id not in self._nodes or not self.is_healthy(node_id, now_ms):
                continue
            volume, pg = found
            if node_id not in pg.all_node_ids:
                continue
            plans.append(
                CopyRepair(
                    volume.volume_id,
                    volume.page_size,
                    pg.pg_index,
                    pg.first_page,
                    pg.page_count,
                    pg.membership_epoch,
                    node_id,
                    self._nodes[node_id].address,
                    segment_id,
                    self._pg_geometry(volume, pg).segments,
                )
            )
        return plans

    # -- volumes --------------------------------------------------------------

    def parent_volume_id(self, volume_id: str) -> str:
        """The volume a clone or snapshot branched from ("" for a root volume or an unknown id)."""
        volume = self._volumes.get(volume_id)
        return volume.parent_volume_id if volume is not None else ""

    def backtrack_window_of(self, volume_id: str) -> int:
        """The backtrack window of the volume a segment is made for (a timeline id or a name; 0: unknown)."""
        volume = self._volumes.get(volume_id) or self._volumes.get(timeline_name(volume_id))
        return volume.backtrack_window_s if volume is not None else 0

    def plan_create_volume(
        self,
        volume_id: str,
        page_size: int,
        segment_size_bytes: int,
        now_ms: float,
        created_at_ms: int = 0,
        backtrack_window_s: int = 0,
    ) -> PgPlan:
        """Rules 5-7 and 9: validate and place PG 0 of a new volume; changes nothing. A plan with a serial
        (lineage rule 2) is carried out as a clone is: reserve its segments, persist, then create them."""
        validate_volume_id(volume_id)
        page_size = resolve_page_size(page_size)
        segment_size_bytes = resolve_segment_size(segment_size_bytes, page_size)
        window_s = resolve_backtrack_window(backtrack_window_s)
        self.check_name_free(volume_id)
        check_volume_room(volume_id, len(self._volumes))
        serial = self.new_volume_serial(volume_id)
        pg = self._place_pg(volume_id, serial, 0, segment_size_bytes // page_size, now_ms)
        return PgPlan(volume_id, page_size, segment_size_bytes, 0, pg, serial, created_at_ms, window_s)

    def plan_grow_volume(self, volume_id: str, geometry_epoch: int, now_ms: float) -> PgPlan | None:
        """Rules 7-9: place the next PG, or None when the caller's epoch is stale (already grown)."""
        volume = self._volume(volume_id)
        self.check_growable(volume)
        if geometry_epoch > volume.geometry_epoch:
            raise InvalidRequest(
                f"geometry epoch {geometry_epoch} is newer than volume {volume_id}'s current epoch "
                f"{volume.geometry_epoch}; describe the volume and retry with its epoch"
            )
        if 0 < geometry_epoch < volume.geometry_epoch:
            return None
        pg_index = len(volume.protection_groups)
        if pg_index >= volume.pg_count_max:
            raise VolumeFull(volume_full_sentence(volume.volume_id, volume.segment_size_bytes))
        pg = self._place_pg(volume_id, volume.serial, pg_index, volume.pages_per_pg, now_ms)
        return PgPlan(volume_id, volume.page_size, volume.segment_size_bytes, volume.geometry_epoch, pg, volume.serial)

    def commit_pg_plan(self, plan: PgPlan) -> VolumeGeometry:
        """Rule 9: record a PG whose six segments now exist. Returns the new geometry."""
        if plan.creates_volume:
            self.check_name_free(plan.volume_id)
            volume = Volume(
                plan.volume_id,
                plan.page_size,
                plan.segment_size_bytes,
                GEOMETRY_EPOCH_INITIAL,
                serial=plan.serial,
                created_at_ms=plan.created_at_ms,
                backtrack_window_s=plan.backtrack_window_s,
                activated_at_ms=plan.created_at_ms,
            )
            self._volumes[plan.volume_id] = volume
            self._next_serial = max(self._next_serial, plan.serial + 1)
            self.release_segments(plan.pg.segments)
        else:
            volume = self._volume(plan.volume_id)
            if volume.geometry_epoch != plan.base_geometry_epoch:
                raise StaleEpoch(
                    f"volume {plan.volume_id} changed (geometry epoch {volume.geometry_epoch}, plan made at "
                    f"{plan.base_geometry_epoch}); describe it and retry"
                )
            volume.geometry_epoch += 1
        self._append_pg(volume, plan.pg)
        return self.describe_volume(plan.volume_id)

    def _place_pg(self, volume_id: str, serial: int, pg_index: int, pages_per_pg: int, now_ms: float) -> PgGeometry:
        candidates = [
            Candidate(n.node_id, n.az, self.segment_count(n.node_id), self.is_healthy(n.node_id, now_ms))
            for n in self._nodes.values()
        ]
        segment_id = segment_id_for(volume_id, pg_index, serial)
        segments = tuple(
            SegmentPlacement(segment_id, c.node_id, c.az, self._nodes[c.node_id].address)
            for c in choose_pg_nodes(candidates)
        )
        return PgGeometry(pg_index, pg_index * pages_per_pg, pages_per_pg, MEMBERSHIP_EPOCH_INITIAL, segments)

    def _append_pg(self, volume: Volume, pg: PgGeometry) -> None:
        assert pg.pg_index == len(volume.protection_groups), (pg.pg_index, volume.volume_id)
        assert pg.first_page == pg.pg_index * volume.pages_per_pg and pg.page_count == volume.pages_per_pg, pg
        assert len(volume.protection_groups) < volume.pg_count_max, volume.volume_id
        node_ids = tuple(s.node_id for s in pg.segments)
        assert len(set(node_ids)) == COPIES, node_ids
        assert all(node_id in self._nodes for node_id in node_ids), node_ids
        parent_node_ids = tuple(s.node_id for s in pg.segments if s.parent_segment_id)
        assert pg.has_parent or not parent_node_ids, pg
        volume.protection_groups.append(
            ProtectionGroup(
                pg.pg_index,
                pg.first_page,
                pg.page_count,
                pg.membership_epoch,
                node_ids,
                has_parent=pg.has_parent,
                parent_read_lsn=pg.parent_read_lsn,
                parent_node_ids=parent_node_ids,
            )
        )
        for node_id in node_ids:
            self._count(node_id, +1)

    def _geometry(self, volume: Volume, children: Sequence[str] | None = None) -> VolumeGeometry:
        return VolumeGeometry(
            volume_id=volume.volume_id,
            page_size=volume.page_size,
            segment_size_bytes=volume.segment_size_bytes,
            geometry_epoch=volume.geometry_epoch,
            protection_groups=tuple(self._pg_geometry(volume, pg) for pg in volume.protection_groups),
            parent_volume_id=volume.parent_volume_id,
            branch_lsn=volume.branch_lsn,
            kind=volume.kind,
            created_at_ms=volume.created_at_ms,
            deleted=volume.deleted,
            child_volume_ids=tuple(self.children_of(volume.volume_id) if children is None else children),
            snapshot_name=volume.snapshot_name,
            backtrack_window_s=volume.backtrack_window_s,
        )

    def _pg_geometry(self, volume: Volume, pg: ProtectionGroup) -> PgGeometry:
        volume_id = volume.volume_id
        segment_id = segment_id_for(volume_id, pg.pg_index, volume.serial)
        parent = self._volumes.get(volume.parent_volume_id) if pg.has_parent else None
        parent_segment_id = "" if parent is None else segment_id_for(parent.volume_id, pg.pg_index, parent.serial)
        segments = tuple(
            SegmentPlacement(
                segment_id,
                node_id,
                self._nodes[node_id].az,
                self._nodes[node_id].address,
                parent_segment_id if node_id in pg.parent_node_ids else "",
            )
            for node_id in pg.all_node_ids
        )
        changes = tuple(
            ChangeView(
                c.old_node_id,
                c.new_node_id,
                c.target_lsn,
                self._progress.get((volume_id, pg.pg_index, c.new_node_id), 0),
            )
            for c in pg.changes
        )
        return PgGeometry(
            pg.pg_index,
            pg.first_page,
            pg.page_count,
            pg.membership_epoch,
            segments,
            changes,
            pg.has_parent,
            pg.parent_read_lsn,
        )

    # -- persistence (storage/control_plane_state_file.py) ----------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything that must survive a restart (heartbeat times do not: rule 2)."""
        return state_to_dict(self._nodes.values(), self._volumes.values(), self._orphans, self._next_serial)

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS_DEFAULT,
        failure_timeout_ms: int = FAILURE_TIMEOUT_MS_DEFAULT,
        started_ms: float = 0.0,
    ) -> ControlPlane:
        check_format_version(data)
        state = cls(heartbeat_timeout_ms, failure_timeout_ms, started_ms)
        for n in data["nodes"]:
            node = node_from_dict(n)
            state._nodes[node.node_id] = node
        for v in data["volumes"]:
            volume = volume_from_dict(v)
            state._volumes[volume.volume_id] = volume
            for pg_data in v["protection_groups"]:
                pg = pg_from_dict(pg_data)
                base = ProtectionGroup(pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch, pg.node_ids)
                state._append_pg(volume, state._pg_geometry(volume, base))
                state._set_pg(volume, pg)
                for change in pg.changes:
                    state._count(change.new_node_id, +1)
            assert volume.geometry_epoch == GEOMETRY_EPOCH_INITIAL + len(volume.protection_groups) - 1, v
        assert all(v.parent_volume_id in state._volumes for v in state._volumes.values() if v.parent_volume_id)
        state._orphans.extend(orphans_from_dict(data))
        state._next_serial = next_serial_from_dict(data)
        return state
