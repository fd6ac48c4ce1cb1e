"""The values the control plane keeps and hands out: nodes, volumes, protection groups (PGs),
membership changes, and the plans its caller carries out (rules of `storage.control_plane` and of
`storage.control_plane_lineage` for clones and snapshots).

Pure dataclasses and the naming of segments and snapshots; no behaviour beyond derived properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sixfold.storage.control_plane_limits import (
    BACKTRACK_WINDOW_S_DEFAULT,
    SNAPSHOT_ID_PREFIX,
    is_timeline_id,
    pg_count_max,
    timeline_name,
)
from sixfold.storage.copies import NodeCopies

MEMBERSHIP_EPOCH_INITIAL = 1  # a new PG's
KIND_VOLUME = "volume"
KIND_SNAPSHOT = "snapshot"


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
    # A clone's PG made at the clone's creation (storage/control_plane_lineage.py rule 3): it reads the
    # parent volume's PG of the same index at `parent_read_lsn`, on the nodes of `parent_node_ids` (base
    # nodes whose segment was created with its parent; the others hold flattened copies).
    has_parent: bool = False
    parent_read_lsn: int = 0
    parent_node_ids: tuple[str, ...] = ()

    @property
    def all_node_ids(self) -> tuple[str, ...]:
        """Every node holding a segment of this PG: the base set, then each change's new node."""
        return self.node_ids + tuple(c.new_node_id for c in self.changes)


@dataclass(frozen=True)
class BacktrackEntry:
    """One backtrack of a volume (storage/control_plane_history.py rule 4), its timelines named by serial."""

    at_ms: int
    from_serial: int
    from_vdl: int
    to_serial: int
    to_lsn: int
    to_commit_time_us: int


@dataclass
class Volume:
    volume_id: str
    page_size: int
    segment_size_bytes: int
    geometry_epoch: int
    protection_groups: list[ProtectionGroup] = field(default_factory=list)
    # Time travel (storage/control_plane_lineage.py): the segment ids' serial (rule 2), the parent and
    # the LSN this volume branched at ("" and 0: a root volume), its kind, its wall-clock creation time,
    # whether a user deleted it (kept while clones read it) and, for a snapshot, its name.
    serial: int = 0
    parent_volume_id: str = ""
    branch_lsn: int = 0
    kind: str = KIND_VOLUME
    created_at_ms: int = 0
    deleted: bool = False
    snapshot_name: str = ""
    # Timelines (storage/control_plane_history.py rule 1): how far back a backtrack may go; the volume's own
    # records have LSNs above `lsn_floor` (a root's 0, a clone's branch LSN, a backtrack's new timeline: above
    # every LSN the volume ever allocated); the name pointed at it from `activated_at_ms`. Once left (its id
    # then NAME~SERIAL): when, the VDL and per-PG chain tails it ended at, and the highest LSN its segments
    # held then. The current record keeps the volume's backtracks.
    backtrack_window_s: int = BACKTRACK_WINDOW_S_DEFAULT
    lsn_floor: int = 0
    activated_at_ms: int = 0
    abandoned_at_ms: int = 0
    end_lsn: int = 0
    end_tails: tuple[int, ...] = ()
    lsn_high: int = 0
    backtracks: list[BacktrackEntry] = field(default_factory=list)

    @property
    def left(self) -> bool:
        """A timeline a backtrack left (its id is NAME~SERIAL)."""
        return is_timeline_id(self.volume_id)

    @property
    def pages_per_pg(self) -> int:
        return self.segment_size_bytes // self.page_size

    @property
    def pg_count_max(self) -> int:
        return pg_count_max(self.segment_size_bytes)


@dataclass(frozen=True)
class SegmentPlacement:
    segment_id: str
    node_id: str
    az: str
    address: str
    parent_segment_id: str = ""  # the parent PG's segment on the same node this one reads through


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
    has_parent: bool = False
    parent_read_lsn: int = 0


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
    parent_volume_id: str = ""
    branch_lsn: int = 0
    kind: str = KIND_VOLUME
    created_at_ms: int = 0
    deleted: bool = False
    child_volume_ids: tuple[str, ...] = ()  # the volumes and snapshots that branched from it, still there
    snapshot_name: str = ""
    backtrack_window_s: int = BACKTRACK_WINDOW_S_DEFAULT

    @property
    def listed(self) -> bool:
        """Whether ListVolumes shows it: a volume, neither deleted nor a timeline a backtrack left (snapshots
        are listed by ListSnapshots)."""
        return self.kind == KIND_VOLUME and not self.deleted and not is_timeline_id(self.volume_id)


@dataclass(frozen=True)
class PgPlan:
    """A PG to add (rule 9): the caller creates `pg.segments` on their nodes, then commits."""

    volume_id: str
    page_size: int
    segment_size_bytes: int
    # The geometry epoch the plan was made against; 0 = the volume does not exist yet.
    base_geometry_epoch: int
    pg: PgGeometry
    serial: int = 0  # a new volume's segment id serial (storage/control_plane_lineage.py rule 2)
    created_at_ms: int = 0  # a new volume's wall-clock creation time
    backtrack_window_s: int = BACKTRACK_WINDOW_S_DEFAULT  # a new volume's

    @property
    def creates_volume(self) -> bool:
        return self.base_geometry_epoch == 0


@dataclass(frozen=True)
class ClonePlan:
    """A clone to make (storage/control_plane_lineage.py rules 3-5): the caller reserves its segments,
    creates them on their nodes, then commits the PGs a write quorum of nodes created."""

    volume_id: str
    source_volume_id: str
    serial: int
    branch_lsn: int
    kind: str
    snapshot_name: str
    created_at_ms: int
    page_size: int
    segment_size_bytes: int
    # The clone's PGs, each with its six segments naming their parent segment.
    pgs: tuple[PgGeometry, ...]
    backtrack_window_s: int = BACKTRACK_WINDOW_S_DEFAULT  # the source's
    # A backtrack's new timeline (storage/control_plane_history.py rule 3): its new LSNs start above this.
    lsn_floor: int = 0

    def segments(self) -> list[SegmentPlacement]:
        return [s for pg in self.pgs for s in pg.segments]


@dataclass(frozen=True)
class Deletion:
    """What deleting a volume or a snapshot did (storage/control_plane_lineage.py rules 7-8)."""

    kept_for_clones: bool
    # The volumes removed, the deleted one first, then each deleted ancestor its removal freed.
    volumes_dropped: tuple[str, ...] = ()
    # Their segments, now orphans to drop, one group per removed volume in the same order (a node
    # refuses to drop a parent segment while a child segment of it is still there).
    segment_groups: tuple[tuple[Orphan, ...], ...] = ()


def snapshot_volume_id(snapshot_name: str) -> str:
    return f"{SNAPSHOT_ID_PREFIX}{snapshot_name}"


def segment_id_for(volume_id: str, pg_index: int, serial: int = 0) -> str:
    """A segment's id: `VOLUME/pg-00007`, or `VOLUME.SERIAL/pg-00007` for a volume with a serial
    (storage/control_plane_lineage.py rule 2; volume ids hold no '.', so the forms never meet). A timeline a
    backtrack left keeps the ids it had: `VOLUME~SERIAL` names its segments as VOLUME with that serial."""
    name = timeline_name(volume_id)
    prefix = name if serial == 0 else f"{name}.{serial}"
    return f"{prefix}/pg-{pg_index:05d}"
