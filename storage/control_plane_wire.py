"""Protobuf at the control plane's edge: its values to `ControlPlaneService` messages, heartbeats to
copy reports, plans to `StorageService` requests, segment states to `storage.replacement` values.

Pure conversions; protobuf stops here (the state machine works on the dataclasses of
storage/control_plane_values.py).
"""

from __future__ import annotations

from sixfold.storage.control_plane_limits import timeline_name
from sixfold.storage.control_plane_timelines import CommitAnswer, History, Timeline
from sixfold.storage.control_plane_values import (
    KIND_SNAPSHOT,
    KIND_VOLUME,
    ClonePlan,
    CopyRepair,
    NodeView,
    PgGeometry,
    PgPlan,
    ReplacementPlan,
    SegmentPlacement,
    VolumeGeometry,
)
from sixfold.storage.copies import HeldCopy, NodeReport
from sixfold.storage.errors import InvalidRequest
from sixfold.storage.replacement import HeldLsns
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

DISK_CONDITION_NAMES = {
    ss_pb2.DISK_CONDITION_OK: "ok",
    ss_pb2.DISK_CONDITION_FULL: "disk_full",
    ss_pb2.DISK_CONDITION_IO_ERROR: "io_error",
    ss_pb2.DISK_CONDITION_FAILED: "failed",
}
DISK_CONDITIONS = {name: value for value, name in DISK_CONDITION_NAMES.items()}
CONDITION_DETAIL_CHARS_MAX = 1000  # of a heartbeat's disk condition sentence, kept for display
VOLUME_KINDS = {KIND_VOLUME: cp_pb2.VOLUME_KIND_VOLUME, KIND_SNAPSHOT: cp_pb2.VOLUME_KIND_SNAPSHOT}
KIND_NAMES: dict[int, str] = {
    cp_pb2.VOLUME_KIND_UNSPECIFIED: KIND_VOLUME,  # a request that names no kind: a volume
    cp_pb2.VOLUME_KIND_VOLUME: KIND_VOLUME,
    cp_pb2.VOLUME_KIND_SNAPSHOT: KIND_SNAPSHOT,
}


def node_to_proto(node: NodeView) -> cp_pb2.NodeInfo:
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
    return NodeReport(
        held, DISK_CONDITION_NAMES.get(request.condition, "ok"), request.condition_detail[:CONDITION_DETAIL_CHARS_MAX]
    )


