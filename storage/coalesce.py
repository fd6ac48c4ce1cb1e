"""Coalescing and garbage collection on a storage node: the background task.

The adapter half (storage/retention.py decides what is folded, where the horizon
goes and what GC keeps). Every `interval_s`, for each segment:

1. it samples (the event loop's clock, SCL) for the history window;
2. a segment whose SCL is below its GC floor is skipped (it waits for hydration);
3. coalescing: pages with a long chain of records above their newest version are
   found in short read transactions (`COALESCE_PAGES_PER_SCAN_MAX` pages each) and
   folded on the node's writer thread, `COALESCE_PAGES_PER_TXN_MAX` pages per
   write transaction, so appends wait for at most one short transaction. Only the
   first pass after start looks at every page; later ones look only at the pages
   the store counted as it committed appends: a page is read once its count of
   records above its newest version (never below the true number; appends add to
   it) reaches the chain minimum; a look sets it to the exact number, and a fold
   counts off only the records it really took once its transaction committed (a
   failed fold takes none, so the page is read again next round);
4. the horizon is recomputed from the writer's reported lowest read point, the
   pinned LSNs and the history window; when it rises it is made durable first,
   then GC walks the pages `GC_PAGES_PER_TXN_MAX` per write transaction.
   GC also runs after coalescing wrote versions at or below the horizon.

No transaction is held across an await; between two transactions the task
sleeps `TICK_PAUSE_S` so the event loop and the writer stay responsive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sixfold.storage.errors import StorageError, UnknownSegment
from sixfold.storage.lmdb_env import OK
from sixfold.storage.retention import COALESCE_CHAIN_MIN, HistoryWindow, next_horizon
from sixfold.storage.tasks import cancel_and_wait

if TYPE_CHECKING:
    from sixfold.storage.node_writer import OnWriter
    from sixfold.storage.store import SegmentStore

log = logging.getLogger(__name__)

COALESCE_INTERVAL_S = 1.0
HISTORY_WINDOW_S = 300.0
COALESCE_PAGES_PER_SCAN_MAX = 256
COALESCE_PAGES_PER_TXN_MAX = 32
GC_PAGES_PER_TXN_MAX = 64
TICK_PAUSE_S = 0.005


class Coalescer:
    """`on_writer(fn, *args)` (the node-writer handle, storage/node_writer.py) runs `fn` on the node's
    writer thread; `min_read_point(segment_id)` is the lowest read point the writer last reported for the
    segment (None: none since the node started)."""

    def __init__(
        self,
        store: SegmentStore,
        on_writer: OnWriter,
        min_read_point: Callable[[str], int | None],
        interval_s: float = COALESCE_INTERVAL_S,
        history_window_s: float = HISTORY_WINDOW_S,
        chain_min: int = COALESCE_CHAIN_MIN,
        tick_pause_s: float = TICK_PAUSE_S,
        peer_floor: Callable[[str], int | None] = lambda segment_id: None,
    ) -> None:
        assert interval_s > 0 and history_window_s >= 0 and chain_min >= 1
        self.store = store
        self.on_writer = on_writer
        self.min_read_point = min_read_point
        self.peer_floor = peer_floor  # the lowest SCL among the segment's answering peers (retention rule 2)
        self.interval_s = interval_s
        self.history_window_s = history_window_s
        self.chain_min = chain_min
        self.tick_pause_s = tick_pause_s
        self.windows: dict[str, HistoryWindow] = {}
        self._scanned: set[str] = set()  # segments whose first, full pass is done
        self._seg_nos: dict[str, int] = {}  # a segment created again (new seg_no) starts afresh
        self.rounds = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="coalesce")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.round()

    async def round(self) -> None:
        now = asyncio.get_running_loop().time()
        for gone in [s for s in self.windows.keys() | self._seg_nos.keys() if s not in self.store.segments]:
            self.windows.pop(gone, None)  # a segment dropped: what was kept for it goes too
            self._seg_nos.pop(gone, None)
            self._scanned.discard(gone)
        for segment_id in sorted(self.store.segments):
            if self.store.disk.condition.state != OK:
                break  # nothing could be written (storage/disk_doctor.py sees to the disk)
            try:
                await self.segment_round(segment_id, now)
            except asyncio.CancelledError:
                raise
            except UnknownSegment:
                self.windows.pop(segment_id, None)
                self._scanned.discard(segment_id)
            except StorageError as error:
                log.warning("coalescing/GC of %s stopped; the next round starts again: %s", segment_id, error.message)
            except Exception:
                log.exception("coalescing/GC of %s failed; the next round starts again", segment_id)
        self.rounds += 1

    async def segment_round(self, segment_id: str, now: float) -> None:
        seg = self.store.segment(segment_id)
        if self._seg_nos.get(segment_id) != seg.meta.seg_no:
            self._seg_nos[segment_id] = seg.meta.seg_no
            self.windows.pop(segment_id, None)
            self._scanned.discard(segment_id)
        window = self.windows.get(segment_id)
        if window is None:  # the longer of the node's window and the volume's backtrack window (rule 2)
            window = self.windows[segment_id] = HistoryWindow(max(self.history_window_s, seg.meta.backtrack_window_s))
        window.sample(now, seg.tracker.scl)
        if seg.tracker.scl < seg.meta.retention_horizon_lsn:
            return  # lost a copy below its GC floor: gossip hydrates it again first
        folded_below_horizon = await self.coalesce(segment_id)
        seg = self.store.segment(segment_id)
        horizon = next_horizon(
            seg.meta.retention_horizon_lsn,
            scl=seg.tracker.scl,
            vdl_hint=seg.meta.vdl_hint,
            min_read_point=self.min_read_point(segment_id),
            pins=seg.meta.pinned_lsns,
            window_bound=window.bound(now),
            peer_floor=self.peer_floor(segment_id),
        )
        raised = horizon > seg.meta.retention_horizon_lsn
        if raised:
            await self.on_writer(self.store.raise_horizon, segment_id, horizon)
        if raised or folded_below_horizon:
            await self.collect(segment_id)

    async def coalesce(self, segment_id: str) -> bool:
        """One pass over the segment's pages; True if a version was written at or below the horizon."""
        seg = self.store.segment(segment_id)
        limit = min(seg.tracker.scl, seg.meta.vdl_hint)  # retention rule 1
        written = 0
        dirty = self.store.take_dirty_pages(segment_id)
        if segment_id not in self._scanned:
            # The first pass after start looks at every page (what was appended before the restart is
            # not counted); later passes only at pages that received records since they were looked at.
            page: int | None = 0
            while page is not None:
                pages, counts, page = self.store.coalesce_candidates(
                    segment_id, page, COALESCE_PAGES_PER_SCAN_MAX, limit, self.chain_min
                )
                self.store.mark_dirty_pages(segment_id, counts)  # a fold counts off what it takes
                written += await self._fold(segment_id, pages, limit)
                await asyncio.sleep(self.tick_pause_s)
            self._scanned.add(segment_id)
            dirty.clear()  # the scan read every page after these counts were taken, and counted it exactly
        # A page with fewer new records than a chain needs cannot be worth folding: it waits, counted,
        # without being read. The others are read and given back with their exact count, which a
        # fold then lowers by what it really took (nothing, if it fails or SCL dropped meanwhile).
        self.store.mark_dirty_pages(segment_id, {p: c for p, c in dirty.items() if c < self.chain_min})
        ordered = sorted(p for p, c in dirty.items() if c >= self.chain_min)
        try:
            while ordered:
                chunk = ordered[:COALESCE_PAGES_PER_SCAN_MAX]
                pages, counts = self.store.coalesce_candidates_among(segment_id, chunk, limit, self.chain_min)
                self.store.mark_dirty_pages(segment_id, counts)
                del ordered[: len(chunk)]
                written += await self._fold(segment_id, pages, limit)
                await asyncio.sleep(self.tick_pause_s)
        finally:
            self.store.mark_dirty_pages(segment_id, {p: dirty[p] for p in ordered})  # not looked at: keep them
        if written:
            log.debug("coalesced %d page versions of %s at or below LSN %d", written, segment_id, limit)
        return written > 0 and self.store.segment(segment_id).meta.retention_horizon_lsn > 0

    async def _fold(self, segment_id: str, pages: list[int], limit: int) -> int:
        written = 0
        for i in range(0, len(pages), COALESCE_PAGES_PER_TXN_MAX):
            chunk = pages[i : i + COALESCE_PAGES_PER_TXN_MAX]
            written += await self.on_writer(self.store.coalesce_pages, segment_id, chunk, limit, self.chain_min)
            await asyncio.sleep(self.tick_pause_s)
        return written

    async def collect(self, segment_id: str) -> None:
        before = self.store.segment(segment_id).meta
        records, versions = before.records_collected, before.versions_collected
        page: int | None = 0
        while page is not None:
            page = await self.on_writer(self.store.collect_garbage, segment_id, page, GC_PAGES_PER_TXN_MAX)
            await asyncio.sleep(self.tick_pause_s)
        after = self.store.segment(segment_id).meta
        if after.records_collected > records or after.versions_collected > versions:
            log.info(
                "GC of %s at horizon %d: %d records and %d page versions removed",
                segment_id,
                after.retention_horizon_lsn,
                after.records_collected - records,
                after.versions_collected - versions,
            )
