"""Scrub support, the reading half: storage/scrub.py re-checks every stored copy through these, each call
one short read transaction (`scrub_records`, `scrub_versions`, `scrub_metadata`), and writes both
metadata copies again from the segment's state in memory when one fails (`repair_metadata`).

The checks themselves are the pure functions of storage/scrub.py (rule 1 there); what a bad record
or page version becomes is storage/store/quarantine.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sixfold.storage import segment_load
from sixfold.storage.errors import ChecksumMismatch
from sixfold.storage.keys import SEG_LSN, SEG_PAGE_LSN, page_key, prefix, record_key
from sixfold.storage.records import peek_header
from sixfold.storage.scrub import (
    CHAIN,
    RECORDS,
    VERSIONS,
    BadCopy,
    ScrubChunk,
    chain_gap,
    record_problem,
    version_problem,
)
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.store.rows import Rows


class Scrubbing(Rows):
    def scrub_records(self, segment_id: str, start_key: bytes | None, rows_max: int, bytes_max: int) -> ScrubChunk:
        """Check up to `rows_max` records (and `bytes_max` bytes) of a segment from `start_key` on, in one
        short read transaction (`start_key` None: from its first record): each copy (`record_problem`),
        and that every record at or below SCL links to a record the segment holds (`chain_gap`), with SCL
        and the chain anchor as this transaction's snapshot stored them."""
        meta = self.segment(segment_id).meta

        def check(txn: Any, key: bytes, raw: bytes, snapshot: SegmentMeta | None) -> BadCopy | None:
            _, lsn = SEG_LSN.unpack(key)

            def indexed(page_no: int) -> bool:
                return txn.get(page_key(meta.seg_no, page_no, lsn), db=self._page_index) is not None

            plain, problem = self._opened_or_problem(self._open_record, meta, lsn, raw)
            problem = problem or record_problem(meta, lsn, plain, indexed)
            if problem is not None:
                return BadCopy(RECORDS, lsn, 0, problem)
            if snapshot is None or lsn > snapshot.scl:
                return None
            prev_pg = peek_header(plain)[1]  # sound: record_problem checked its CRC

            def held(prev: int) -> bool:
                return txn.get(record_key(meta.seg_no, prev), db=self._records) is not None

            gap = chain_gap(snapshot, lsn, prev_pg, held)
            return None if gap is None else BadCopy(CHAIN, prev_pg, 0, gap)

        return self._scrub_rows(
            self._records, meta.seg_no, start_key, rows_max, bytes_max, check, segment_id=segment_id
        )

    def scrub_versions(self, segment_id: str, start_key: bytes | None, rows_max: int, bytes_max: int) -> ScrubChunk:
        """As `scrub_records`, for the segment's page versions."""
        meta = self.segment(segment_id).meta

        def check(txn: Any, key: bytes, raw: bytes, snapshot: SegmentMeta | None) -> BadCopy | None:
            _, page_no, lsn = SEG_PAGE_LSN.unpack(key)
            plain, problem = self._opened_or_problem(self._open_version, meta, page_no, lsn, raw)
            problem = problem or version_problem(meta, page_no, lsn, plain)
            return None if problem is None else BadCopy(VERSIONS, lsn, page_no, problem)

        return self._scrub_rows(self._versions, meta.seg_no, start_key, rows_max, bytes_max, check)

    def _scrub_rows(
        self,
        db: Any,
        seg_no: int,
        start_key: bytes | None,
        rows_max: int,
        bytes_max: int,
        check: Callable[[Any, bytes, bytes, SegmentMeta | None], BadCopy | None],
        segment_id: str | None = None,
    ) -> ScrubChunk:
        """Walk one segment's rows of `db` from `start_key` in one read transaction, `check`ing each, until
        `rows_max` rows or `bytes_max` bytes; the chunk says where to resume (None: at the end). With
        `segment_id`, `check` also gets the segment's metadata as stored in the same snapshot."""
        seg_prefix = prefix(seg_no)
        checked, size = 0, 0
        bad: list[BadCopy] = []
        with self.disk.read() as txn:
            snapshot = self._stored_meta(txn, segment_id) if segment_id is not None else None
            if snapshot is not None and snapshot.seg_no != seg_no:
                snapshot = None
            cursor = txn.cursor(db=db)
            if not cursor.set_range(start_key or seg_prefix):
                return ScrubChunk(0, [], None)
            for key, raw in cursor:
                if not key.startswith(seg_prefix):
                    break
                if checked >= rows_max or (checked and size + len(raw) > bytes_max):
                    return ScrubChunk(checked, bad, key)
                found = check(txn, key, raw, snapshot)
                if found is not None:
                    bad.append(found)
                checked += 1
                size += len(raw)
        return ScrubChunk(checked, bad, None)

    def scrub_metadata(self, segment_id: str) -> str | None:
        """Why one of the segment's two stored metadata copies must not be trusted (None: both sound and
        equal), read in one short read transaction."""
        with self.disk.read() as txn:
            return self._metadata_problem(txn, segment_id)

    def _metadata_problem(self, txn: Any, segment_id: str) -> str | None:
        decoded = []
        for table in segment_load.META_TABLES:
            where = f"metadata copy of segment {segment_id} in {table.decode()}"
            raw = txn.get(segment_id.encode(), db=self.disk.dbs[table])
            if raw is None:
                return f"{where} is missing"
            try:
                decoded.append(SegmentMeta.from_bytes(raw, where=where))
            except ChecksumMismatch as error:
                return error.message
        if decoded[0] != decoded[1]:
            return f"the two metadata copies of segment {segment_id} both check but differ"
        return None

    def repair_metadata(self, segment_id: str) -> bool:
        """Write both metadata copies again from the segment's state in memory (verified when the node
        started, kept since) if a stored copy (still) fails its check. Runs on the writer thread."""

        def txn_fn(txn: Any) -> bool:
            if segment_id not in self.segments or self._metadata_problem(txn, segment_id) is None:
                return False
            self._put_meta(txn, self.segment(segment_id).meta.copy())
            return True

        repaired = bool(self.disk.write(txn_fn))
        self.metadata_repaired += repaired
        return repaired
