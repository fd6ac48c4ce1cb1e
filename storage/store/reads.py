"""Reads on behalf of a writer or a peer: a page materialized at a read point, records in LSN order,
the chain tail at an LSN. Each runs in one read transaction (an MVCC snapshot) on any thread.

A read takes the segment's metadata again inside its transaction, so a segment recreated meanwhile
(a new seg_no) is never read under an old one, and GC, which publishes a raised horizon before it
deletes anything, never removes what a read already admitted (storage/segment.py rules 6 and 7).
"""

from __future__ import annotations

from dataclasses import dataclass

from sixfold.storage.errors import ChecksumMismatch, ReadPointOutOfRange
from sixfold.storage.keys import SEG_LSN, record_key
from sixfold.storage.records import LSN_MAX, LogRecord, decode_record
from sixfold.storage.store.rows import Rows

READ_RECORDS_MAX = 10_000
READ_BYTES_MAX = 8 * 1024 * 1024


@dataclass
class PageRead:
    data: bytes
    page_lsn: int
    scl: int


class Reads(Rows):
    def read_page(self, segment_id: str, page_no: int, read_point: int) -> PageRead:
        """Materialize a page at `read_point` from its newest version at or below it plus later records (on a
        clone's segment, through its parent for a page it has no version of: storage/lineage.py)."""
        seg = self.segment(segment_id)
        seg.check_page(page_no)
        seg.check_read_point(read_point)
        with self.disk.read() as txn:
            # GC publishes a raised horizon before it deletes anything: checked again inside the snapshot,
            # on the segment as it is now (a fresh environment may have created it again meanwhile).
            seg = self.segment(segment_id)
            seg.check_read_point(read_point)
            data, page_lsn = self._materialize(txn, seg.meta, page_no, read_point)
        return PageRead(data, page_lsn, seg.tracker.scl)

    def read_records(
        self, segment_id: str, from_lsn: int, to_lsn: int, max_records: int, max_bytes: int
    ) -> tuple[list[LogRecord], bool]:
        """Records with from_lsn < LSN <= to_lsn (to_lsn 0 = unbounded), each CRC-checked; (records, more)."""
        records, more, _ = self.read_records_with_scl(segment_id, from_lsn, to_lsn, max_records, max_bytes)
        return records, more

    def read_records_with_scl(
        self, segment_id: str, from_lsn: int, to_lsn: int, max_records: int, max_bytes: int
    ) -> tuple[list[LogRecord], bool, int]:
        """`read_records`, and the segment's SCL as stored in the same snapshot: the records up to that SCL
        are all there (a reader can tell a copy that was lost or rebuilt since it last asked)."""
        seg = self.segment(segment_id)
        seg.check_records_from(from_lsn)
        if from_lsn > LSN_MAX:
            return [], False, seg.tracker.scl
        max_records = min(max_records or READ_RECORDS_MAX, READ_RECORDS_MAX)
        max_bytes = min(max_bytes or READ_BYTES_MAX, READ_BYTES_MAX)
        out: list[LogRecord] = []
        size = 0
        more = False
        with self.disk.read() as txn:
            seg = self.segment(segment_id)
            seg.check_records_from(from_lsn)  # GC may have run since the check above
            seg_no = seg.meta.seg_no
            stored = self._stored_meta(txn, segment_id)
            scl = min(seg.tracker.scl, stored.scl) if stored is not None and stored.seg_no == seg_no else 0
            cursor = txn.cursor(db=self._records)
            if cursor.set_range(record_key(seg_no, from_lsn + 1)):
                for key, raw in cursor:
                    key_seg, lsn = SEG_LSN.unpack(key)
                    if key_seg != seg_no or (to_lsn and lsn > to_lsn):
                        break
                    if len(out) >= max_records or (out and size + len(raw) > max_bytes):
                        more = True
                        break
                    plain = self._open_record(seg.meta, lsn, raw)
                    record = decode_record(plain, where=f"record LSN {lsn} in segment {segment_id}")
                    if record.lsn != lsn:
                        raise ChecksumMismatch(
                            f"record stored under LSN {lsn} in segment {segment_id} says it is LSN {record.lsn}"
                        )
                    out.append(record)
                    size += len(raw)
        return out, more, scl

    def tail_at_or_below(self, segment_id: str, lsn: int) -> int:
        """The newest PG chain record at or below `lsn` (0 if none); `lsn` at or above the GC floor
        (below it the records may be gone: refused)."""
        lsn = min(lsn, LSN_MAX)
        seg = self.segment(segment_id)
        if lsn < seg.meta.retention_horizon_lsn:
            raise ReadPointOutOfRange(
                f"the chain tail at or below LSN {lsn} of segment {segment_id} is unknown: records at or below "
                f"its GC floor {seg.meta.retention_horizon_lsn} were garbage-collected"
            )
        with self.disk.read() as txn:
            return self._chain_tail_at_or_below(txn, self.segment(segment_id).meta, lsn)
