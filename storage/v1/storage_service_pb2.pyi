from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYLOAD_KIND_UNSPECIFIED: _ClassVar[PayloadKind]
    PAYLOAD_KIND_PATCH: _ClassVar[PayloadKind]
    PAYLOAD_KIND_IMAGE: _ClassVar[PayloadKind]

class DiskCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISK_CONDITION_UNSPECIFIED: _ClassVar[DiskCondition]
    DISK_CONDITION_OK: _ClassVar[DiskCondition]
    DISK_CONDITION_FULL: _ClassVar[DiskCondition]
    DISK_CONDITION_IO_ERROR: _ClassVar[DiskCondition]
    DISK_CONDITION_FAILED: _ClassVar[DiskCondition]
PAYLOAD_KIND_UNSPECIFIED: PayloadKind
PAYLOAD_KIND_PATCH: PayloadKind
PAYLOAD_KIND_IMAGE: PayloadKind
DISK_CONDITION_UNSPECIFIED: DiskCondition
DISK_CONDITION_OK: DiskCondition
DISK_CONDITION_FULL: DiskCondition
DISK_CONDITION_IO_ERROR: DiskCondition
DISK_CONDITION_FAILED: DiskCondition

class LogRecord(_message.Message):
    __slots__ = ("lsn", "page_no", "kind", "offset", "data", "prev_volume_lsn", "prev_pg_lsn", "prev_page_lsn", "epoch", "cpl", "crc32c", "commit_time_us")
    LSN_FIELD_NUMBER: _ClassVar[int]
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    PREV_VOLUME_LSN_FIELD_NUMBER: _ClassVar[int]
    PREV_PG_LSN_FIELD_NUMBER: _ClassVar[int]
    PREV_PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    CPL_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    page_no: int
    kind: PayloadKind
    offset: int
    data: bytes
    prev_volume_lsn: int
    prev_pg_lsn: int
    prev_page_lsn: int
    epoch: int
    cpl: bool
    crc32c: int
    commit_time_us: int
    def __init__(self, lsn: _Optional[int] = ..., page_no: _Optional[int] = ..., kind: _Optional[_Union[PayloadKind, str]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., prev_volume_lsn: _Optional[int] = ..., prev_pg_lsn: _Optional[int] = ..., prev_page_lsn: _Optional[int] = ..., epoch: _Optional[int] = ..., cpl: _Optional[bool] = ..., crc32c: _Optional[int] = ..., commit_time_us: _Optional[int] = ...) -> None: ...

class TruncationRange(_message.Message):
    __slots__ = ("start_lsn", "end_lsn", "epoch")
    START_LSN_FIELD_NUMBER: _ClassVar[int]
    END_LSN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    start_lsn: int
    end_lsn: int
    epoch: int
    def __init__(self, start_lsn: _Optional[int] = ..., end_lsn: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class SegmentState(_message.Message):
    __slots__ = ("segment_id", "volume_id", "pg_index", "first_page", "page_count", "page_size", "scl", "highest_lsn", "volume_epoch", "membership_epoch", "retention_horizon_lsn", "truncation_ranges", "record_count", "vdl_hint", "peers", "records_repaired", "records_quarantined", "versions_quarantined", "scrub_passes", "versions_coalesced", "records_collected", "versions_collected", "pages_hydrated", "bytes_hydrated", "pinned_lsns", "chain_anchor_lsn", "scl_high_water", "whole", "rebuilding", "chain_gaps", "metadata_repaired", "volume_epoch_owner", "parent_segment_id", "branch_lsn", "parent_read_lsn", "child_segment_ids")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_LSN_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RETENTION_HORIZON_LSN_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_RANGES_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    VDL_HINT_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_REPAIRED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_QUARANTINED_FIELD_NUMBER: _ClassVar[int]
    SCRUB_PASSES_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_COALESCED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_COLLECTED_FIELD_NUMBER: _ClassVar[int]
    PAGES_HYDRATED_FIELD_NUMBER: _ClassVar[int]
    BYTES_HYDRATED_FIELD_NUMBER: _ClassVar[int]
    PINNED_LSNS_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ANCHOR_LSN_FIELD_NUMBER: _ClassVar[int]
    SCL_HIGH_WATER_FIELD_NUMBER: _ClassVar[int]
    WHOLE_FIELD_NUMBER: _ClassVar[int]
    REBUILDING_FIELD_NUMBER: _ClassVar[int]
    CHAIN_GAPS_FIELD_NUMBER: _ClassVar[int]
    METADATA_REPAIRED_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_OWNER_FIELD_NUMBER: _ClassVar[int]
    PARENT_SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    PARENT_READ_LSN_FIELD_NUMBER: _ClassVar[int]
    CHILD_SEGMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    volume_id: str
    pg_index: int
    first_page: int
    page_count: int
    page_size: int
    scl: int
    highest_lsn: int
    volume_epoch: int
    membership_epoch: int
    retention_horizon_lsn: int
    truncation_ranges: _containers.RepeatedCompositeFieldContainer[TruncationRange]
    record_count: int
    vdl_hint: int
    peers: _containers.RepeatedCompositeFieldContainer[SegmentPeer]
    records_repaired: int
    records_quarantined: int
    versions_quarantined: int
    scrub_passes: int
    versions_coalesced: int
    records_collected: int
    versions_collected: int
    pages_hydrated: int
    bytes_hydrated: int
    pinned_lsns: _containers.RepeatedScalarFieldContainer[int]
    chain_anchor_lsn: int
    scl_high_water: int
    whole: bool
    rebuilding: bool
    chain_gaps: int
    metadata_repaired: int
    volume_epoch_owner: str
    parent_segment_id: str
    branch_lsn: int
    parent_read_lsn: int
    child_segment_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, segment_id: _Optional[str] = ..., volume_id: _Optional[str] = ..., pg_index: _Optional[int] = ..., first_page: _Optional[int] = ..., page_count: _Optional[int] = ..., page_size: _Optional[int] = ..., scl: _Optional[int] = ..., highest_lsn: _Optional[int] = ..., volume_epoch: _Optional[int] = ..., membership_epoch: _Optional[int] = ..., retention_horizon_lsn: _Optional[int] = ..., truncation_ranges: _Optional[_Iterable[_Union[TruncationRange, _Mapping]]] = ..., record_count: _Optional[int] = ..., vdl_hint: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[SegmentPeer, _Mapping]]] = ..., records_repaired: _Optional[int] = ..., records_quarantined: _Optional[int] = ..., versions_quarantined: _Optional[int] = ..., scrub_passes: _Optional[int] = ..., versions_coalesced: _Optional[int] = ..., records_collected: _Optional[int] = ..., versions_collected: _Optional[int] = ..., pages_hydrated: _Optional[int] = ..., bytes_hydrated: _Optional[int] = ..., pinned_lsns: _Optional[_Iterable[int]] = ..., chain_anchor_lsn: _Optional[int] = ..., scl_high_water: _Optional[int] = ..., whole: _Optional[bool] = ..., rebuilding: _Optional[bool] = ..., chain_gaps: _Optional[int] = ..., metadata_repaired: _Optional[int] = ..., volume_epoch_owner: _Optional[str] = ..., parent_segment_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ..., parent_read_lsn: _Optional[int] = ..., child_segment_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class AppendRecordsRequest(_message.Message):
    __slots__ = ("segment_id", "volume_epoch", "membership_epoch", "batch_id", "records", "truncation_ranges", "vdl_hint", "min_read_point")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_RANGES_FIELD_NUMBER: _ClassVar[int]
    VDL_HINT_FIELD_NUMBER: _ClassVar[int]
    MIN_READ_POINT_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    volume_epoch: int
    membership_epoch: int
    batch_id: int
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    truncation_ranges: _containers.RepeatedCompositeFieldContainer[TruncationRange]
    vdl_hint: int
    min_read_point: int
    def __init__(self, segment_id: _Optional[str] = ..., volume_epoch: _Optional[int] = ..., membership_epoch: _Optional[int] = ..., batch_id: _Optional[int] = ..., records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., truncation_ranges: _Optional[_Iterable[_Union[TruncationRange, _Mapping]]] = ..., vdl_hint: _Optional[int] = ..., min_read_point: _Optional[int] = ...) -> None: ...

