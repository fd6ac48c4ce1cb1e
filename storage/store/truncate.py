"""Truncation: an epoch-stamped range voids the records of older epochs inside it (storage/truncation.py
says which), on its own (TruncateSegment, gossip) or before the records of the batch that carries it.

The range is applied once and kept for ever; what it voids goes (records, their page-index rows, page
versions folded from them) and SCL is rebuilt from the records kept, in the same write transaction.
"""

from __future__ import annotations

from typing import Any

from sixfold.storage import epochs
from sixfold.storage.keys import SEG_LSN, SEG_PAGE_LSN, page_key, prefix, record_key
from sixfold.storage.records import peek_header
from sixfold.storage.segment import Segment, TruncationRange
from sixfold.storage.segment_load import held_above
from sixfold.storage.store.rows import Rows


class Truncating(Rows):
    def truncate(self, segment_id: str, volume_epoch: int, r: TruncationRange) -> int:
        """Apply an epoch-stamped truncation range durably; return the number of records removed."""
        current = self.segment(segment_id)
        epochs.check_volume_epoch(volume_epoch, current.meta.volume_epoch, segment_id)
        fresh = current.new_truncations([r], volume_epoch)  # (cut to start above the chain anchor)
        if not fresh:
            return 0

        def txn_fn(txn: Any) -> tuple[int, Segment]:
            seg = self.segment(segment_id).copy()
            removed = sum(self._truncate_in_txn(txn, seg, cut) for cut in fresh)
            seg.meta.volume_epoch = epochs.adopted(seg.meta.volume_epoch, volume_epoch)
            self._put_meta(txn, seg.meta)
            return removed, seg

        removed, seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return removed

    def _truncate_in_txn(self, txn: Any, seg: Segment, r: TruncationRange) -> int:
        """Apply `r`: delete what it voids (storage/truncation.py), rebuild SCL, and remember `r` for ever."""
        seg_no = seg.meta.seg_no
        cursor = txn.cursor(db=self._records)
        removed = 0
        if cursor.set_range(record_key(seg_no, r.start_lsn)):
            while True:
                key = cursor.key()
                if not key:  # deleting the last row leaves the cursor unpositioned
                    break
                key_seg, lsn = SEG_LSN.unpack(key)
                if key_seg != seg_no or lsn > r.end_lsn:
                    break
                raw, problem = self._opened_or_problem(self._open_record, seg.meta, lsn, cursor.value())
                if problem is not None:  # sealed row that does not open: the scrubber quarantines it
                    if not cursor.next():
                        break
                    continue
                _, _, page_no, epoch = peek_header(raw)
                if epoch < r.epoch:
                    txn.delete(page_key(seg_no, page_no, lsn), db=self._page_index)
                    removed += 1
                    if not cursor.delete():
                        break
                elif not cursor.next():
                    break
        # Page versions folded from now-void records go too.
        vcursor = txn.cursor(db=self._versions)
        seg_prefix = prefix(seg_no)
        doomed = []
        if vcursor.set_range(seg_prefix):
            for key, _ in vcursor:
                if not key.startswith(seg_prefix):
                    break
                _, _, lsn = SEG_PAGE_LSN.unpack(key)
                if r.start_lsn <= lsn <= r.end_lsn:
                    doomed.append(key)
        for key in doomed:
            txn.delete(key, db=self._versions)
        # Highest record held below the range (every held record below SCL is in the chain), or the
        # chain anchor where GC removed the records.
        stored_tail = self._chain_tail_at_or_below(txn, seg.meta, r.start_lsn - 1)
        below = min(stored_tail, seg.tracker.scl)
        # Every sound record held above the chain base (spared by the range, or outside it) waits again for
        # its predecessor; a rotten one is left out (the scrubber quarantines it, a resend restores it).
        kept_from_start = held_above(txn, self._records, seg.meta, below, open_record=self._open_record)
        highest = seg.meta.highest_lsn
        if highest >= r.start_lsn:
            highest = max(
                self._highest_lsn_in_txn(txn, seg_no), seg.meta.highest_lsn_floor
            )  # never below its LSN floor
        seg.note_truncation(r, below, kept_from_start, removed, highest, stored_tail)
        return removed
