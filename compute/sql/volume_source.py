"""The page source over an open Volume: the bridge from SQLite's threads to the volume's event loop, the
overlay of commits not yet durable, and the chain of pipelined commits.

Rules (this module owns them):
1. Threads. SQLite calls the source from its connections' threads. A read runs a coroutine on the
   volume's loop (`asyncio.run_coroutine_threadsafe`) and waits for it, bounded. It is never called from
   the loop's own thread (that would deadlock) and never blocks the loop.
2. Hand-off without waiting. `submit` (the writer's commit point) does not wait for the loop: under the
   source's lock it numbers the commit (its ticket), puts its page images in the overlay and queues it;
   one task on the loop hands the queued commits to the volume (WritePath.submit) strictly in ticket
   order, so LSN order is commit order. SQLite's COMMIT returns at once and the write lock is free for the
   next transaction, which already reads this one's pages from the overlay.
3. Overlay. The writer reads the overlay (page -> image, ticket) before the volume (whose buffer cache
   holds only durable pages). An entry leaves once its commit is durable, unless a later one replaced it.
4. Acknowledgements. Each ticket has an ack future, resolved to the commit's CPL once durable, in CPL
   order as the volume releases commits: commits are acknowledged in LSN order.
5. The chain. Each commit's patches were made against the writer's view, which holds every commit before
   it; the volume gets it with that base (WritePath.submit `base_cpl`), so a regain that truncated the
   base refuses it. When one commit fails (before its hand-off, or in flight: outcome unknown, or not
   committed), every later one fails with it (it read what that one wrote), the chain is broken and
   `generation` counts up: the engine aborts the write transaction in progress and resets the writer
   connection, whose page cache may hold pages that never become durable. Before the next write, `settle`
   waits until the queue is drained and storage decided the fate of every commit handed off (all durable,
   or the newest truncated by a regain), so nothing in flight can land under the new connection's feet;
   then the overlay is emptied.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sixfold.compute.errors import CommitTimeout, NotCommitted
from sixfold.compute.read_points import ReadPoints
from sixfold.compute.sql.errors import (
    REASON_EARLIER_COMMIT_FAILED,
    REASON_ENGINE_CLOSED,
    REASON_FENCED,
    TransactionAborted,
    WriterSettling,
)
from sixfold.compute.volume_log import Patch
from sixfold.storage.errors import StorageError, Unavailable
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.truncation import TruncationRange

log = logging.getLogger("sixfold.compute.sql")

T = TypeVar("T")

READ_WAIT_S = 30.0  # a thread waits this long for a read (the volume bounds its own reads well below it)
SETTLE_WAIT_S = 10.0  # a write waits this long for storage to decide an earlier commit's fate
SETTLE_POLL_S = 0.05
ACKS_KEPT_MAX = 10_000  # acks nobody collected (their caller went away) are pruned past this many


class SqlVolume(Protocol):
    """What the engine needs of an open volume (compute/volume.py `Volume`)."""

    volume_id: str
    page_size: int
    epoch: int
    fenced: bool
    fenced_reason: str
    holds_database: bool  # set once an engine runs on it: raw page writes are refused from then on
    truncations: list[TruncationRange]
    read_points: ReadPoints

    @property
    def vdl(self) -> int: ...

    @property
    def page_count(self) -> int: ...

    async def read(
        self, page_nos: list[int], *, from_storage: bool = False
    ) -> tuple[int, list[tuple[int, bytes, int]]]: ...

    async def pin_read_point(self) -> int: ...

    def unpin_read_point(self, read_point: int) -> None: ...

    async def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]: ...

    async def submit(
        self, patches: list[Patch], *, base_cpl: int = 0, base_epoch: int = 0
    ) -> tuple[int, asyncio.Future[int]]: ...


@dataclass
class Broken:
    """The chain broke at commit `ticket` with `error`."""

    ticket: int
    error: StorageError


class VolumePageSource:
    def __init__(self, volume: SqlVolume, loop: asyncio.AbstractEventLoop) -> None:
        self.volume = volume
        self.page_size = volume.page_size
        self._loop = loop
        self._loop_thread = threading.get_ident()  # constructed on the loop
        self._lock = threading.Lock()  # the overlay, the tickets and `broken`: touched from both sides
        self._overlay: dict[int, tuple[bytes, int]] = {}  # page -> (image, ticket) of commits not yet durable
        self._next_ticket = 1
        self._queued = 0  # commits submitted and not yet handed off (or failed)
        self.broken: Broken | None = None
        self.generation = 0  # counts chain breaks (rule 5)
        # On the loop only:
        self._queue: asyncio.Queue[tuple[int, list[Patch], list[int]]] = asyncio.Queue()
        self._acks: dict[int, asyncio.Future[int]] = {}  # ticket -> ack, until the engine collects it
        self._base = (0, 0)  # (CPL, epoch) of the newest MTR handed off: what the next one builds on
        self._last_cpl = 0
        self.handoffs = 0
        self._worker = loop.create_task(self._hand_off_in_order(), name=f"sql-handoff-{volume.volume_id}")

    async def close(self) -> None:
        await cancel_and_wait(self._worker)
        closed = TransactionAborted("the SQL engine closed before the commit was handed off", REASON_ENGINE_CLOSED)
        while not self._queue.empty():
            ticket, _, _ = self._queue.get_nowait()
            self._fail(ticket, closed)

    # -- called from SQLite's threads (rules 1 and 2) ------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], wait_s: float, doing: str) -> T:
        assert threading.get_ident() != self._loop_thread, "a page source call from the event loop would deadlock"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(wait_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Unavailable(f"storage did not answer within {wait_s:.0f} s while {doing}; retry") from None

    def read_latest(self, page_nos: list[int]) -> list[bytes]:
        return self._call(self._latest(page_nos), READ_WAIT_S, "reading pages")

    def pin(self) -> int:
        return self._call(self.volume.pin_read_point(), READ_WAIT_S, "taking a read point")

    def unpin(self, read_point: int) -> None:
        self._loop.call_soon_threadsafe(self.volume.unpin_read_point, read_point)

    def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]:
        return self._call(self._at(page_nos, read_point), READ_WAIT_S, "reading pages")

    def submit(self, patches: list[Patch], images: dict[int, bytes]) -> int:
        """Queue one commit for its hand-off (rule 2); its ticket, which `durable` resolves to its CPL."""
        with self._lock:
            self._check_chain()
            ticket = self._next_ticket
            self._next_ticket += 1
            self._queued += 1
            for page_no, image in images.items():
                self._overlay[page_no] = (image, ticket)
        self._loop.call_soon_threadsafe(self._queue.put_nowait, (ticket, patches, sorted(images)))
        return ticket

    def _check_chain(self) -> None:
        if self.broken is not None:
            raise TransactionAborted(
                f"the transaction read from a commit that failed ({self.broken.error.message}); nothing was "
                "written, retry it",
                REASON_EARLIER_COMMIT_FAILED,
            )

    # -- on the loop ----------------------------------------------------------------------------

    async def _latest(self, page_nos: list[int]) -> list[bytes]:
        out: dict[int, bytes] = {}
        from_volume = []
        with self._lock:
            for page_no in page_nos:
                entry = self._overlay.get(page_no)
                if entry is not None:
                    out[page_no] = entry[0]
                elif page_no >= self.volume.page_count:
                    out[page_no] = bytes(self.page_size)  # beyond the volume: never written
                else:
                    from_volume.append(page_no)
        if from_volume:
            _, pages = await self.volume.read(from_volume)
            out.update((page_no, data) for page_no, data, _ in pages)
        return [out[p] for p in page_nos]

    async def _at(self, page_nos: list[int], read_point: int) -> list[bytes]:
        beyond = [p for p in page_nos if p >= self.volume.page_count]
        inside = [p for p in page_nos if p < self.volume.page_count]
        out = dict(zip(inside, await self.volume.read_at(inside, read_point))) if inside else {}
        out.update((p, bytes(self.page_size)) for p in beyond)
        return [out[p] for p in page_nos]

    def _ack(self, ticket: int) -> asyncio.Future[int]:
        ack = self._acks.get(ticket)
        if ack is None:
            ack = self._acks[ticket] = self._loop.create_future()
            ack.add_done_callback(_retrieve)
        return ack

    async def _hand_off_in_order(self) -> None:
        while True:
            ticket, patches, pages = await self._queue.get()
            try:
                await self._hand_off(ticket, patches, pages)
            finally:
                with self._lock:
                    self._queued -= 1

    async def _hand_off(self, ticket: int, patches: list[Patch], pages: list[int]) -> None:
        ack = self._ack(ticket)
        if self.broken is not None:  # queued behind a commit that failed: it read what that one wrote
            if not ack.done():  # `_fail` may have failed it already, with the chain
                ack.set_exception(self._chain_error(self.broken))
            return
        base_cpl, base_epoch = self._base
        try:
            cpl, future = await self.volume.submit(patches, base_cpl=base_cpl, base_epoch=base_epoch)
        except StorageError as error:  # nothing was handed off
            self._fail(ticket, error)
            return
        except Exception as error:  # a bug must not stop the commits queued behind it
            log.exception("volume %s: handing commit %d off failed", self.volume.volume_id, ticket)
            self._fail(ticket, CommitTimeout(f"handing the commit off failed: {error!r}; its outcome is unknown"))
            return
        self.handoffs += 1
        self._base = (cpl, self.volume.epoch)
        self._last_cpl = cpl
        future.add_done_callback(lambda done: self._on_volume_done(ticket, cpl, pages, done))
        self._prune_acks()

    def _on_volume_done(self, ticket: int, cpl: int, pages: list[int], done: asyncio.Future[int]) -> None:
        error: StorageError | None = None
        if done.cancelled():
            error = CommitTimeout(f"the commit with CPL {cpl} was abandoned in flight; its outcome is unknown")
        else:
            failure = done.exception()
            if isinstance(failure, StorageError):
                error = failure
            elif failure is not None:
                error = CommitTimeout(f"the commit with CPL {cpl} failed in flight: {failure!r}")
        if error is not None:
            self._fail(ticket, error)
            return
        with self._lock:
            for page_no in pages:
                if self._overlay.get(page_no, (b"", 0))[1] == ticket:
                    del self._overlay[page_no]
        ack = self._ack(ticket)
        if not ack.done():
            ack.set_result(cpl)

    def _fail(self, ticket: int, error: StorageError) -> None:
        """The commit failed; unless the chain broke already, it breaks here (rule 5)."""
        ack = self._ack(ticket)
        if not ack.done():
            ack.set_exception(error)
        with self._lock:
            if self.broken is not None:
                return
            self.broken = Broken(ticket, error)
            self.generation += 1
        log.warning(
            "volume %s: commit %d failed (%s); every later commit fails with it and the SQL writer connection is reset",
            self.volume.volume_id,
            ticket,
            error.message,
        )
        chained = self._chain_error(self.broken)
        for later, later_ack in self._acks.items():
            if later > ticket and not later_ack.done():
                later_ack.set_exception(chained)

    @staticmethod
    def _chain_error(broken: Broken) -> StorageError:
        if isinstance(broken.error, CommitTimeout):
            return CommitTimeout(
                f"outcome unknown: the commit built on an earlier one whose outcome is unknown ({broken.error.message})"
            )
        if isinstance(broken.error, NotCommitted):
            return NotCommitted(
                f"not committed: the commit built on an earlier one that was not ({broken.error.message})"
            )
        return TransactionAborted(
            f"the commit built on an earlier one that failed ({broken.error.message}); nothing was written, retry it",
            REASON_EARLIER_COMMIT_FAILED,
        )

    def _prune_acks(self) -> None:
        if len(self._acks) > ACKS_KEPT_MAX:
            for ticket in [t for t, ack in self._acks.items() if ack.done()][: len(self._acks) - ACKS_KEPT_MAX]:
                del self._acks[ticket]

    # -- for the engine (on the loop) ------------------------------------------------------------

    async def durable(self, ticket: int) -> int:
        """Wait until the commit is durable (rule 4): its CPL; its failure raises."""
        ack = self._ack(ticket)
        try:
            return await asyncio.shield(ack)
        finally:
            if ack.done():
                self._acks.pop(ticket, None)

    def settled(self) -> bool:
        """Whether every commit queued was handed off or failed, and storage decided the fate of every one
        handed off (rule 5)."""
        if self.broken is None:
            return True
        if self.volume.fenced:
            raise TransactionAborted(
                f"the writer was fenced: {self.volume.fenced_reason}; it may no longer change volume "
                f"{self.volume.volume_id}",
                REASON_FENCED,
            )
        with self._lock:
            if self._queued:
                return False
        last = self._last_cpl
        return self.volume.vdl >= last or any(r.start_lsn <= last <= r.end_lsn for r in self.volume.truncations)

    async def settle(self) -> bool:
        """Before a write: once the chain broke, wait (bounded) until it settled, then start afresh. True when
        it had broken (the engine then resets the writer connection)."""
        if self.broken is None:
            return False
        deadline = self._loop.time() + SETTLE_WAIT_S
        while not self.settled():
            if self._loop.time() >= deadline:
                raise WriterSettling(
                    f"writes wait until storage decides the outcome of the commits up to CPL {self._last_cpl} "
                    f"(a commit failed: {self.broken.error.message}); retry in a moment"
                )
            await asyncio.sleep(SETTLE_POLL_S)
        log.info("volume %s: the commit chain settled at VDL %d; writes resume", self.volume.volume_id, self.volume.vdl)
        with self._lock:
            self.broken = None
            self._overlay.clear()
        self._base = (0, 0)  # the next writer connection reads only durable pages
        return True


def _retrieve(future: asyncio.Future[int]) -> None:
    """An ack nobody awaits (its caller went away) must not log 'exception never retrieved'."""
    if not future.cancelled():
        future.exception()