class AppendRecordsResponse(_message.Message):
    __slots__ = ("batch_id", "segment_id", "scl", "highest_lsn", "records_stored", "records_duplicate")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    HIGHEST_LSN_FIELD_NUMBER: _ClassVar[int]
    RECORDS_STORED_FIELD_NUMBER: _ClassVar[int]
    RECORDS_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    segment_id: str
    scl: int
    highest_lsn: int
    records_stored: int
    records_duplicate: int
    def __init__(self, batch_id: _Optional[int] = ..., segment_id: _Optional[str] = ..., scl: _Optional[int] = ..., highest_lsn: _Optional[int] = ..., records_stored: _Optional[int] = ..., records_duplicate: _Optional[int] = ...) -> None: ...

class ReadPageRequest(_message.Message):
    __slots__ = ("segment_id", "page_no", "read_point", "volume_epoch")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    page_no: int
    read_point: int
    volume_epoch: int
    def __init__(self, segment_id: _Optional[str] = ..., page_no: _Optional[int] = ..., read_point: _Optional[int] = ..., volume_epoch: _Optional[int] = ...) -> None: ...

class ReadPageResponse(_message.Message):
    __slots__ = ("data", "page_lsn", "scl")
    DATA_FIELD_NUMBER: _ClassVar[int]
    PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    page_lsn: int
    scl: int
    def __init__(self, data: _Optional[bytes] = ..., page_lsn: _Optional[int] = ..., scl: _Optional[int] = ...) -> None: ...

