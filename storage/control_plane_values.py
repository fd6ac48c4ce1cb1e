"""The values the control plane keeps and hands out: nodes, volumes, protection groups (PGs),
membership changes, and the plans its caller carries out (rules of `storage.control_plane`).

Pure dataclasses and the naming of segments; no behaviour beyond derived properties.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sixfold.storage.control_plane_limits import pg_count_max
from sixfold.storage.copies import NodeCopies


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
        return pg_count_max(self.segment_size_bytes)


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
