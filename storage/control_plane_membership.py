"""Segment replacement in the control plane's state (rules 10-13 of `storage.control_plane`): planning a
replacement for a failed node, beginning, measuring, completing and rolling back a membership change.

Pure, like storage.control_plane (whose `ControlPlane` mixes in the `Membership` class here): the caller
passes the time and carries out the effects (storage/control_plane_healing.py); storage/replacement.py
decides which node replaces which and when a change completes or rolls back.
"""

from __future__ import annotations

from sixfold.storage import replacement
from sixfold.storage.control_plane_lineage import Lineage
from sixfold.storage.control_plane_values import (
    MembershipChange,
    Orphan,
    PgGeometry,
    ProtectionGroup,
    ReplacementPlan,
    SegmentPlacement,
    Volume,
)
from sixfold.storage.errors import StaleEpoch


class Membership(Lineage):
    """The membership changes of the PGs (see rules 10-13 of storage.control_plane)."""

    def _pg_geometry(self, volume: Volume, pg: ProtectionGroup) -> PgGeometry:
        """The PG as the outside sees it (the control plane's)."""
        raise NotImplementedError

    def plan_replacements(self, now_ms: float) -> list[ReplacementPlan]:
        """Rule 11: one plan per failed base node of a PG that can take another change."""
        nodes = {
            n.node_id: replacement.NodeState(
                n.node_id,
                n.az,
                self.segment_count(n.node_id),
                self.is_healthy(n.node_id, now_ms),
                self.is_failed(n.node_id, now_ms),
            )
            for n in self._nodes.values()
        }
        orphans = {(o.node_id, o.segment_id) for o in self._orphans}
        plans = []
        serials = {v.volume_id: v.serial for v in self._volumes.values()}
        for chosen in replacement.choose_replacements(self._pgs(), nodes, orphans, serials):
            volume = self._volume(chosen.volume_id)
            pg = self._pg(volume, chosen.pg_index)
            new = self._nodes[chosen.new_node_id]
            new_placement = SegmentPlacement(
                self.segment_id(volume.volume_id, pg.pg_index), new.node_id, new.az, new.address
            )
            peers = self._pg_geometry(volume, pg).segments + (new_placement,)
            plans.append(
                ReplacementPlan(
                    volume.volume_id,
                    volume.page_size,
                    pg.pg_index,
                    pg.first_page,
                    pg.page_count,
                    pg.membership_epoch,
                    chosen.old_node_id,
                    new_placement,
                    peers,
                )
            )
        return plans

    def reserve_new_segment(self, plan: ReplacementPlan) -> None:
        """Rule 13, ahead of time: record the segment about to be created as an orphan, so that if it is
        created but its change never begins (a failure, or the caller's crash) it is dropped later.
        `begin_change` takes it off the list."""
        orphan = Orphan(plan.new.node_id, plan.new.segment_id)
        if orphan not in self._orphans:
            self._orphans.append(orphan)

    def begin_change(self, plan: ReplacementPlan) -> PgGeometry:
        """Rules 11-12, once the new segment exists: add the change and bump the membership epoch."""
        volume = self._volume(plan.volume_id)
        pg = self._pg(volume, plan.pg_index)
        if pg.membership_epoch != plan.base_membership_epoch:
            raise StaleEpoch(
                f"PG {plan.pg_index} of volume {plan.volume_id} changed (membership epoch {pg.membership_epoch}, "
                f"plan made at {plan.base_membership_epoch}); plan again"
            )
        changed = replacement.begin(pg, plan.old_node_id, plan.new.node_id)
        self._set_pg(volume, changed)
        self._count(plan.new.node_id, +1)
        reserved = Orphan(plan.new.node_id, plan.new.segment_id)
        if reserved in self._orphans:
            self._orphans.remove(reserved)
        return self._pg_geometry(volume, changed)

    def changes_in_flight(self) -> list[tuple[str, ProtectionGroup, MembershipChange]]:
        return [(volume_id, pg, change) for volume_id, pg in self._pgs() for change in pg.changes]

    def set_change_target(self, volume_id: str, pg_index: int, old_node_id: str, target_lsn: int) -> None:
        """Rule 12: the LSN the new segment must reach. Set once; the epoch does not change."""
        volume = self._volume(volume_id)
        self._set_pg(volume, replacement.with_target(self._pg(volume, pg_index), old_node_id, target_lsn))

    def note_progress(self, volume_id: str, pg_index: int, new_node_id: str, scl: int) -> None:
        self._progress[(volume_id, pg_index, new_node_id)] = scl

    def complete_change(self, volume_id: str, pg_index: int, old_node_id: str) -> PgGeometry:
        """Rule 12: the new node takes the old one's place in the base set."""
        volume = self._volume(volume_id)
        changed, change = replacement.complete(self._pg(volume, pg_index), old_node_id)
        self._set_pg(volume, changed)
        self._count(old_node_id, -1)
        self._orphans.append(Orphan(old_node_id, self.segment_id(volume_id, pg_index)))
        self._progress.pop((volume_id, pg_index, change.new_node_id), None)
        return self._pg_geometry(volume, changed)

    def due_rollbacks(self, now_ms: float) -> list[tuple[str, int, str, str]]:
        """Rule 13: (volume, pg, old node, reason) of every change that must roll back."""
        due = []
        for volume_id, pg, change in self.changes_in_flight():
            reason = replacement.rollback_reason(
                change, self.is_healthy(change.old_node_id, now_ms), self.is_failed(change.new_node_id, now_ms)
            )
            if reason is not None:
                due.append((volume_id, pg.pg_index, change.old_node_id, reason))
        return due

    def roll_back_change(self, volume_id: str, pg_index: int, old_node_id: str) -> PgGeometry:
        """Rule 13: the new node leaves; the base set is unchanged."""
        volume = self._volume(volume_id)
        changed, change = replacement.roll_back(self._pg(volume, pg_index), old_node_id)
        self._set_pg(volume, changed)
        self._count(change.new_node_id, -1)
        self._orphans.append(Orphan(change.new_node_id, self.segment_id(volume_id, pg_index)))
        self._progress.pop((volume_id, pg_index, change.new_node_id), None)
        return self._pg_geometry(volume, changed)

    def held_orphans(self) -> set[Orphan]:
        """Rule 13: the orphans a clone's segment on the same node still reads through, kept until it goes.

        A member segment on node n reads through its parent PG's segment on n when n is in its PG's
        `parent_node_ids`; an orphan of a PG with a parent may read through its parent's segment on n too
        (the node it left no longer says). The node refuses to drop a segment something reads through
        (storage/lineage.py rule 7), so these wait: once the reader goes, the next round drops them."""
        orphans = set(self._orphans)
        pgs = {(v.volume_id, pg.pg_index): (v, pg) for v in self._volumes.values() for pg in v.protection_groups}
        held: set[Orphan] = set()
        todo = [
            (node_id, v.parent_volume_id, pg.pg_index)
            for v, pg in pgs.values()
            if pg.has_parent and v.parent_volume_id in self._volumes
            for node_id in pg.all_node_ids
            if node_id in pg.parent_node_ids
        ]
        while todo:
            node_id, volume_id, pg_index = todo.pop()
            if (volume_id, pg_index) not in pgs:
                continue
            orphan = Orphan(node_id, self.segment_id(volume_id, pg_index))
            if orphan not in orphans or orphan in held:
                continue
            held.add(orphan)
            v, pg = pgs[(volume_id, pg_index)]
            if pg.has_parent and v.parent_volume_id in self._volumes:
                todo.append((node_id, v.parent_volume_id, pg_index))
        return held

    def _set_pg(self, volume: Volume, pg: ProtectionGroup) -> None:
        volume.protection_groups[pg.pg_index] = replacement.checked(pg)