class ReadRecordsRequest(_message.Message):
    __slots__ = ("segment_id", "from_lsn", "to_lsn", "max_records", "max_bytes", "volume_epoch")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_LSN_FIELD_NUMBER: _ClassVar[int]
    TO_LSN_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    from_lsn: int
    to_lsn: int
    max_records: int
    max_bytes: int
    volume_epoch: int
    def __init__(self, segment_id: _Optional[str] = ..., from_lsn: _Optional[int] = ..., to_lsn: _Optional[int] = ..., max_records: _Optional[int] = ..., max_bytes: _Optional[int] = ..., volume_epoch: _Optional[int] = ...) -> None: ...

class ReadRecordsResponse(_message.Message):
    __slots__ = ("records", "scl", "more")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[LogRecord]
    scl: int
    more: bool
    def __init__(self, records: _Optional[_Iterable[_Union[LogRecord, _Mapping]]] = ..., scl: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class GetSegmentStateRequest(_message.Message):
    __slots__ = ("segment_id", "tail_at_or_below_lsn")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TAIL_AT_OR_BELOW_LSN_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    tail_at_or_below_lsn: int
    def __init__(self, segment_id: _Optional[str] = ..., tail_at_or_below_lsn: _Optional[int] = ...) -> None: ...

class GetSegmentStateResponse(_message.Message):
    __slots__ = ("state", "tail_lsn")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TAIL_LSN_FIELD_NUMBER: _ClassVar[int]
    state: SegmentState
    tail_lsn: int
    def __init__(self, state: _Optional[_Union[SegmentState, _Mapping]] = ..., tail_lsn: _Optional[int] = ...) -> None: ...

class PinLsnsRequest(_message.Message):
    __slots__ = ("segment_id", "lsns")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    LSNS_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    lsns: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, segment_id: _Optional[str] = ..., lsns: _Optional[_Iterable[int]] = ...) -> None: ...

class PinLsnsResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: SegmentState
    def __init__(self, state: _Optional[_Union[SegmentState, _Mapping]] = ...) -> None: ...

class PageVersion(_message.Message):
    __slots__ = ("page_no", "page_lsn", "data", "crc32c")
    PAGE_NO_FIELD_NUMBER: _ClassVar[int]
    PAGE_LSN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CRC32C_FIELD_NUMBER: _ClassVar[int]
    page_no: int
    page_lsn: int
    data: bytes
    crc32c: int
    def __init__(self, page_no: _Optional[int] = ..., page_lsn: _Optional[int] = ..., data: _Optional[bytes] = ..., crc32c: _Optional[int] = ...) -> None: ...

