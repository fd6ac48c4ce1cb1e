from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InstanceRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INSTANCE_ROLE_UNSPECIFIED: _ClassVar[InstanceRole]
    INSTANCE_ROLE_WRITER: _ClassVar[InstanceRole]
    INSTANCE_ROLE_READER: _ClassVar[InstanceRole]
    INSTANCE_ROLE_CHANGING: _ClassVar[InstanceRole]
INSTANCE_ROLE_UNSPECIFIED: InstanceRole
INSTANCE_ROLE_WRITER: InstanceRole
INSTANCE_ROLE_READER: InstanceRole
INSTANCE_ROLE_CHANGING: InstanceRole

class FollowRedoRequest(_message.Message):
    __slots__ = ("volume_id", "reader_id", "lowest_read_point", "applied_vdl")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    READER_ID_FIELD_NUMBER: _ClassVar[int]
    LOWEST_READ_POINT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VDL_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    reader_id: str
    lowest_read_point: int
    applied_vdl: int
    def __init__(self, volume_id: _Optional[str] = ..., reader_id: _Optional[str] = ..., lowest_read_point: _Optional[int] = ..., applied_vdl: _Optional[int] = ...) -> None: ...

class PgReadPoint(_message.Message):
    __slots__ = ("pg_index", "read_point", "scl_of")
    class SclOfEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    PG_INDEX_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    SCL_OF_FIELD_NUMBER: _ClassVar[int]
    pg_index: int
    read_point: int
    scl_of: _containers.ScalarMap[str, int]
    def __init__(self, pg_index: _Optional[int] = ..., read_point: _Optional[int] = ..., scl_of: _Optional[_Mapping[str, int]] = ...) -> None: ...

class FollowRedoResponse(_message.Message):
    __slots__ = ("volume_epoch", "vdl", "records", "pgs", "page_count", "geometry_epoch", "released_at_us", "snapshot", "writer_id")
    VOLUME_EPOCH_FIELD_NUMBER: _ClassVar[int]
    VDL_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_COUNT_FIELD_NUMBER: _ClassVar[int]
    GEOMETRY_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RELEASED_AT_US_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    volume_epoch: int
    vdl: int
    records: _containers.RepeatedScalarFieldContainer[bytes]
    pgs: _containers.RepeatedCompositeFieldContainer[PgReadPoint]
    page_count: int
    geometry_epoch: int
    released_at_us: int
    snapshot: bool
    writer_id: str
    def __init__(self, volume_epoch: _Optional[int] = ..., vdl: _Optional[int] = ..., records: _Optional[_Iterable[bytes]] = ..., pgs: _Optional[_Iterable[_Union[PgReadPoint, _Mapping]]] = ..., page_count: _Optional[int] = ..., geometry_epoch: _Optional[int] = ..., released_at_us: _Optional[int] = ..., snapshot: _Optional[bool] = ..., writer_id: _Optional[str] = ...) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("generation", "volume_ids")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    generation: int
    volume_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, generation: _Optional[int] = ..., volume_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PromoteResponse(_message.Message):
    __slots__ = ("role", "volume_epochs", "took_ms")
    class VolumeEpochsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VOLUME_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    role: InstanceRole
    volume_epochs: _containers.ScalarMap[str, int]
    took_ms: int
    def __init__(self, role: _Optional[_Union[InstanceRole, str]] = ..., volume_epochs: _Optional[_Mapping[str, int]] = ..., took_ms: _Optional[int] = ...) -> None: ...

class StepDownRequest(_message.Message):
    __slots__ = ("generation", "new_writer_id")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    NEW_WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    generation: int
    new_writer_id: str
    def __init__(self, generation: _Optional[int] = ..., new_writer_id: _Optional[str] = ...) -> None: ...

class StepDownResponse(_message.Message):
    __slots__ = ("role", "vdl_of")
    class VdlOfEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    VDL_OF_FIELD_NUMBER: _ClassVar[int]
    role: InstanceRole
    vdl_of: _containers.ScalarMap[str, int]
    def __init__(self, role: _Optional[_Union[InstanceRole, str]] = ..., vdl_of: _Optional[_Mapping[str, int]] = ...) -> None: ...

class VolumeLag(_message.Message):
    __slots__ = ("volume_id", "applied_vdl", "writer_vdl", "lag_lsns", "lag_ms_p50", "lag_ms_p99", "last_heard_ms", "following")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VDL_FIELD_NUMBER: _ClassVar[int]
    WRITER_VDL_FIELD_NUMBER: _ClassVar[int]
    LAG_LSNS_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_P50_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_P99_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_MS_FIELD_NUMBER: _ClassVar[int]
    FOLLOWING_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    applied_vdl: int
    writer_vdl: int
    lag_lsns: int
    lag_ms_p50: float
    lag_ms_p99: float
    last_heard_ms: int
    following: bool
    def __init__(self, volume_id: _Optional[str] = ..., applied_vdl: _Optional[int] = ..., writer_vdl: _Optional[int] = ..., lag_lsns: _Optional[int] = ..., lag_ms_p50: _Optional[float] = ..., lag_ms_p99: _Optional[float] = ..., last_heard_ms: _Optional[int] = ..., following: _Optional[bool] = ...) -> None: ...

class GetInstanceStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetInstanceStatusResponse(_message.Message):
    __slots__ = ("instance_id", "role", "generation", "volumes", "failover_priority")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    role: InstanceRole
    generation: int
    volumes: _containers.RepeatedCompositeFieldContainer[VolumeLag]
    failover_priority: int
    def __init__(self, instance_id: _Optional[str] = ..., role: _Optional[_Union[InstanceRole, str]] = ..., generation: _Optional[int] = ..., volumes: _Optional[_Iterable[_Union[VolumeLag, _Mapping]]] = ..., failover_priority: _Optional[int] = ...) -> None: ...
