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
   `f"{volume_id}/pg-{i:05d}"`, sit on six distinct nodes, two per AZ in three
   AZs (see `storage.placement`). A PG's membership epoch starts at 1.
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
   PG waits. The caller creates the new segment, then `begin_change`.
12. Each step bumps the PG's membership epoch: beginning a change, completing
   it (the new node takes the old one's place in the base set) and rolling it
   back (the new node leaves). A change completes only once it has a target
   LSN (the caller measures it after installing the new epoch on a write
   quorum; see control_plane_server) and the new segment's SCL has reached it.
13. A change rolls back when its old node is healthy again before it
   completes, or when its new node fails. The segment a node no longer holds
   in any set (the old one after completion, the new one after a rollback) is
   recorded as an orphan, dropped by the caller once its node answers.
14. Copies (storage/copies.py): heartbeats report the segments a node holds
   and its disk's condition; a placement a healthy node's reports lack for a
   while is a lost copy, created again on the same node (`plan_copy_repairs`,
   `CopyRepair`), and a node whose disk is not fine or whose copies are not
   whole is shown degraded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from sixfold.storage.copies import CopyWatch, NodeCopies, NodeReport
from sixfold.storage.errors import AlreadyExists, InvalidRequest, StaleEpoch, StorageError, UnknownVolume, VolumeFull
from sixfold.storage.placement import PG_SEGMENT_COUNT, Candidate, choose_pg_nodes

KIB = 2**10
MIB = 2**20
GIB = 2**30
TIB = 2**40

PAGE_SIZE_DEFAULT = 4096
PAGE_SIZE_MIN = 512
PAGE_SIZE_MAX = 65536
SEGMENT_SIZE_BYTES_DEFAULT = 10 * GIB
VOLUME_BYTES_MAX = 128 * TIB
# Bounds the state file and the geometry message; 128 TiB / 10 GiB = 13,107 PGs fits.
PG_COUNT_MAX = 65536
HEARTBEAT_TIMEOUT_MS_DEFAULT = 3000
FAILURE_TIMEOUT_MS_DEFAULT = 10_000
# Changes in flight per PG (rule 11): two compose into four quorum sets.
MEMBERSHIP_CHANGES_MAX = 2
# Bound the registry and the state file rewritten after every change.
NODE_COUNT_MAX = 1024
VOLUME_COUNT_MAX = 4096
MEMBERSHIP_EPOCH_INITIAL = 1
GEOMETRY_EPOCH_INITIAL = 1
STATE_FORMAT_VERSION = 1

VOLUME_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# Node ids and AZ names: printable, no spaces or slashes (they appear in paths and logs).
NODE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
AZ_PATTERN = NODE_ID_PATTERN
ADDRESS_BYTES_MAX = 255


class UnknownNode(StorageError):
    """A heartbeat from a node the control plane has no record of."""

    status_code_name = "NOT_FOUND"


class RegistryFull(StorageError):
    """NODE_COUNT_MAX nodes or VOLUME_COUNT_MAX volumes are already recorded."""

    status_code_name = "RESOURCE_EXHAUSTED"


# ---------------------------------------------------------------------------
# Values


@dataclass
class Node:
    node_id: str
    az: str
    address: str
    # Time of the last heartbeat or registration since start; None = not heard from.
    last_heartbeat_ms: float | None = None
    reported_segment_count: int = 0


@dataclass(frozen=True)
class NodeView:
    """A node as the outside sees it at one instant."""

    node_id: str
    az: str
    address: str
    healthy: bool
    last_heartbeat_age_ms: int
    segment_count: int
    reported_segment_count: int
    copies: NodeCopies = field(default_factory=lambda: NodeCopies("ok", "", (), ()))  # rule 14


@dataclass(frozen=True)
class MembershipChange:
    """One segment being replaced (rule 11): `old_node_id` leaves, `new_node_id` joins."""

    old_node_id: str
    new_node_id: str
    # The LSN the new segment's SCL must reach before the change completes; None = not measured yet.
    target_lsn: int | None = None


@dataclass(frozen=True)
class ProtectionGroup:
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    node_ids: tuple[str, ...]  # the base set
    changes: tuple[MembershipChange, ...] = ()

    @property
    def all_node_ids(self) -> tuple[str, ...]:
        """Every node holding a segment of this PG: the base set, then each change's new node."""
        return self.node_ids + tuple(c.new_node_id for c in self.changes)


@dataclass
class Volume:
    volume_id: str
    page_size: int
    segment_size_bytes: int
    geometry_epoch: int
    protection_groups: list[ProtectionGroup] = field(default_factory=list)

    @property
    def pages_per_pg(self) -> int:
        return self.segment_size_bytes // self.page_size

    @property
    def pg_count_max(self) -> int:
        return min(PG_COUNT_MAX, VOLUME_BYTES_MAX // self.segment_size_bytes)


@dataclass(frozen=True)
class SegmentPlacement:
    segment_id: str
    node_id: str
    az: str
    address: str


@dataclass(frozen=True)
class ChangeView:
    """A change in flight as the outside sees it: with the new segment's last known SCL."""

    old_node_id: str
    new_node_id: str
    target_lsn: int | None  # None: not measured yet
    new_segment_scl: int


@dataclass(frozen=True)
class PgGeometry:
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    # The base set's six segments first, then the new segment of each change in flight.
    segments: tuple[SegmentPlacement, ...]
    changes: tuple[ChangeView, ...] = ()


@dataclass(frozen=True)
class ReplacementPlan:
    """Rule 11: create the new segment on `new`, then call `begin_change`."""

    volume_id: str
    page_size: int
    pg_index: int
    first_page: int
    page_count: int
    base_membership_epoch: int
    old_node_id: str
    new: SegmentPlacement
    # Every segment of the PG once the change has begun (its peers for gossip).
    peers: tuple[SegmentPlacement, ...]

    @property
    def membership_epoch(self) -> int:
        return self.base_membership_epoch + 1


@dataclass(frozen=True)
class CopyRepair:
    """Rule 14: create `segment_id` again on `node_id` (rebuilding), with every segment of its PG as peers."""

    volume_id: str
    page_size: int
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    node_id: str
    address: str
    segment_id: str
    peers: tuple[SegmentPlacement, ...]


@dataclass(frozen=True)
class Orphan:
    """A segment no quorum set contains any more (rule 13), to drop from its node."""

    node_id: str
    segment_id: str


@dataclass(frozen=True)
class VolumeGeometry:
    volume_id: str
    page_size: int
    segment_size_bytes: int
    geometry_epoch: int
    protection_groups: tuple[PgGeometry, ...]


@dataclass(frozen=True)
class PgPlan:
    """A PG to add (rule 9): the caller creates `pg.segments` on their nodes, then commits."""

    volume_id: str
    page_size: int
    segment_size_bytes: int
    # The geometry epoch the plan was made against; 0 = the volume does not exist yet.
    base_geometry_epoch: int
    pg: PgGeometry

    @property
    def creates_volume(self) -> bool:
        return self.base_geometry_epoch == 0


def segment_id_for(volume_id: str, pg_index: int) -> str:
    return f"{volume_id}/pg-{pg_index:05d}"


def format_bytes(n: int) -> str:
    for unit, size in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# ---------------------------------------------------------------------------
# Validation (rule 5)


def validate_volume_id(volume_id: str) -> None:
    if not VOLUME_ID_PATTERN.fullmatch(volume_id):
        raise InvalidRequest(
            f"volume id {volume_id!r} is not valid: use 1 to 63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )


def resolve_page_size(page_size: int) -> int:
    """0 means the default; anything else must be a power of two in range."""
    if page_size == 0:
        return PAGE_SIZE_DEFAULT
    if not (PAGE_SIZE_MIN <= page_size <= PAGE_SIZE_MAX) or page_size & (page_size - 1):
        raise InvalidRequest(
            f"page size {page_size} is not valid: use a power of two from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX} "
            "(or 0 for 4096)"
        )
    return page_size


def resolve_segment_size(segment_size_bytes: int, page_size: int) -> int:
    """0 means the default; anything else must be a positive multiple of the page size."""
    if segment_size_bytes == 0:
        return SEGMENT_SIZE_BYTES_DEFAULT
    if segment_size_bytes < 0 or segment_size_bytes % page_size:
        raise InvalidRequest(
            f"segment size {segment_size_bytes} bytes is not a multiple of the page size {page_size}; "
            "use a positive multiple (or 0 for 10 GiB)"
        )
    if segment_size_bytes > VOLUME_BYTES_MAX:
        raise InvalidRequest(
            f"segment size {format_bytes(segment_size_bytes)} exceeds the volume limit of "
            f"{format_bytes(VOLUME_BYTES_MAX)}"
        )
    return segment_size_bytes


def _validate_node_fields(node_id: str, az: str, address: str) -> None:
    if not NODE_ID_PATTERN.fullmatch(node_id):
        raise InvalidRequest(
            f"node id {node_id!r} is not valid: use 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not AZ_PATTERN.fullmatch(az):
        raise InvalidRequest(f"AZ {az!r} of node {node_id} is not valid: use 1 to 63 letters, digits, '.', '_' or '-'")
    _validate_address(node_id, address)


def _validate_address(node_id: str, address: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or len(address) > ADDRESS_BYTES_MAX:
        raise InvalidRequest(f"address {address!r} of node {node_id} is not valid: use HOST:PORT")


# ---------------------------------------------------------------------------
# The state machine


class ControlPlane:
    """Node registry and volume geometries (see the rules above)."""

    def __init__(
        self,
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS_DEFAULT,
        failure_timeout_ms: int = FAILURE_TIMEOUT_MS_DEFAULT,
        started_ms: float = 0.0,
    ) -> None:
        assert heartbeat_timeout_ms > 0, heartbeat_timeout_ms
        assert failure_timeout_ms >= heartbeat_timeout_ms, (failure_timeout_ms, heartbeat_timeout_ms)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.failure_timeout_ms = failure_timeout_ms
        self.started_ms = started_ms
        self._nodes: dict[str, Node] = {}
        self._volumes: dict[str, Volume] = {}
        self._segment_counts: dict[str, int] = {}
        self._orphans: list[Orphan] = []
        self.copies = CopyWatch()  # rule 14 (memory only, like heartbeat times)
        # The new segment's SCL last seen, per (volume, pg, new node): display only, not persisted.
        self._progress: dict[tuple[str, int, str], int] = {}

    # -- nodes ----------------------------------------------------------------

    def register_node(self, node_id: str, az: str, address: str, now_ms: float) -> NodeView:
        """Rule 1. Returns the node as now registered."""
        _validate_node_fields(node_id, az, address)
        node = self._nodes.get(node_id)
        if node is None:
            if len(self._nodes) >= NODE_COUNT_MAX:
                raise RegistryFull(f"cannot register node {node_id}: {NODE_COUNT_MAX} nodes are registered, the limit")
            node = self._nodes[node_id] = Node(node_id, az, address)
        elif node.az != az and self.segment_count(node_id) > 0:
            raise InvalidRequest(
                f"node {node_id} holds {self.segment_count(node_id)} segments in AZ {node.az}; "
                f"it cannot re-register in AZ {az}: use a new node id"
            )
        node.az = az
        node.address = address
        node.last_heartbeat_ms = now_ms
        return self._view(node, now_ms)

    def heartbeat(
        self, node_id: str, address: str, reported_segment_count: int, now_ms: float, report: NodeReport | None = None
    ) -> bool:
        """Rules 3 and 14. Returns True when the heartbeat changed persistent state (a new address)."""
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} is not registered; register first")
        changed = False
        if address and address != node.address:
            _validate_address(node_id, address)
            node.address = address
            changed = True
        node.last_heartbeat_ms = now_ms
        node.reported_segment_count = reported_segment_count
        if report is not None:
            self.copies.note_report(node_id, report, self.placed_on(node_id), now_ms)
        return changed

    def placed_on(self, node_id: str) -> set[str]:
        """Every segment placed on the node: in a PG's base set or the new one of a change in flight."""
        return {
            segment_id_for(v.volume_id, pg.pg_index)
            for v in self._volumes.values()
            for pg in v.protection_groups
            if node_id in pg.all_node_ids
        }

    def pgs_of_node(self, node_id: str) -> list[tuple[str, int]]:
        return sorted(
            (v.volume_id, pg.pg_index)
            for v in self._volumes.values()
            for pg in v.protection_groups
            if node_id in pg.all_node_ids
        )

    def plan_copy_repairs(self, now_ms: float) -> list[CopyRepair]:
        """Rule 14: the lost copies on healthy nodes that are due to be created again."""
        plans = []
        by_id = {
            segment_id_for(v.volume_id, pg.pg_index): (v, pg)
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
            node = self._nodes[node_id]
            plans.append(
                CopyRepair(
                    volume.volume_id,
                    volume.page_size,
                    pg.pg_index,
                    pg.first_page,
                    pg.page_count,
                    pg.membership_epoch,
                    node_id,
                    node.address,
                    segment_id,
                    self._pg_geometry(volume.volume_id, pg).segments,
                )
            )
        return plans

    def node(self, node_id: str, now_ms: float) -> NodeView:
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} is not registered; register first")
        return self._view(node, now_ms)

    def nodes(self, now_ms: float) -> list[NodeView]:
        return [self._view(self._nodes[node_id], now_ms) for node_id in sorted(self._nodes)]

    def is_healthy(self, node_id: str, now_ms: float) -> bool:
        """Rule 2."""
        node = self._nodes[node_id]
        if node.last_heartbeat_ms is None:
            return False
        return now_ms - node.last_heartbeat_ms <= self.heartbeat_timeout_ms

    def is_failed(self, node_id: str, now_ms: float) -> bool:
        """Rule 10."""
        node = self._nodes[node_id]
        last = node.last_heartbeat_ms if node.last_heartbeat_ms is not None else self.started_ms
        return now_ms - last > self.failure_timeout_ms

    def segment_count(self, node_id: str) -> int:
        """Rule 4: segments placed on the node by this control plane."""
        return self._segment_counts.get(node_id, 0)

    def _view(self, node: Node, now_ms: float) -> NodeView:
        age_ms = 0 if node.last_heartbeat_ms is None else max(0, int(now_ms - node.last_heartbeat_ms))
        return NodeView(
            node_id=node.node_id,
            az=node.az,
            address=node.address,
            healthy=self.is_healthy(node.node_id, now_ms),
            last_heartbeat_age_ms=age_ms,
            segment_count=self.segment_count(node.node_id),
            reported_segment_count=node.reported_segment_count,
            copies=self.copies.of(node.node_id, self.placed_on(node.node_id), now_ms),
        )

    def _candidates(self, now_ms: float) -> list[Candidate]:
        return [
            Candidate(node.node_id, node.az, self.segment_count(node.node_id), self.is_healthy(node.node_id, now_ms))
            for node in self._nodes.values()
        ]

    # -- volumes --------------------------------------------------------------

    def plan_create_volume(self, volume_id: str, page_size: int, segment_size_bytes: int, now_ms: float) -> PgPlan:
        """Rules 5-7 and 9: validate and place PG 0 of a new volume; changes nothing."""
        validate_volume_id(volume_id)
        page_size = resolve_page_size(page_size)
        segment_size_bytes = resolve_segment_size(segment_size_bytes, page_size)
        if volume_id in self._volumes:
            raise AlreadyExists(f"volume {volume_id} already exists; use DescribeVolume to read its geometry")
        if len(self._volumes) >= VOLUME_COUNT_MAX:
            raise RegistryFull(f"cannot create volume {volume_id}: {VOLUME_COUNT_MAX} volumes exist, the limit")
        pg = self._place_pg(volume_id, 0, segment_size_bytes // page_size, now_ms)
        return PgPlan(volume_id, page_size, segment_size_bytes, 0, pg)

    def plan_grow_volume(self, volume_id: str, geometry_epoch: int, now_ms: float) -> PgPlan | None:
        """Rules 7-9: place the next PG, or None when the caller's epoch is stale (already grown)."""
        volume = self._volume(volume_id)
        if geometry_epoch > volume.geometry_epoch:
            raise InvalidRequest(
                f"geometry epoch {geometry_epoch} is newer than volume {volume_id}'s current epoch "
                f"{volume.geometry_epoch}; describe the volume and retry with its epoch"
            )
        if 0 < geometry_epoch < volume.geometry_epoch:
            return None
        pg_index = len(volume.protection_groups)
        if pg_index >= volume.pg_count_max:
            raise VolumeFull(_volume_full_sentence(volume))
        pg = self._place_pg(volume_id, pg_index, volume.pages_per_pg, now_ms)
        return PgPlan(volume_id, volume.page_size, volume.segment_size_bytes, volume.geometry_epoch, pg)

    def commit_pg_plan(self, plan: PgPlan) -> VolumeGeometry:
        """Rule 9: record a PG whose six segments now exist. Returns the new geometry."""
        if plan.creates_volume:
            if plan.volume_id in self._volumes:
                raise AlreadyExists(f"volume {plan.volume_id} already exists; use DescribeVolume to read its geometry")
            volume = Volume(plan.volume_id, plan.page_size, plan.segment_size_bytes, GEOMETRY_EPOCH_INITIAL)
            self._volumes[plan.volume_id] = volume
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

    def describe_volume(self, volume_id: str) -> VolumeGeometry:
        return self._geometry(self._volume(volume_id))

    def list_volumes(self) -> list[VolumeGeometry]:
        return [self._geometry(self._volumes[v]) for v in sorted(self._volumes)]

    def _volume(self, volume_id: str) -> Volume:
        volume = self._volumes.get(volume_id)
        if volume is None:
            raise UnknownVolume(f"volume {volume_id} does not exist; create it first")
        return volume

    def _place_pg(self, volume_id: str, pg_index: int, pages_per_pg: int, now_ms: float) -> PgGeometry:
        chosen = choose_pg_nodes(self._candidates(now_ms))
        segment_id = segment_id_for(volume_id, pg_index)
        segments = tuple(SegmentPlacement(segment_id, c.node_id, c.az, self._nodes[c.node_id].address) for c in chosen)
        return PgGeometry(pg_index, pg_index * pages_per_pg, pages_per_pg, MEMBERSHIP_EPOCH_INITIAL, segments)

    def _append_pg(self, volume: Volume, pg: PgGeometry) -> None:
        assert pg.pg_index == len(volume.protection_groups), (pg.pg_index, volume.volume_id)
        assert pg.first_page == pg.pg_index * volume.pages_per_pg and pg.page_count == volume.pages_per_pg, pg
        assert len(volume.protection_groups) < volume.pg_count_max, volume.volume_id
        node_ids = tuple(s.node_id for s in pg.segments)
        assert len(set(node_ids)) == PG_SEGMENT_COUNT, node_ids
        assert all(node_id in self._nodes for node_id in node_ids), node_ids
        volume.protection_groups.append(
            ProtectionGroup(pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch, node_ids)
        )
        for node_id in node_ids:
            self._count(node_id, +1)

    def _count(self, node_id: str, delta: int) -> None:
        self._segment_counts[node_id] = self._segment_counts.get(node_id, 0) + delta
        assert self._segment_counts[node_id] >= 0, node_id

    def _geometry(self, volume: Volume) -> VolumeGeometry:
        return VolumeGeometry(
            volume_id=volume.volume_id,
            page_size=volume.page_size,
            segment_size_bytes=volume.segment_size_bytes,
            geometry_epoch=volume.geometry_epoch,
            protection_groups=tuple(self._pg_geometry(volume.volume_id, pg) for pg in volume.protection_groups),
        )

    def _pg_geometry(self, volume_id: str, pg: ProtectionGroup) -> PgGeometry:
        segment_id = segment_id_for(volume_id, pg.pg_index)
        segments = tuple(
            SegmentPlacement(segment_id, node_id, self._nodes[node_id].az, self._nodes[node_id].address)
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
        return PgGeometry(pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch, segments, changes)

    # -- segment replacement (rules 10-13) --------------------------------------------

    def plan_replacements(self, now_ms: float) -> list[ReplacementPlan]:
        """Rule 11: one plan per failed base node of a PG that can take another change."""
        plans = []
        orphaned = {(o.node_id, o.segment_id) for o in self._orphans}
        planned_counts: dict[str, int] = {}
        for volume in self._volumes.values():
            for pg in volume.protection_groups:
                changing = {c.old_node_id for c in pg.changes}
                # One begin per PG per round: each bumps the epoch the next plan must be made against.
                room = min(1, MEMBERSHIP_CHANGES_MAX - len(pg.changes))
                segment_id = segment_id_for(volume.volume_id, pg.pg_index)
                taken = set(pg.all_node_ids)
                for old in pg.node_ids:
                    if room <= 0:
                        break
                    if old in changing or not self.is_failed(old, now_ms):
                        continue
                    az = self._nodes[old].az
                    spares = [
                        n
                        for n in self._nodes.values()
                        if n.az == az
                        and n.node_id not in taken
                        and self.is_healthy(n.node_id, now_ms)
                        and (n.node_id, segment_id) not in orphaned
                    ]
                    if not spares:
                        continue
                    new = min(
                        spares,
                        key=lambda n: (self.segment_count(n.node_id) + planned_counts.get(n.node_id, 0), n.node_id),
                    )
                    planned_counts[new.node_id] = planned_counts.get(new.node_id, 0) + 1
                    taken.add(new.node_id)
                    room -= 1
                    new_placement = SegmentPlacement(segment_id, new.node_id, new.az, new.address)
                    peers = self._pg_geometry(volume.volume_id, pg).segments + (new_placement,)
                    plans.append(
                        ReplacementPlan(
                            volume.volume_id,
                            volume.page_size,
                            pg.pg_index,
                            pg.first_page,
                            pg.page_count,
                            pg.membership_epoch,
                            old,
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
        assert plan.old_node_id in pg.node_ids and plan.old_node_id not in {c.old_node_id for c in pg.changes}
        assert plan.new.node_id not in pg.all_node_ids and len(pg.changes) < MEMBERSHIP_CHANGES_MAX, plan
        changed = replace(
            pg,
            membership_epoch=pg.membership_epoch + 1,
            changes=pg.changes + (MembershipChange(plan.old_node_id, plan.new.node_id),),
        )
        self._set_pg(volume, changed)
        self._count(plan.new.node_id, +1)
        reserved = Orphan(plan.new.node_id, plan.new.segment_id)
        if reserved in self._orphans:
            self._orphans.remove(reserved)
        return self._pg_geometry(volume.volume_id, changed)

    def changes_in_flight(self) -> list[tuple[str, ProtectionGroup, MembershipChange]]:
        return [
            (volume.volume_id, pg, change)
            for volume in self._volumes.values()
            for pg in volume.protection_groups
            for change in pg.changes
        ]

    def pg(self, volume_id: str, pg_index: int) -> ProtectionGroup:
        return self._pg(self._volume(volume_id), pg_index)

    def set_change_target(self, volume_id: str, pg_index: int, old_node_id: str, target_lsn: int) -> None:
        """Rule 12: the LSN the new segment must reach. Set once; the epoch does not change."""
        volume = self._volume(volume_id)
        pg = self._pg(volume, pg_index)
        change = self._change(pg, old_node_id)
        assert change.target_lsn is None and target_lsn >= 0, (change, target_lsn)
        changes = tuple(replace(c, target_lsn=target_lsn) if c is change else c for c in pg.changes)
        self._set_pg(volume, replace(pg, changes=changes))

    def note_progress(self, volume_id: str, pg_index: int, new_node_id: str, scl: int) -> None:
        self._progress[(volume_id, pg_index, new_node_id)] = scl

    def complete_change(self, volume_id: str, pg_index: int, old_node_id: str) -> PgGeometry:
        """Rule 12: the new node takes the old one's place in the base set."""
        volume = self._volume(volume_id)
        pg = self._pg(volume, pg_index)
        change = self._change(pg, old_node_id)
        assert change.target_lsn is not None, change
        base = tuple(change.new_node_id if n == old_node_id else n for n in pg.node_ids)
        changed = replace(
            pg,
            membership_epoch=pg.membership_epoch + 1,
            node_ids=base,
            changes=tuple(c for c in pg.changes if c is not change),
        )
        self._set_pg(volume, changed)
        self._count(old_node_id, -1)
        self._orphans.append(Orphan(old_node_id, segment_id_for(volume_id, pg_index)))
        self._progress.pop((volume_id, pg_index, change.new_node_id), None)
        return self._pg_geometry(volume_id, changed)

    def due_rollbacks(self, now_ms: float) -> list[tuple[str, int, str, str]]:
        """Rule 13: (volume, pg, old node, reason) of every change that must roll back."""
        due = []
        for volume_id, pg, change in self.changes_in_flight():
            if self.is_healthy(change.old_node_id, now_ms):
                due.append(
                    (
                        volume_id,
                        pg.pg_index,
                        change.old_node_id,
                        f"node {change.old_node_id} is back before its replacement completed",
                    )
                )
            elif self.is_failed(change.new_node_id, now_ms):
                due.append(
                    (
                        volume_id,
                        pg.pg_index,
                        change.old_node_id,
                        f"the new node {change.new_node_id} failed while hydrating",
                    )
                )
        return due

    def roll_back_change(self, volume_id: str, pg_index: int, old_node_id: str) -> PgGeometry:
        """Rule 13: the new node leaves; the base set is unchanged."""
        volume = self._volume(volume_id)
        pg = self._pg(volume, pg_index)
        change = self._change(pg, old_node_id)
        changed = replace(
            pg, membership_epoch=pg.membership_epoch + 1, changes=tuple(c for c in pg.changes if c is not change)
        )
        self._set_pg(volume, changed)
        self._count(change.new_node_id, -1)
        self._orphans.append(Orphan(change.new_node_id, segment_id_for(volume_id, pg_index)))
        self._progress.pop((volume_id, pg_index, change.new_node_id), None)
        return self._pg_geometry(volume_id, changed)

    def orphans(self) -> list[Orphan]:
        return list(self._orphans)

    def orphan_dropped(self, orphan: Orphan) -> None:
        self._orphans.remove(orphan)

    def _pg(self, volume: Volume, pg_index: int) -> ProtectionGroup:
        if not 0 <= pg_index < len(volume.protection_groups):
            raise InvalidRequest(f"volume {volume.volume_id} has no PG {pg_index}")
        return volume.protection_groups[pg_index]

    @staticmethod
    def _change(pg: ProtectionGroup, old_node_id: str) -> MembershipChange:
        for change in pg.changes:
            if change.old_node_id == old_node_id:
                return change
        raise InvalidRequest(f"PG {pg.pg_index} is not replacing node {old_node_id}")

    def _set_pg(self, volume: Volume, pg: ProtectionGroup) -> None:
        _assert_pg_valid(pg)
        volume.protection_groups[pg.pg_index] = pg

    # -- persistence ----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything that must survive a restart (heartbeat times do not: rule 2)."""
        return {
            "format_version": STATE_FORMAT_VERSION,
            "nodes": [
                {"node_id": n.node_id, "az": n.az, "address": n.address}
                for n in sorted(self._nodes.values(), key=lambda n: n.node_id)
            ],
            "volumes": [_volume_to_dict(self._volumes[v]) for v in sorted(self._volumes)],
            "orphans": [{"node_id": o.node_id, "segment_id": o.segment_id} for o in self._orphans],
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS_DEFAULT,
        failure_timeout_ms: int = FAILURE_TIMEOUT_MS_DEFAULT,
        started_ms: float = 0.0,
    ) -> ControlPlane:
        version = data.get("format_version")
        if version != STATE_FORMAT_VERSION:
            raise ValueError(f"control plane state has format version {version!r}; expected {STATE_FORMAT_VERSION}")
        state = cls(heartbeat_timeout_ms, failure_timeout_ms, started_ms)
        for n in data["nodes"]:
            _validate_node_fields(n["node_id"], n["az"], n["address"])
            state._nodes[n["node_id"]] = Node(n["node_id"], n["az"], n["address"])
        for v in data["volumes"]:
            volume = Volume(v["volume_id"], int(v["page_size"]), int(v["segment_size_bytes"]), int(v["geometry_epoch"]))
            validate_volume_id(volume.volume_id)
            resolve_segment_size(volume.segment_size_bytes, resolve_page_size(volume.page_size))
            state._volumes[volume.volume_id] = volume
            for pg_data in v["protection_groups"]:
                pg = _pg_from_dict(pg_data)
                base = replace(pg, changes=())
                state._append_pg(volume, state._pg_geometry(volume.volume_id, base))
                state._set_pg(volume, pg)
                for change in pg.changes:
                    state._count(change.new_node_id, +1)
            assert volume.geometry_epoch == GEOMETRY_EPOCH_INITIAL + len(volume.protection_groups) - 1, v
        for o in data.get("orphans", []):
            state._orphans.append(Orphan(o["node_id"], o["segment_id"]))
        return state


def _volume_full_sentence(volume: Volume) -> str:
    if volume.pg_count_max == PG_COUNT_MAX and PG_COUNT_MAX * volume.segment_size_bytes < VOLUME_BYTES_MAX:
        return (
            f"volume {volume.volume_id} is full: {PG_COUNT_MAX} protection groups of "
            f"{format_bytes(volume.segment_size_bytes)}, the most a volume may have"
        )
    return f"volume {volume.volume_id} is full: {format_bytes(VOLUME_BYTES_MAX)}"


def _volume_to_dict(volume: Volume) -> dict[str, Any]:
    return {
        "volume_id": volume.volume_id,
        "page_size": volume.page_size,
        "segment_size_bytes": volume.segment_size_bytes,
        "geometry_epoch": volume.geometry_epoch,
        "protection_groups": [
            {
                "pg_index": pg.pg_index,
                "first_page": pg.first_page,
                "page_count": pg.page_count,
                "membership_epoch": pg.membership_epoch,
                "node_ids": list(pg.node_ids),
                "changes": [
                    {"old_node_id": c.old_node_id, "new_node_id": c.new_node_id, "target_lsn": c.target_lsn}
                    for c in pg.changes
                ],
            }
            for pg in volume.protection_groups
        ],
    }


def _pg_from_dict(pg: dict[str, Any]) -> ProtectionGroup:
    return ProtectionGroup(
        int(pg["pg_index"]),
        int(pg["first_page"]),
        int(pg["page_count"]),
        int(pg["membership_epoch"]),
        tuple(pg["node_ids"]),
        tuple(
            MembershipChange(
                c["old_node_id"], c["new_node_id"], None if c["target_lsn"] is None else int(c["target_lsn"])
            )
            for c in pg.get("changes", [])
        ),
    )


def _assert_pg_valid(pg: ProtectionGroup) -> None:
    assert len(set(pg.node_ids)) == PG_SEGMENT_COUNT, pg
    assert len(pg.changes) <= MEMBERSHIP_CHANGES_MAX, pg
    assert len(set(pg.all_node_ids)) == len(pg.all_node_ids), pg
    olds = [c.old_node_id for c in pg.changes]
    assert len(set(olds)) == len(olds) and set(olds) <= set(pg.node_ids), pg