class ReadPageVersionsRequest(_message.Message):
    __slots__ = ("segment_id", "at_lsn", "start_page", "max_bytes", "volume_epoch")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_LSN_FIELD_NUMBER: _ClassVar[int]
    START_PAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    at_lsn: int
    start_page: int
    max_bytes: int
    volume_epoch: int
    def __init__(self, segment_id: _Optional[str] = ..., at_lsn: _Optional[int] = ..., start_page: _Optional[int] = ..., max_bytes: _Optional[int] = ..., volume_epoch: _Optional[int] = ...) -> None: ...

class ReadPageVersionsResponse(_message.Message):
    __slots__ = ("versions", "more", "next_page", "chain_tail_lsn", "scl")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_FIELD_NUMBER: _ClassVar[int]
    CHAIN_TAIL_LSN_FIELD_NUMBER: _ClassVar[int]
    SCL_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[PageVersion]
    more: bool
    next_page: int
    chain_tail_lsn: int
    scl: int
    def __init__(self, versions: _Optional[_Iterable[_Union[PageVersion, _Mapping]]] = ..., more: _Optional[bool] = ..., next_page: _Optional[int] = ..., chain_tail_lsn: _Optional[int] = ..., scl: _Optional[int] = ...) -> None: ...

class TruncateSegmentRequest(_message.Message):
    __slots__ = ("segment_id", "volume_epoch", "range")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    volume_epoch: int
    range: TruncationRange
    def __init__(self, segment_id: _Optional[str] = ..., volume_epoch: _Optional[int] = ..., range: _Optional[_Union[TruncationRange, _Mapping]] = ...) -> None: ...

class TruncateSegmentResponse(_message.Message):
    __slots__ = ("state", "records_removed")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    state: SegmentState
    records_removed: int
    def __init__(self, state: _Optional[_Union[SegmentState, _Mapping]] = ..., records_removed: _Optional[int] = ...) -> None: ...

class RaiseVolumeEpochRequest(_message.Message):
    __slots__ = ("segment_id", "volume_epoch", "writer_id")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    volume_epoch: int
    writer_id: str
    def __init__(self, segment_id: _Optional[str] = ..., volume_epoch: _Optional[int] = ..., writer_id: _Optional[str] = ...) -> None: ...

class RaiseVolumeEpochResponse(_message.Message):
    __slots__ = ("volume_epoch", "state")
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    volume_epoch: int
    state: SegmentState
    def __init__(self, volume_epoch: _Optional[int] = ..., state: _Optional[_Union[SegmentState, _Mapping]] = ...) -> None: ...

class SegmentPeer(_message.Message):
    __slots__ = ("node_id", "address")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class CreateSegmentRequest(_message.Message):
    __slots__ = ("segment_id", "volume_id", "pg_index", "first_page", "page_count", "page_size", "membership_epoch", "peers", "rebuild", "parent_segment_id", "branch_lsn", "parent_read_lsn", "lsn_floor", "wrapped_data_key", "backtrack_window_s")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FIRST_PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    REBUILD_FIELD_NUMBER: _ClassVar[int]
    PARENT_SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    BRANCH_LSN_FIELD_NUMBER: _ClassVar[int]
    PARENT_READ_LSN_FIELD_NUMBER: _ClassVar[int]
    LSN_FLOOR_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    BACKTRACK_WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    volume_id: str
    pg_index: int
    first_page: int
    page_count: int
    page_size: int
    membership_epoch: int
    peers: _containers.RepeatedCompositeFieldContainer[SegmentPeer]
    rebuild: bool
    parent_segment_id: str
    branch_lsn: int
    parent_read_lsn: int
    lsn_floor: int
    wrapped_data_key: bytes
    backtrack_window_s: int
    def __init__(self, segment_id: _Optional[str] = ..., volume_id: _Optional[str] = ..., pg_index: _Optional[int] = ..., first_page: _Optional[int] = ..., page_count: _Optional[int] = ..., page_size: _Optional[int] = ..., membership_epoch: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[SegmentPeer, _Mapping]]] = ..., rebuild: _Optional[bool] = ..., parent_segment_id: _Optional[str] = ..., branch_lsn: _Optional[int] = ..., parent_read_lsn: _Optional[int] = ..., lsn_floor: _Optional[int] = ..., wrapped_data_key: _Optional[bytes] = ..., backtrack_window_s: _Optional[int] = ...) -> None: ...

