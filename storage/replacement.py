"""Segment replacement, the decisions (rules 10-13 of `storage.control_plane`): when a segment is
replaced, by which node, how a PG's membership moves, what LSN the new segment must reach, and
when it has.

Pure: the caller passes what it knows of the nodes and PGs (health, failure, load, the states
segments reported) and carries out the result; `storage.control_plane` records it and the
control plane server talks to the storage nodes.

Rules (this module owns them)
1. When. A base-set node of a PG is replaced once it has failed (rule 10 of
   storage.control_plane) and is not already the old node of a change in flight. A PG begins
   at most one change per round (each bumps the membership epoch the next plan is made
   against), and only while it has fewer than `MEMBERSHIP_CHANGES_MAX` changes in flight.
2. Where. The new node is in the old node's AZ (a PG keeps two segments per AZ: placement
   rule 1), healthy, and holds no segment of the PG: neither in the base set, nor as the new
   node of a change, nor as an orphan still to be dropped.
3. Which. Among the nodes rule 2 allows, the least loaded: the fewest segments, counting the
   ones this round already planned for it, then the smallest node id. The failed base nodes
   are taken in base-set order; one with no candidate waits and the next one may go ahead.
   PGs are taken in the order given.
4. Transitions. Beginning a change, completing it (the new node takes the old one's place in
   the base set) and rolling it back (the new node leaves) each bump the membership epoch by
   one. A change completes only once it has a target LSN.
5. Rollback. A change rolls back when its old node is healthy again before it completes, or
   when its new node has failed.
6. Target. Once at least `FENCING_SEGMENTS_MIN` base-set segments hold the change's
   membership epoch, no write quorum of the older epoch can form any more, and every write
   acknowledged under it is at or below the highest SCL those segments report; that SCL is
   the target. A segment's `scl_high_water` counts what it once held before scrubbing lowered
   its SCL (a quarantined record); truncated LSNs (never durable) are not counted.
7. Hydrated. The new segment has reached the target when its SCL is at or past it, or when
   every LSN in (SCL, target] lies in truncation ranges it holds: those LSNs were never
   durable, so an idle volume does not keep the change waiting for writes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace

from sixfold.storage.control_plane_values import MembershipChange, ProtectionGroup, segment_id_for
from sixfold.storage.errors import InvalidRequest
from sixfold.storage.quorum import COPIES, FENCING_SEGMENTS_MIN, MEMBERSHIP_CHANGES_MAX

# ---------------------------------------------------------------------------
# Rules 1-3: which segment to replace, and where


@dataclass(frozen=True)
class NodeState:
    """A registered node as replacement sees it at one instant."""

    node_id: str
    az: str
    segment_count: int  # placed by the control plane (its rule 4)
    healthy: bool
    failed: bool


@dataclass(frozen=True)
class Replacement:
    """Rules 1-3: replace `old_node_id`'s segment of PG `pg_index` of `volume_id` by one on `new_node_id`."""

    volume_id: str
    pg_index: int
    old_node_id: str
    new_node_id: str


def choose_replacements(
    pgs: Iterable[tuple[str, ProtectionGroup]],
    nodes: Mapping[str, NodeState],
    orphans: Collection[tuple[str, str]],
    serials: Mapping[str, int] | None = None,
) -> list[Replacement]:
    """Rules 1-3 for one round. `pgs`: (volume id, PG) in the order to take them; `nodes`: every
    registered node by id; `orphans`: (node id, segment id) of the segments still to be dropped;
    `serials`: the segment id serial of each volume that has one (storage/control_plane_lineage.py
    rule 2)."""
    chosen = []
    planned: dict[str, int] = {}  # segments this round already planned per node
    for volume_id, pg in pgs:
        changing = {c.old_node_id for c in pg.changes}
        room = min(1, MEMBERSHIP_CHANGES_MAX - len(pg.changes))
        segment_id = segment_id_for(volume_id, pg.pg_index, (serials or {}).get(volume_id, 0))
        taken = set(pg.all_node_ids)
        for old in pg.node_ids:
            if room <= 0:
                break
            if old in changing or not nodes[old].failed:
                continue
            spares = [
                n
                for n in nodes.values()
                if n.az == nodes[old].az
                and n.node_id not in taken
                and n.healthy
                and (n.node_id, segment_id) not in orphans
            ]
            if not spares:
                continue
            new = min(spares, key=lambda n: (n.segment_count + planned.get(n.node_id, 0), n.node_id))
            planned[new.node_id] = planned.get(new.node_id, 0) + 1
            taken.add(new.node_id)
            room -= 1
            chosen.append(Replacement(volume_id, pg.pg_index, old, new.node_id))
    return chosen


# ---------------------------------------------------------------------------
# Rules 4-5: how a PG's membership moves


def find_change(pg: ProtectionGroup, old_node_id: str) -> MembershipChange:
    for change in pg.changes:
        if change.old_node_id == old_node_id:
            return change
    raise InvalidRequest(f"PG {pg.pg_index} is not replacing node {old_node_id}")


