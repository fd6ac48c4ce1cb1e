"""Statements as the engine takes them: values, results, the limits on both, and which connection runs one.

Pure. Rules:
1. A value is NULL (None), an integer, a real, text or a blob (`Value`); a parameter of another type is
   refused with a sentence, before SQLite sees it. `bool` is an int in Python and binds as 0 or 1.
2. Limits: SQL text at most `SQL_BYTES_MAX` bytes, a text or blob value (a parameter, or one SQLite
   computes: `VALUE_BYTES_MAX` is also SQLite's SQLITE_LIMIT_LENGTH) at most `VALUE_BYTES_MAX` bytes, at
   most `PARAMS_MAX` parameters, and a result at most `RESULT_ROWS_MAX` rows and `RESULT_BYTES_MAX` bytes.
3. `looks_read_only` routes an autocommit statement: SELECT, VALUES, WITH, EXPLAIN and PRAGMA without a
   value go to a reader connection first. A reader is opened read-only, so a statement that writes after
   all (WITH ... INSERT) fails there before it changes anything, and runs on the writer instead.
4. On the writer, an autocommit statement runs in a transaction the engine wraps around it (so that a
   second statement in the same text is refused with nothing written), except VACUUM and PRAGMA
   (`runs_bare`): SQLite refuses VACUUM inside a transaction and ignores some pragmas there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sixfold.compute.sql.errors import ResultTooLarge, SqlInvalid, TooLarge

Value = None | int | float | str | bytes

SQL_BYTES_MAX = 1 << 20
VALUE_BYTES_MAX = 1 << 20
PARAMS_MAX = 32_766  # SQLite's SQLITE_MAX_VARIABLE_NUMBER in this build
RESULT_ROWS_MAX = 100_000
RESULT_BYTES_MAX = 64 << 20  # the values' bytes (text and blobs), plus 8 per number

_READ_VERBS = frozenset({"select", "values", "with", "explain"})
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class StatementResult:
    columns: list[str]
    rows: list[tuple[Value, ...]]
    rows_affected: int
    last_row_id: int


def check_statement(sql: str, params: Sequence[Value]) -> None:
    """Refuse a statement over a limit or with a parameter of a type outside `Value` (rules 1 and 2)."""
    if not isinstance(sql, str):
        raise SqlInvalid(f"the statement must be text, not {type(sql).__name__}")
    if len(sql) * 4 > SQL_BYTES_MAX and len(sql.encode()) > SQL_BYTES_MAX:
        raise TooLarge(f"the statement is {len(sql.encode())} bytes of SQL; at most {SQL_BYTES_MAX} are accepted")
    if not sql.strip():
        raise SqlInvalid("the statement is empty")
    if isinstance(params, str | bytes) or not isinstance(params, Sequence):
        raise SqlInvalid(f"the parameters must be a list of values, not {type(params).__name__}")
    if len(params) > PARAMS_MAX:
        raise TooLarge(f"the statement has {len(params)} parameters; at most {PARAMS_MAX} are accepted")
    for index, value in enumerate(params, start=1):
        if value is None or isinstance(value, int | float):
            continue
        if isinstance(value, str):
            if len(value) * 4 > VALUE_BYTES_MAX and len(value.encode()) > VALUE_BYTES_MAX:
                raise TooLarge(
                    f"parameter {index} is {len(value.encode())} bytes of text; a value may be at most "
                    f"{VALUE_BYTES_MAX} bytes"
                )
            continue
        if isinstance(value, bytes):
            if len(value) > VALUE_BYTES_MAX:
                raise TooLarge(
                    f"parameter {index} is a blob of {len(value)} bytes; a value may be at most {VALUE_BYTES_MAX} bytes"
                )
            continue
        raise SqlInvalid(
            f"parameter {index} is of type {type(value).__name__}; a value is NULL, an integer, a real, text or a blob"
        )


def looks_read_only(sql: str) -> bool:
    """Whether to try an autocommit statement on a reader first (rule 3)."""
    verb = _first_word(sql)
    return verb in _READ_VERBS or (verb == "pragma" and "=" not in sql)


def _first_word(sql: str) -> str:
    noise = _LEADING_NOISE.match(sql)
    word = _FIRST_WORD.match(sql, noise.end() if noise else 0)
    return word.group().lower() if word else ""


def runs_bare(sql: str) -> bool:
    """Whether an autocommit statement runs on the writer without the engine's transaction (rule 4)."""
    return _first_word(sql) in ("vacuum", "pragma")


class ResultBuilder:
    """Collects a statement's rows within the result limits (rule 2)."""

    def __init__(self) -> None:
        self.rows: list[tuple[Value, ...]] = []
        self._bytes = 0

    def add(self, row: tuple[Value, ...]) -> None:
        if len(self.rows) >= RESULT_ROWS_MAX:
            raise ResultTooLarge(
                f"the result has more than {RESULT_ROWS_MAX} rows; add a LIMIT (and page with OFFSET or a key)"
            )
        self._bytes += sum(len(v) if isinstance(v, str | bytes) else 8 for v in row)
        if self._bytes > RESULT_BYTES_MAX:
            raise ResultTooLarge(
                f"the result is over {RESULT_BYTES_MAX} bytes after {len(self.rows)} rows; add a LIMIT or select "
                "fewer columns"
            )
        self.rows.append(row)
