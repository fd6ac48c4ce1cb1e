"""Test doubles for the SQL surface: a SQL engine over a local SQLite file, and the compute node's
SqlService and KvService served in this process over it (no cluster).

`FakeEngine` keeps the real engine's contract (sixfold.compute.sql.SqlEngine) where the services
depend on it: one writer at a time, read-only transactions on their own snapshot (WAL), an LSN
per commit that wrote, errors as StorageErrors with SQLite's message (syntax and misuse
INVALID_ARGUMENT, constraints FAILED_PRECONDITION, busy ABORTED, unknown transaction NOT_FOUND).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sixfold.compute.kv_service import KvServicer
from sixfold.compute.sql_service import SqlEngines, SqlServicer
from sixfold.compute.sql_values import SqlValue
from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.storage.errors import StorageError, UnknownVolume
from sixfold.storage.serving import start_server

FAKE_VOLUMES = ("vol0", "vol1")


@dataclass(frozen=True)
class FakeResult:
    columns: list[str]
    rows: list[tuple[SqlValue, ...]]
    rows_affected: int
    last_row_id: int


class FakeSqlError(StorageError):
    def __init__(self, code_name: str, message: str) -> None:
        super().__init__(message)
        self.status_code_name = code_name


def _mapped(error: sqlite3.Error) -> FakeSqlError:
    text = str(error)
    if isinstance(error, sqlite3.IntegrityError):
        return FakeSqlError("FAILED_PRECONDITION", text)
    if "locked" in text or "busy" in text:
        return FakeSqlError("ABORTED", text)
    return FakeSqlError("INVALID_ARGUMENT", text)


def _run(connection: sqlite3.Connection, sql: str, params: Sequence[SqlValue]) -> FakeResult:
    before = connection.total_changes
    try:
        cursor = connection.execute(sql, list(params))
        rows = [tuple(row) for row in cursor.fetchall()]
    except sqlite3.Error as error:
        raise _mapped(error) from None
    columns = [d[0] for d in cursor.description or ()]
    last = connection.execute("SELECT last_insert_rowid()").fetchone()[0]
    return FakeResult(columns, rows, connection.total_changes - before, int(last))


class FakeTransaction:
    def __init__(self, engine: FakeEngine, txn_id: str, read_only: bool, connection: sqlite3.Connection) -> None:
        self.engine = engine
        self.txn_id = txn_id
        self.read_only = read_only
        self.read_point = engine.lsn
        self.connection = connection
        self._writes_before = connection.total_changes
        self._schema_before = engine.schema_version(connection)

    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> FakeResult:
        self.engine.transaction(self.txn_id)
        return _run(self.connection, sql, params)

    def _end(self) -> None:
        self.engine._transactions.pop(self.txn_id, None)
        if self.read_only:
            self.connection.close()
        else:
            self.engine._write_lock.release()

    async def commit(self) -> int:
        self.engine.transaction(self.txn_id)
        wrote = self.connection.total_changes != self._writes_before or (
            self.engine.schema_version(self.connection) != self._schema_before
        )
        try:
            self.connection.execute("COMMIT")
        except sqlite3.Error as error:
            raise _mapped(error) from None
        finally:
            self._end()
        return self.engine.next_lsn() if wrote and not self.read_only else 0

    async def rollback(self) -> None:
        self.engine.transaction(self.txn_id)
        self.connection.execute("ROLLBACK")
        self._end()


class FakeEngine:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lsn = 100_000
        self._write_lock = asyncio.Lock()
        self._transactions: dict[str, FakeTransaction] = {}
        self._ids = itertools.count(1)
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        return connection

    @property
    def connection(self) -> sqlite3.Connection:
        assert self._connection is not None, "start() first"
        return self._connection

    def next_lsn(self) -> int:
        self.lsn += 1
        return self.lsn

    @staticmethod
    def schema_version(connection: sqlite3.Connection) -> int:
        return int(connection.execute("PRAGMA schema_version").fetchone()[0])

    async def start(self) -> None:
        self._connection = self._connect()

    async def close(self, why: str = "") -> None:
        for txn in list(self._transactions.values()):
            await txn.rollback()
        if self._connection is not None:
            self._connection.close()

    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> tuple[FakeResult, int]:
        results, lsn = await self.run_transaction([(sql, params)])
        return results[0], lsn

    async def run_transaction(
        self, statements: Sequence[tuple[str, Sequence[SqlValue]]]
    ) -> tuple[list[FakeResult], int]:
        async with self._write_lock:
            connection = self.connection
            writes, schema = connection.total_changes, self.schema_version(connection)
            connection.execute("BEGIN IMMEDIATE")
            try:
                results = [_run(connection, sql, params) for sql, params in statements]
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            wrote = connection.total_changes != writes or self.schema_version(connection) != schema
            connection.execute("COMMIT")
            return results, self.next_lsn() if wrote else 0

    async def begin(self, read_only: bool = False) -> FakeTransaction:
        txn_id = f"txn-{next(self._ids)}"
        if read_only:
            connection = self._connect()
            connection.execute("PRAGMA query_only = ON")
            connection.execute("BEGIN")
            connection.execute("SELECT count(*) FROM sqlite_schema").fetchall()  # the snapshot starts here
        else:
            await self._write_lock.acquire()
            connection = self.connection
            connection.execute("BEGIN IMMEDIATE")
        txn = self._transactions[txn_id] = FakeTransaction(self, txn_id, read_only, connection)
        return txn

    def transaction(self, txn_id: str) -> FakeTransaction:
        txn = self._transactions.get(txn_id)
        if txn is None:
            raise FakeSqlError(
                "NOT_FOUND",
                f"transaction {txn_id!r} does not exist: it ended (committed, rolled back or timed out) or never began",
            )
        return txn


class FakeVolume(str):
    """A volume's name standing in for the open volume the fake engine is built on."""

    holds_database = False


class FakeVolumes:
    """VolumeServicer's `volume()`: the names in FAKE_VOLUMES exist, any other is NOT_FOUND."""

    async def volume(self, volume_id: str) -> Any:
        if volume_id not in FAKE_VOLUMES:
            raise UnknownVolume(f"volume {volume_id!r} does not exist; create it first")
        return FakeVolume(volume_id)


@contextmanager
def fake_compute(directory: Path) -> Iterator[str]:
    """SqlService and KvService over FakeEngines (one SQLite file per volume in `directory`),
    served on a free port by an event loop in a thread; yields the address."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fake-compute", daemon=True)
    thread.start()
    engines = SqlEngines(FakeVolumes(), factory=lambda volume: FakeEngine(directory / f"{volume}.db"))

    async def start() -> Any:
        services = [
            (spb.DESCRIPTOR.services_by_name["SqlService"], SqlServicer(engines), spb),
            (kpb.DESCRIPTOR.services_by_name["KvService"], KvServicer(engines), kpb),
        ]
        return await start_server("127.0.0.1", 0, services)

    server, port, _ = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(10)
        asyncio.run_coroutine_threadsafe(engines.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
