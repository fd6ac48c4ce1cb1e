"""One SQLite connection over the volume and the thread it runs on.

SQLite calls block, and its VFS callbacks wait for the volume's event loop, so each connection has a
thread of its own (a one-thread executor); the loop only awaits it (`call`). A job runs to its end even
when the caller that awaits it is cancelled (the caller then still waits for it), so the engine's locks
always describe what the thread is doing.

Rules (this module owns them):
1. Settings. Every connection runs `journal_mode=MEMORY` (no journal file: compute/sql/vfs.py rule 1),
   `locking_mode=NORMAL` (a reader re-checks page 1 at each transaction), `synchronous=FULL` (SQLite
   calls xSync at each commit: the commit point) and `temp_store=MEMORY`, and SQLite's own limits
   SQLITE_LIMIT_LENGTH and SQLITE_LIMIT_SQL_LENGTH (compute/sql/statements.py). Readers open read-only.
2. The engine owns transactions. The authorizer refuses, with a sentence, what would take them from it or
   break rule 1: BEGIN, COMMIT, ROLLBACK, SAVEPOINT and RELEASE in a client's statement, ATTACH of a file,
   and setting the pragmas of rule 1 (and page_size, writable_schema, mmap_size, query_only). It checks the
   client's statement when SQLite prepares it; what SQLite prepares itself while that one runs (VACUUM's
   own statements) passes. The engine's own transaction statements run with the authorizer off and are
   never cached, so a client's identical text is still checked.
3. One statement per call: a second one in the same text is refused before it runs (in an autocommit
   write the first one is then rolled back with the transaction the engine wraps it in).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar

import apsw

from sixfold.compute.sql.errors import (
    REASON_ENGINE_CLOSED,
    REASON_ROLLED_BACK,
    SqlError,
    SqlInternal,
    SqlInvalid,
    TransactionAborted,
    from_sqlite,
)
from sixfold.compute.sql.statements import (
    SQL_BYTES_MAX,
    VALUE_BYTES_MAX,
    ResultBuilder,
    StatementResult,
    Value,
    runs_bare,
)
from sixfold.compute.sql.vfs import WRITER_FILE, PageVfs, ReaderFile, WriterFile
from sixfold.storage.errors import StorageError

T = TypeVar("T")

WRITER_CACHE_KIB = 64 * 1024  # SQLite's page cache on the writer: its working set between commits
READER_CACHE_KIB = 16 * 1024  # and on each reader (emptied whenever a commit came between two transactions)
_SETTINGS = ("journal_mode=MEMORY", "locking_mode=NORMAL", "synchronous=FULL", "temp_store=MEMORY")
_ENGINE_PRAGMAS = frozenset(
    {
        "journal_mode",
        "locking_mode",
        "synchronous",
        "temp_store",
        "temp_store_directory",
        "data_store_directory",
        "page_size",
        "writable_schema",
        "mmap_size",
        "query_only",
    }
)


class SqlConnection:
    def __init__(self, vfs: PageVfs, filename: str, *, writer: bool) -> None:
        self.vfs = vfs
        self.filename = filename
        self.writer = writer
        self._db: apsw.Connection | None = None
        self._denied = ""  # why the authorizer refused the statement being prepared
        self._executing = False  # the client's statement runs: what is prepared now is SQLite's own
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sql-{filename}")

    # -- on the loop -------------------------------------------------------------------------------

    async def call(self, job: Callable[[], T]) -> T:
        """Run `job` on this connection's thread; it runs to its end even if the caller is cancelled."""
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, job)
        except RuntimeError:  # the executor was shut down: the engine closed (a stop or a role change) meanwhile
            raise TransactionAborted(
                f"the SQL engine of {self.filename} closed (the compute node is stopping, or changing role in a "
                "failover); the statement did not run",
                REASON_ENGINE_CLOSED,
            ) from None
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await future
            raise

    async def shutdown(self) -> None:
        with contextlib.suppress(BaseException):
            await self.call(self.close)
        self._executor.shutdown(wait=False)

    # -- on the connection's thread ---------------------------------------------------------------

    @property
    def db(self) -> apsw.Connection:
        if self._db is None:
            raise SqlInternal(f"connection {self.filename} is closed")
        return self._db

    def open(self) -> None:
        flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE if self.writer else apsw.SQLITE_OPEN_READONLY
        db = apsw.Connection(self.filename, flags=flags, vfs=self.vfs.vfs_name)
        try:
            for setting in _SETTINGS:
                db.execute(f"PRAGMA {setting}").fetchall()
            db.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB if self.writer else READER_CACHE_KIB}").fetchall()
            db.limit(apsw.SQLITE_LIMIT_LENGTH, VALUE_BYTES_MAX)
            db.limit(apsw.SQLITE_LIMIT_SQL_LENGTH, SQL_BYTES_MAX)
        except BaseException as error:
            db.close(True)
            if isinstance(error, apsw.Error):
                raise from_sqlite(error) from None
            raise
        db.authorizer = self._authorize
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            db.close(True)

    def reset(self) -> None:
        """Close and open again: SQLite's page cache starts empty."""
        self.close()
        self.open()

    def ensure_database(self, page_size: int) -> list[int]:
        """Create the database on an empty volume (its page size the volume's); check an existing one's.
        Returns the commits it made (`take_submitted`)."""
        if self._writer_file().size_pages() == 0:
            self.control(f"PRAGMA page_size={page_size}")
            self.control("PRAGMA auto_vacuum=NONE")
            self.control("PRAGMA user_version=0")  # writes page 1: the database exists from here on
        try:
            found = self.db.execute("PRAGMA page_size").fetchall()[0][0]
        except apsw.Error as error:
            raise from_sqlite(error) from None
        if found != page_size:
            raise SqlInternal(
                f"the database on the volume has {found}-byte pages; the volume has {page_size}-byte pages"
            )
        return self.take_submitted()

    def _writer_file(self) -> WriterFile:
        file = self.vfs.files.get(self.filename)
        assert isinstance(file, WriterFile) and self.filename == WRITER_FILE, self.filename
        return file

    def take_submitted(self) -> list[int]:
        """The commits (page source numbers) this writer connection submitted since the last call."""
        return self._writer_file().take_submitted()

    def read_point(self) -> int:
        """The read point of the read transaction open on this reader."""
        file = self.vfs.files.get(self.filename)
        assert isinstance(file, ReaderFile) and file.read_point is not None, "no read transaction is open"
        return file.read_point

    def control(self, sql: str) -> None:
        """One of the engine's own statements (rule 2): the authorizer off, never cached."""
        db = self.db
        db.authorizer = None
        try:
            db.execute(sql, can_cache=False).fetchall()
        except StorageError:
            raise
        except apsw.Error as error:
            raise from_sqlite(error) from None
        finally:
            db.authorizer = self._authorize

    def rollback_quietly(self) -> None:
        if self._db is not None and self._db.in_transaction:
            with contextlib.suppress(StorageError, apsw.Error):
                self.control("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self._db is not None and self._db.in_transaction

    def statement(self, sql: str, params: Sequence[Value]) -> StatementResult:
        """Run one statement (rule 3), collect its result within the limits."""
        db = self.db
        cursor = db.cursor()
        columns: list[str] = []
        started = 0

        def trace(running: apsw.Cursor, text: str, bindings: object) -> bool:
            nonlocal started, columns
            started += 1
            if started == 1:
                columns = [d[0] for d in running.description]
                self._executing = True  # from here on SQLite prepares its own statements (VACUUM's)
            return started == 1

        cursor.exec_trace = trace
        before = db.total_changes()
        self._denied = ""
        self._executing = False
        builder = ResultBuilder()
        try:
            for row in cursor.execute(sql, tuple(params)):
                builder.add(row)
        except apsw.ExecTraceAbort:
            raise SqlInvalid(
                "the text holds more than one statement; send one statement per call (several run as one "
                "transaction when sent as a list)"
            ) from None
        except apsw.AuthError as error:
            raise SqlInvalid(self._denied or str(error)) from None
        except (StorageError, SqlError):
            raise
        except (apsw.Error, TypeError, OverflowError, ValueError) as error:
            raise from_sqlite(error) from None
        finally:
            self._executing = False
            cursor.close(True)
        changed = db.total_changes() != before
        return StatementResult(columns, builder.rows, db.changes() if changed else 0, db.last_insert_rowid())

    def in_txn_statement(self, sql: str, params: Sequence[Value]) -> StatementResult:
        """A statement inside an open transaction: a failure SQLite answered by rolling the whole transaction
        back (not just the statement) is a TransactionAborted."""
        try:
            return self.statement(sql, params)
        except SqlError as error:
            if self.db.in_transaction:
                raise
            raise TransactionAborted(
                f"{error.message}; SQLite rolled the whole transaction back", REASON_ROLLED_BACK, error.metadata
            ) from None

    def autocommit(self, sql: str, params: Sequence[Value]) -> tuple[StatementResult, list[int]]:
        """One statement on the writer, in a transaction of its own (compute/sql/statements.py rule 4)."""
        if not runs_bare(sql):
            results, commits = self.transaction([(sql, params)], number=False)
            return results[0], commits
        self.take_submitted()
        try:
            result = self.statement(sql, params)
        except BaseException:
            self.rollback_quietly()
            self.take_submitted()
            raise
        return result, self.take_submitted()

    def transaction(
        self, statements: Sequence[tuple[str, Sequence[Value]]], *, number: bool = True
    ) -> tuple[list[StatementResult], list[int]]:
        """All the statements or none, on the writer; then its commit (`take_submitted`: none if it wrote
        nothing)."""
        self.take_submitted()
        self.control("BEGIN")
        results = []
        try:
            for index, (sql, params) in enumerate(statements):
                try:
                    results.append(self.statement(sql, params))
                except SqlError as error:
                    if number:
                        error.metadata["statement_index"] = str(index)
                    raise
            self.control("COMMIT")
        except BaseException:
            self.rollback_quietly()
            self.take_submitted()
            raise
        return results, self.take_submitted()

    def begin_read(self) -> int:
        """Open a read transaction on this reader now (not at its first statement): its read point."""
        self.control("BEGIN")
        self.control("PRAGMA schema_version")  # reads page 1: SQLite takes its SHARED lock, the file pins
        return self.read_point()

    def commit_write(self) -> list[int]:
        """COMMIT the open write transaction: its commit (`take_submitted`)."""
        try:
            self.control("COMMIT")
        except BaseException:
            self.rollback_quietly()
            self.take_submitted()
            raise
        return self.take_submitted()

    def _authorize(
        self, action: int, arg1: str | None, arg2: str | None, database: str | None, trigger: str | None
    ) -> int:
        if self._executing:
            return apsw.SQLITE_OK
        if action in (apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT):
            self._denied = (
                "BEGIN, COMMIT, ROLLBACK, SAVEPOINT and RELEASE are the engine's: run several statements as one "
                "transaction by sending them as a list, or open an interactive transaction"
            )
            return apsw.SQLITE_DENY
        if action == apsw.SQLITE_ATTACH and arg1:  # '' is a temporary database (VACUUM attaches one)
            self._denied = "the volume holds one database: ATTACH of a file is not available"
            return apsw.SQLITE_DENY
        if action == apsw.SQLITE_PRAGMA and arg1 is not None and arg1.lower() in _ENGINE_PRAGMAS and arg2 is not None:
            self._denied = f"PRAGMA {arg1.lower()} is set by the engine (SQLite on the volume needs it)"
            return apsw.SQLITE_DENY
        return apsw.SQLITE_OK
