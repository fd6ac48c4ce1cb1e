"""Coalescing and garbage collection (storage/retention.py decides, storage/coalesce.py runs the rounds):
pages worth folding found in short read transactions, folded into page versions on the writer thread,
the retention horizon (the GC floor) raised durably, and rows below it collected, except what the
segment's children read at their keep points (storage/lineage.py rule 5).

The dirty-page counts (storage/store/dirty.py) tell a round which pages received records since it last
looked; a fold counts off what it really took only once its transaction committed.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sixfold.storage.errors import ReadPointOutOfRange
from sixfold.storage.keys import page_key, record_key
from sixfold.storage.records import LSN_MAX, encode_page_version
from sixfold.storage.retention import coalesce_target, plan_page_gc
from sixfold.storage.segment import Segment, SegmentMeta
from sixfold.storage.store.clones import Clones


class Coalescing(Clones):
    # -- dirty pages --------------------------------------------------------------

    def take_dirty_pages(self, segment_id: str) -> Counter[int]:
        """Per page, a count that is never below the number of its records above its newest page
        version, then forget them all (the caller gives back what it does not settle). Appends add to
        it; coalescing skips a page whose count is below its chain minimum without reading it."""
        return self._dirty.take(segment_id)

    def mark_dirty_pages(self, segment_id: str, counts: dict[int, int]) -> None:
        """Give pages back with `counts` records above their newest version (added to any counted since)."""
        self._dirty.mark(segment_id, counts)

    def dirty_pages(self, segment_id: str) -> dict[int, int]:
        """A copy of the counts, for status and tests."""
        return self._dirty.copy_of(segment_id)

    # -- coalescing -------------------------------------------------------------------

    def coalesce_candidates(
        self, segment_id: str, start_page: int, pages_max: int, limit: int, chain_min: int
    ) -> tuple[list[int], dict[int, int], int | None]:
        """Pages from `start_page` on worth folding at `limit` (retention rule 1), looked at in one short
        read transaction, at most `pages_max` pages; (pages, how many records each page looked at has
        above its newest version, the page to resume at or None at the end)."""
        meta = self.segment(segment_id).meta
        seg_no = meta.seg_no
        found: list[int] = []
        remaining: dict[int, int] = {}
        page = max(start_page, meta.first_page)
        with self.disk.read() as txn:
            for _ in range(pages_max):
                next_page = self._next_page(txn, self._page_index, seg_no, page)
                if next_page is None:
                    return found, remaining, None
                self._look_at(txn, meta, next_page, limit, chain_min, found, remaining)
                page = next_page + 1
        return found, remaining, page

    def _look_at(
        self,
        txn: Any,
        meta: SegmentMeta,
        page: int,
        limit: int,
        chain_min: int,
        found: list[int],
        remaining: dict[int, int],
    ) -> None:
        newest = self._newest_version_at_or_below(txn, meta.seg_no, page, LSN_MAX)
        lsns = self._page_lsns(txn, self._page_index, meta.seg_no, page, above=newest)
        if coalesce_target(lsns, limit, chain_min) is not None:
            found.append(page)
        if lsns:
            remaining[page] = len(lsns)  # until a fold really takes some (coalesce_pages counts them off)

    def coalesce_candidates_among(
        self, segment_id: str, pages: list[int], limit: int, chain_min: int
    ) -> tuple[list[int], dict[int, int]]:
        """Of `pages`, (those worth folding at `limit`, how many records each has above its newest
        version), in one short read transaction."""
        meta = self.segment(segment_id).meta
        found: list[int] = []
        remaining: dict[int, int] = {}
        with self.disk.read() as txn:
            for page in pages:
                self._look_at(txn, meta, page, limit, chain_min, found, remaining)
        return found, remaining

    def coalesce_pages(self, segment_id: str, pages: list[int], limit: int, chain_min: int) -> int:
        """Fold each page into a version at its coalesce target (planned again inside the write
        transaction); return the number of versions written. Runs on the writer thread."""

        def txn_fn(txn: Any) -> tuple[dict[int, int], Segment]:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            folded: dict[int, int] = {}  # page -> records the new version covers above the old one
            if seg.tracker.scl < meta.retention_horizon_lsn:
                return folded, seg  # lost a copy, or being hydrated: what it holds is not to be folded
            bound = min(limit, seg.tracker.scl, meta.vdl_hint)  # SCL may have dropped since (a quarantine)
            for page in pages:
                newest = self._newest_version_at_or_below(txn, meta.seg_no, page, LSN_MAX)
                lsns = self._page_lsns(txn, self._page_index, meta.seg_no, page, above=newest, upto=bound)
                target = coalesce_target(lsns, bound, chain_min)
                if target is None:
                    continue
                try:
                    image, page_lsn = self._materialize(txn, meta, page, target)
                except ReadPointOutOfRange:
                    continue  # a clone's page whose parent cannot be read now (storage/lineage.py rule 4)
                assert page_lsn == target, (page_lsn, target)
                encoded = encode_page_version(page, target, image)
                txn.put(
                    page_key(meta.seg_no, page, target),
                    self._seal_version(meta, page, target, encoded),
                    db=self._versions,
                )
                folded[page] = sum(1 for lsn in lsns if lsn <= target)
            meta.versions_coalesced += len(folded)
            if folded:
                self._put_meta(txn, meta)
            return folded, seg

        folded, seg = self.disk.write(txn_fn)
        if folded:
            self.segments[segment_id] = seg
            self._dirty.unmark_folded(segment_id, folded)
        return len(folded)

    # -- the horizon and GC ----------------------------------------------------------------

    def raise_horizon(self, segment_id: str, horizon: int) -> int:
        """Raise the retention horizon (the GC floor) to `horizon` durably, with the chain anchor at it;
        published before any GC deletes a row below it. Returns the horizon. Runs on the writer thread."""

        def txn_fn(txn: Any) -> Segment | None:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            # SCL may have dropped or a pin arrived since the caller planned: never past either.
            target = min([horizon, seg.tracker.scl, meta.vdl_hint, *meta.pinned_lsns])
            if target <= meta.retention_horizon_lsn:
                return None
            meta.chain_anchor_lsn = self._chain_tail_at_or_below(txn, meta, target)
            meta.retention_horizon_lsn = target
            self._put_meta(txn, meta)
            return seg

        seg = self.disk.write(txn_fn)
        if seg is not None:
            self.segments[segment_id] = seg
        return self.segment(segment_id).meta.retention_horizon_lsn

    def collect_garbage(self, segment_id: str, start_page: int, pages_max: int) -> int | None:
        """GC at the segment's horizon (retention rule 3) for at most `pages_max` pages with a version,
        from `start_page` on, in one write transaction; return the page to resume at (None: done).
        Runs on the writer thread."""

        def txn_fn(txn: Any) -> tuple[int | None, Segment]:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            seg_no, horizon = meta.seg_no, meta.retention_horizon_lsn
            if seg.tracker.scl < horizon:
                return None, seg  # being hydrated: hydration replaces everything at or below the horizon
            keep = [k for k in self.keep_points_of(segment_id) if k < horizon]  # retention rule 6
            page = max(start_page, meta.first_page)
            for _ in range(pages_max):
                next_page = self._next_page(txn, self._versions, seg_no, page)
                if next_page is None:
                    self._put_meta(txn, meta)
                    return None, seg
                plan = plan_page_gc(
                    next_page,
                    horizon,
                    self._page_lsns(txn, self._versions, seg_no, next_page, upto=horizon),
                    self._page_lsns(txn, self._page_index, seg_no, next_page, upto=horizon),
                    keep,
                )
                for lsn in plan.versions_to_delete:
                    txn.delete(page_key(seg_no, next_page, lsn), db=self._versions)
                for lsn in plan.records_to_delete:
                    txn.delete(page_key(seg_no, next_page, lsn), db=self._page_index)
                    txn.delete(record_key(seg_no, lsn), db=self._records)
                meta.versions_collected += len(plan.versions_to_delete)
                meta.records_collected += len(plan.records_to_delete)
                meta.record_count = max(0, meta.record_count - len(plan.records_to_delete))
                page = next_page + 1
            self._put_meta(txn, meta)
            return page, seg

        page, seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return page