def begin(pg: ProtectionGroup, old_node_id: str, new_node_id: str) -> ProtectionGroup:
    """Rule 4: the change (old -> new) joins the PG."""
    assert old_node_id in pg.node_ids and old_node_id not in {c.old_node_id for c in pg.changes}, (pg, old_node_id)
    assert new_node_id not in pg.all_node_ids and len(pg.changes) < MEMBERSHIP_CHANGES_MAX, (pg, new_node_id)
    return checked(
        replace(
            pg,
            membership_epoch=pg.membership_epoch + 1,
            changes=pg.changes + (MembershipChange(old_node_id, new_node_id),),
        )
    )


def with_target(pg: ProtectionGroup, old_node_id: str, target_lsn: int) -> ProtectionGroup:
    """Rule 6, recorded: the target is set once; the epoch does not change."""
    change = find_change(pg, old_node_id)
    assert change.target_lsn is None and target_lsn >= 0, (change, target_lsn)
    changes = tuple(replace(c, target_lsn=target_lsn) if c is change else c for c in pg.changes)
    return checked(replace(pg, changes=changes))


def complete(pg: ProtectionGroup, old_node_id: str) -> tuple[ProtectionGroup, MembershipChange]:
    """Rule 4: the new node takes the old one's place in the base set. Returns (the PG, the change).
    The new segment is a flattened copy: the node is not one whose segment reads through a parent."""
    change = find_change(pg, old_node_id)
    assert change.target_lsn is not None, change
    base = tuple(change.new_node_id if n == old_node_id else n for n in pg.node_ids)
    completed = replace(
        pg,
        membership_epoch=pg.membership_epoch + 1,
        node_ids=base,
        changes=tuple(c for c in pg.changes if c is not change),
        parent_node_ids=tuple(n for n in pg.parent_node_ids if n != old_node_id),
    )
    return checked(completed), change


def roll_back(pg: ProtectionGroup, old_node_id: str) -> tuple[ProtectionGroup, MembershipChange]:
    """Rule 4: the new node leaves; the base set is unchanged. Returns (the PG, the change)."""
    change = find_change(pg, old_node_id)
    rolled_back = replace(
        pg, membership_epoch=pg.membership_epoch + 1, changes=tuple(c for c in pg.changes if c is not change)
    )
    return checked(rolled_back), change


def rollback_reason(change: MembershipChange, old_healthy: bool, new_failed: bool) -> str | None:
    """Rule 5: why the change must roll back, or None when it may go on."""
    if old_healthy:
        return f"node {change.old_node_id} is back before its replacement completed"
    if new_failed:
        return f"the new node {change.new_node_id} failed while hydrating"
    return None


def checked(pg: ProtectionGroup) -> ProtectionGroup:
    """The PG's invariants: six distinct base nodes, at most MEMBERSHIP_CHANGES_MAX changes, each replacing
    a distinct base node by a node holding no other segment of the PG; only base nodes of a PG with a
    parent read through it."""
    assert len(set(pg.node_ids)) == COPIES, pg
    assert set(pg.parent_node_ids) <= set(pg.node_ids) and (pg.has_parent or not pg.parent_node_ids), pg
    assert len(pg.changes) <= MEMBERSHIP_CHANGES_MAX, pg
    assert len(set(pg.all_node_ids)) == len(pg.all_node_ids), pg
    olds = [c.old_node_id for c in pg.changes]
    assert len(set(olds)) == len(olds) and set(olds) <= set(pg.node_ids), pg
    return pg


# ---------------------------------------------------------------------------
# Rules 6-7: the target LSN, and reaching it


@dataclass(frozen=True)
class HeldLsns:
    """What one segment reported after taking a membership epoch."""

    scl: int
    scl_high_water: int = 0


@dataclass(frozen=True)
class TargetMeasurement:
    """Rule 6: how many base-set segments hold the epoch, and the target (None: too few to fence)."""

    holding: int
    target_lsn: int | None


def measure_target(base_node_ids: Iterable[str], installed: Mapping[str, HeldLsns]) -> TargetMeasurement:
    """Rule 6. `installed`: the segments (by node id) that took the change's membership epoch."""
    base = [installed[n] for n in base_node_ids if n in installed]
    if len(base) < FENCING_SEGMENTS_MIN:
        return TargetMeasurement(len(base), None)
    return TargetMeasurement(len(base), max(max(held.scl, held.scl_high_water) for held in base))


def reached_target(scl: int, truncation_ranges: Iterable[tuple[int, int]], target_lsn: int) -> bool:
    """Rule 7. `truncation_ranges`: (start LSN, end LSN), both included, that the new segment holds."""
    return scl >= target_lsn or covered_by_truncations(scl, truncation_ranges, target_lsn)


def covered_by_truncations(scl: int, truncation_ranges: Iterable[tuple[int, int]], target_lsn: int) -> bool:
    """Rule 7: whether every LSN in (scl, target_lsn] lies in one of the ranges."""
    covered = scl
    for start, end in sorted(truncation_ranges):
        if start <= covered + 1 <= end + 1:
            covered = max(covered, end)
    return covered >= target_lsn
