"""Pure text work of `sixfold sql` and `sixfold kv`: results as a table, CSV or JSON; parameters
from the command line; statements split at their `;`; BEGIN/COMMIT/ROLLBACK recognized.

    table(["id", "name"], [(1, "ann"), (2, None)])   ->  id  name / --  ---- / 1   ann / 2   NULL
    parse_param("42") -> 42, "4.5" -> 4.5, "NULL" -> None, "x'00ff'" -> b"\\x00\\xff", "'42'" -> "42"
    split_statements("SELECT 1; SELECT 2; SELECT") -> (["SELECT 1;", "SELECT 2;"], "SELECT")

No I/O and no gRPC here: every function takes values and returns text or values.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from sixfold.compute.sql_values import SqlValue

NULL_TEXT = "NULL"
_INTEGER = re.compile(r"^[+-]?\d+$")
_REAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_BLOB = re.compile(r"^[xX]'([0-9a-fA-F]*)'$")
_BEGIN = re.compile(
    r"^BEGIN(?:\s+(?P<mode>DEFERRED|IMMEDIATE|EXCLUSIVE|READ\s+ONLY))?(?:\s+TRANSACTION)?$", re.IGNORECASE
)
_COMMIT = re.compile(r"^(?:COMMIT|END)(?:\s+TRANSACTION)?$", re.IGNORECASE)
_ROLLBACK = re.compile(r"^ROLLBACK(?:\s+TRANSACTION)?$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*(?:INSERT|REPLACE)\b", re.IGNORECASE)
_ESCAPES = str.maketrans({"\n": "\\n", "\r": "\\r", "\t": "\\t"})


# --- values ----------------------------------------------------------------------------------------


def blob_literal(data: bytes) -> str:
    """A blob as SQL writes it: x'00ff'."""
    return f"x'{data.hex()}'"


def format_value(value: SqlValue) -> str:
    """One value for a table cell: NULL, numbers as SQLite prints them, blobs as x'hex', text with
    its line breaks and tabs escaped (so a row stays on one line)."""
    if value is None:
        return NULL_TEXT
    if isinstance(value, bytes):
        return blob_literal(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value.translate(_ESCAPES)
    return str(value)


def parse_param(text: str) -> SqlValue:
    """A parameter from the command line: NULL (any case), an integer, a real, x'hex' (a blob),
    'quoted' (text, quotes removed: '42' is the text 42), anything else is text as it is."""
    stripped = text.strip()
    if stripped.upper() == NULL_TEXT:
        return None
    if _INTEGER.match(stripped):
        value = int(stripped)
        if -(1 << 63) <= value < (1 << 63):
            return value
        return text  # beyond SQLite's integers: keep the digits as text
    if _REAL.match(stripped):
        return float(stripped)
    blob = _BLOB.match(stripped)
    if blob:
        try:
            return bytes.fromhex(blob.group(1))
        except ValueError:
            raise ValueError(f"not a blob: {text!r} (x'...' takes an even number of hex digits)") from None
    if len(stripped) >= 2 and stripped[0] == stripped[-1] == "'":
        return stripped[1:-1].replace("''", "'")
    return text


# --- results ---------------------------------------------------------------------------------------


def table(columns: Sequence[str], rows: Sequence[Sequence[SqlValue]]) -> str:
    """Columns over a dashed rule, then the rows, aligned (sqlite3's `.mode column`)."""
    cells = [[format_value(value) for value in row] for row in rows]
    headers = [str(c) for c in columns]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *cells)]
    lines = [headers, ["-" * width for width in widths], *cells]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[SqlValue]]) -> str:
    """A header line and one line per row (RFC 4180 quoting); NULL is an empty field, a blob x'hex'."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if columns:
        writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if v is None else blob_literal(v) if isinstance(v, bytes) else v for v in row])
    return out.getvalue().rstrip("\n")


def json_value(value: SqlValue) -> Any:
    """A value for JSON: a blob is {"blob": "<hex>"}; the others are JSON's own."""
    return {"blob": value.hex()} if isinstance(value, bytes) else value


def json_text(
    columns: Sequence[str], rows: Sequence[Sequence[SqlValue]], rows_affected: int, last_row_id: int, commit_lsn: int
) -> str:
    return json.dumps(
        {
            "columns": list(columns),
            "rows": [[json_value(v) for v in row] for row in rows],
            "rows_affected": rows_affected,
            "last_row_id": last_row_id,
            "commit_lsn": commit_lsn,
        }
    )


def summary(
    sql: str, columns: Sequence[str], row_count: int, rows_affected: int, last_row_id: int, commit_lsn: int
) -> str:
    """The line under a result: the row count of a query, or what a write did and its commit LSN."""
    parts = []
    if columns:
        parts.append(f"{row_count} row{'' if row_count == 1 else 's'}")
    elif rows_affected:
        parts.append(f"{rows_affected} row{'' if rows_affected == 1 else 's'} affected")
        if _INSERT.match(sql) and last_row_id:
            parts.append(f"last row id {last_row_id}")
    if commit_lsn:
        parts.append(f"commit LSN {commit_lsn}")
    return f"({', '.join(parts)})" if parts else "(ok)"


# --- statements ------------------------------------------------------------------------------------


def split_statements(text: str) -> tuple[list[str], str]:
    """The complete statements in `text` (each up to and including its `;`, as SQLite parses: a `;`
    inside a string, a comment or a trigger body does not end one) and the incomplete rest."""
    statements = []
    start = 0
    for index, char in enumerate(text):
        if char == ";" and sqlite3.complete_statement(text[start : index + 1]):
            statement = text[start : index + 1].strip()
            if statement.strip(";").strip():
                statements.append(statement)
            start = index + 1
    return statements, text[start:].lstrip() if text[start:].strip() else ""


def transaction_verb(statement: str) -> tuple[str, bool] | None:
    """('begin', read_only), ('commit', False) or ('rollback', False) for the statements a session
    carries out itself; None for every other statement. `BEGIN READ ONLY` begins a read-only one."""
    words = " ".join(statement.strip().rstrip(";").split())
    begin = _BEGIN.match(words)
    if begin:
        mode = (begin.group("mode") or "").upper()
        return "begin", mode.startswith("READ")
    if _COMMIT.match(words):
        return "commit", False
    if _ROLLBACK.match(words):
        return "rollback", False
    return None
