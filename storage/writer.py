"""The node's one LMDB writer: group commit, and the node-writer handle its background tasks hold.

Every LMDB write transaction runs on one thread (the writer executor), so LMDB sees one writer.
`GroupCommitter` folds append batches from every stream into one synced transaction per group
(`GROUP_BATCHES_MAX` batches, `GROUP_RECORDS_MAX` records at most). `WriterHandle` is the node-writer
handle (the protocols are storage/node_writer.py): it runs a store method on the writer thread, or
submits a batch to group commit; gossip, scrubbing, coalescing and the disk doctor get it, never the
gRPC servicer (storage/node.py) that owns both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TypeVar

from sixfold.storage.errors import StorageError

if TYPE_CHECKING:
    from sixfold.storage.segment import AppendBatch
    from sixfold.storage.store import BatchResult, SegmentStore

log = logging.getLogger(__name__)

GROUP_BATCHES_MAX = 512  # batches folded into one synced transaction
GROUP_RECORDS_MAX = 50_000

T = TypeVar("T")


class GroupCommitter:
    """Folds batches from every stream into one LMDB transaction (one fsync) per group.

    A group leaves as soon as the writer thread is free; batches that arrive while a
    group is being synced form the next group.
    """

    def __init__(self, store: SegmentStore, writer: Executor) -> None:
        self._store = store
        self._writer = writer
        self._queue: list[tuple[AppendBatch, asyncio.Future[BatchResult]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.groups_committed = 0
        self.batches_committed = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-committer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, batch: AppendBatch) -> asyncio.Future[BatchResult]:
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        # A submitter may be gone by the time its group commits (its stream broke): its refusal is then
        # nobody's to read, and must not be logged as an error ("Future exception was never retrieved").
        future.add_done_callback(_mark_retrieved)
        self._queue.append((batch, future))
        self._wakeup.set()
        return future

    def _take_group(self) -> list[tuple[AppendBatch, asyncio.Future[BatchResult]]]:
        group: list[tuple[AppendBatch, asyncio.Future[BatchResult]]] = []
        records = 0
        while self._queue and len(group) < GROUP_BATCHES_MAX:
            batch, _future = self._queue[0]
            if group and records + len(batch.records) > GROUP_RECORDS_MAX:
                break
            group.append(self._queue.pop(0))
            records += len(batch.records)
        return group

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                group = self._take_group()
                results: list[BatchResult | StorageError]
                try:
                    results = await loop.run_in_executor(
                        self._writer, self._store.commit_appends, [b for b, _ in group]
                    )
                except StorageError as error:  # the disk (full, failed): reported once by the disk, no traceback
                    results = [error] * len(group)
                except Exception as exc:  # a bug: nobody in the group is acknowledged
                    log.exception("group commit of %d batches failed", len(group))
                    failure = StorageError(f"the node could not persist the batch: {exc}")
                    failure.status_code_name = "UNAVAILABLE"
                    results = [failure] * len(group)
                self.groups_committed += 1
                self.batches_committed += len(group)
                for (_, future), result in zip(group, results):
                    if future.done():
                        continue
                    if isinstance(result, StorageError):
                        future.set_exception(result)
                    else:
                        future.set_result(result)


def _mark_retrieved(future: asyncio.Future[BatchResult]) -> None:
    if not future.cancelled():
        future.exception()


class WriterHandle:
    """The node-writer handle (storage/node_writer.py `NodeWriter`): the writer thread and group commit."""

    def __init__(self, writer: Executor, committer: GroupCommitter) -> None:
        self._writer = writer
        self._committer = committer

    async def __call__(self, fn: Callable[..., T], /, *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    def submit(self, batch: AppendBatch) -> asyncio.Future[BatchResult]:
        return self._committer.submit(batch)
