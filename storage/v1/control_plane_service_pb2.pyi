from sixfold.storage.v1 import storage_service_pb2 as _storage_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeHealth(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_HEALTH_UNSPECIFIED: _ClassVar[NodeHealth]
    NODE_HEALTH_HEALTHY: _ClassVar[NodeHealth]
    NODE_HEALTH_UNHEALTHY: _ClassVar[NodeHealth]
    NODE_HEALTH_DEGRADED: _ClassVar[NodeHealth]

class VolumeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VOLUME_KIND_UNSPECIFIED: _ClassVar[VolumeKind]
    VOLUME_KIND_VOLUME: _ClassVar[VolumeKind]
    VOLUME_KIND_SNAPSHOT: _ClassVar[VolumeKind]
NODE_HEALTH_UNSPECIFIED: NodeHealth
NODE_HEALTH_HEALTHY: NodeHealth
NODE_HEALTH_UNHEALTHY: NodeHealth
NODE_HEALTH_DEGRADED: NodeHealth
VOLUME_KIND_UNSPECIFIED: VolumeKind
VOLUME_KIND_VOLUME: VolumeKind
VOLUME_KIND_SNAPSHOT: VolumeKind

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "az", "address", "health", "last_heartbeat_age_ms", "segment_count", "condition", "condition_detail", "segments_missing", "segments_rebuilding")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AZ_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CONDITION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_MISSING_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_REBUILDING_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    az: str
    address: str
    health: NodeHealth
    last_heartbeat_age_ms: int
    segment_count: int
    condition: _storage_service_pb2.DiskCondition
    condition_detail: str
    segments_missing: _containers.RepeatedScalarFieldContainer[str]
    segments_rebuilding: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_id: _Optional[str] = ..., az: _Optional[str] = ..., address: _Optional[str] = ..., health: _Optional[_Union[NodeHealth, str]] = ..., last_heartbeat_age_ms: _Optional[int] = ..., segment_count: _Optional[int] = ..., condition: _Optional[_Union[_storage_service_pb2.DiskCondition, str]] = ..., condition_detail: _Optional[str] = ..., segments_missing: _Optional[_Iterable[str]] = ..., segments_rebuilding: _Optional[_Iterable[str]] = ...) -> None: ...

class SegmentPlacement(_message.Message):
    __slots__ = ("segment_id", "node_id", "az", "address", "parent_segment_id")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AZ_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PARENT_SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    node_id: str
    az: str
    address: str
    parent_segment_id: str
    def __init__(self, segment_id: _Optional[str] = ..., node_id: _Optional[str] = ..., az: _Optional[str] = ..., address: _Optional[str] = ..., parent_segment_id: _Optional[str] = ...) -> None: ...

class MembershipChange(_message.Message):
    __slots__ = ("old_node_id", "new_node_id", "target_lsn", "new_segment_scl", "target_measured")
    OLD_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_LSN_FIELD_NUMBER: _ClassVar[int]
    NEW_SEGMENT_SCL_FIELD_NUMBER: _ClassVar[int]
    TARGET_MEASURED_FIELD_NUMBER: _ClassVar[int]
    old_node_id: str
    new_node_id: str
    target_lsn: int
    new_segment_scl: int
    target_measured: bool
    def __init__(self, old_node_id: _Optional[str] = ..., new_node_id: _Optional[str] = ..., target_lsn: _Optional[int] = ..., new_segment_scl: _Optional[int] = ..., target_measured: _Optional[bool] = ...) -> None: ...

class ProtectionGroup(_message.Message):
    __slots__ = ("pg_index", "first_page", "page_count", "membership_epoch", "segments", "changes", "has_parent", "parent_read_lsn")
    PG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    HAS_PARENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_READ_LSN_FIELD_NUMBER: _ClassVar[int]
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    segments: _containers.RepeatedCompositeFieldContainer[SegmentPlacement]
    changes: _containers.RepeatedCompositeFieldContainer[MembershipChange]
    has_parent: bool
    parent_read_lsn: int
    def __init__(self, pg_index: _Optional[int] = ..., first_page: _Optional[int] = ..., page_count: _Optional[int] = ..., membership_epoch: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[SegmentPlacement, _Mapping]]] = ..., changes: _Optional[_Iterable[_Union[MembershipChange, _Mapping]]] = ..., has_parent: _Optional[bool] = ..., parent_read_lsn: _Optional[int] = ...) -> None: ...

