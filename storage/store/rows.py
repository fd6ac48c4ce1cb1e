"""Looking rows up inside a transaction: the cursor walks every part of the store shares.

Rows (storage/keys.py): `records` under (seg_no, LSN), `page_index` and `versions` under
(seg_no, page, LSN). Each helper takes an open transaction and reads only; the caller decides what
the rows mean. `_materialize` builds a page from its newest version plus the records after it, every
copy CRC-checked on the way, falling through to a clone's parent for a page the clone never wrote
(storage/lineage.py).
"""

from __future__ import annotations

from typing import Any

from sixfold.storage import lineage, segment_load
from sixfold.storage.errors import ChecksumMismatch
from sixfold.storage.keys import SEG_LSN, SEG_PAGE_LSN, page_key, record_key
from sixfold.storage.records import LSN_MAX, apply_record, decode_page_version, decode_record
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.store.base import StoreBase
from sixfold.storage.store.sealing import require_key


class Rows(StoreBase):
    def _page_lsns(
        self, txn: Any, db: Any, seg_no: int, page_no: int, above: int = 0, upto: int = LSN_MAX
    ) -> list[int]:
        """LSNs of one page's rows in `db` (page index or versions) with above < LSN <= upto."""
        out = []
        cursor = txn.cursor(db=db)
        if cursor.set_range(page_key(seg_no, page_no, above + 1)):
            for key in cursor.iternext(keys=True, values=False):
                key_seg, key_page, lsn = SEG_PAGE_LSN.unpack(key)
                if key_seg != seg_no or key_page != page_no or lsn > upto:
                    break
                out.append(lsn)
        return out

    def _next_page(self, txn: Any, db: Any, seg_no: int, page_no: int) -> int | None:
        """The first page at or after `page_no` with a row in `db`, or None."""
        cursor = txn.cursor(db=db)
        if cursor.set_range(page_key(seg_no, page_no, 0)):
            key_seg, key_page, _ = SEG_PAGE_LSN.unpack(cursor.key())
            if key_seg == seg_no:
                return key_page
        return None

    def _next_written_page(self, txn: Any, seg_no: int, page_no: int) -> int | None:
        """The first page at or after `page_no` with a record (page index row) or a page version, or None."""
        found = [
            p
            for p in (
                self._next_page(txn, self._page_index, seg_no, page_no),
                self._next_page(txn, self._versions, seg_no, page_no),
            )
            if p is not None
        ]
        return min(found) if found else None

    def _newest_version_at_or_below(self, txn: Any, seg_no: int, page_no: int, lsn: int) -> int:
        cursor = txn.cursor(db=self._versions)
        moved = cursor.prev() if cursor.set_range(page_key(seg_no, page_no, lsn + 1)) else cursor.last()
        if moved:
            key_seg, key_page, at = SEG_PAGE_LSN.unpack(cursor.key())
            if key_seg == seg_no and key_page == page_no:
                return at
        return 0

    def _chain_tail_at_or_below(self, txn: Any, meta: SegmentMeta, lsn: int) -> int:
        """The newest stored record at or below `lsn`, or the chain anchor if that is newer (GC removed
        the records up to it)."""
        seg_no = meta.seg_no
        found = 0
        cursor = txn.cursor(db=self._records)
        moved = cursor.prev() if cursor.set_range(record_key(seg_no, lsn + 1)) else cursor.last()
        if moved:
            key_seg, at = SEG_LSN.unpack(cursor.key())
            if key_seg == seg_no:
                found = at
        anchor = meta.chain_anchor_lsn if meta.chain_anchor_lsn <= lsn else 0
        return max(found, anchor)

    def _highest_lsn_in_txn(self, txn: Any, seg_no: int) -> int:
        cursor = txn.cursor(db=self._records)
        moved = cursor.prev() if cursor.set_range(record_key(seg_no + 1, 0)) else cursor.last()
        if moved:
            key_seg, lsn = SEG_LSN.unpack(cursor.key())
            if key_seg == seg_no:
                return lsn
        return 0

    def _stored_meta(self, txn: Any, segment_id: str) -> SegmentMeta | None:
        """The segment's metadata as this transaction's snapshot stores it (either good copy), or None."""
        return segment_load.trusted_copy(
            (txn.get(segment_id.encode(), db=self.disk.dbs[table]) for table in segment_load.META_TABLES), segment_id
        )

    def _materialize(self, txn: Any, meta: SegmentMeta, page_no: int, read_point: int) -> tuple[bytes, int]:
        """(image, page_lsn) of a page at `read_point`, every copy CRC-checked. On a clone's segment, a page
        with no version of its own at or below `read_point` starts from the parent's page at parent_read_lsn,
        up the chain, in the same transaction (storage/lineage.py rule 2; refused by its rule 4)."""
        levels: list[tuple[SegmentMeta, int]] = []  # (segment, read point there), the segment read first
        walked = {meta.segment_id}
        page = bytearray(meta.page_size)
        page_lsn = 0
        while True:
            levels.append((meta, read_point))
            found = self._newest_version(txn, meta, page_no, read_point)
            if found is not None:
                page[:], page_lsn = found
                break
            if not meta.parent_segment_id:
                break
            parent = self.segments.get(meta.parent_segment_id)
            lineage.check_fall_through(meta, parent, walked)
            assert parent is not None
            walked.add(parent.meta.segment_id)
            meta, read_point = parent.meta, meta.parent_read_lsn
        for level, at in reversed(levels):
            page_lsn = self._apply_records(txn, level, page_no, page, page_lsn, at)
        return bytes(page), page_lsn

    def _lineage_of(self, meta: SegmentMeta) -> list[SegmentMeta]:
        """The segment and its ancestors, nearest first, each link checked as a fall-through read checks it
        (storage/lineage.py rules 3 and 4)."""
        out = [meta]
        walked = {meta.segment_id}
        while meta.parent_segment_id:
            parent = self.segments.get(meta.parent_segment_id)
            lineage.check_fall_through(meta, parent, walked)
            assert parent is not None
            walked.add(parent.meta.segment_id)
            meta = parent.meta
            out.append(meta)
        return out

    def _newest_version(self, txn: Any, meta: SegmentMeta, page_no: int, read_point: int) -> tuple[bytes, int] | None:
        """(image, LSN) of the segment's own newest version of the page at or below `read_point`, or None."""
        seg_no = meta.seg_no
        vcursor = txn.cursor(db=self._versions)
        found = vcursor.set_range(page_key(seg_no, page_no, read_point + 1))
        moved = vcursor.prev() if found else vcursor.last()
        if moved:
            key_seg, key_page, lsn = SEG_PAGE_LSN.unpack(vcursor.key())
            if key_seg == seg_no and key_page == page_no and lsn <= read_point:
                where = f"page version of page {page_no} at LSN {lsn} in segment {meta.segment_id}"
                plain = self._open_version(meta, page_no, lsn, vcursor.value())
                _, _, image = decode_page_version(plain, where=where)
                return image, lsn
        return None

    def _apply_records(
        self, txn: Any, meta: SegmentMeta, page_no: int, page: bytearray, page_lsn: int, read_point: int
    ) -> int:
        """Apply the segment's own records of the page above `page_lsn` and at or below `read_point` to
        `page`; return its new page LSN."""
        seg_no, segment_id = meta.seg_no, meta.segment_id
        key_checked = False  # a record from memory is served only while the segment's key is at hand
        icursor = txn.cursor(db=self._page_index)
        if icursor.set_range(page_key(seg_no, page_no, page_lsn + 1)):
            for key, _ in icursor:
                key_seg, key_page, lsn = SEG_PAGE_LSN.unpack(key)
                if key_seg != seg_no or key_page != page_no or lsn > read_point:
                    break
                raw = txn.get(record_key(seg_no, lsn), db=self._records)
                if raw is None:
                    raise ChecksumMismatch(
                        f"record LSN {lsn} of page {page_no} is indexed but missing in segment {segment_id}"
                    )
                record = self.recent.get(segment_id, lsn, raw)  # byte for byte the row appended: known good
                if record is not None and not key_checked:
                    require_key(self.keys, meta)  # as opening it would (sealing rule 1): KeyUnavailable
                    key_checked = True
                if record is None:
                    plain = self._open_record(meta, lsn, raw)
                    record = decode_record(plain, where=f"record LSN {lsn} in segment {segment_id}")
                if record.page_no != page_no or record.lsn != lsn:
                    raise ChecksumMismatch(
                        f"record stored under LSN {lsn} of page {page_no} in segment {segment_id} says it is "
                        f"LSN {record.lsn} of page {record.page_no}; it is not served"
                    )
                apply_record(page, record)
                page_lsn = lsn
        return page_lsn
