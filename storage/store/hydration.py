"""Hydration (storage/retention.py rule 5): a segment whose peers garbage-collected the records it lacks
copies their pages instead. The peer's side exports every page materialized at an LSN
(`read_page_versions`); this side raises its horizon first so it serves nothing meanwhile
(`begin_hydration`), replaces its pages batch by batch (`hydrate_pages`), and then moves SCL to the
peer's LSN (`finish_hydration`). Every write runs on the writer thread.
"""

from __future__ import annotations

from typing import Any

from sixfold.storage.errors import InvalidRequest
from sixfold.storage.keys import page_key, record_key
from sixfold.storage.records import encode_page_version
from sixfold.storage.scl import SclTracker
from sixfold.storage.segment import Segment
from sixfold.storage.segment_load import held_above
from sixfold.storage.store.clones import Clones


class Hydration(Clones):
    def read_page_versions(
        self, segment_id: str, at_lsn: int, start_page: int, max_bytes: int, pages_max: int
    ) -> tuple[list[tuple[int, int, bytes]], int | None, int]:
        """Every page written at or below `at_lsn` from `start_page` on, materialized at `at_lsn`, in one
        read transaction: ([(page_no, page_lsn, image)], the page to continue at or None, chain tail)."""
        self.segment(segment_id).check_read_point(at_lsn)
        out: list[tuple[int, int, bytes]] = []
        size = 0
        with self.disk.read() as txn:
            seg = self.segment(segment_id)
            seg.check_read_point(at_lsn)
            meta = seg.meta
            tail = self._chain_tail_at_or_below(txn, meta, at_lsn)
            # A clone's segment exports the pages it reads through its ancestors too (storage/lineage.py):
            # the copy made from it is a flattened one.
            seg_nos = [m.seg_no for m in self._lineage_of(meta)]
            page = max(start_page, meta.first_page)
            while True:
                found = [p for p in (self._next_written_page(txn, n, page) for n in seg_nos) if p is not None]
                next_page = min(found) if found else None
                if next_page is None:
                    return out, None, tail
                if len(out) >= pages_max or (out and size + meta.page_size > max_bytes):
                    return out, next_page, tail
                image, page_lsn = self._materialize(txn, meta, next_page, at_lsn)
                if page_lsn:
                    out.append((next_page, page_lsn, image))
                    size += len(image)
                page = next_page + 1

    def begin_hydration(self, segment_id: str, at_lsn: int) -> None:
        """Before copying a peer's pages at `at_lsn`: raise the horizon (and GC floor) to it while SCL stays
        below, so the segment serves nothing while its pages are being replaced (retention rule 5). Its
        pages below `at_lsn` go, so a clone's segment that reads it below there loses its link in the same
        transaction (storage/lineage.py rule 7)."""

        def txn_fn(txn: Any) -> tuple[Segment, list[Segment]]:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            assert at_lsn >= meta.retention_horizon_lsn, (at_lsn, meta.retention_horizon_lsn)
            if seg.tracker.scl >= at_lsn:  # only a segment below the peer's LSN hydrates
                seg.tracker = SclTracker(scl=min(seg.tracker.scl, at_lsn - 1))
                meta.scl = seg.tracker.scl
            meta.retention_horizon_lsn = at_lsn
            meta.vdl_hint = max(meta.vdl_hint, at_lsn)  # the peer's horizon was at or below a writer's VDL
            self._put_meta(txn, meta)
            return seg, self._orphans_in_txn(txn, segment_id, at_lsn)

        seg, orphans = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        self._publish_orphans(segment_id, orphans, f"its pages at or below LSN {at_lsn} are being hydrated again")

    def hydrate_pages(
        self,
        segment_id: str,
        at_lsn: int,
        start_page: int,
        end_page: int | None,
        versions: list[tuple[int, int, bytes]],
    ) -> int:
        """Replace everything of pages [start_page, end_page) (None: to the segment's end) at or below
        `at_lsn` by the peer's `versions` [(page_no, page_lsn, image)], already CRC-checked, in one write
        transaction. Returns the bytes stored."""

        def txn_fn(txn: Any) -> tuple[int, Segment]:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            assert meta.retention_horizon_lsn == at_lsn and seg.tracker.scl < at_lsn, "begin_hydration first"
            seg_no = meta.seg_no
            stop = meta.first_page + meta.page_count if end_page is None else end_page
            page = max(start_page, meta.first_page)
            removed = 0
            while True:
                next_page = self._next_written_page(txn, seg_no, page)
                if next_page is None or next_page >= stop:
                    break
                for lsn in self._page_lsns(txn, self._versions, seg_no, next_page, upto=at_lsn):
                    txn.delete(page_key(seg_no, next_page, lsn), db=self._versions)
                for lsn in self._page_lsns(txn, self._page_index, seg_no, next_page, upto=at_lsn):
                    txn.delete(page_key(seg_no, next_page, lsn), db=self._page_index)
                    txn.delete(record_key(seg_no, lsn), db=self._records)
                    removed += 1
                page = next_page + 1
            stored = 0
            for page_no, page_lsn, image in versions:
                seg.check_page(page_no)
                assert start_page <= page_no < stop and page_lsn <= at_lsn and len(image) == meta.page_size
                encoded = encode_page_version(page_no, page_lsn, image)
                txn.put(
                    page_key(seg_no, page_no, page_lsn),
                    self._seal_version(meta, page_no, page_lsn, encoded),
                    db=self._versions,
                )
                stored += len(image)
            meta.record_count = max(0, meta.record_count - removed)
            meta.pages_hydrated += len(versions)
            meta.bytes_hydrated += stored
            self._put_meta(txn, meta)
            return stored, seg

        stored, seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return stored

    def finish_hydration(self, segment_id: str, at_lsn: int, chain_tail_lsn: int) -> int:
        """Every page is as the peer had it at `at_lsn`: the segment is complete to there. SCL, GC floor
        and chain anchor move to it and the chain is rebuilt from the records held above. Returns SCL."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            assert meta.retention_horizon_lsn == at_lsn and chain_tail_lsn <= at_lsn
            held = held_above(txn, self._records, meta, at_lsn, open_record=self._open_record)
            # The chain tail at at_lsn is the base the held records link to. The PG has no record in
            # (tail, at_lsn], so its pages are the same at both: the horizon (GC floor) becomes the tail,
            # where SCL starts (SCL is always a chain LSN).
            seg.tracker = SclTracker.rebuilt(chain_tail_lsn, held)
            meta.scl = seg.tracker.scl
            meta.chain_anchor_lsn = chain_tail_lsn
            meta.retention_horizon_lsn = chain_tail_lsn
            meta.highest_lsn = max(meta.highest_lsn, meta.scl)
            self._put_meta(txn, meta)
            return seg

        seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return seg.tracker.scl

    def put_page_version(self, segment_id: str, page_no: int, lsn: int, image: bytes) -> None:
        """Store a materialized page version (coalescing writes these)."""
        seg = self.segment(segment_id)
        seg.check_page(page_no)
        if len(image) != seg.meta.page_size:
            raise InvalidRequest(f"a page version is {seg.meta.page_size} bytes, not {len(image)}")
        stored = self._seal_version(seg.meta, page_no, lsn, encode_page_version(page_no, lsn, image))
        self.disk.write(lambda txn: txn.put(page_key(seg.meta.seg_no, page_no, lsn), stored, db=self._versions))
