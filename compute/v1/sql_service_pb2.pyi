from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Value(_message.Message):
    __slots__ = ("null", "integer", "real", "text", "blob")
    NULL_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    REAL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOB_FIELD_NUMBER: _ClassVar[int]
    null: bool
    integer: int
    real: float
    text: str
    blob: bytes
    def __init__(self, null: _Optional[bool] = ..., integer: _Optional[int] = ..., real: _Optional[float] = ..., text: _Optional[str] = ..., blob: _Optional[bytes] = ...) -> None: ...

class SqlStatement(_message.Message):
    __slots__ = ("sql", "params")
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class Row(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class StatementResult(_message.Message):
    __slots__ = ("columns", "rows", "rows_affected", "last_row_id")
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ROWS_AFFECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_ROW_ID_FIELD_NUMBER: _ClassVar[int]
    columns: _containers.RepeatedScalarFieldContainer[str]
    rows: _containers.RepeatedCompositeFieldContainer[Row]
    rows_affected: int
    last_row_id: int
    def __init__(self, columns: _Optional[_Iterable[str]] = ..., rows: _Optional[_Iterable[_Union[Row, _Mapping]]] = ..., rows_affected: _Optional[int] = ..., last_row_id: _Optional[int] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("volume_id", "sql", "params")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, volume_id: _Optional[str] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("result", "commit_lsn")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    result: StatementResult
    commit_lsn: int
    def __init__(self, result: _Optional[_Union[StatementResult, _Mapping]] = ..., commit_lsn: _Optional[int] = ...) -> None: ...

class RunTransactionRequest(_message.Message):
    __slots__ = ("volume_id", "statements")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    statements: _containers.RepeatedCompositeFieldContainer[SqlStatement]
    def __init__(self, volume_id: _Optional[str] = ..., statements: _Optional[_Iterable[_Union[SqlStatement, _Mapping]]] = ...) -> None: ...

class RunTransactionResponse(_message.Message):
    __slots__ = ("results", "commit_lsn")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StatementResult]
    commit_lsn: int
    def __init__(self, results: _Optional[_Iterable[_Union[StatementResult, _Mapping]]] = ..., commit_lsn: _Optional[int] = ...) -> None: ...

class BeginRequest(_message.Message):
    __slots__ = ("volume_id", "read_only")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    read_only: bool
    def __init__(self, volume_id: _Optional[str] = ..., read_only: _Optional[bool] = ...) -> None: ...

class BeginResponse(_message.Message):
    __slots__ = ("txn_id", "read_only", "read_point")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    read_only: bool
    read_point: int
    def __init__(self, txn_id: _Optional[str] = ..., read_only: _Optional[bool] = ..., read_point: _Optional[int] = ...) -> None: ...

class StatementRequest(_message.Message):
    __slots__ = ("volume_id", "txn_id", "sql", "params")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    SQL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    txn_id: str
    sql: str
    params: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, volume_id: _Optional[str] = ..., txn_id: _Optional[str] = ..., sql: _Optional[str] = ..., params: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class StatementResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: StatementResult
    def __init__(self, result: _Optional[_Union[StatementResult, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("volume_id", "txn_id")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    txn_id: str
    def __init__(self, volume_id: _Optional[str] = ..., txn_id: _Optional[str] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("commit_lsn",)
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    commit_lsn: int
    def __init__(self, commit_lsn: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("volume_id", "txn_id")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    txn_id: str
    def __init__(self, volume_id: _Optional[str] = ..., txn_id: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionBegin(_message.Message):
    __slots__ = ("read_only",)
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    read_only: bool
    def __init__(self, read_only: _Optional[bool] = ...) -> None: ...

class SessionCommit(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionRollback(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("volume_id", "begin", "statement", "commit", "rollback")
    VOLUME_ID_FIELD_NUMBER: _ClassVar[int]
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    STATEMENT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_FIELD_NUMBER: _ClassVar[int]
    volume_id: str
    begin: SessionBegin
    statement: SqlStatement
    commit: SessionCommit
    rollback: SessionRollback
    def __init__(self, volume_id: _Optional[str] = ..., begin: _Optional[_Union[SessionBegin, _Mapping]] = ..., statement: _Optional[_Union[SqlStatement, _Mapping]] = ..., commit: _Optional[_Union[SessionCommit, _Mapping]] = ..., rollback: _Optional[_Union[SessionRollback, _Mapping]] = ...) -> None: ...

class SessionError(_message.Message):
    __slots__ = ("code", "message", "reason")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    reason: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SessionBegun(_message.Message):
    __slots__ = ("txn_id", "read_only", "read_point")
    TXN_ID_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_FIELD_NUMBER: _ClassVar[int]
    READ_POINT_FIELD_NUMBER: _ClassVar[int]
    txn_id: str
    read_only: bool
    read_point: int
    def __init__(self, txn_id: _Optional[str] = ..., read_only: _Optional[bool] = ..., read_point: _Optional[int] = ...) -> None: ...

class SessionCommitted(_message.Message):
    __slots__ = ("commit_lsn",)
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    commit_lsn: int
    def __init__(self, commit_lsn: _Optional[int] = ...) -> None: ...

class SessionRolledBack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("begun", "executed", "committed", "rolled_back", "error", "transaction_open")
    BEGUN_FIELD_NUMBER: _ClassVar[int]
    EXECUTED_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_FIELD_NUMBER: _ClassVar[int]
    ROLLED_BACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRANSACTION_OPEN_FIELD_NUMBER: _ClassVar[int]
    begun: SessionBegun
    executed: ExecuteResponse
    committed: SessionCommitted
    rolled_back: SessionRolledBack
    error: SessionError
    transaction_open: bool
    def __init__(self, begun: _Optional[_Union[SessionBegun, _Mapping]] = ..., executed: _Optional[_Union[ExecuteResponse, _Mapping]] = ..., committed: _Optional[_Union[SessionCommitted, _Mapping]] = ..., rolled_back: _Optional[_Union[SessionRolledBack, _Mapping]] = ..., error: _Optional[_Union[SessionError, _Mapping]] = ..., transaction_open: _Optional[bool] = ...) -> None: ...