class FindCommitRequest(_message.Message):
    __slots__ = ("segment_id", "at_time_us", "at_or_below_lsn")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    AT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    AT_OR_BELOW_LSN_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    at_time_us: int
    at_or_below_lsn: int
    def __init__(self, segment_id: _Optional[str] = ..., at_time_us: _Optional[int] = ..., at_or_below_lsn: _Optional[int] = ...) -> None: ...

class FindCommitResponse(_message.Message):
    __slots__ = ("lsn", "commit_time_us", "gc_floor_lsn", "oldest_commit_time_us")
    LSN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    GC_FLOOR_LSN_FIELD_NUMBER: _ClassVar[int]
    OLDEST_COMMIT_TIME_US_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    commit_time_us: int
    gc_floor_lsn: int
    oldest_commit_time_us: int
    def __init__(self, lsn: _Optional[int] = ..., commit_time_us: _Optional[int] = ..., gc_floor_lsn: _Optional[int] = ..., oldest_commit_time_us: _Optional[int] = ...) -> None: ...

class CreateSegmentResponse(_message.Message):
    __slots__ = ("state", "created")
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    state: SegmentState
    created: bool
    def __init__(self, state: _Optional[_Union[SegmentState, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class UpdateMembershipRequest(_message.Message):
    __slots__ = ("segment_id", "membership_epoch", "peers")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_EPOCH_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    membership_epoch: int
    peers: _containers.RepeatedCompositeFieldContainer[SegmentPeer]
    def __init__(self, segment_id: _Optional[str] = ..., membership_epoch: _Optional[int] = ..., peers: _Optional[_Iterable[_Union[SegmentPeer, _Mapping]]] = ...) -> None: ...

class UpdateMembershipResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: SegmentState
    def __init__(self, state: _Optional[_Union[SegmentState, _Mapping]] = ...) -> None: ...

class DropSegmentRequest(_message.Message):
    __slots__ = ("segment_id",)
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    def __init__(self, segment_id: _Optional[str] = ...) -> None: ...

class DropSegmentResponse(_message.Message):
    __slots__ = ("records_removed",)
    RECORDS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    records_removed: int
    def __init__(self, records_removed: _Optional[int] = ...) -> None: ...

class ListSegmentsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSegmentsResponse(_message.Message):
    __slots__ = ("node_id", "az", "segments", "lmdb_map_size_bytes", "lmdb_used_bytes", "disk_condition", "disk_detail", "lost_segments", "environments_replaced")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    AZ_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    LMDB_MAP_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LMDB_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DISK_CONDITION_FIELD_NUMBER: _ClassVar[int]
    DISK_DETAIL_FIELD_NUMBER: _ClassVar[int]
    LOST_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_REPLACED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    az: str
    segments: _containers.RepeatedCompositeFieldContainer[SegmentState]
    lmdb_map_size_bytes: int
    lmdb_used_bytes: int
    disk_condition: DiskCondition
    disk_detail: str
    lost_segments: _containers.RepeatedScalarFieldContainer[str]
    environments_replaced: int
    def __init__(self, node_id: _Optional[str] = ..., az: _Optional[str] = ..., segments: _Optional[_Iterable[_Union[SegmentState, _Mapping]]] = ..., lmdb_map_size_bytes: _Optional[int] = ..., lmdb_used_bytes: _Optional[int] = ..., disk_condition: _Optional[_Union[DiskCondition, str]] = ..., disk_detail: _Optional[str] = ..., lost_segments: _Optional[_Iterable[str]] = ..., environments_replaced: _Optional[int] = ...) -> None: ...

class RewrapSegmentKeyRequest(_message.Message):
    __slots__ = ("segment_id", "wrapped_data_key")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    wrapped_data_key: bytes
    def __init__(self, segment_id: _Optional[str] = ..., wrapped_data_key: _Optional[bytes] = ...) -> None: ...

class RewrapSegmentKeyResponse(_message.Message):
    __slots__ = ("segment_id", "changed")
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    changed: bool
    def __init__(self, segment_id: _Optional[str] = ..., changed: _Optional[bool] = ...) -> None: ...
