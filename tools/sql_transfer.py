"""`sixfold sql import FILE.db` and `sixfold sql export FILE.db`: a SQLite database file into a
volume's database, and the volume's database out to a new file.

Import checks the file (`PRAGMA integrity_check`), creates its tables in one transaction (so a
name already taken stops it before any row is copied), copies the rows as multi-row INSERTs with
parameters in bounded `RunTransaction` batches, then creates the indexes, views and triggers,
carries AUTOINCREMENT counters over, and checks the volume's database. It is not one
transaction: a failure half way leaves the rows copied so far (the message says which table).

Export reads one snapshot (a read-only session), writes a new file (never over an existing one)
in one local transaction, and checks it. Both end with a line per side: `integrity_check: ok`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from sixfold.compute.sql_client import SqlClient, SqlError, SqlSession
from sixfold.compute.sql_values import PARAMS_MAX, STATEMENTS_PER_TRANSACTION_MAX, SqlValue
from sixfold.tools.volume_cli import UsageError

EXIT_OK = 0
EXIT_FAILED = 1
BATCH_BYTES_MAX = 4 << 20  # text and blob bytes of one import transaction
EXPORT_PAGE_ROWS = 1000  # rows asked per export query; halved while a page is over the reply's bounds
SCHEMA_SQL = (
    "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
    "ORDER BY rowid"
)
SEQUENCE_SQL = "SELECT name, seq FROM sqlite_sequence"
HAS_SEQUENCE_SQL = "SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_sequence'"

Statement = tuple[str, Sequence[SqlValue]]
Query = Callable[[str, Sequence[SqlValue]], list[tuple[SqlValue, ...]]]


def quote(name: str) -> str:
    """An SQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def insert_rows(table: str, columns: Sequence[str], rows: Sequence[Sequence[SqlValue]]) -> Statement:
    """One multi-row INSERT with a parameter per value."""
    row = "(" + ", ".join("?" * len(columns)) + ")"
    names = ", ".join(quote(c) for c in columns)
    sql = f"INSERT INTO {quote(table)}({names}) VALUES " + ", ".join([row] * len(rows))
    return sql, [value for r in rows for value in r]


def stored_columns(query: Query, table: str) -> list[str]:
    """The columns a row is inserted with: every column but generated ones (table_xinfo hidden 2, 3)."""
    return [str(row[1]) for row in query(f"PRAGMA table_xinfo({quote(table)})", []) if row[6] in (0, 1)]


def _size(values: Sequence[SqlValue]) -> int:
    return sum(len(v) for v in values if isinstance(v, str | bytes))


class _Batches:
    """Statements gathered into RunTransaction calls within the statement and byte bounds."""

    def __init__(self, client: SqlClient) -> None:
        self.client = client
        self.pending: list[Statement] = []
        self.bytes = 0
        self.transactions = 0

    def add(self, statement: Statement) -> None:
        size = _size(statement[1])
        if self.pending and (
            len(self.pending) >= STATEMENTS_PER_TRANSACTION_MAX or self.bytes + size > BATCH_BYTES_MAX
        ):
            self.flush()
        self.pending.append(statement)
        self.bytes += size

    def flush(self) -> None:
        if self.pending:
            self.client.run_transaction(self.pending)
            self.transactions += 1
        self.pending, self.bytes = [], 0


def _local_integrity(connection: sqlite3.Connection) -> str:
    return "; ".join(str(row[0]) for row in connection.execute("PRAGMA integrity_check"))


def _remote_integrity(query: Query) -> str:
    return "; ".join(str(row[0]) for row in query("PRAGMA integrity_check", []))