class VolumeGeometry(_message.Message):
    __slots__ = ("volume_id", "page_size", "segment_size_bytes", "geometry_epoch", "protection_groups", "parent_volume_id", "branch_lsn", "kind", "created_at_ms", "deleted", "child_volume_ids", "snapshot_name", "backtrack_window_s")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_GROUPS_FIELD_NUMBER: _ClassVar[int]
    PARENT_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    CHILD_VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    BACKTRACK_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    page_size: int
    segment_size_bytes: int
    geometry_epoch: int
    protection_groups: _containers.RepeatedCompositeFieldContainer[ProtectionGroup]
    parent_volume_id: str
    branch_lsn: int
    kind: VolumeKind
    created_at_ms: int
    deleted: bool
    child_volume_ids: _containers.RepeatedScalarFieldContainer[str]
    snapshot_name: str
    backtrack_window_s: int
    def __init__(self, volume_id: _Optional[str] = ..., page_size: _Optional[int] = ..., segment_size_bytes: _Optional[int] = ..., geometry_epoch: _Optional[int] = ..., protection_groups: _Optional[_Iterable[_Union[ProtectionGroup, _Mapping]]] = ..., parent_volume_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ..., kind: _Optional[_Union[VolumeKind, str]] = ..., created_at_ms: _Optional[int] = ..., deleted: _Optional[bool] = ..., child_volume_ids: _Optional[_Iterable[str]] = ..., snapshot_name: _Optional[str] = ..., backtrack_window_s: _Optional[int] = ...) -> None: ...

class Timeline(_message.Message):
    __slots__ = ("timeline_id", "parent_timeline_id", "branch_lsn", "lsn_floor", "end_lsn", "activated_at_ms", "abandoned_at_ms")
    TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    LSN_FLOOR_FIELD_NUMBER: _ClassVar[int]
    END_LSN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    timeline_id: str
    parent_timeline_id: str
    branch_lsn: int
    lsn_floor: int
    end_lsn: int
    activated_at_ms: int
    abandoned_at_ms: int
    def __init__(self, timeline_id: _Optional[str] = ..., parent_timeline_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ..., lsn_floor: _Optional[int] = ..., end_lsn: _Optional[int] = ..., activated_at_ms: _Optional[int] = ..., abandoned_at_ms: _Optional[int] = ...) -> None: ...

class BacktrackRecord(_message.Message):
    __slots__ = ("at_ms", "from_timeline_id", "from_vdl", "to_timeline_id", "to_lsn", "to_commit_time_us")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    FROM_TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_VDL_FIELD_NUMBER: _ClassVar[int]
    TO_TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    from_timeline_id: str
    from_vdl: int
    to_timeline_id: str
    to_lsn: int
    to_commit_time_us: int
    def __init__(self, at_ms: _Optional[int] = ..., from_timeline_id: _Optional[str] = ..., from_vdl: _Optional[int] = ..., to_timeline_id: _Optional[str] = ..., to_lsn: _Optional[int] = ..., to_commit_time_us: _Optional[int] = ...) -> None: ...

class BacktrackRequest(_message.Message):
    __slots__ = ("volume_id", "to_lsn", "to_time_us", "current_vdl", "current_tails", "lsn_allocated", "writer_epoch")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_US_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VDL_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TAILS_FIELD_NUMBER: _ClassVar[int]
    LSN_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    WRITER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    to_lsn: int
    to_time_us: int
    current_vdl: int
    current_tails: _containers.RepeatedScalarFieldContainer[int]
    lsn_allocated: int
    writer_epoch: int
    def __init__(self, volume_id: _Optional[str] = ..., to_lsn: _Optional[int] = ..., to_time_us: _Optional[int] = ..., current_vdl: _Optional[int] = ..., current_tails: _Optional[_Iterable[int]] = ..., lsn_allocated: _Optional[int] = ..., writer_epoch: _Optional[int] = ...) -> None: ...

