from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateDataKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class GenerateDataKeyResponse(_message.Message):
    __slots__ = ("wrapped_data_key", "master_key_id")
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    wrapped_data_key: bytes
    master_key_id: str
    def __init__(self, wrapped_data_key: _Optional[bytes] = ..., master_key_id: _Optional[str] = ...) -> None: ...

class DecryptDataKeyRequest(_message.Message):
    __slots__ = ("wrapped_data_key",)
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    wrapped_data_key: bytes
    def __init__(self, wrapped_data_key: _Optional[bytes] = ...) -> None: ...

class DecryptDataKeyResponse(_message.Message):
    __slots__ = ("data_key", "key_id", "lease_s")
    DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    data_key: bytes
    key_id: str
    lease_s: int
    def __init__(self, data_key: _Optional[bytes] = ..., key_id: _Optional[str] = ..., lease_s: _Optional[int] = ...) -> None: ...

class RewrapDataKeyRequest(_message.Message):
    __slots__ = ("wrapped_data_key",)
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    wrapped_data_key: bytes
    def __init__(self, wrapped_data_key: _Optional[bytes] = ...) -> None: ...

class RewrapDataKeyResponse(_message.Message):
    __slots__ = ("wrapped_data_key", "master_key_id", "previous_master_key_id")
    WRAPPED_DATA_KEY_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    wrapped_data_key: bytes
    master_key_id: str
    previous_master_key_id: str
    def __init__(self, wrapped_data_key: _Optional[bytes] = ..., master_key_id: _Optional[str] = ..., previous_master_key_id: _Optional[str] = ...) -> None: ...

class GetKeyServiceStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetKeyServiceStatusResponse(_message.Message):
    __slots__ = ("current_master_key_id", "master_key_count")
    CURRENT_MASTER_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    MASTER_KEY_COUNT_FIELD_NUMBER: _ClassVar[int]
    current_master_key_id: str
    master_key_count: int
    def __init__(self, current_master_key_id: _Optional[str] = ..., master_key_count: _Optional[int] = ...) -> None: ...
