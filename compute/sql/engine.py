"""SqlEngine: SQLite on one open volume, for many clients at once.

The engine is the API the SQL and key-value services use. Its parts: compute/sql/vfs.py (SQLite's file
is the volume; one commit is one MTR), compute/sql/volume_source.py (the bridge to the volume, pipelined
commits), compute/sql/pool.py (one writer behind a write lock, a pool of readers), compute/sql/transaction.py
(interactive transactions) and compute/sql/statements.py (values, limits, routing).

Rules (this module owns them):
1. `execute` runs one statement in autocommit: a read-only one on a reader at the current VDL, anything
   else on the writer in a transaction of its own. `run_transaction` runs a list of statements on the
   writer, all or nothing, as one MTR. Each returns once its commit is durable, with its commit LSN (0 when
   it wrote nothing); a failed statement writes nothing.
2. Transactions are known by id from `begin` until they finish; an aborted one is remembered (up to
   `ABORTED_KEPT_MAX`) so that its next call says why, and forgotten once rolled back; any other id is
   UnknownTransaction (NOT_FOUND).
3. `close` aborts every open transaction (TransactionAborted, ENGINE_CLOSED) and closes the connections;
   a call after it gets the same.
4. Read-only (`read_only=True`, a read replica's engine over compute/replica_volume.py): no writer
   connection and no database creation. Read-only statements and transactions run on the readers, each at
   one pinned read point, as on the writer; `run_transaction` runs its statements in one read transaction.
   Anything that writes (a write statement, a write in `run_transaction`, `begin(read_only=False)`) fails
   with FAILED_PRECONDITION (ReadReplicaWrite: send writes to the writer), and nothing changes. Until the
   writer has created the database (page 0 is empty), statements fail with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Sequence

from sixfold.compute.replica_state import ReadReplicaWrite, read_replica_sentence
from sixfold.compute.sql.errors import (
    REASON_ENGINE_CLOSED,
    SqlReadOnly,
    SqlResourceExhausted,
    TransactionAborted,
    UnknownTransaction,
)
from sixfold.compute.sql.pages import header_page_count
from sixfold.compute.sql.pool import ConnectionPool
from sixfold.compute.sql.statements import StatementResult, Value, check_statement, looks_read_only
from sixfold.compute.sql.transaction import ABORTED, Transaction
from sixfold.compute.sql.volume_source import SqlVolume
from sixfold.storage.errors import StorageError, Unavailable

__all__ = ["SqlEngine", "StatementResult", "Transaction", "Value"]

ABORTED_KEPT_MAX = 1024  # aborted transactions remembered so that their next call says why
TRANSACTIONS_MAX = 10_000  # open interactive transactions
STATEMENTS_PER_TRANSACTION_MAX = 10_000  # in one run_transaction call
LOCK_WAIT_GRACE_S = 10.0  # a writer waits for the lock this long past the idle timeout (which frees it)


class SqlEngine:
    def __init__(
        self, volume: SqlVolume, *, idle_timeout_s: float = 30.0, readers: int = 4, read_only: bool = False
    ) -> None:
        assert idle_timeout_s > 0 and readers >= 1
        self.volume = volume
        self.read_only = read_only
        self._database_seen = False  # read-only: the writer created the database (it never goes away)
        self.idle_timeout_s = idle_timeout_s
        self.reader_count = readers
        self._pool: ConnectionPool | None = None
        self._transactions: dict[str, Transaction] = {}
        self._aborted: OrderedDict[str, Transaction] = OrderedDict()
        self._closed: TransactionAborted | None = None

    @property
    def pool(self) -> ConnectionPool:
        self._check_open()
        if self._pool is None:
            raise TransactionAborted("the SQL engine has not started", REASON_ENGINE_CLOSED)
        return self._pool

    @property
    def commits(self) -> int:
        """Write transactions acknowledged durable."""
        return self._pool.commits if self._pool else 0

    def _check_open(self) -> None:
        if self._closed is not None:
            raise TransactionAborted(self._closed.message, self._closed.reason)

    async def start(self) -> None:
        """Open the connections; create the SQLite database on an empty volume."""
        assert self._pool is None, "started twice"
        pool = ConnectionPool(
            self.volume,
            readers=self.reader_count,
            lock_wait_s=self.idle_timeout_s + LOCK_WAIT_GRACE_S,
            read_only=self.read_only,
        )
        try:
            await pool.open()
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self, why: str = "") -> None:
        """Abort every open transaction and close; `why`: the sentence's cause (default: the node stopping)."""
        if self._closed is not None:
            return
        cause = why or "the compute node is stopping or restarting, or changing role in a failover"
        self._closed = TransactionAborted(
            f"the SQL engine on volume {self.volume.volume_id} closed ({cause}); the transaction was rolled back",
            REASON_ENGINE_CLOSED,
        )
        pool = self._pool
        if pool is not None:
            pool.closed = self._closed
        await asyncio.gather(*(txn.abort(self._closed) for txn in list(self._transactions.values())))
        if pool is not None:
            await pool.close()

    # -- autocommit (rule 1) -------------------------------------------------------------------------

    async def execute(self, sql: str, params: Sequence[Value] = ()) -> tuple[StatementResult, int]:
        pool = self.pool
        check_statement(sql, params)
        if self.read_only and not looks_read_only(sql):
            raise self.writes_refused()
        if looks_read_only(sql):
            await self._check_database()
            reader = await pool.take_reader()
            try:
                return await pool.on_reader(reader, lambda: reader.statement(sql, params)), 0
            except SqlReadOnly:
                if self.read_only:
                    raise self.writes_refused() from None
                # it writes after all: the writer runs it (compute/sql/statements.py rule 3)
            finally:
                pool.give_reader(reader)
        result, commits = await pool.run_write(lambda: pool.writer.autocommit(sql, params))
        return result, await pool.durable(commits)

    async def run_transaction(
        self, statements: Sequence[tuple[str, Sequence[Value]]]
    ) -> tuple[list[StatementResult], int]:
        pool = self.pool
        if len(statements) > STATEMENTS_PER_TRANSACTION_MAX:
            raise SqlResourceExhausted(
                f"the transaction has {len(statements)} statements; at most {STATEMENTS_PER_TRANSACTION_MAX} "
                "run in one call"
            )
        for index, (sql, params) in enumerate(statements):
            try:
                check_statement(sql, params)
            except Exception as error:
                if hasattr(error, "metadata"):
                    error.metadata["statement_index"] = str(index)
                raise
        if not statements:
            return [], 0
        if self.read_only:
            return await self._read_transaction(statements), 0
        results, commits = await pool.run_write(lambda: pool.writer.transaction(statements))
        return results, await pool.durable(commits)

    # -- interactive transactions (rule 2) ---------------------------------------------------------------

    async def _read_transaction(self, statements: Sequence[tuple[str, Sequence[Value]]]) -> list[StatementResult]:
        """Rule 4: the statements in one read transaction on a reader; one that writes refuses them all."""
        await self._check_database()
        txn = await self.begin(read_only=True)
        try:
            results = []
            for index, (sql, params) in enumerate(statements):
                try:
                    results.append(await txn.execute(sql, params))
                except SqlReadOnly:
                    raise self.writes_refused() from None
                except StorageError as error:
                    error.metadata["statement_index"] = str(index)
                    raise
            return results
        finally:
            await txn.rollback()

    def writes_refused(self) -> StorageError:
        """Rule 4's refusal: the volume's own sentence (a ReplicaVolume names its instance and writer)."""
        refused = getattr(self.volume, "writes_refused", None)
        if callable(refused):
            error = refused()
            if isinstance(error, StorageError):
                return error
        return ReadReplicaWrite(read_replica_sentence("this compute instance", ""))

    async def _check_database(self) -> None:
        """Rule 4: a read-only engine serves only once the writer created the database."""
        if not self.read_only or self._database_seen:
            return
        if self.volume.page_count > 0:
            _, pages = await self.volume.read([0])
            self._database_seen = header_page_count(pages[0][1]) > 0
        if not self._database_seen:
            raise Unavailable(
                f"volume {self.volume.volume_id} holds no SQLite database yet: the writer has not created it "
                "(it does on its first SQL request); retry in a moment"
            )

    async def begin(self, read_only: bool = False) -> Transaction:
        pool = self.pool
        if self.read_only and not read_only:
            raise self.writes_refused()
        if self.read_only:
            await self._check_database()
        if len(self._transactions) >= TRANSACTIONS_MAX:
            raise SqlResourceExhausted(
                f"{len(self._transactions)} transactions are open; at most {TRANSACTIONS_MAX}: finish some first"
            )
        txn = Transaction(pool, uuid.uuid4().hex, read_only, self.idle_timeout_s, self._on_end)
        await txn.start()
        self._transactions[txn.txn_id] = txn
        return txn

    def transaction(self, txn_id: str) -> Transaction:
        txn = self._transactions.get(txn_id) or self._aborted.get(txn_id)
        if txn is None:
            raise UnknownTransaction(
                f"no open transaction has id {txn_id!r}: it finished, was never begun, or the engine restarted"
            )
        return txn

    def _on_end(self, txn: Transaction) -> None:
        self._transactions.pop(txn.txn_id, None)
        self._aborted.pop(txn.txn_id, None)
        if txn.state == ABORTED:
            self._aborted[txn.txn_id] = txn
            while len(self._aborted) > ABORTED_KEPT_MAX:
                self._aborted.popitem(last=False)