class BacktrackResponse(_message.Message):
    __slots__ = ("geometry", "timeline", "to_lsn", "to_commit_time_us", "from_timeline_id")
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    FROM_TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    geometry: VolumeGeometry
    timeline: Timeline
    to_lsn: int
    to_commit_time_us: int
    from_timeline_id: str
    def __init__(self, geometry: _Optional[_Union[VolumeGeometry, _Mapping]] = ..., timeline: _Optional[_Union[Timeline, _Mapping]] = ..., to_lsn: _Optional[int] = ..., to_commit_time_us: _Optional[int] = ..., from_timeline_id: _Optional[str] = ...) -> None: ...

class VolumeHistoryRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class VolumeHistoryResponse(_message.Message):
    __slots__ = ("backtrack_window_s", "timelines", "backtracks")
    BACKTRACK_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    TIMELINES_FIELD_NUMBER: _ClassVar[int]
    BACKTRACKS_FIELD_NUMBER: _ClassVar[int]
    backtrack_window_s: int
    timelines: _containers.RepeatedCompositeFieldContainer[Timeline]
    backtracks: _containers.RepeatedCompositeFieldContainer[BacktrackRecord]
    def __init__(self, backtrack_window_s: _Optional[int] = ..., timelines: _Optional[_Iterable[_Union[Timeline, _Mapping]]] = ..., backtracks: _Optional[_Iterable[_Union[BacktrackRecord, _Mapping]]] = ...) -> None: ...

class FindVolumeCommitRequest(_message.Message):
    __slots__ = ("volume_id", "at_time_us", "current_vdl")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    AT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VDL_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    at_time_us: int
    current_vdl: int
    def __init__(self, volume_id: _Optional[str] = ..., at_time_us: _Optional[int] = ..., current_vdl: _Optional[int] = ...) -> None: ...

class FindVolumeCommitResponse(_message.Message):
    __slots__ = ("lsn", "commit_time_us", "timeline_id")
    LSN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    commit_time_us: int
    timeline_id: str
    def __init__(self, lsn: _Optional[int] = ..., commit_time_us: _Optional[int] = ..., timeline_id: _Optional[str] = ...) -> None: ...

class CloneVolumeRequest(_message.Message):
    __slots__ = ("source_volume_id", "volume_id", "branch_lsn", "parent_read_lsns", "kind", "snapshot_name")
    SOURCE_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    PARENT_READ_LSNS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    source_volume_id: str
    volume_id: str
    branch_lsn: int
    parent_read_lsns: _containers.RepeatedScalarFieldContainer[int]
    kind: VolumeKind
    snapshot_name: str
    def __init__(self, source_volume_id: _Optional[str] = ..., volume_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ..., parent_read_lsns: _Optional[_Iterable[int]] = ..., kind: _Optional[_Union[VolumeKind, str]] = ..., snapshot_name: _Optional[str] = ...) -> None: ...

class CloneVolumeResponse(_message.Message):
    __slots__ = ("geometry",)
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    geometry: VolumeGeometry
    def __init__(self, geometry: _Optional[_Union[VolumeGeometry, _Mapping]] = ...) -> None: ...

class RestoreSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_name", "volume_id")
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_name: str
    volume_id: str
    def __init__(self, snapshot_name: _Optional[str] = ..., volume_id: _Optional[str] = ...) -> None: ...

class RestoreSnapshotResponse(_message.Message):
    __slots__ = ("geometry",)
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    geometry: VolumeGeometry
    def __init__(self, geometry: _Optional[_Union[VolumeGeometry, _Mapping]] = ...) -> None: ...

class DeleteVolumeRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class DeleteVolumeResponse(_message.Message):
    __slots__ = ("kept_for_clones", "volumes_dropped")
    KEPT_FOR_CLONES_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    kept_for_clones: bool
    volumes_dropped: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kept_for_clones: _Optional[bool] = ..., volumes_dropped: _Optional[_Iterable[str]] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[VolumeGeometry]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[VolumeGeometry, _Mapping]]] = ...) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_name",)
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    snapshot_name: str
    def __init__(self, snapshot_name: _Optional[str] = ...) -> None: ...

class DeleteSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterNodeRequest(_message.Message):
    __slots__ = ("node_id", "az", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AZ_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    az: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., az: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class RegisterNodeResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: NodeInfo
    def __init__(self, node: _Optional[_Union[NodeInfo, _Mapping]] = ...) -> None: ...

class HeldSegment(_message.Message):
    __slots__ = ("segment_id", "membership_epoch", "scl", "whole", "rebuilding")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    WHOLE_FIELD_NUMBER: _ClassVar[int]
    REBUILDING_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    membership_epoch: int
    scl: int
    whole: bool
    rebuilding: bool
    def __init__(self, segment_id: _Optional[str] = ..., membership_epoch: _Optional[int] = ..., scl: _Optional[int] = ..., whole: _Optional[bool] = ..., rebuilding: _Optional[bool] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("node_id", "address", "segment_count", "segments", "condition", "condition_detail", "segments_reported")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CONDITION_DETAIL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_REPORTED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    segment_count: int
    segments: _containers.RepeatedCompositeFieldContainer[HeldSegment]
    condition: _storage_service_pb2.DiskCondition
    condition_detail: str
    segments_reported: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., segment_count: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[HeldSegment, _Mapping]]] = ..., condition: _Optional[_Union[_storage_service_pb2.DiskCondition, str]] = ..., condition_detail: _Optional[str] = ..., segments_reported: _Optional[bool] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("heartbeat_interval_ms",)
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[NodeInfo, _Mapping]]] = ...) -> None: ...

class CreateVolumeRequest(_message.Message):
    __slots__ = ("volume_id", "page_size", "segment_size_bytes", "backtrack_window_s")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    BACKTRACK_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    page_size: int
    segment_size_bytes: int
    backtrack_window_s: int
    def __init__(self, volume_id: _Optional[str] = ..., page_size: _Optional[int] = ..., segment_size_bytes: _Optional[int] = ..., backtrack_window_s: _Optional[int] = ...) -> None: ...

class CreateVolumeResponse(_message.Message):
    __slots__ = ("geometry",)
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    geometry: VolumeGeometry
    def __init__(self, geometry: _Optional[_Union[VolumeGeometry, _Mapping]] = ...) -> None: ...

class GrowVolumeRequest(_message.Message):
    __slots__ = ("volume_id", "geometry_epoch")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    geometry_epoch: int
    def __init__(self, volume_id: _Optional[str] = ..., geometry_epoch: _Optional[int] = ...) -> None: ...

class GrowVolumeResponse(_message.Message):
    __slots__ = ("geometry",)
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    geometry: VolumeGeometry
    def __init__(self, geometry: _Optional[_Union[VolumeGeometry, _Mapping]] = ...) -> None: ...

class DescribeVolumeRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class DescribeVolumeResponse(_message.Message):
    __slots__ = ("geometry",)
    GEOMETRY_FIELD_NUMBER: _ClassVar[int]
    geometry: VolumeGeometry
    def __init__(self, geometry: _Optional[_Union[VolumeGeometry, _Mapping]] = ...) -> None: ...

class ListVolumesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVolumesResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeGeometry]
    def __init__(self, volumes: _Optional[_Iterable[_Union[VolumeGeometry, _Mapping]]] = ...) -> None: ...

class RotateVolumeKeyRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class RotateVolumeKeyResponse(_message.Message):
    __slots__ = ("volume_id", "master_key_id", "previous_master_key_id", "segments_updated", "segments_missed")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_UPDATED_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_MISSED_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    master_key_id: str
    previous_master_key_id: str
    segments_updated: int
    segments_missed: int
    def __init__(self, volume_id: _Optional[str] = ..., master_key_id: _Optional[str] = ..., previous_master_key_id: _Optional[str] = ..., segments_updated: _Optional[int] = ..., segments_missed: _Optional[int] = ...) -> None: ...
