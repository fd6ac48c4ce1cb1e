"""The launcher's gRPC probes: the health check, and what `sixfold status` asks each process (a storage
node its segments, the control plane its nodes, volumes and changes, the compute node its volumes).

Short timeouts: a status never waits long for a process that does not answer; the sentences that
replace what could not be read follow the rules of tools/cluster_status.py.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold.compute.v1 import volume_service_pb2, volume_service_pb2_grpc
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import (
    control_plane_service_pb2,
    control_plane_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)
from sixfold.tools.cluster_layout import COMPUTE, KMS, PAUSED, RUNNING, STORAGE_NODE, ProcessRecord
from sixfold.tools.cluster_status import (
    UNREACHABLE,
    ChangeInfo,
    NodeHealthInfo,
    ProcessStatus,
    SegmentInfo,
    VolumeInfo,
    control_plane_answers,
    needs_the_control_plane,
    not_answering_sentence,
    not_asked,
    refused_sentence,
)

HEALTH_RPC_TIMEOUT_S = 1.0
STATUS_RPC_TIMEOUT_S = 1.0
COMPUTE_STATUS_RPC_TIMEOUT_S = 2.0  # ListVolumes on the compute node


def process_status(
    record: ProcessRecord, state: str, control_plane: tuple[ProcessRecord, ProcessStatus] | None = None
) -> ProcessStatus:
    """The process's row of `sixfold status`: asked over gRPC only when running (tools/cluster_status.py
    rules 1-4). `control_plane`: its record and status, for the processes whose details need it."""
    status = ProcessStatus(
        name=record.name,
        role=record.role,
        az=record.az,
        spare=record.spare,
        address=record.address,
        pid=record.pid if state in (RUNNING, PAUSED) else None,
        state=state,
        health="-",
        log_file=record.log_file,
        data_dir=record.data_dir,
    )
    if state != RUNNING:  # a paused process would only time out
        status.error = not_asked(record, state)
        return status
    status.health = health_check(record.address, STATUS_RPC_TIMEOUT_S)
    if status.health == UNREACHABLE:
        status.error = not_answering_sentence(record)
        return status
    if needs_the_control_plane(record) and control_plane is not None and not control_plane_answers(control_plane[1]):
        status.error = not_answering_sentence(control_plane[0], "volumes")
        return status
    try:
        if record.role == KMS:
            pass  # the key service: its health is its row (it lists nothing to a client-admin)
        elif record.role == STORAGE_NODE:
            status.segments, status.disk, status.disk_detail, status.lost_segments = list_segments(record.address)
        elif record.role == COMPUTE:
            status.volumes = list_volumes(record.address)
        else:
            status.nodes, status.volume_count, status.changes = list_nodes(record.address)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            status.error = not_answering_sentence(record)
        else:
            status.error = refused_sentence(record, exc.code().name, exc.details() or "")
    return status


def health_check(address: str, timeout_s: float = HEALTH_RPC_TIMEOUT_S) -> str:
    """The standard health check (service ""): 'SERVING', 'NOT_SERVING', ... or 'unreachable'."""
    with transport.channel(address, CHANNEL_OPTIONS) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError:
            return UNREACHABLE
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _disk_name(value: int) -> str:
    return storage_service_pb2.DiskCondition.Name(value).removeprefix("DISK_CONDITION_").lower()


def list_segments(address: str) -> tuple[list[SegmentInfo], str, str, list[str]]:
    """(segments, disk condition, its sentence, segments lost at start) of one storage node."""
    with transport.channel(address, CHANNEL_OPTIONS) as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        reply = stub.ListSegments(storage_service_pb2.ListSegmentsRequest(), timeout=STATUS_RPC_TIMEOUT_S)
    segments = [
        SegmentInfo(
            s.segment_id,
            s.volume_id,
            s.pg_index,
            s.scl,
            s.highest_lsn,
            s.record_count,
            s.records_repaired,
            s.records_quarantined,
            s.versions_quarantined,
            s.scrub_passes,
            s.retention_horizon_lsn,
            s.versions_coalesced,
            s.records_collected,
            s.versions_collected,
            s.pages_hydrated,
            s.bytes_hydrated,
            s.whole,
            s.rebuilding,
            s.chain_gaps,
            s.metadata_repaired,
        )
        for s in reply.segments
    ]
    return segments, _disk_name(reply.disk_condition), reply.disk_detail, list(reply.lost_segments)


def _health_name(value: int) -> str:
    name = control_plane_service_pb2.NodeHealth.Name(value)
    return name.removeprefix("NODE_HEALTH_").lower()


def list_nodes(address: str) -> tuple[list[NodeHealthInfo], int, list[ChangeInfo]]:
    with transport.channel(address, CHANNEL_OPTIONS) as channel:
        stub = control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)
        nodes = stub.ListNodes(control_plane_service_pb2.ListNodesRequest(), timeout=STATUS_RPC_TIMEOUT_S)
        volumes = stub.ListVolumes(control_plane_service_pb2.ListVolumesRequest(), timeout=STATUS_RPC_TIMEOUT_S)
    infos = [
        NodeHealthInfo(
            n.node_id,
            n.az,
            n.address,
            _health_name(n.health),
            n.last_heartbeat_age_ms,
            n.segment_count,
            _disk_name(n.condition) if n.condition else "ok",
            n.condition_detail,
            list(n.segments_missing),
            list(n.segments_rebuilding),
        )
        for n in nodes.nodes
    ]
    changes = [
        ChangeInfo(
            v.volume_id,
            pg.pg_index,
            pg.membership_epoch,
            c.old_node_id,
            c.new_node_id,
            c.target_lsn if c.target_measured else None,
            c.new_segment_scl,
        )
        for v in volumes.volumes
        for pg in v.protection_groups
        for c in pg.changes
    ]
    return infos, len(volumes.volumes), changes


def list_volumes(address: str) -> list[VolumeInfo]:
    """The compute node's volumes (VolumeService.ListVolumes)."""
    with transport.channel(address, CHANNEL_OPTIONS) as channel:
        stub = volume_service_pb2_grpc.VolumeServiceStub(channel)
        reply = stub.ListVolumes(volume_service_pb2.ListVolumesRequest(), timeout=COMPUTE_STATUS_RPC_TIMEOUT_S)
    return [VolumeInfo(v.volume_id, v.vdl, v.vcl, v.volume_epoch, v.fenced) for v in reply.volumes]