def import_database(client: SqlClient, path: Path, out: TextIO) -> int:
    if not path.is_file():
        raise UsageError(f"{path} is not a file")
    try:
        source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        check = _local_integrity(source)
    except sqlite3.DatabaseError as error:
        raise UsageError(f"{path} is not a readable SQLite database: {error}") from None
    if check != "ok":
        raise UsageError(f"{path} fails PRAGMA integrity_check: {check}")

    def local(sql: str, params: Sequence[SqlValue]) -> list[tuple[SqlValue, ...]]:
        return list(source.execute(sql, params))

    try:
        schema = local(SCHEMA_SQL, [])
        tables = [(str(name), str(sql)) for kind, name, _, sql in schema if kind == "table"]
        if not tables:
            raise UsageError(f"{path} holds no tables")
        client.run_transaction([(sql, []) for _, sql in tables])
        batches = _Batches(client)
        rows_copied = 0
        for table, _ in tables:
            columns = stored_columns(local, table)
            per_statement = max(1, PARAMS_MAX // len(columns))
            cursor = source.execute(f"SELECT {', '.join(quote(c) for c in columns)} FROM {quote(table)}")
            while rows := cursor.fetchmany(per_statement):
                batches.add(insert_rows(table, columns, rows))
                rows_copied += len(rows)
            batches.flush()
        for kind, _, _, sql in schema:
            if kind != "table":
                batches.add((str(sql), []))
        if local(HAS_SEQUENCE_SQL, [])[0][0]:
            for name, seq in local(SEQUENCE_SQL, []):
                batches.add(("DELETE FROM sqlite_sequence WHERE name = ?", [name]))
                batches.add(("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", [name, seq]))
        batches.flush()
    finally:
        source.close()
    remote = _remote_integrity(lambda sql, params: client.execute(sql, params).rows)
    print(
        f"imported {len(tables)} table(s), {rows_copied} row(s) from {path} into volume {client.volume_id} "
        f"({batches.transactions + 1} transactions)",
        file=out,
    )
    print(f"integrity_check: {check} ({path}), {remote} (volume {client.volume_id})", file=out)
    return EXIT_OK if remote == "ok" else EXIT_FAILED


def _export_rows(session: SqlSession, table: str, columns: Sequence[str]) -> list[tuple[SqlValue, ...]]:
    """Every row of `table`, page by page within the session's snapshot."""
    names = ", ".join(quote(c) for c in columns)
    rows: list[tuple[SqlValue, ...]] = []
    page = EXPORT_PAGE_ROWS
    while True:
        try:
            got = session.execute(f"SELECT {names} FROM {quote(table)} LIMIT ? OFFSET ?", [page, len(rows)]).rows
        except SqlError as error:
            if error.code.name != "RESOURCE_EXHAUSTED" or page == 1:
                raise
            page //= 2
            continue
        rows.extend(got)
        if len(got) < page:
            return rows


def export_database(client: SqlClient, path: Path, out: TextIO) -> int:
    if path.exists():
        raise UsageError(f"{path} exists; export writes a new file (remove it or pick another name)")
    with client.session() as session:
        session.begin(read_only=True)

        def remote(sql: str, params: Sequence[SqlValue]) -> list[tuple[SqlValue, ...]]:
            return session.execute(sql, params).rows

        check = _remote_integrity(remote)
        schema = remote(SCHEMA_SQL, [])
        tables = [str(name) for kind, name, _, _ in schema if kind == "table"]
        target = sqlite3.connect(path)
        try:
            with target:  # one local transaction
                for kind, _, _, sql in schema:
                    if kind == "table":
                        target.execute(str(sql))
                rows_copied = 0
                for table in tables:
                    columns = stored_columns(remote, table)
                    rows = _export_rows(session, table, columns)
                    sql, _ = insert_rows(table, columns, [()])  # one row's placeholders
                    target.executemany(sql, rows)
                    rows_copied += len(rows)
                for kind, _, _, sql in schema:
                    if kind != "table":
                        target.execute(str(sql))
                if remote(HAS_SEQUENCE_SQL, [])[0][0]:
                    for name, seq in remote(SEQUENCE_SQL, []):
                        target.execute("DELETE FROM sqlite_sequence WHERE name = ?", [name])
                        target.execute("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", [name, seq])
            local = _local_integrity(target)
        except BaseException:
            target.close()
            path.unlink(missing_ok=True)
            raise
        target.close()
        session.rollback()
    print(
        f"exported {len(tables)} table(s), {rows_copied} row(s) from volume {client.volume_id} "
        f"(read at LSN {session.read_point}) into {path}",
        file=out,
    )
    print(f"integrity_check: {check} (volume {client.volume_id}), {local} ({path})", file=out)
    return EXIT_OK if check == local == "ok" else EXIT_FAILED
