"""SQLite on the volume: the engine (compute/sql/engine.py) and what its callers need from it.

The engine and its transactions (threads, the event loop) are loaded on first use, so importing a
pure part of this package (pages, statements, errors) loads no I/O module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sixfold.compute.sql.errors import (
    REASON_EARLIER_COMMIT_FAILED,
    REASON_ENGINE_CLOSED,
    REASON_FENCED,
    REASON_IDLE_TIMEOUT,
    REASON_READ_ONLY,
    REASON_ROLLED_BACK,
    REASON_STORAGE_FAILED,
    REASON_TOO_LARGE,
    SqlError,
    TransactionAborted,
    UnknownTransaction,
)
from sixfold.compute.sql.statements import StatementResult, Value

if TYPE_CHECKING:
    from sixfold.compute.sql.engine import SqlEngine
    from sixfold.compute.sql.transaction import Transaction

__all__ = [
    "REASON_EARLIER_COMMIT_FAILED",
    "REASON_ENGINE_CLOSED",
    "REASON_FENCED",
    "REASON_IDLE_TIMEOUT",
    "REASON_READ_ONLY",
    "REASON_ROLLED_BACK",
    "REASON_STORAGE_FAILED",
    "REASON_TOO_LARGE",
    "SqlEngine",
    "SqlError",
    "StatementResult",
    "Transaction",
    "TransactionAborted",
    "UnknownTransaction",
    "Value",
]


def __getattr__(name: str) -> Any:
    if name == "SqlEngine":
        from sixfold.compute.sql.engine import SqlEngine

        return SqlEngine
    if name == "Transaction":
        from sixfold.compute.sql.transaction import Transaction

        return Transaction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