def pg_to_proto(pg: PgGeometry) -> cp_pb2.ProtectionGroup:
    return cp_pb2.ProtectionGroup(
        pg_index=pg.pg_index,
        first_page=pg.first_page,
        page_count=pg.page_count,
        membership_epoch=pg.membership_epoch,
        segments=[
            cp_pb2.SegmentPlacement(
                segment_id=s.segment_id,
                node_id=s.node_id,
                az=s.az,
                address=s.address,
                parent_segment_id=s.parent_segment_id,
            )
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
        has_parent=pg.has_parent,
        parent_read_lsn=pg.parent_read_lsn,
    )


def geometry_to_proto(geometry: VolumeGeometry) -> cp_pb2.VolumeGeometry:
    return cp_pb2.VolumeGeometry(
        volume_id=geometry.volume_id,
        page_size=geometry.page_size,
        segment_size_bytes=geometry.segment_size_bytes,
        geometry_epoch=geometry.geometry_epoch,
        protection_groups=[pg_to_proto(pg) for pg in geometry.protection_groups],
        parent_volume_id=geometry.parent_volume_id,
        branch_lsn=geometry.branch_lsn,
        kind=VOLUME_KINDS[geometry.kind],
        created_at_ms=geometry.created_at_ms,
        deleted=geometry.deleted,
        child_volume_ids=list(geometry.child_volume_ids),
        snapshot_name=geometry.snapshot_name,
        backtrack_window_s=geometry.backtrack_window_s,
    )


def timeline_to_proto(timeline: Timeline) -> cp_pb2.Timeline:
    return cp_pb2.Timeline(
        timeline_id=timeline.timeline_id,
        parent_timeline_id=timeline.parent_timeline_id,
        branch_lsn=timeline.branch_lsn,
        lsn_floor=timeline.lsn_floor,
        end_lsn=timeline.end_lsn,
        activated_at_ms=timeline.activated_at_ms,
        abandoned_at_ms=timeline.abandoned_at_ms,
    )


def history_to_proto(history: History) -> cp_pb2.VolumeHistoryResponse:
    return cp_pb2.VolumeHistoryResponse(
        backtrack_window_s=history.backtrack_window_s,
        timelines=[timeline_to_proto(t) for t in history.timelines],
        backtracks=[
            cp_pb2.BacktrackRecord(
                at_ms=b.at_ms,
                from_timeline_id=b.from_timeline_id,
                from_vdl=b.from_vdl,
                to_timeline_id=b.to_timeline_id,
                to_lsn=b.to_lsn,
                to_commit_time_us=b.to_commit_time_us,
            )
            for b in history.backtracks
        ],
    )


def commit_answer(reply: ss_pb2.FindCommitResponse) -> CommitAnswer:
    return CommitAnswer(reply.lsn, reply.commit_time_us, reply.gc_floor_lsn, reply.oldest_commit_time_us)


def kind_from_proto(kind: int) -> str:
    """A request's volume kind; `InvalidRequest` for a value this control plane does not know."""
    name = KIND_NAMES.get(kind)
    if name is None:
        raise InvalidRequest(f"volume kind {kind} is not known; use VOLUME_KIND_VOLUME or VOLUME_KIND_SNAPSHOT")
    return name


def create_segment_request(plan: PgPlan) -> ss_pb2.CreateSegmentRequest:
    pg = plan.pg
    return ss_pb2.CreateSegmentRequest(
        segment_id=pg.segments[0].segment_id,
        volume_id=plan.volume_id,
        pg_index=pg.pg_index,
        first_page=pg.first_page,
        page_count=pg.page_count,
        page_size=plan.page_size,
        membership_epoch=pg.membership_epoch,
        peers=peers_to_proto(pg.segments),
        backtrack_window_s=plan.backtrack_window_s if plan.creates_volume else 0,  # 0: the volume's, stamped
    )


def clone_segment_requests(plan: ClonePlan, pg: PgGeometry) -> list[ss_pb2.CreateSegmentRequest]:
    """A clone PG's segment on each of its nodes, naming the parent segment on that node
    (storage/control_plane_lineage.py rule 3), in the order of `pg.segments`; a backtrack's new timeline
    also says where its new LSNs start (storage/control_plane_history.py rule 2)."""
    return [
        ss_pb2.CreateSegmentRequest(
            segment_id=s.segment_id,
            volume_id=plan.volume_id,
            pg_index=pg.pg_index,
            first_page=pg.first_page,
            page_count=pg.page_count,
            page_size=plan.page_size,
            membership_epoch=pg.membership_epoch,
            peers=peers_to_proto(pg.segments),
            parent_segment_id=s.parent_segment_id,
            branch_lsn=plan.branch_lsn,
            parent_read_lsn=pg.parent_read_lsn,
            lsn_floor=plan.lsn_floor,
            backtrack_window_s=plan.backtrack_window_s,
        )
        for s in pg.segments
    ]


def replacement_request(plan: ReplacementPlan) -> ss_pb2.CreateSegmentRequest:
    """The new segment of a replacement, at the next membership epoch, with every segment as its peers (a
    timeline a backtrack left names the volume its segments were made for, as they do)."""
    return ss_pb2.CreateSegmentRequest(
        segment_id=plan.new.segment_id,
        volume_id=timeline_name(plan.volume_id),
        pg_index=plan.pg_index,
        first_page=plan.first_page,
        page_count=plan.page_count,
        page_size=plan.page_size,
        membership_epoch=plan.membership_epoch,
        peers=peers_to_proto(plan.peers),
    )


def copy_repair_request(repair: CopyRepair) -> ss_pb2.CreateSegmentRequest:
    """A lost copy created again on its node, rebuilding from its peers (named as `replacement_request` says)."""
    return ss_pb2.CreateSegmentRequest(
        segment_id=repair.segment_id,
        volume_id=timeline_name(repair.volume_id),
        pg_index=repair.pg_index,
        first_page=repair.first_page,
        page_count=repair.page_count,
        page_size=repair.page_size,
        membership_epoch=repair.membership_epoch,
        rebuild=True,
        peers=peers_to_proto(repair.peers),
    )


def peers_to_proto(segments: tuple[SegmentPlacement, ...]) -> list[ss_pb2.SegmentPeer]:
    return [ss_pb2.SegmentPeer(node_id=s.node_id, address=s.address) for s in segments]


def held_lsns(state: ss_pb2.SegmentState) -> HeldLsns:
    return HeldLsns(state.scl, state.scl_high_water)


def truncation_ranges(state: ss_pb2.SegmentState) -> list[tuple[int, int]]:
    return [(r.start_lsn, r.end_lsn) for r in state.truncation_ranges]
