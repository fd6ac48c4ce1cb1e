"""Commits by time: the newest commit (a CPL record carrying the writer's commit time) a segment holds at
or before a time, for resolving `--at-time` and `backtrack --to TIME` (StorageService.FindCommit).

Only the segment's own records count (never a clone's parent), and only those in its complete chain (at
or below its SCL, as this read's snapshot stores it). The search walks the records backwards from the
bound, one read transaction, each record CRC-checked: a record that fails its check is skipped and
counted, never trusted. A walk longer than `find_commit_records_max` records stops with a sentence rather
than hold a reader for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sixfold.storage.errors import ChecksumMismatch, InvalidRequest, ReadPointOutOfRange
from sixfold.storage.keys import SEG_LSN, record_key
from sixfold.storage.records import LSN_MAX, LogRecord, decode_record
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.store.rows import Rows

FIND_COMMIT_RECORDS_MAX = 1_000_000  # records one search walks (backwards, then forwards for the oldest)


@dataclass(frozen=True)
class FoundCommit:
    lsn: int  # 0: no commit at or before the time among the records held
    commit_time_us: int
    gc_floor_lsn: int  # commits at or below it may have been garbage-collected
    oldest_commit_time_us: int  # the oldest commit time held (0: none)
    records_skipped: int  # records that failed their check on the way (not trusted, left to scrubbing)


class Commits(Rows):
    def find_commit(
        self,
        segment_id: str,
        at_time_us: int,
        at_or_below_lsn: int = 0,
        records_max: int = FIND_COMMIT_RECORDS_MAX,
    ) -> FoundCommit:
        """The newest commit with 0 < commit_time_us <= `at_time_us` and LSN <= `at_or_below_lsn` (0: no
        bound) and <= SCL; with the GC floor and the oldest commit time held. Runs on any thread."""
        if not at_time_us:
            raise InvalidRequest("give the time (at_time_us) whose newest commit at or before it to find")
        self.segment(segment_id)
        with self.disk.read() as txn:
            # The metadata in memory after the snapshot began: a GC that deleted anything this snapshot
            # lacks published its raised floor before (storage/segment.py rule 7).
            seg = self.segment(segment_id)
            meta = seg.meta
            if not seg.whole:
                raise ReadPointOutOfRange(
                    f"segment {segment_id} is not whole now (rebuilding a lost copy, hydrating or catching up), "
                    "so it cannot say which commits it lacks; ask another segment of the PG"
                )
            stored = self._stored_meta(txn, segment_id)
            scl = min(seg.tracker.scl, stored.scl) if stored is not None and stored.seg_no == meta.seg_no else 0
            cap = min(at_or_below_lsn or LSN_MAX, scl)
            found, skipped = self._newest_commit(txn, meta, at_time_us, cap, records_max)
            oldest, skipped_forward = self._oldest_commit(txn, meta, scl, records_max)
        return FoundCommit(
            lsn=found.lsn if found else 0,
            commit_time_us=found.commit_time_us if found else 0,
            gc_floor_lsn=meta.retention_horizon_lsn,
            oldest_commit_time_us=oldest,
            records_skipped=skipped + skipped_forward,
        )

    def _newest_commit(
        self, txn: Any, meta: SegmentMeta, at_time_us: int, cap: int, records_max: int
    ) -> tuple[LogRecord | None, int]:
        cursor = txn.cursor(db=self._records)
        moved = cursor.prev() if cursor.set_range(record_key(meta.seg_no, cap + 1)) else cursor.last()
        walked = skipped = 0
        while moved:
            key_seg, lsn = SEG_LSN.unpack(cursor.key())
            if key_seg != meta.seg_no or lsn > cap:
                break
            walked = self._count_walked(walked, records_max, meta, f"at or before {at_time_us} us")
            record = self._sound(meta, lsn, cursor.value())
            if record is None:
                skipped += 1
            elif record.cpl and 0 < record.commit_time_us <= at_time_us:
                return record, skipped
            moved = cursor.prev()
        return None, skipped

    def _oldest_commit(self, txn: Any, meta: SegmentMeta, cap: int, records_max: int) -> tuple[int, int]:
        cursor = txn.cursor(db=self._records)
        walked = skipped = 0
        if cursor.set_range(record_key(meta.seg_no, 0)):
            for key, raw in cursor:
                key_seg, lsn = SEG_LSN.unpack(key)
                if key_seg != meta.seg_no or lsn > cap:
                    break
                walked = self._count_walked(walked, records_max, meta, "(the oldest one held)")
                record = self._sound(meta, lsn, raw)
                if record is None:
                    skipped += 1
                elif record.cpl and record.commit_time_us:
                    return record.commit_time_us, skipped
        return 0, skipped

    @staticmethod
    def _count_walked(walked: int, records_max: int, meta: SegmentMeta, which: str) -> int:
        if walked >= records_max:
            raise ReadPointOutOfRange(
                f"the search of segment {meta.segment_id} for a commit {which} stopped after {records_max} "
                "records without finding one; give a time or LSN bound closer to the segment's newest records"
            )
        return walked + 1

    def _sound(self, meta: SegmentMeta, lsn: int, raw: bytes) -> LogRecord | None:
        """The record stored under `lsn` if it passes its check and says it is that LSN, else None."""
        try:
            plain = self._open_record(meta, lsn, raw)
            record = decode_record(plain, where=f"record LSN {lsn} in segment {meta.segment_id}")
        except ChecksumMismatch:
            return None
        return record if record.lsn == lsn else None
