"""Clones, snapshots and deletion on the control plane: the volumes' lineage, the planning of a clone,
and what deleting a volume or a snapshot removes.

Pure, like storage.control_plane (whose `ControlPlane` builds on the `Lineage` class here): the caller
passes the time, creates and drops the segments on the nodes and persists, in the order rule 5 says.
The nodes' half (a clone segment reading through its parent) is storage/lineage.py's.

Rules (this module owns them)
1. Kinds and names. A volume is a root volume (no parent), a clone (a parent volume and the LSN it
   branched at), or a snapshot: a clone of kind SNAPSHOT that nobody writes, named by its snapshot
   name, whose internal volume id is `@NAME` (`snapshot_volume_id`: user volume ids start with a
   letter or digit, so nobody can create one; nor `NAME~SERIAL`, a timeline a backtrack left:
   storage/control_plane_history.py). Volume ids and snapshot names share one namespace: a
   name held by a volume (live, or deleted and kept for its clones) or by a snapshot is refused for
   another volume or snapshot.
2. Segment ids. `PREFIX/pg-00007` (`segment_id_for`), PREFIX being the volume id for serial 0 and
   `VOLUME.SERIAL` otherwise. Every clone and snapshot takes a fresh serial from a counter that only
   grows and is persisted before any of its segments is created, so an id never repeats: not across a
   failed clone and its retry, a deleted volume and a new one of its name, nor a clone and its source.
   A root volume keeps serial 0 (the ids it always had) unless segments of an earlier volume of that
   name are still to be dropped (orphans); then it takes a fresh serial, reserved the same way.
3. Placement. Clone PG i covers the pages of the source's PG i, on the six nodes of its base set, at
   membership epoch 1; its segment on node n names as parent the source's PG-i segment on n, with the
   branch LSN b and `parent_read_lsn` a_i (the source PG's chain tail at or below b). A clone has the
   PGs its source had at the clone (its geometry epoch is their count, one per PG as for growth); PGs
   grown later have no parent.
4. Validation, before anything changes: b in [1, LSN_MAX]; the source exists and is not deleted; the
   name is free (rule 1); one a_i per source PG, each at most b; a snapshot has a valid name and no
   volume id of its own.
5. All or nothing. The caller reserves the clone's segments (the serial, and every segment recorded
   as an orphan; persisted), asks every healthy node of each PG to create its segment, all at once,
   and commits only when each PG's segment was created on at least `WRITE_QUORUM` nodes. Otherwise it
   drops what it can; the rest stays an orphan, dropped by healing later, and nothing else is
   recorded. A crash before the commit leaves only orphans. The commit takes the segments off the
   orphan list; a node whose creation failed is recorded as placed without a parent, so the lost-copy
   healing (rule 14 of storage.control_plane) creates its segment again, flattened.
6. Flattened copies. A segment created again (a lost copy) or the new segment of a replacement has
   no parent: it hydrates every page from its peers. A PG's `parent_node_ids` lists the base nodes
   whose segment still reads through the parent; a copy leaves it (persisted) before it is created
   again, and a node leaves it when it leaves the base set.
7. Delete. Deleting a volume with children (clones or snapshots still recorded) marks it deleted: its
   segments stay, its name stays taken, ListVolumes hides it and DescribeVolume refuses it; asking
   again answers the same. Without children it is removed and every segment it has becomes an
   orphan; then each deleted ancestor left without children is removed too, up the chain. A
   snapshot is deleted only by DeleteSnapshot.
8. Snapshots. A snapshot is deleted only when no volume restored from it remains (refused otherwise,
   nothing changed), then as in rule 7. Restoring snapshot S is a clone of `@S` at S's branch LSN with
   S's PGs' `parent_read_lsn` as the a_i (S's segments never get writes, so they are complete there).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace

from sixfold.storage.control_plane_limits import (
    SNAPSHOT_ID_PREFIX,
    SnapshotInUse,
    VolumeDeleted,
    check_volume_room,
    hidden_timeline_sentence,
    is_timeline_id,
    timeline_name,
    validate_snapshot_name,
    validate_volume_id,
)
from sixfold.storage.control_plane_nodes import NodeRegistry
from sixfold.storage.control_plane_values import (
    KIND_SNAPSHOT,
    KIND_VOLUME,
    MEMBERSHIP_EPOCH_INITIAL,
    ClonePlan,
    Deletion,
    Orphan,
    PgGeometry,
    ProtectionGroup,
    SegmentPlacement,
    Volume,
    VolumeGeometry,
    segment_id_for,
    snapshot_volume_id,
)
from sixfold.storage.errors import AlreadyExists, InvalidRequest, UnknownVolume
from sixfold.storage.quorum import WRITE_QUORUM
from sixfold.storage.records import LSN_MAX

SERIAL_FIRST = 1  # the first serial a volume takes (0: none, the plain segment ids)


def pgs_short_of_quorum(plan: ClonePlan, created: Collection[tuple[int, str]]) -> list[int]:
    """Rule 5: the clone's PGs whose segment fewer than WRITE_QUORUM nodes created. `created`: (PG index,
    node id) of every segment a node created."""
    return [
        pg.pg_index for pg in plan.pgs if sum((pg.pg_index, s.node_id) in created for s in pg.segments) < WRITE_QUORUM
    ]


def select_snapshots(geometries: Iterable[VolumeGeometry], volume_id: str = "") -> list[VolumeGeometry]:
    """The snapshots among `geometries` (of `volume_id` only, unless empty: taken on any of its timelines), by
    name."""
    chosen = [
        g
        for g in geometries
        if g.kind == KIND_SNAPSHOT and (not volume_id or timeline_name(g.parent_volume_id) == volume_id)
    ]
    return sorted(chosen, key=lambda g: g.snapshot_name)


def unknown_volume(volume_id: str) -> UnknownVolume:
    return UnknownVolume(f"volume {volume_id} does not exist; `sixfold volume list` shows the volumes")


def display_name(volume_id: str) -> str:
    """How a sentence names a volume: `vol-b`, or `snapshot s1` for `@s1`."""
    if volume_id.startswith(SNAPSHOT_ID_PREFIX):
        return f"snapshot {volume_id[len(SNAPSHOT_ID_PREFIX) :]}"
    return volume_id


class Lineage(NodeRegistry):
    """The volumes' records and their lineage (see the rules above); `storage.control_plane.ControlPlane`
    adds their geometry, placement and replacement."""

    # The display-only hydration progress of changes in flight (the control plane's).
    _progress: dict[tuple[str, int, str], int]

    def __init__(self, heartbeat_timeout_ms: int, failure_timeout_ms: int, started_ms: float) -> None:
        super().__init__(heartbeat_timeout_ms, failure_timeout_ms, started_ms)
        self._volumes: dict[str, Volume] = {}
        self._orphans: list[Orphan] = []
        self._next_serial = SERIAL_FIRST  # rule 2

    def _append_pg(self, volume: Volume, pg: PgGeometry) -> None:
        """Record a PG whose segments exist (the control plane's)."""
        raise NotImplementedError

    def _geometry(self, volume: Volume, children: Sequence[str] | None = None) -> VolumeGeometry:
        """The volume as the outside sees it (the control plane's)."""
        raise NotImplementedError

    # -- the records ------------------------------------------------------------

    def describe_volume(self, volume_id: str) -> VolumeGeometry:
        """Any volume recorded, deleted ones and snapshots included (the server refuses a deleted one)."""
        volume = self._volume(volume_id)
        return self._geometry(volume, self.children_of(volume_id))

    def list_volumes(self) -> list[VolumeGeometry]:
        """The volumes users see: neither deleted nor snapshots."""
        return [g for g in self.geometries() if g.listed]

    def _volume(self, volume_id: str) -> Volume:
        volume = self._volumes.get(volume_id)
        if volume is None:
            raise UnknownVolume(f"volume {volume_id} does not exist; create it first")
        return volume

    def _pgs(self) -> list[tuple[str, ProtectionGroup]]:
        """Every PG with its volume id, volumes in the order they were recorded."""
        return [(v.volume_id, pg) for v in self._volumes.values() for pg in v.protection_groups]

    def pg(self, volume_id: str, pg_index: int) -> ProtectionGroup:
        return self._pg(self._volume(volume_id), pg_index)

    def orphans(self) -> list[Orphan]:
        return list(self._orphans)

    def orphan_dropped(self, orphan: Orphan) -> None:
        self._orphans.remove(orphan)

    def _pg(self, volume: Volume, pg_index: int) -> ProtectionGroup:
        if not 0 <= pg_index < len(volume.protection_groups):
            raise InvalidRequest(f"volume {volume.volume_id} has no PG {pg_index}")
        return volume.protection_groups[pg_index]

    # -- names and ids (rules 1-2) --------------------------------------------

    def segment_id(self, volume_id: str, pg_index: int) -> str:
        volume = self._volumes[volume_id]
        return segment_id_for(volume.volume_id, pg_index, volume.serial)

    def children_of(self, volume_id: str) -> list[str]:
        return sorted(v.volume_id for v in self._volumes.values() if v.parent_volume_id == volume_id)

    def _children_index(self) -> dict[str, list[str]]:
        index: dict[str, list[str]] = {}
        for v in sorted(self._volumes):
            parent = self._volumes[v].parent_volume_id
            if parent:
                index.setdefault(parent, []).append(v)
        return index

    def geometries(self) -> list[VolumeGeometry]:
        """Every volume recorded, snapshots and deleted ones included, by volume id."""
        index = self._children_index()
        return [self._geometry(self._volumes[v], index.get(v, [])) for v in sorted(self._volumes)]

    def check_name_free(self, name: str, for_snapshot: bool = False) -> None:
        """Rule 1: `AlreadyExists` when a volume or a snapshot holds the name."""
        taken = self._volumes.get(name)
        if taken is not None and taken.deleted:
            raise AlreadyExists(
                f"volume {name} was deleted but is kept for its clones {self._children_phrase(name)}; "
                "choose another name, or delete those clones first"
            )
        if taken is not None and for_snapshot:
            raise AlreadyExists(f"the name {name} is taken by volume {name}; a snapshot needs a name no volume has")
        if taken is not None:
            raise AlreadyExists(f"volume {name} already exists (`sixfold volume status {name}` shows its geometry)")
        if snapshot_volume_id(name) in self._volumes:
            raise AlreadyExists(
                f"the name {name} is taken by snapshot {name} (`sixfold volume snapshot list` shows it); "
                "choose another name"
            )

    def new_volume_serial(self, volume_id: str) -> int:
        """Rule 2: a root volume's serial: 0, unless segments of an earlier volume of its name are orphans."""
        if any(o.segment_id.startswith(f"{volume_id}/") for o in self._orphans):
            return self._next_serial
        return 0

    def reserve_segments(self, serial: int, segments: Iterable[SegmentPlacement]) -> None:
        """Rules 2 and 5: take the serial and record the segments about to be created as orphans, so that a
        failure or a crash before the commit leaves nothing behind. Persist before creating them."""
        self._next_serial = max(self._next_serial, serial + 1)
        for s in segments:
            orphan = Orphan(s.node_id, s.segment_id)
            if orphan not in self._orphans:
                self._orphans.append(orphan)

    def release_segments(self, segments: Iterable[SegmentPlacement | Orphan]) -> None:
        """Reserved segments now placed (committed) or known dropped: they leave the orphan list."""
        gone = {(s.node_id, s.segment_id) for s in segments}
        self._orphans = [o for o in self._orphans if (o.node_id, o.segment_id) not in gone]

    def deleted_sentence(self, volume_id: str) -> str:
        return (
            f"volume {volume_id} was deleted; it is kept only because its clones "
            f"{self._children_phrase(volume_id)} still read its data"
        )

    def _children_phrase(self, volume_id: str) -> str:
        return ", ".join(display_name(c) for c in self.children_of(volume_id))

    def check_growable(self, volume: Volume) -> None:
        if volume.deleted:
            raise VolumeDeleted(self.deleted_sentence(volume.volume_id))
        if volume.kind == KIND_SNAPSHOT:
            raise InvalidRequest(f"{volume.volume_id} is snapshot {volume.snapshot_name}: a snapshot never grows")

    # -- clones (rules 3-6) ---------------------------------------------------

    def plan_clone(
        self,
        source_volume_id: str,
        volume_id: str,
        branch_lsn: int,
        parent_read_lsns: Sequence[int],
        kind: str = KIND_VOLUME,
        snapshot_name: str = "",
        created_at_ms: int = 0,
    ) -> ClonePlan:
        """Rules 3-4: validate and place the clone; changes nothing."""
        if kind == KIND_SNAPSHOT:
            validate_snapshot_name(snapshot_name)
            internal = snapshot_volume_id(snapshot_name)
            if volume_id not in ("", internal):
                raise InvalidRequest(
                    f"a snapshot's volume id is internal ({internal}); leave volume_id empty and name the "
                    "snapshot by snapshot_name"
                )
            volume_id, name = internal, snapshot_name
        else:
            assert kind == KIND_VOLUME, kind
            if snapshot_name:
                raise InvalidRequest("snapshot_name names a snapshot (kind SNAPSHOT); leave it empty for a clone")
            validate_volume_id(volume_id)
            name = volume_id
        if not 1 <= branch_lsn <= LSN_MAX:
            raise InvalidRequest(
                f"branch LSN {branch_lsn} is not valid: a clone branches at an LSN from 1 to {LSN_MAX}, at or "
                "below the source's VDL"
            )
        source = self._volumes.get(source_volume_id)
        if source is None:
            raise UnknownVolume(
                f"source volume {source_volume_id} does not exist; `sixfold volume list` shows the volumes"
            )
        if source.deleted:
            raise VolumeDeleted(f"{self.deleted_sentence(source.volume_id)}; clone one of those instead")
        if is_timeline_id(source.volume_id):
            raise InvalidRequest(hidden_timeline_sentence(source.volume_id))
        self.check_name_free(name, for_snapshot=kind == KIND_SNAPSHOT)
        check_volume_room(volume_id, len(self._volumes))
        pgs = source.protection_groups
        if len(parent_read_lsns) != len(pgs):
            raise InvalidRequest(
                f"{len(parent_read_lsns)} parent read LSNs for the {len(pgs)} PGs of volume {source.volume_id}; "
                "give one per PG, in PG order"
            )
        for pg_index, read_lsn in enumerate(parent_read_lsns):
            if read_lsn > branch_lsn:
                raise InvalidRequest(
                    f"the parent read LSN {read_lsn} of PG {pg_index} is above the branch LSN {branch_lsn}; each "
                    "is its PG's chain tail at or below the branch LSN"
                )
        serial = self._next_serial
        return ClonePlan(
            volume_id,
            source.volume_id,
            serial,
            branch_lsn,
            kind,
            snapshot_name,
            created_at_ms,
            source.page_size,
            source.segment_size_bytes,
            tuple(self._clone_pg(source, pg, volume_id, serial, parent_read_lsns[pg.pg_index]) for pg in pgs),
            source.backtrack_window_s,
        )

    def _clone_pg(
        self, source: Volume, pg: ProtectionGroup, volume_id: str, serial: int, parent_read_lsn: int
    ) -> PgGeometry:
        """Rule 3: the clone's PG on the source PG's base set, each segment naming its parent on its node."""
        parent_segment_id = segment_id_for(source.volume_id, pg.pg_index, source.serial)
        segment_id = segment_id_for(volume_id, pg.pg_index, serial)
        segments = tuple(
            SegmentPlacement(segment_id, n, self._nodes[n].az, self._nodes[n].address, parent_segment_id)
            for n in pg.node_ids
        )
        return PgGeometry(
            pg.pg_index,
            pg.first_page,
            pg.page_count,
            MEMBERSHIP_EPOCH_INITIAL,
            segments,
            has_parent=True,
            parent_read_lsn=parent_read_lsn,
        )

    def commit_clone(self, plan: ClonePlan, created: Collection[tuple[int, str]]) -> VolumeGeometry:
        """Rule 5: record the clone once every PG has a write quorum of created segments. `created`: (PG
        index, node id) of each segment a node created; the others are placed without a parent."""
        source = self._volumes.get(plan.source_volume_id)
        assert source is not None and not source.deleted, plan.source_volume_id
        name = plan.snapshot_name if plan.kind == KIND_SNAPSHOT else plan.volume_id
        self.check_name_free(name, for_snapshot=plan.kind == KIND_SNAPSHOT)
        volume = Volume(
            plan.volume_id,
            plan.page_size,
            plan.segment_size_bytes,
            len(plan.pgs),
            serial=plan.serial,
            parent_volume_id=plan.source_volume_id,
            branch_lsn=plan.branch_lsn,
            kind=plan.kind,
            created_at_ms=plan.created_at_ms,
            snapshot_name=plan.snapshot_name,
            backtrack_window_s=plan.backtrack_window_s,
            lsn_floor=plan.branch_lsn,
            activated_at_ms=plan.created_at_ms,
        )
        return self._record_clone(volume, plan, created)

    def _record_clone(self, volume: Volume, plan: ClonePlan, created: Collection[tuple[int, str]]) -> VolumeGeometry:
        """Rule 5: record a clone's volume and its PGs (a clone's, or a backtrack's new timeline)."""
        assert not pgs_short_of_quorum(plan, created), (plan.volume_id, sorted(created))
        assert volume.volume_id not in self._volumes, volume.volume_id
        self._volumes[volume.volume_id] = volume
        self._next_serial = max(self._next_serial, plan.serial + 1)
        for pg in plan.pgs:
            segments = tuple(
                s if (pg.pg_index, s.node_id) in created else replace(s, parent_segment_id="") for s in pg.segments
            )
            self._append_pg(volume, replace(pg, segments=segments))
        self.release_segments(plan.segments())
        return self._geometry(volume, [])

    def flatten_copy(self, volume_id: str, pg_index: int, node_id: str) -> bool:
        """Rule 6: the node's segment of the PG is created again without a parent. True when that changed
        the record (persist it before creating the segment)."""
        volume = self._volumes[volume_id]
        pg = volume.protection_groups[pg_index]
        if node_id not in pg.parent_node_ids:
            return False
        flattened = tuple(n for n in pg.parent_node_ids if n != node_id)
        volume.protection_groups[pg_index] = replace(pg, parent_node_ids=flattened)
        return True

    # -- snapshots and deletion (rules 7-8) -------------------------------------

    def plan_restore(self, snapshot_name: str, volume_id: str, created_at_ms: int = 0) -> ClonePlan:
        """Rule 8: a clone of the snapshot at its branch LSN, read where its PGs read their parent."""
        snapshot = self._snapshot(snapshot_name)
        return self.plan_clone(
            snapshot.volume_id,
            volume_id,
            snapshot.branch_lsn,
            [pg.parent_read_lsn for pg in snapshot.protection_groups],
            KIND_VOLUME,
            "",
            created_at_ms,
        )

    def list_snapshots(self, volume_id: str = "") -> list[VolumeGeometry]:
        if volume_id and volume_id not in self._volumes:
            raise unknown_volume(volume_id)
        return select_snapshots(self.geometries(), volume_id)

    def delete_volume(self, volume_id: str) -> Deletion:
        """Rule 7."""
        volume = self._volumes.get(volume_id)
        if volume is None and snapshot_volume_id(volume_id) in self._volumes:
            volume = self._volumes[snapshot_volume_id(volume_id)]
        if volume is None:
            raise unknown_volume(volume_id)
        if volume.kind == KIND_SNAPSHOT:
            raise InvalidRequest(
                f"{volume_id} is a snapshot; delete it with `sixfold volume snapshot delete {volume.snapshot_name}`"
            )
        if self.children_of(volume.volume_id):
            volume.deleted = True
            return Deletion(kept_for_clones=True)
        return self._remove(volume)

    def delete_snapshot(self, snapshot_name: str) -> Deletion:
        """Rule 8."""
        snapshot = self._snapshot(snapshot_name)
        users = self.children_of(snapshot.volume_id)
        if users:
            raise SnapshotInUse(
                f"snapshot {snapshot_name} is in use: {', '.join(display_name(u) for u in users)} still read "
                "its data (restored from it); delete them first"
            )
        return self._remove(snapshot)

    def _snapshot(self, snapshot_name: str) -> Volume:
        snapshot = self._volumes.get(snapshot_volume_id(snapshot_name))
        if snapshot is None:
            raise UnknownVolume(
                f"snapshot {snapshot_name} does not exist; `sixfold volume snapshot list` shows the snapshots"
            )
        return snapshot

    def _remove(self, volume: Volume) -> Deletion:
        """Rule 7: remove the volume, then each deleted ancestor it leaves without children."""
        dropped: list[str] = []
        groups: list[tuple[Orphan, ...]] = []
        current: Volume | None = volume
        while current is not None:
            del self._volumes[current.volume_id]
            group = []
            for pg in current.protection_groups:
                segment_id = segment_id_for(current.volume_id, pg.pg_index, current.serial)
                for node_id in pg.all_node_ids:
                    self._count(node_id, -1)
                    orphan = Orphan(node_id, segment_id)
                    if orphan not in self._orphans:
                        self._orphans.append(orphan)
                    group.append(orphan)
            for key in [k for k in self._progress if k[0] == current.volume_id]:
                del self._progress[key]
            dropped.append(current.volume_id)
            groups.append(tuple(group))
            parent = self._volumes.get(current.parent_volume_id)
            freed = parent is not None and parent.deleted and not self.children_of(parent.volume_id)
            current = parent if freed else None
        return Deletion(False, tuple(dropped), tuple(groups))
