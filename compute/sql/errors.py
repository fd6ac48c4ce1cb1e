"""Errors of the SQL engine, each mapped to one gRPC status (storage.errors.StorageError), and SQLite's own
errors mapped onto them (`from_sqlite`).

The message is SQLite's own where SQLite raised it (a client reads "UNIQUE constraint failed: t.k"), and
`metadata["sqlite_error"]` names SQLite's extended result code (SQLITE_CONSTRAINT_UNIQUE) for a program.
`reason` is set where a program must branch: a transaction aborted by an idle timeout, fencing, the engine
closing or an earlier commit failing; a value or transaction over a limit; a write in a read-only
transaction.
"""

from __future__ import annotations

import apsw

from sixfold.storage.errors import REASON_FENCED, StorageError

__all__ = [
    "REASON_EARLIER_COMMIT_FAILED",
    "REASON_ENGINE_CLOSED",
    "REASON_FENCED",
    "REASON_IDLE_TIMEOUT",
    "REASON_READ_ONLY",
    "REASON_ROLLED_BACK",
    "REASON_STORAGE_FAILED",
    "REASON_TOO_LARGE",
    "ResultTooLarge",
    "SqlBusy",
    "SqlConstraint",
    "SqlCorrupt",
    "SqlError",
    "SqlInternal",
    "SqlInvalid",
    "SqlReadOnly",
    "SqlResourceExhausted",
    "TooLarge",
    "TransactionAborted",
    "TransactionTooLarge",
    "UnknownTransaction",
    "WriterSettling",
    "from_sqlite",
]

REASON_IDLE_TIMEOUT = "IDLE_TIMEOUT"  # an interactive transaction left idle too long was rolled back
REASON_ENGINE_CLOSED = "ENGINE_CLOSED"  # the engine (the compute node) closed or restarted
REASON_EARLIER_COMMIT_FAILED = "EARLIER_COMMIT_FAILED"  # a commit this transaction read from did not become durable
REASON_STORAGE_FAILED = "STORAGE_FAILED"  # storage failed under the transaction; it was rolled back
REASON_ROLLED_BACK = "ROLLED_BACK"  # SQLite rolled the whole transaction back after a failed statement
REASON_READ_ONLY = "READ_ONLY"  # a write in a read-only transaction
REASON_TOO_LARGE = "TOO_LARGE"  # a statement, value, result or transaction over its limit


class SqlError(StorageError):
    """Base of the SQL engine's errors."""


class SqlInvalid(SqlError):
    """Syntax errors, misuse, wrong bindings, a datatype mismatch, a statement not allowed here."""

    status_code_name = "INVALID_ARGUMENT"


class TooLarge(SqlInvalid):
    """A statement, a value or a row over its limit."""

    reason = REASON_TOO_LARGE


class TransactionTooLarge(TooLarge):
    """A transaction that changes more than one commit (one MTR) can carry."""


class SqlReadOnly(SqlInvalid):
    reason = REASON_READ_ONLY


class SqlConstraint(SqlError):
    status_code_name = "FAILED_PRECONDITION"


class SqlBusy(SqlError):
    """The database is busy or locked, or its schema changed under a statement: retry."""

    status_code_name = "ABORTED"


class SqlResourceExhausted(SqlError):
    status_code_name = "RESOURCE_EXHAUSTED"


class ResultTooLarge(SqlResourceExhausted):
    reason = REASON_TOO_LARGE


class SqlCorrupt(SqlError):
    status_code_name = "DATA_LOSS"


class SqlInternal(SqlError):
    status_code_name = "INTERNAL"


class UnknownTransaction(SqlError):
    status_code_name = "NOT_FOUND"


class TransactionAborted(SqlError):
    """The transaction was rolled back by the engine, not by the client: `reason` says why."""

    status_code_name = "ABORTED"

    def __init__(self, message: str, reason: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, metadata)
        self.reason = reason


class WriterSettling(SqlError):
    """Writes wait while the outcome of an earlier commit is unknown; they resume once storage settles it."""

    status_code_name = "UNAVAILABLE"


_BY_SQLITE: list[tuple[type[apsw.Error], type[SqlError]]] = [
    (apsw.ConstraintError, SqlConstraint),
    (apsw.ReadOnlyError, SqlReadOnly),
    (apsw.TooBigError, TooLarge),
    (apsw.BusyError, SqlBusy),
    (apsw.LockedError, SqlBusy),
    (apsw.SchemaChangeError, SqlBusy),
    (apsw.AbortError, SqlBusy),
    (apsw.InterruptError, SqlBusy),
    (apsw.SQLError, SqlInvalid),
    (apsw.MisuseError, SqlInvalid),
    (apsw.RangeError, SqlInvalid),
    (apsw.MismatchError, SqlInvalid),
    (apsw.AuthError, SqlInvalid),
    (apsw.BindingsError, SqlInvalid),
    (apsw.CorruptError, SqlCorrupt),
    (apsw.NotADBError, SqlCorrupt),
    (apsw.FullError, SqlResourceExhausted),
    (apsw.NoMemError, SqlResourceExhausted),
]


def from_sqlite(error: Exception) -> SqlError:
    """SQLite's (or apsw's) error as the engine reports it, with SQLite's own message."""
    metadata: dict[str, str] = {}
    code = getattr(error, "extendedresult", None)
    if isinstance(code, int):
        name = apsw.mapping_extended_result_codes.get(code) or apsw.mapping_result_codes.get(code & 0xFF)
        if name:
            metadata["sqlite_error"] = str(name)
    message = str(error) or type(error).__name__
    if isinstance(error, TypeError | OverflowError | ValueError):  # a binding apsw could not convert
        return SqlInvalid(f"a parameter cannot be bound: {message}", metadata)
    for sqlite_type, ours in _BY_SQLITE:
        if isinstance(error, sqlite_type):
            return ours(message, metadata)
    return SqlInternal(f"SQLite failed: {message}", metadata)
