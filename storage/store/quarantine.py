"""Scrub support, the writing half: what a bad copy the scrubber found becomes (storage/scrub.py rule 3).

Each runs on the writer thread, checks the copy again inside its write transaction (a resend may have
repaired it since the scrubber read it) and changes the segment on a copy published after the commit:
a rotten record is deleted with its page-index row and the chain breaks at the hole (SCL falls to its
chain predecessor, durably, in the same transaction); a chain gap breaks the chain the same way; a
rotten page version is deleted, and if it was the only copy left below the GC floor the segment stops
serving until it is hydrated again from a peer (storage/retention.py rule 5).
"""

from __future__ import annotations

import logging
import struct
from typing import Any

from sixfold.storage.keys import SEG_PAGE_LSN, page_key, prefix, record_key
from sixfold.storage.records import peek_header
from sixfold.storage.scl import SclTracker
from sixfold.storage.scrub import Quarantined, record_problem, version_problem
from sixfold.storage.segment import Segment
from sixfold.storage.segment_load import held_above
from sixfold.storage.store.dirty import LOOK_AGAIN
from sixfold.storage.store.rows import Rows

log = logging.getLogger(__name__)


class Quarantine(Rows):
    def break_chain_at_gap(self, segment_id: str, missing_lsn: int) -> Quarantined | None:
        """A record at or below SCL names a PG predecessor the segment does not hold (scrub rule 1): the
        chain breaks there (SCL falls below it, as after a quarantine) if it (still) does, and gossip
        fetches what is missing. None if the gap is gone or SCL is below it already. Runs on the writer."""

        def txn_fn(txn: Any) -> tuple[Quarantined, Segment] | None:
            seg = self.segment(segment_id).copy()
            m = seg.meta
            if (
                seg.tracker.scl <= missing_lsn
                or missing_lsn <= m.chain_anchor_lsn
                or seg.tracker.scl < m.retention_horizon_lsn
                or txn.get(record_key(m.seg_no, missing_lsn), db=self._records) is not None
            ):
                return None
            scl_before = seg.tracker.scl
            self._break_chain_at(txn, seg, missing_lsn)
            self._put_meta(txn, m)
            problem = f"SCL {scl_before} of segment {segment_id} ran past LSN {missing_lsn}, which it does not hold"
            return Quarantined(segment_id, missing_lsn, problem, scl_before, seg.tracker.scl, 0), seg

        return self._write_published(segment_id, txn_fn)

    def quarantine_record(self, segment_id: str, lsn: int) -> Quarantined | None:
        """Delete the record stored under `lsn` if it (still) fails its check, with its page-index row,
        and break the segment's chain at the hole: SCL falls to the record's chain predecessor and the
        records above wait as pending until the record comes back (gossip pulls it from a peer).

        None if the record is gone or sound by now (a resend repaired it since the scrubber read it).
        Runs on the writer thread; the segment is changed on a copy published after the commit."""

        def txn_fn(txn: Any) -> tuple[Quarantined, Segment] | None:
            seg = self.segment(segment_id).copy()
            seg_no = seg.meta.seg_no
            key = record_key(seg_no, lsn)
            raw = txn.get(key, db=self._records)
            if raw is None:
                return None

            def indexed(page_no: int) -> bool:
                return txn.get(page_key(seg_no, page_no, lsn), db=self._page_index) is not None

            plain, problem = self._opened_or_problem(self._open_record, seg.meta, lsn, raw)
            problem = problem or record_problem(seg.meta, lsn, plain, indexed)
            if problem is None:
                return None
            txn.delete(key, db=self._records)
            rows = self._delete_index_rows(txn, seg, lsn, plain)
            scl_before = seg.tracker.scl
            self._break_chain_at(txn, seg, lsn)
            seg.meta.record_count = max(0, seg.meta.record_count - 1)
            if lsn >= seg.meta.highest_lsn:
                # Never below its LSN floor (a clone's branch): its writer's LSNs are above it.
                seg.meta.highest_lsn = max(self._highest_lsn_in_txn(txn, seg_no), seg.meta.highest_lsn_floor)
            self._put_meta(txn, seg.meta)  # the lowered SCL is durable with the deletion: a restart trusts it
            return Quarantined(segment_id, lsn, problem, scl_before, seg.tracker.scl, rows), seg

        return self._write_published(segment_id, txn_fn)

    def _delete_index_rows(self, txn: Any, seg: Segment, lsn: int, raw: bytes) -> int:
        """Delete the page-index row of the record `lsn`. Its page comes from the rotten record's header;
        if the rot hit that field, the segment's page index is searched for the LSN (rare and slower)."""
        seg_no, m = seg.meta.seg_no, seg.meta
        try:
            _, _, page_no, _ = peek_header(raw)
        except struct.error:  # shorter than a header
            page_no = -1
        if m.first_page <= page_no < m.first_page + m.page_count and txn.delete(
            page_key(seg_no, page_no, lsn), db=self._page_index
        ):
            return 1
        log.warning(
            "record LSN %d of segment %s has no page-index row for the page its header names; "
            "searching the segment's page index",
            lsn,
            m.segment_id,
        )
        seg_prefix = prefix(seg_no)
        doomed = []
        cursor = txn.cursor(db=self._page_index)
        if cursor.set_range(seg_prefix):
            for key, _ in cursor:
                if not key.startswith(seg_prefix):
                    break
                if SEG_PAGE_LSN.unpack(key)[2] == lsn:
                    doomed.append(key)
        for key in doomed:
            txn.delete(key, db=self._page_index)
        return len(doomed)

    def _break_chain_at(self, txn: Any, seg: Segment, hole_lsn: int) -> None:
        """Rebuild the SCL tracker after the record `hole_lsn` was deleted (in this transaction).

        Every held record at or below SCL is in the chain, so the highest record held below the hole is
        its chain predecessor: the chain is complete to there (or to SCL, if the hole was above it).
        Every sound record held above that base waits again for its predecessor; a rotten one is left
        out (the scrubber quarantines it when it gets there; a resend puts it back, see segment._plan)."""
        if hole_lsn <= seg.meta.retention_horizon_lsn:
            # Below the GC floor the chain has gaps GC made: it cannot be rebuilt from what is held.
            # SCL drops below the floor, so the segment serves nothing until it is hydrated again
            # from a peer's page versions (storage/retention.py rule 5).
            seg.tracker = SclTracker(scl=min(seg.tracker.scl, hole_lsn - 1))
            seg.meta.scl = seg.tracker.scl
            return
        base = min(self._chain_tail_at_or_below(txn, seg.meta, hole_lsn - 1), seg.tracker.scl)
        seg.tracker = SclTracker.rebuilt(
            base, held_above(txn, self._records, seg.meta, base, open_record=self._open_record)
        )
        seg.meta.scl = seg.tracker.scl
        if hole_lsn > seg.meta.scl:
            seg.meta.note_hole(hole_lsn)

    def quarantine_version(self, segment_id: str, page_no: int, lsn: int) -> bool:
        """Delete the page version stored under (`page_no`, `lsn`) if it (still) fails its check.
        Reads then use an older version plus the records after it, if those are still stored. If GC
        removed them (the version is at or below the GC floor and its own record is gone), it was the
        only copy: SCL drops below the floor and the segment serves nothing until it is hydrated again
        from a peer (storage/retention.py rule 5). Runs on the writer thread."""

        def txn_fn(txn: Any) -> Segment | bool:
            seg = self.segment(segment_id).copy()
            seg_no = seg.meta.seg_no
            key = page_key(seg_no, page_no, lsn)
            raw = txn.get(key, db=self._versions)
            if raw is None:
                return False
            plain, problem = self._opened_or_problem(self._open_version, seg.meta, page_no, lsn, raw)
            if (problem or version_problem(seg.meta, page_no, lsn, plain)) is None:
                return False
            txn.delete(key, db=self._versions)
            # Records the version covered are above the page's newest version again: look at it.
            self._dirty.mark(segment_id, {page_no: LOOK_AGAIN})
            if lsn <= seg.meta.retention_horizon_lsn and txn.get(record_key(seg_no, lsn), db=self._records) is None:
                seg.tracker = SclTracker(scl=min(seg.tracker.scl, lsn - 1))
                seg.meta.scl = seg.tracker.scl
                self._put_meta(txn, seg.meta)
                log.warning(
                    "segment %s lost page %d's only copy at LSN %d (at or below its GC floor %d): SCL "
                    "lowered to %d, it serves no reads until hydrated again from a peer",
                    segment_id,
                    page_no,
                    lsn,
                    seg.meta.retention_horizon_lsn,
                    seg.meta.scl,
                )
                return seg
            return True

        result = self.disk.write(txn_fn)
        if isinstance(result, Segment):
            self.segments[segment_id] = result
        return bool(result)
