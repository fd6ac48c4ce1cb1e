"""The engine's connections: one writer behind the engine's write lock, and a pool of readers.

Rules (this module owns them):
1. One writer. Write transactions run on the one writer connection, one at a time: a write transaction
   holds the write lock (an asyncio.Lock, waited for at most `lock_wait_s`) from its first statement until
   its COMMIT has queued its MTR for the hand-off, not across the durability wait
   (compute/sql/volume_source.py: commits pipeline, in order, acknowledged in LSN order).
2. A fresh writer after a failure. Before each write transaction, under the lock: when the commit chain
   broke (a commit failed) the source settles it, and the writer connection is reset (closed and
   opened again: SQLite's page cache may hold pages that never became durable); so is it after any storage
   error or unexpected failure on it.
3. Readers. A read-only statement or transaction takes a reader from the pool (waiting at most
   `READER_WAIT_S`), each used by one caller at a time, and gives it back.
4. Storage errors keep their status (a commit whose outcome is unknown says so: CommitTimeout), except
   that a fenced writer's refusals are TransactionAborted (FENCED): the volume cannot change through this
   writer any more.
5. Batches. Whole write transactions (an autocommit statement, a list of statements) wait in one queue;
   whoever takes the write lock for them runs every one waiting (up to `WRITE_BATCH_MAX`) in one job on
   the writer's thread, each still its own transaction and its own commit, so the hops between the event
   loop and the thread are paid once per batch, not once per transaction.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from sixfold.compute.errors import Fenced
from sixfold.compute.sql.connection import SqlConnection
from sixfold.compute.sql.errors import (
    REASON_ENGINE_CLOSED,
    REASON_FENCED,
    SqlBusy,
    SqlCorrupt,
    SqlError,
    SqlInternal,
    TransactionAborted,
)
from sixfold.compute.sql.vfs import WRITER_FILE, PageVfs, reader_file
from sixfold.compute.sql.volume_source import SqlVolume, VolumePageSource
from sixfold.storage.errors import StorageError
from sixfold.storage.tasks import cancel_and_wait

log = logging.getLogger("sixfold.compute.sql")

T = TypeVar("T")

READER_WAIT_S = 30.0
WRITE_BATCH_MAX = 64  # whole write transactions run in one job on the writer's thread


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_NOT_RUN = object()  # a transaction of a batch that waits for the next one
BATCH_CLOSE_GRACE_S = 5.0  # closing waits this long past the lock wait for the batch running to end


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def as_engine_error(error: StorageError) -> StorageError:
    """Rule 4."""
    if isinstance(error, Fenced):
        return TransactionAborted(error.message, REASON_FENCED)
    return error


class ConnectionPool:
    def __init__(self, volume: SqlVolume, *, readers: int, lock_wait_s: float, read_only: bool = False) -> None:
        assert readers >= 1
        self.volume = volume
        self.read_only = read_only  # a read replica's engine: the writer connection is never opened
        self.reader_count = readers
        self.lock_wait_s = lock_wait_s
        self.source = VolumePageSource(volume, asyncio.get_running_loop())
        self.vfs = PageVfs(self.source)
        self.writer = SqlConnection(self.vfs, WRITER_FILE, writer=True)
        self.readers = [SqlConnection(self.vfs, reader_file(i), writer=False) for i in range(readers)]
        self._free: asyncio.Queue[SqlConnection] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._writer_generation = 0  # the chain generation the writer connection was opened at
        self._writer_suspect = False
        self.commits = 0  # write transactions acknowledged durable
        self.closed: TransactionAborted | None = None  # set when the engine closes: every new call gets it
        self._batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []  # whole transactions waiting
        self._batcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Open every connection; create the database on an empty volume (and wait until that is durable). Read-only:
        only the readers (an empty volume stays empty until the writer creates the database)."""
        if self.read_only:
            for reader in self.readers:
                await reader.call(reader.open)
                self._free.put_nowait(reader)
            return
        try:
            await self.on_writer(self.writer.open)
            commits = await self.on_writer(lambda: self.writer.ensure_database(self.volume.page_size))
        except SqlCorrupt as error:
            raise SqlCorrupt(
                f"volume {self.volume.volume_id} does not hold a SQLite database ({error.message}): its pages were "
                "written some other way",
                error.metadata,
            ) from None
        await self.durable(commits)
        self._writer_generation = self.source.generation
        for reader in self.readers:
            await reader.call(reader.open)
            self._free.put_nowait(reader)

    async def close(self) -> None:
        """After `closed` is set: the batch running ends (its transactions hear their outcome), those waiting
        hear `closed`, and the connections close."""
        if self._batcher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._batcher), self.lock_wait_s + BATCH_CLOSE_GRACE_S)
            except TimeoutError:
                await cancel_and_wait(self._batcher)
        waiting, self._batch = self._batch, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(self.closed or TransactionAborted("the SQL engine closed", REASON_ENGINE_CLOSED))
        for connection in [self.writer, *self.readers]:
            await connection.shutdown()
        await self.source.close()
        self.vfs.unregister()

    # -- the writer (rules 1 and 2) ----------------------------------------------------------------

    async def lock_writer(self) -> SqlConnection:
        try:
            async with asyncio.timeout(self.lock_wait_s):
                await self._write_lock.acquire()
        except TimeoutError:
            raise SqlBusy(
                f"the database is busy: another write transaction held the write lock for over "
                f"{self.lock_wait_s:.0f} s; retry"
            ) from None
        try:
            self._check_open()
            await self._prepare_writer()
        except BaseException:
            self._write_lock.release()
            raise
        return self.writer

    def unlock_writer(self) -> None:
        self._write_lock.release()

    @property
    def generation(self) -> int:
        return self.source.generation

    async def _prepare_writer(self) -> None:
        try:
            broke = await self.source.settle()
        except StorageError as error:
            raise as_engine_error(error) from None
        if broke or self._writer_suspect or self._writer_generation != self.source.generation:
            log.info("volume %s: resetting the SQL writer connection", self.volume.volume_id)
            self._writer_suspect = False
            await self.on_writer(self.writer.reset)
            self._writer_generation = self.source.generation

    async def on_writer(self, job: Callable[[], T]) -> T:
        """Run a job on the writer's thread (the caller holds the write lock, or is opening)."""
        try:
            return await self.writer.call(job)
        except SqlError:
            raise
        except StorageError as error:
            self._writer_suspect = True
            raise as_engine_error(error) from None
        except BaseException:
            self._writer_suspect = True
            raise

    # -- whole write transactions, run in batches (rule 5) --------------------------------------------

    async def run_write(self, job: Callable[[], T]) -> T:
        """Run a whole write transaction (`job` runs BEGIN to COMMIT on the writer's thread) in the next
        batch; its result, or its error."""
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # its caller may have gone away
        self._batch.append((job, future))
        if self._batcher is None or self._batcher.done():
            self._batcher = asyncio.get_running_loop().create_task(self._run_batches(), name="sql-write-batches")
        return cast(T, await asyncio.shield(future))

    async def _run_batches(self) -> None:
        while self._batch:
            try:
                writer = await self.lock_writer()
            except BaseException as error:  # busy, settling, closed: every transaction waiting hears it
                waiting, self._batch = self._batch, []
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(error, Exception):
                    raise
                continue
            batch, self._batch = self._batch[:WRITE_BATCH_MAX], self._batch[WRITE_BATCH_MAX:]
            try:
                outcomes = await writer.call(functools.partial(self._run_batch, batch))
            finally:
                self.unlock_writer()
            not_run = []
            for (job, future), outcome in zip(batch, outcomes):
                if outcome is _NOT_RUN:
                    not_run.append((job, future))
                elif future.done():
                    continue  # its caller went away
                elif isinstance(outcome, _Failed):
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome)
            self._batch[:0] = not_run  # first in the next batch, once the writer is fresh

    def _run_batch(self, batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]]) -> list[Any]:
        """On the writer's thread: the transactions one after the other, each its own commit. After one that
        leaves the writer suspect (a storage error, a broken commit chain), the rest wait for the next batch."""
        outcomes: list[Any] = []
        for job, _ in batch:
            if self._writer_suspect or self.source.broken is not None:
                outcomes.append(_NOT_RUN)
                continue
            try:
                outcomes.append(job())
            except SqlError as error:
                outcomes.append(_Failed(error))
            except StorageError as error:
                self._writer_suspect = True
                outcomes.append(_Failed(as_engine_error(error)))
            except Exception as error:
                log.exception("volume %s: a write transaction failed unexpectedly", self.volume.volume_id)
                self._writer_suspect = True
                outcomes.append(_Failed(SqlInternal(f"the write transaction failed: {error!r}")))
        return outcomes

    async def durable(self, commits: list[int]) -> int:
        """Wait until the transaction that made these commits (the writer's `take_submitted`: one, or none if
        it wrote nothing) is durable: its commit LSN, or 0."""
        if not commits:
            return 0
        try:
            lsn = await self.source.durable(commits[-1])
        except StorageError as error:
            raise as_engine_error(error) from None
        self.commits += 1
        return lsn

    # -- readers (rule 3) ---------------------------------------------------------------------------

    async def take_reader(self) -> SqlConnection:
        try:
            async with asyncio.timeout(READER_WAIT_S):
                reader = await self._free.get()
        except TimeoutError:
            raise SqlBusy(
                f"all {self.reader_count} reader connections stayed busy for {READER_WAIT_S:.0f} s; retry"
            ) from None
        if self.closed is not None:
            self._free.put_nowait(reader)
            self._check_open()
        return reader

    def _check_open(self) -> None:
        if self.closed is not None:
            raise TransactionAborted(self.closed.message, self.closed.reason)

    def give_reader(self, reader: SqlConnection) -> None:
        self._free.put_nowait(reader)

    async def on_reader(self, reader: SqlConnection, job: Callable[[], T]) -> T:
        try:
            return await reader.call(job)
        except SqlError:
            raise
        except StorageError as error:
            raise as_engine_error(error) from None
