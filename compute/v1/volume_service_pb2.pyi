from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PagePatch(_message.Message):
    __slots__ = ("page_no", "offset", "data")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    offset: int
    data: bytes
    def __init__(self, page_no: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: VolumeStatus
    def __init__(self, status: _Optional[_Union[VolumeStatus, _Mapping]] = ...) -> None: ...

class WritePagesRequest(_message.Message):
    __slots__ = ("volume_id", "patches")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    patches: _containers.RepeatedCompositeFieldContainer[PagePatch]
    def __init__(self, volume_id: _Optional[str] = ..., patches: _Optional[_Iterable[_Union[PagePatch, _Mapping]]] = ...) -> None: ...

class WritePagesResponse(_message.Message):
    __slots__ = ("lsn",)
    LSN_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    def __init__(self, lsn: _Optional[int] = ...) -> None: ...

class PageWrite(_message.Message):
    __slots__ = ("request_id", "patches")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PATCHES_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    patches: _containers.RepeatedCompositeFieldContainer[PagePatch]
    def __init__(self, request_id: _Optional[int] = ..., patches: _Optional[_Iterable[_Union[PagePatch, _Mapping]]] = ...) -> None: ...

class WritePagesStreamRequest(_message.Message):
    __slots__ = ("volume_id", "writes")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    WRITES_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    writes: _containers.RepeatedCompositeFieldContainer[PageWrite]
    def __init__(self, volume_id: _Optional[str] = ..., writes: _Optional[_Iterable[_Union[PageWrite, _Mapping]]] = ...) -> None: ...

class PageWriteResult(_message.Message):
    __slots__ = ("request_id", "lsn", "code", "message", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    lsn: int
    code: int
    message: str
    reason: str
    def __init__(self, request_id: _Optional[int] = ..., lsn: _Optional[int] = ..., code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WritePagesStreamResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PageWriteResult]
    def __init__(self, results: _Optional[_Iterable[_Union[PageWriteResult, _Mapping]]] = ...) -> None: ...

class ReadPagesRequest(_message.Message):
    __slots__ = ("volume_id", "page_nos", "from_storage")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_NOS_FIELD_NUMBER: _ClassVar[int]
    FROM_STORAGE_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    page_nos: _containers.RepeatedScalarFieldContainer[int]
    from_storage: bool
    def __init__(self, volume_id: _Optional[str] = ..., page_nos: _Optional[_Iterable[int]] = ..., from_storage: _Optional[bool] = ...) -> None: ...

class PageImage(_message.Message):
    __slots__ = ("page_no", "data", "page_lsn")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    data: bytes
    page_lsn: int
    def __init__(self, page_no: _Optional[int] = ..., data: _Optional[bytes] = ..., page_lsn: _Optional[int] = ...) -> None: ...

class ReadPagesResponse(_message.Message):
    __slots__ = ("read_point", "pages")
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    read_point: int
    pages: _containers.RepeatedCompositeFieldContainer[PageImage]
    def __init__(self, read_point: _Optional[int] = ..., pages: _Optional[_Iterable[_Union[PageImage, _Mapping]]] = ...) -> None: ...

class GetVolumeStatusRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class SegmentStatus(_message.Message):
    __slots__ = ("segment_id", "node_id", "az", "address", "scl", "last_ack_age_ms", "connected", "records_in_flight", "bytes_sent", "batches_sent")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AZ_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    LAST_ACK_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    BATCHES_SENT_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    node_id: str
    az: str
    address: str
    scl: int
    last_ack_age_ms: int
    connected: bool
    records_in_flight: int
    bytes_sent: int
    batches_sent: int
    def __init__(self, segment_id: _Optional[str] = ..., node_id: _Optional[str] = ..., az: _Optional[str] = ..., address: _Optional[str] = ..., scl: _Optional[int] = ..., last_ack_age_ms: _Optional[int] = ..., connected: _Optional[bool] = ..., records_in_flight: _Optional[int] = ..., bytes_sent: _Optional[int] = ..., batches_sent: _Optional[int] = ...) -> None: ...

class PgStatus(_message.Message):
    __slots__ = ("pg_index", "first_page", "page_count", "membership_epoch", "pgcl", "segments")
    PG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PGCL_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    pgcl: int
    segments: _containers.RepeatedCompositeFieldContainer[SegmentStatus]
    def __init__(self, pg_index: _Optional[int] = ..., first_page: _Optional[int] = ..., page_count: _Optional[int] = ..., membership_epoch: _Optional[int] = ..., pgcl: _Optional[int] = ..., segments: _Optional[_Iterable[_Union[SegmentStatus, _Mapping]]] = ...) -> None: ...

class VolumeStatus(_message.Message):
    __slots__ = ("volume_id", "page_size", "segment_size_bytes", "geometry_epoch", "volume_epoch", "vcl", "vdl", "lsn_allocated", "lal", "protection_groups", "fenced", "commits", "network_bytes_sent", "cache_hits", "storage_page_reads", "hedged_reads", "fenced_reason", "regains", "regaining", "parent_volume_id", "branch_lsn")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    VCL_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    LSN_ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    LAL_FIELD_NUMBER: _ClassVar[int]
    PROTECTION_GROUPS_FIELD_NUMBER: _ClassVar[int]
    FENCED_FIELD_NUMBER: _ClassVar[int]
    COMMITS_FIELD_NUMBER: _ClassVar[int]
    NETWORK_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PAGE_READS_FIELD_NUMBER: _ClassVar[int]
    HEDGED_READS_FIELD_NUMBER: _ClassVar[int]
    FENCED_REASON_FIELD_NUMBER: _ClassVar[int]
    REGAINS_FIELD_NUMBER: _ClassVar[int]
    REGAINING_FIELD_NUMBER: _ClassVar[int]
    PARENT_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    page_size: int
    segment_size_bytes: int
    geometry_epoch: int
    volume_epoch: int
    vcl: int
    vdl: int
    lsn_allocated: int
    lal: int
    protection_groups: _containers.RepeatedCompositeFieldContainer[PgStatus]
    fenced: bool
    commits: int
    network_bytes_sent: int
    cache_hits: int
    storage_page_reads: int
    hedged_reads: int
    fenced_reason: str
    regains: int
    regaining: bool
    parent_volume_id: str
    branch_lsn: int
    def __init__(self, volume_id: _Optional[str] = ..., page_size: _Optional[int] = ..., segment_size_bytes: _Optional[int] = ..., geometry_epoch: _Optional[int] = ..., volume_epoch: _Optional[int] = ..., vcl: _Optional[int] = ..., vdl: _Optional[int] = ..., lsn_allocated: _Optional[int] = ..., lal: _Optional[int] = ..., protection_groups: _Optional[_Iterable[_Union[PgStatus, _Mapping]]] = ..., fenced: _Optional[bool] = ..., commits: _Optional[int] = ..., network_bytes_sent: _Optional[int] = ..., cache_hits: _Optional[int] = ..., storage_page_reads: _Optional[int] = ..., hedged_reads: _Optional[int] = ..., fenced_reason: _Optional[str] = ..., regains: _Optional[int] = ..., regaining: _Optional[bool] = ..., parent_volume_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ...) -> None: ...

class GetVolumeStatusResponse(_message.Message):
    __slots__ = ("status",)
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: VolumeStatus
    def __init__(self, status: _Optional[_Union[VolumeStatus, _Mapping]] = ...) -> None: ...

class ListVolumesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVolumesResponse(_message.Message):
    __slots__ = ("volumes",)
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeStatus]
    def __init__(self, volumes: _Optional[_Iterable[_Union[VolumeStatus, _Mapping]]] = ...) -> None: ...

class CloneVolumeRequest(_message.Message):
    __slots__ = ("source_volume_id", "volume_id", "at_lsn", "at_time_us")
    SOURCE_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    AT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    source_volume_id: str
    volume_id: str
    at_lsn: int
    at_time_us: int
    def __init__(self, source_volume_id: _Optional[str] = ..., volume_id: _Optional[str] = ..., at_lsn: _Optional[int] = ..., at_time_us: _Optional[int] = ...) -> None: ...

class Lineage(_message.Message):
    __slots__ = ("volume_id", "parent_volume_id", "branch_lsn", "pg_count", "created_at_ms", "snapshot_name", "child_volume_ids")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    PG_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    CHILD_VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    parent_volume_id: str
    branch_lsn: int
    pg_count: int
    created_at_ms: int
    snapshot_name: str
    child_volume_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, volume_id: _Optional[str] = ..., parent_volume_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ..., pg_count: _Optional[int] = ..., created_at_ms: _Optional[int] = ..., snapshot_name: _Optional[str] = ..., child_volume_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CloneVolumeResponse(_message.Message):
    __slots__ = ("clone", "elapsed_ms")
    CLONE_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    clone: Lineage
    elapsed_ms: float
    def __init__(self, clone: _Optional[_Union[Lineage, _Mapping]] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

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

class CreateSnapshotRequest(_message.Message):
    __slots__ = ("volume_id", "snapshot_name", "at_lsn", "at_time_us")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    AT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    snapshot_name: str
    at_lsn: int
    at_time_us: int
    def __init__(self, volume_id: _Optional[str] = ..., snapshot_name: _Optional[str] = ..., at_lsn: _Optional[int] = ..., at_time_us: _Optional[int] = ...) -> None: ...

class CreateSnapshotResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: Lineage
    def __init__(self, snapshot: _Optional[_Union[Lineage, _Mapping]] = ...) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[Lineage]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[Lineage, _Mapping]]] = ...) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_name",)
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    snapshot_name: str
    def __init__(self, snapshot_name: _Optional[str] = ...) -> None: ...

class DeleteSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RestoreSnapshotRequest(_message.Message):
    __slots__ = ("snapshot_name", "volume_id")
    SNAPSHOT_NAME_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot_name: str
    volume_id: str
    def __init__(self, snapshot_name: _Optional[str] = ..., volume_id: _Optional[str] = ...) -> None: ...

class RestoreSnapshotResponse(_message.Message):
    __slots__ = ("volume",)
    VOLUME_FIELD_NUMBER: _ClassVar[int]
    volume: Lineage
    def __init__(self, volume: _Optional[_Union[Lineage, _Mapping]] = ...) -> None: ...

class BacktrackRequest(_message.Message):
    __slots__ = ("volume_id", "to_lsn", "to_time_us")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_TIME_US_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    to_lsn: int
    to_time_us: int
    def __init__(self, volume_id: _Optional[str] = ..., to_lsn: _Optional[int] = ..., to_time_us: _Optional[int] = ...) -> None: ...

class BacktrackResponse(_message.Message):
    __slots__ = ("from_vdl", "to_lsn", "to_commit_time_us", "timeline_id", "elapsed_ms")
    FROM_VDL_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_MS_FIELD_NUMBER: _ClassVar[int]
    from_vdl: int
    to_lsn: int
    to_commit_time_us: int
    timeline_id: str
    elapsed_ms: float
    def __init__(self, from_vdl: _Optional[int] = ..., to_lsn: _Optional[int] = ..., to_commit_time_us: _Optional[int] = ..., timeline_id: _Optional[str] = ..., elapsed_ms: _Optional[float] = ...) -> None: ...

class TimelineInfo(_message.Message):
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

class BacktrackInfo(_message.Message):
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

class VolumeHistoryRequest(_message.Message):
    __slots__ = ("volume_id",)
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    def __init__(self, volume_id: _Optional[str] = ...) -> None: ...

class VolumeHistoryResponse(_message.Message):
    __slots__ = ("backtrack_window_s", "timelines", "backtracks", "vdl")
    BACKTRACK_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    TIMELINES_FIELD_NUMBER: _ClassVar[int]
    BACKTRACKS_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    backtrack_window_s: int
    timelines: _containers.RepeatedCompositeFieldContainer[TimelineInfo]
    backtracks: _containers.RepeatedCompositeFieldContainer[BacktrackInfo]
    vdl: int
    def __init__(self, backtrack_window_s: _Optional[int] = ..., timelines: _Optional[_Iterable[_Union[TimelineInfo, _Mapping]]] = ..., backtracks: _Optional[_Iterable[_Union[BacktrackInfo, _Mapping]]] = ..., vdl: _Optional[int] = ...) -> None: ...
