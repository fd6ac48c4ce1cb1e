"""SQL values and results between Python and the wire (compute.v1 `Value`, `StatementResult`), with
the SQL API's bounds. Used by both sides: the servicers (compute/sql_service.py, kv_service.py)
and the client (compute/sql_client.py).

A Python SQL value is None, int, float, str or bytes (SQLite's five storage classes). Every
check raises `InvalidRequest` (INVALID_ARGUMENT) or `ResultTooLarge` (RESOURCE_EXHAUSTED) with a
sentence that says what to change; no gRPC import here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.storage.errors import InvalidRequest, StorageError

SqlValue = None | int | float | str | bytes

SQL_BYTES_MAX = 1 << 20  # the text of one statement
VALUE_BYTES_MAX = 1 << 20  # one text or blob parameter (UTF-8 bytes for text)
PARAMS_MAX = 999  # parameters of one statement (SQLite's historical SQLITE_MAX_VARIABLE_NUMBER)
STATEMENTS_PER_TRANSACTION_MAX = 1000  # statements of one RunTransaction
ROWS_PER_RESULT_MAX = 10_000  # rows of one statement's result
RESULT_BYTES_MAX = 32 << 20  # text and blob bytes of one result: well inside gRPC's 64 MiB message
INTEGER_MIN = -(1 << 63)  # SQLite integers (and the wire's sint64)
INTEGER_MAX = (1 << 63) - 1


class ResultTooLarge(StorageError):
    """A result over the bounds of one reply: ask for fewer rows (LIMIT) or fewer bytes."""

    status_code_name = "RESOURCE_EXHAUSTED"


class ResultLike(Protocol):
    """What a statement returned, as the engine reports it (sixfold.compute.sql.StatementResult)."""

    @property
    def columns(self) -> Sequence[str]: ...
    @property
    def rows(self) -> Sequence[tuple[SqlValue, ...]]: ...
    @property
    def rows_affected(self) -> int: ...
    @property
    def last_row_id(self) -> int: ...


# --- values ------------------------------------------------------------------------------------------


def value_to_proto(value: SqlValue) -> spb.Value:
    """A Python value as a wire Value (a bool is an integer, as in SQLite)."""
    if value is None:
        return spb.Value(null=True)
    if isinstance(value, bool | int):
        if not INTEGER_MIN <= value <= INTEGER_MAX:
            raise InvalidRequest(f"the integer {value} is outside SQLite's 64-bit range; pass it as text")
        return spb.Value(integer=int(value))
    if isinstance(value, float):
        return spb.Value(real=value)
    if isinstance(value, str):
        return spb.Value(text=value)
    if isinstance(value, bytes | bytearray | memoryview):
        return spb.Value(blob=bytes(value))
    raise InvalidRequest(
        f"a value of type {type(value).__name__} cannot be stored in SQLite; use None, int, float, str or bytes"
    )


def value_from_proto(value: spb.Value, what: str = "a value") -> SqlValue:
    """The Python value of a wire Value; one with no kind set is refused."""
    kind = value.WhichOneof("kind")
    if kind == "null":
        return None
    if kind == "integer":
        return int(value.integer)
    if kind == "real":
        return float(value.real)
    if kind == "text":
        return str(value.text)
    if kind == "blob":
        return bytes(value.blob)
    raise InvalidRequest(f"{what} has no type: set one of null, integer, real, text or blob")


def _value_bytes(value: SqlValue) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes):
        return len(value)
    return 0


# --- statements -----------------------------------------------------------------------------------


def check_sql(sql: str) -> str:
    """The statement text, if it is not empty and within SQL_BYTES_MAX."""
    if not sql.strip():
        raise InvalidRequest("the statement is empty; send one SQL statement")
    size = len(sql.encode("utf-8"))
    if size > SQL_BYTES_MAX:
        raise InvalidRequest(
            f"the statement is {size} bytes, over the limit of {SQL_BYTES_MAX} bytes; "
            "pass large values as parameters (?) or split the work into several statements"
        )
    return sql


def check_params(params: Sequence[SqlValue]) -> list[SqlValue]:
    """The parameters, if there are at most PARAMS_MAX and no text or blob is over VALUE_BYTES_MAX."""
    if len(params) > PARAMS_MAX:
        raise InvalidRequest(f"{len(params)} parameters given; a statement takes at most {PARAMS_MAX}")
    for index, value in enumerate(params, start=1):
        size = _value_bytes(value)
        if size > VALUE_BYTES_MAX:
            kind = "text" if isinstance(value, str) else "blob"
            raise InvalidRequest(
                f"parameter {index} is a {kind} of {size} bytes, over the limit of {VALUE_BYTES_MAX} bytes; "
                "split it over several rows"
            )
    return list(params)


def params_from_proto(params: Sequence[spb.Value]) -> list[SqlValue]:
    """The Python parameters of a wire statement, checked (count, types, sizes)."""
    if len(params) > PARAMS_MAX:  # before converting: do not walk a huge list
        raise InvalidRequest(f"{len(params)} parameters given; a statement takes at most {PARAMS_MAX}")
    return check_params([value_from_proto(p, f"parameter {i}") for i, p in enumerate(params, start=1)])


def params_to_proto(params: Sequence[SqlValue]) -> list[spb.Value]:
    return [value_to_proto(value) for value in check_params(params)]


def statement_from_proto(statement: spb.SqlStatement) -> tuple[str, list[SqlValue]]:
    return check_sql(statement.sql), params_from_proto(statement.params)


def statement_to_proto(sql: str, params: Sequence[SqlValue] = ()) -> spb.SqlStatement:
    return spb.SqlStatement(sql=check_sql(sql), params=params_to_proto(params))


def check_statement_count(count: int) -> None:
    if count == 0:
        raise InvalidRequest("the transaction has no statements")
    if count > STATEMENTS_PER_TRANSACTION_MAX:
        raise InvalidRequest(
            f"{count} statements in one transaction; at most {STATEMENTS_PER_TRANSACTION_MAX} (split the work "
            "into several transactions, or use an interactive session)"
        )


# --- results --------------------------------------------------------------------------------------


def check_result(result: ResultLike, committed_lsn: int = 0) -> None:
    """Refuse a result over ROWS_PER_RESULT_MAX rows or RESULT_BYTES_MAX bytes. A statement that
    already committed is said to have: its writes stand, only its rows are not sent."""
    note = f" (the statement's writes did commit, at LSN {committed_lsn})" if committed_lsn else ""
    if len(result.rows) > ROWS_PER_RESULT_MAX:
        raise ResultTooLarge(
            f"the result has {len(result.rows)} rows, over the limit of {ROWS_PER_RESULT_MAX} per reply{note}; "
            "add a LIMIT (and page with OFFSET or a WHERE on the key)"
        )
    size = sum(_value_bytes(value) for row in result.rows for value in row)
    if size > RESULT_BYTES_MAX:
        raise ResultTooLarge(
            f"the result holds {size} bytes of text and blobs, over the limit of {RESULT_BYTES_MAX} per reply"
            f"{note}; select fewer rows (LIMIT) or fewer columns"
        )


def result_to_proto(result: ResultLike, committed_lsn: int = 0) -> spb.StatementResult:
    check_result(result, committed_lsn)
    return spb.StatementResult(
        columns=list(result.columns),
        rows=[spb.Row(values=[value_to_proto(value) for value in row]) for row in result.rows],
        rows_affected=result.rows_affected,
        last_row_id=result.last_row_id,
    )


def rows_from_proto(result: spb.StatementResult) -> list[tuple[SqlValue, ...]]:
    return [
        tuple(value_from_proto(value, f"column {i} of a row") for i, value in enumerate(row.values, start=1))
        for row in result.rows
    ]
