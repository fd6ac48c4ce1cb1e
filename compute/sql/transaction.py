"""An interactive transaction: statements one call at a time, then commit or rollback.

Rules (this module owns them):
1. A write transaction holds the engine's write lock from its first statement until it commits or rolls
   back (compute/sql/pool.py rule 1); a read-only one holds a reader from `begin`, at one read point (the
   VDL when it began) for its whole life, and never writes (SqlReadOnly).
2. One call at a time: a transaction's calls are serialized.
3. A failed statement leaves the transaction open with the statement undone (SQLite's statement
   rollback), unless SQLite rolled the whole transaction back, or storage failed under it, or the commit
   chain it read from broke: then the transaction is aborted (TransactionAborted, with a reason).
4. Abandoned: a transaction that no call touches for `idle_timeout_s` is rolled back and gives its lock
   or reader back; every later call gets TransactionAborted (IDLE_TIMEOUT). An engine that closes aborts
   its open transactions the same way (ENGINE_CLOSED).
5. `commit` returns once the transaction's MTR is durable: its commit LSN (0 if it wrote nothing). The
   write lock is released as soon as the MTR is handed off, before that wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from sixfold.compute.sql.connection import SqlConnection
from sixfold.compute.sql.errors import (
    REASON_EARLIER_COMMIT_FAILED,
    REASON_IDLE_TIMEOUT,
    REASON_ROLLED_BACK,
    REASON_STORAGE_FAILED,
    SqlError,
    TransactionAborted,
    UnknownTransaction,
)
from sixfold.compute.sql.pool import ConnectionPool
from sixfold.compute.sql.statements import StatementResult, Value, check_statement
from sixfold.storage.errors import StorageError

log = logging.getLogger("sixfold.compute.sql")

OPEN, DONE, ABORTED = "open", "done", "aborted"


class Transaction:
    def __init__(
        self,
        pool: ConnectionPool,
        txn_id: str,
        read_only: bool,
        idle_timeout_s: float,
        on_end: Callable[[Transaction], None],
    ) -> None:
        self.txn_id = txn_id
        self.read_only = read_only
        self.read_point = 0  # the VDL a read-only transaction reads at (0 for a write transaction)
        self._pool = pool
        self._idle_timeout_s = idle_timeout_s
        self._on_end = on_end
        self._connection: SqlConnection | None = None  # the reader, or the writer once the lock is held
        self._generation = 0  # the commit chain's generation when the write lock was taken
        self.state = OPEN
        self._aborted: TransactionAborted | None = None
        self._lock = asyncio.Lock()
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._abort_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.read_only:
            reader = await self._pool.take_reader()
            try:
                self.read_point = await self._pool.on_reader(reader, reader.begin_read)
            except BaseException:
                await reader.call(reader.rollback_quietly)
                self._pool.give_reader(reader)
                raise
            self._connection = reader
        self._arm()

    # -- the calls ----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _call(self) -> AsyncIterator[None]:
        """Rule 2; a finished transaction refuses, an aborted one says why; the idle clock restarts after."""
        async with self._lock:
            self._check_usable()
            self._busy = True
            try:
                yield
            finally:
                self._busy = False
                if self.state == OPEN:
                    self._arm()

    def _check_usable(self) -> None:
        if self.state == ABORTED:
            assert self._aborted is not None
            raise TransactionAborted(self._aborted.message, self._aborted.reason, self._aborted.metadata)
        if self.state == DONE:
            raise UnknownTransaction(f"transaction {self.txn_id} has already finished")

    async def execute(self, sql: str, params: Sequence[Value] = ()) -> StatementResult:
        check_statement(sql, params)  # refused before it reaches the transaction: the transaction stays open
        async with self._call():
            connection = await self._connection_for_statement()
            try:
                if self.read_only:
                    return await self._pool.on_reader(connection, lambda: connection.in_txn_statement(sql, params))
                self._check_chain()
                return await self._pool.on_writer(lambda: connection.in_txn_statement(sql, params))
            except TransactionAborted as error:
                await self._end(error)
                raise
            except SqlError:
                raise  # the statement is undone; the transaction stays open (rule 3)
            except StorageError as error:
                aborted = TransactionAborted(
                    f"{error.message}; the transaction was rolled back", REASON_STORAGE_FAILED, error.metadata
                )
                await self._end(aborted)
                raise aborted from None

    async def _connection_for_statement(self) -> SqlConnection:
        if self._connection is not None:
            return self._connection
        writer = await self._pool.lock_writer()  # rule 1: from the first statement on
        try:
            await self._pool.on_writer(lambda: writer.control("BEGIN"))
        except BaseException:
            self._pool.unlock_writer()
            raise
        self._generation = self._pool.generation
        self._connection = writer
        return writer

    def _check_chain(self) -> None:
        if self._generation != self._pool.generation:
            raise TransactionAborted(
                "a commit this transaction read from did not become durable; the transaction was rolled back, retry it",
                REASON_EARLIER_COMMIT_FAILED,
            )

    async def commit(self) -> int:
        async with self._call():
            connection = self._connection
            if connection is None:  # a write transaction that ran no statement
                self._finish(DONE)
                return 0
            if self.read_only:
                await self._release()
                self._finish(DONE)
                return 0
            try:
                self._check_chain()
                commits = await self._pool.on_writer(connection.commit_write)
            except TransactionAborted as error:
                await self._end(error)
                raise
            except SqlError as error:  # COMMIT refused (a deferred constraint): rolled back, SQLite's error told
                await self._end(
                    TransactionAborted(f"{error.message}; the transaction was rolled back", REASON_ROLLED_BACK)
                )
                raise
            except StorageError as error:
                aborted = TransactionAborted(
                    f"{error.message}; the transaction was rolled back", REASON_STORAGE_FAILED, error.metadata
                )
                await self._end(aborted)
                raise aborted from None
            self._connection = None
            self._pool.unlock_writer()  # handed off: the next writer may run (rule 5)
            self._finish(DONE)
        return await self._pool.durable(commits)

    async def rollback(self) -> None:
        async with self._lock:
            if self.state != OPEN:
                if self.state == ABORTED:
                    self._finish(DONE)  # it was rolled back already; now it is forgotten
                return
            await self._release()
            self._finish(DONE)

    # -- ending ---------------------------------------------------------------------------------------

    async def abort(self, error: TransactionAborted) -> None:
        """Roll back and give the lock or reader back; later calls get `error` (rule 4)."""
        async with self._lock:
            if self.state == OPEN:
                await self._end(error)

    async def _end(self, error: TransactionAborted) -> None:
        await self._release()
        self._aborted = error
        self._finish(ABORTED)

    async def _release(self) -> None:
        """Roll back on the connection held, and give it back."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await connection.call(connection.rollback_quietly)
        finally:
            if self.read_only:
                self._pool.give_reader(connection)
            else:
                self._pool.unlock_writer()

    def _finish(self, state: str) -> None:
        self.state = state
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._on_end(self)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self._idle_timeout_s, self._on_idle)

    def _on_idle(self) -> None:
        self._timer = None
        if self.state != OPEN or self._busy:
            return  # a call is running: the clock restarts when it ends
        log.warning("transaction %s was idle for %.0f s: rolled back", self.txn_id, self._idle_timeout_s)
        error = TransactionAborted(
            f"transaction {self.txn_id} was idle for over {self._idle_timeout_s:g} s and was rolled back; "
            "start a new one",
            REASON_IDLE_TIMEOUT,
        )
        self._abort_task = asyncio.get_running_loop().create_task(self.abort(error))
