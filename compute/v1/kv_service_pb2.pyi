from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("volume_id", "key", "value")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    key: bytes
    value: bytes
    def __init__(self, volume_id: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("commit_lsn",)
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    commit_lsn: int
    def __init__(self, commit_lsn: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("volume_id", "key")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    key: bytes
    def __init__(self, volume_id: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "value")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("volume_id", "key")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    key: bytes
    def __init__(self, volume_id: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("existed", "commit_lsn")
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    commit_lsn: int
    def __init__(self, existed: _Optional[bool] = ..., commit_lsn: _Optional[int] = ...) -> None: ...

class BatchPutRequest(_message.Message):
    __slots__ = ("volume_id", "pairs")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    pairs: _containers.RepeatedCompositeFieldContainer[KeyValue]
    def __init__(self, volume_id: _Optional[str] = ..., pairs: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ...) -> None: ...

class BatchPutResponse(_message.Message):
    __slots__ = ("commit_lsn",)
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    commit_lsn: int
    def __init__(self, commit_lsn: _Optional[int] = ...) -> None: ...

class ScanRequest(_message.Message):
    __slots__ = ("volume_id", "start", "end", "prefix", "limit")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    start: bytes
    end: bytes
    prefix: bytes
    limit: int
    def __init__(self, volume_id: _Optional[str] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., prefix: _Optional[bytes] = ..., limit: _Optional[int] = ...) -> None: ...

class ScanResponse(_message.Message):
    __slots__ = ("pairs", "more", "next_start")
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    NEXT_START_FIELD_NUMBER: _ClassVar[int]
    pairs: _containers.RepeatedCompositeFieldContainer[KeyValue]
    more: bool
    next_start: bytes
    def __init__(self, pairs: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ..., more: _Optional[bool] = ..., next_start: _Optional[bytes] = ...) -> None: ...

class CompareAndSetRequest(_message.Message):
    __slots__ = ("volume_id", "key", "expected", "value")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    key: bytes
    expected: bytes
    value: bytes
    def __init__(self, volume_id: _Optional[str] = ..., key: _Optional[bytes] = ..., expected: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class CompareAndSetResponse(_message.Message):
    __slots__ = ("swapped", "found", "current", "commit_lsn")
    SWAPPED_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    swapped: bool
    found: bool
    current: bytes
    commit_lsn: int
    def __init__(self, swapped: _Optional[bool] = ..., found: _Optional[bool] = ..., current: _Optional[bytes] = ..., commit_lsn: _Optional[int] = ...) -> None: ...
