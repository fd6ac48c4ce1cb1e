from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ComputeRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPUTE_ROLE_UNSPECIFIED: _ClassVar[ComputeRole]
    COMPUTE_ROLE_WRITER: _ClassVar[ComputeRole]
    COMPUTE_ROLE_READER: _ClassVar[ComputeRole]
COMPUTE_ROLE_UNSPECIFIED: ComputeRole
COMPUTE_ROLE_WRITER: ComputeRole
COMPUTE_ROLE_READER: ComputeRole

class ComputeVolumeLag(_message.Message):
    __slots__ = ("volume_id", "applied_vdl", "lag_lsns", "lag_ms_p50", "lag_ms_p99", "last_heard_ms")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    APPLIED_VDL_FIELD_NUMBER: _ClassVar[int]
    LAG_LSNS_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_P50_FIELD_NUMBER: _ClassVar[int]
    LAG_MS_P99_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_MS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    applied_vdl: int
    lag_lsns: int
    lag_ms_p50: float
    lag_ms_p99: float
    last_heard_ms: int
    def __init__(self, volume_id: _Optional[str] = ..., applied_vdl: _Optional[int] = ..., lag_lsns: _Optional[int] = ..., lag_ms_p50: _Optional[float] = ..., lag_ms_p99: _Optional[float] = ..., last_heard_ms: _Optional[int] = ...) -> None: ...

class ComputeInstance(_message.Message):
    __slots__ = ("instance_id", "address", "role", "failover_priority", "alive", "last_heartbeat_age_ms", "volumes", "generation")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_AGE_MS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    address: str
    role: ComputeRole
    failover_priority: int
    alive: bool
    last_heartbeat_age_ms: int
    volumes: _containers.RepeatedCompositeFieldContainer[ComputeVolumeLag]
    generation: int
    def __init__(self, instance_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[_Union[ComputeRole, str]] = ..., failover_priority: _Optional[int] = ..., alive: _Optional[bool] = ..., last_heartbeat_age_ms: _Optional[int] = ..., volumes: _Optional[_Iterable[_Union[ComputeVolumeLag, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class RegisterComputeRequest(_message.Message):
    __slots__ = ("instance_id", "address", "failover_priority", "reader_only")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FAILOVER_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    READER_ONLY_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    address: str
    failover_priority: int
    reader_only: bool
    def __init__(self, instance_id: _Optional[str] = ..., address: _Optional[str] = ..., failover_priority: _Optional[int] = ..., reader_only: _Optional[bool] = ...) -> None: ...

class RegisterComputeResponse(_message.Message):
    __slots__ = ("role", "generation", "writer_id", "writer_address", "heartbeat_interval_ms")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    WRITER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    role: ComputeRole
    generation: int
    writer_id: str
    writer_address: str
    heartbeat_interval_ms: int
    def __init__(self, role: _Optional[_Union[ComputeRole, str]] = ..., generation: _Optional[int] = ..., writer_id: _Optional[str] = ..., writer_address: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class ComputeHeartbeatRequest(_message.Message):
    __slots__ = ("instance_id", "address", "role", "generation", "volumes", "open_volume_ids")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_FIELD_NUMBER: _ClassVar[int]
    OPEN_VOLUME_IDS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    address: str
    role: ComputeRole
    generation: int
    volumes: _containers.RepeatedCompositeFieldContainer[ComputeVolumeLag]
    open_volume_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_id: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[_Union[ComputeRole, str]] = ..., generation: _Optional[int] = ..., volumes: _Optional[_Iterable[_Union[ComputeVolumeLag, _Mapping]]] = ..., open_volume_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ComputeHeartbeatResponse(_message.Message):
    __slots__ = ("role", "generation", "writer_id", "writer_address", "heartbeat_interval_ms")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    WRITER_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    role: ComputeRole
    generation: int
    writer_id: str
    writer_address: str
    heartbeat_interval_ms: int
    def __init__(self, role: _Optional[_Union[ComputeRole, str]] = ..., generation: _Optional[int] = ..., writer_id: _Optional[str] = ..., writer_address: _Optional[str] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class ListComputeInstancesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListComputeInstancesResponse(_message.Message):
    __slots__ = ("instances", "writer_id", "generation", "promoting_id")
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PROMOTING_ID_FIELD_NUMBER: _ClassVar[int]
    instances: _containers.RepeatedCompositeFieldContainer[ComputeInstance]
    writer_id: str
    generation: int
    promoting_id: str
    def __init__(self, instances: _Optional[_Iterable[_Union[ComputeInstance, _Mapping]]] = ..., writer_id: _Optional[str] = ..., generation: _Optional[int] = ..., promoting_id: _Optional[str] = ...) -> None: ...

class RemoveComputeRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class RemoveComputeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FailoverRequest(_message.Message):
    __slots__ = ("to_instance_id",)
    TO_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    to_instance_id: str
    def __init__(self, to_instance_id: _Optional[str] = ...) -> None: ...

class FailoverResponse(_message.Message):
    __slots__ = ("old_writer_id", "new_writer_id", "generation", "took_ms")
    OLD_WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    NEW_WRITER_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    old_writer_id: str
    new_writer_id: str
    generation: int
    took_ms: int
    def __init__(self, old_writer_id: _Optional[str] = ..., new_writer_id: _Optional[str] = ..., generation: _Optional[int] = ..., took_ms: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "kind", "instance_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., instance_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateEndpointRequest(_message.Message):
    __slots__ = ("name", "instance_ids")
    NAME_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., instance_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateEndpointResponse(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints",)
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class DeleteEndpointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResolveEndpointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResolveEndpointResponse(_message.Message):
    __slots__ = ("addresses", "instance_ids", "generation")
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    addresses: _containers.RepeatedScalarFieldContainer[str]
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    generation: int
    def __init__(self, addresses: _Optional[_Iterable[str]] = ..., instance_ids: _Optional[_Iterable[str]] = ..., generation: _Optional[int] = ...) -> None: ...
