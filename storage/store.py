"""The storage node's segments in its LMDB environment: log records, page versions, segment metadata.

The environment itself (opening, the one writer, readers, map growth, what a failing disk becomes) is
storage/lmdb_env.py; what is trusted at start is storage/segment_load.py; row keys are storage/keys.py.

Threading: every write transaction runs on one thread (the node's writer); reads may run on any
thread. A read takes the segment's metadata inside its read transaction, so a segment recreated
meanwhile (a new seg_no) is never read under an old one.

Scrubbing (storage/scrub.py) re-checks every stored copy in short read transactions (`scrub_records`,
`scrub_versions`, `scrub_metadata`) and deletes or rewrites a bad one through the writer
(`quarantine_record`, `quarantine_version`, `repair_metadata`).

Durability: each write transaction is fsynced when it commits; `commit_appends` writes a whole group
of batches (from any number of streams) in one transaction: one sync per group. Segment metadata is
written twice in the same transaction (tables `segments` and `segments_copy`), each copy with its
CRC-32C.

A failed disk (storage/lmdb_env.py rule 4): `rebuild_in_fresh_environment` moves the environment
aside, opens a fresh one and creates every segment it knew again, empty and `rebuilding`, to be
filled from its peers (storage/gossip.py); segments whose metadata could not be read are left to the
control plane, which sees them missing from the node's heartbeats and creates them again.
"""

from __future__ import annotations

import logging
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import lmdb

from sixfold.storage import epochs, segment_load, tree_check
from sixfold.storage.errors import (
    AlreadyExists,
    ChecksumMismatch,
    InvalidRequest,
    ReadPointOutOfRange,
    StorageError,
    UnknownSegment,
)
from sixfold.storage.keys import SEG_LSN, SEG_PAGE_LSN, page_key, prefix, record_key
from sixfold.storage.lmdb_env import MAP_SIZE_DEFAULT_BYTES, LmdbEnvironment
from sixfold.storage.records import (
    LSN_MAX,
    LogRecord,
    apply_record,
    decode_page_version,
    decode_record,
    encode_page_version,
    peek_header,
)
from sixfold.storage.retention import coalesce_target, plan_page_gc
from sixfold.storage.scl import SclTracker
from sixfold.storage.scrub import (
    CHAIN,
    RECORDS,
    VERSIONS,
    BadCopy,
    Quarantined,
    ScrubChunk,
    chain_gap,
    record_problem,
    version_problem,
)
from sixfold.storage.segment import SEG_NO_MAX, AppendBatch, AppendPlan, Segment, SegmentMeta, TruncationRange
from sixfold.storage.segment_load import held_above

log = logging.getLogger(__name__)

READ_RECORDS_MAX = 10_000
READ_BYTES_MAX = 8 * 1024 * 1024
# A dirty count that makes coalescing read the page at its next round, whatever its chain minimum.
LOOK_AGAIN = 1 << 30
# Rows deleted per write transaction when clearing out orphan or dropped rows (bounds one transaction).
DELETE_ROWS_PER_TXN_MAX = 50_000

__all__ = ["BatchResult", "PageRead", "SegmentStore", "page_key", "record_key"]


@dataclass
class BatchResult:
    batch_id: int
    segment_id: str
    scl: int
    highest_lsn: int
    stored: int
    duplicates: int


@dataclass
class PageRead:
    data: bytes
    page_lsn: int
    scl: int


class SegmentStore:
    def __init__(
        self,
        path: str,
        map_size_bytes: int = MAP_SIZE_DEFAULT_BYTES,
        open_env: Callable[..., Any] = lmdb.open,
        discard_env: Callable[[str], None] | None = None,
    ) -> None:
        """`open_env` is `lmdb.open`; the simulator passes an in-memory stand-in with the same API, and
        `discard_env(path)` to throw a failed environment away (default: move it aside)."""
        self.path = path
        self.disk = LmdbEnvironment(path, map_size_bytes, open_env=open_env, discard=discard_env)
        self.segments: dict[str, Segment] = {}
        self.lost: dict[str, str] = {}  # segment_id -> why its metadata was not trusted at start
        self.metadata_repaired = 0  # metadata copies written again after failing their check
        self._next_seg_no = 1
        # Pages that received records since coalescing last looked (storage/coalesce.py): appends mark
        # them on the writer thread, the coalescer takes them on the event loop.
        self._dirty_pages: dict[str, Counter[int]] = {}
        self._dirty_lock = threading.Lock()
        self._load()

    # -- tables (looked up at each use: a fresh environment has new handles) --------

    @property
    def env(self) -> Any:
        return self.disk.env

    @property
    def _records(self) -> Any:
        return self.disk.dbs[b"records"]

    @property
    def _page_index(self) -> Any:
        return self.disk.dbs[b"page_index"]

    @property
    def _versions(self) -> Any:
        return self.disk.dbs[b"versions"]

    # -- start-up and a failed disk ----------------------------------------------------

    def _load(self) -> None:
        if self.disk.real:
            # Some corrupt pages abort LMDB itself (a C assertion): walk the tree in a child process first.
            check = tree_check.check_in_child(self.path)
            if not check.ok:
                salvaged = segment_load.salvaged_from(check.metadata)
                log.error(
                    "the LMDB environment at %s is corrupt (%s); %d segments' metadata salvaged, rebuilt "
                    "empty from their peers",
                    self.path,
                    check.problem,
                    len(salvaged),
                )
                self.disk.fail(RuntimeError(check.problem))
                self.rebuild_in_fresh_environment(salvaged)
                return
        try:
            try:
                self.disk.open()
                with self.disk.read() as txn:
                    loaded = segment_load.load(txn, self.disk.dbs)
            except lmdb.Error as error:  # at start, any LMDB error means the environment cannot be trusted
                raise self.disk.fail(error) from None
        except StorageError as error:
            salvaged = segment_load.salvage(self.disk.env, self.disk.dbs)
            log.warning(
                "%s; %d segments' metadata salvaged, rebuilt empty from their peers", error.message, len(salvaged)
            )
            self.rebuild_in_fresh_environment(salvaged)
            return
        self.segments, self.lost, self._next_seg_no = loaded.segments, loaded.lost, loaded.next_seg_no
        try:
            self._settle_load(loaded)
        except StorageError as error:  # e.g. a full disk: the same fixes are found again at the next start
            log.warning("could not store what the start-up checks fixed: %s", error.message)
        for seg in self.segments.values():
            log.info(
                "segment %s: scl=%d highest_lsn=%d records=%d%s",
                seg.meta.segment_id,
                seg.meta.scl,
                seg.meta.highest_lsn,
                seg.meta.record_count,
                "" if seg.whole else " (not whole)",
            )

    def _settle_load(self, loaded: segment_load.Loaded) -> None:
        """Store what the start-up checks fixed: metadata written again (both copies), the keys of lost
        segments removed, orphan rows deleted (in bounded transactions)."""
        metas_db, copies_db = self.disk.dbs[b"segments"], self.disk.dbs[b"segments_copy"]

        def fix(txn: Any) -> None:
            for meta in loaded.rewrite:
                self._put_meta(txn, meta)
            for segment_id in loaded.lost:
                txn.delete(segment_id.encode(), db=metas_db)
                txn.delete(segment_id.encode(), db=copies_db)

        if loaded.rewrite or loaded.lost:
            self.disk.write(fix)
            self.metadata_repaired += len(loaded.rewrite)
        for seg_no in loaded.orphan_seg_nos:
            removed = self._delete_rows(seg_no)
            log.warning("deleted %d orphan rows of seg_no %d (no trusted segment owns them)", removed, seg_no)

    def rebuild_in_fresh_environment(self, keep: list[SegmentMeta] | None = None) -> list[str]:
        """The disk failed: move the environment aside, open a fresh one and create every segment of
        `keep` (default: every segment held now) again, empty and `rebuilding` (it fills from its peers).
        Its identity, epochs, truncation ranges, pins and high water are kept; nothing it stored is.
        Returns the segment ids. Runs on the writer thread."""
        keep = [s.meta for s in self.segments.values()] if keep is None else keep
        self.disk.replace()
        fresh: dict[str, Segment] = {}
        next_seg_no = max([self._next_seg_no, *(m.seg_no + 1 for m in keep)])
        for meta in sorted(keep, key=lambda m: m.segment_id):
            rebuilt = replace(
                meta.copy(),
                seg_no=next_seg_no,
                scl=0,
                highest_lsn=0,
                record_count=0,
                retention_horizon_lsn=0,
                chain_anchor_lsn=0,
                vdl_hint=0,
                holes=[],
                rebuilding=True,
                versions_coalesced=0,
                records_collected=0,
                versions_collected=0,
                pages_hydrated=0,
                bytes_hydrated=0,
            )
            next_seg_no += 1
            fresh[meta.segment_id] = Segment(meta=rebuilt, tracker=SclTracker(scl=0))

        def put_all(txn: Any) -> None:
            for seg in fresh.values():
                self._put_meta(txn, seg.meta)

        self.disk.write(put_all)
        self.segments, self._next_seg_no = fresh, next_seg_no
        with self._dirty_lock:
            self._dirty_pages.clear()
        log.warning(
            "fresh LMDB environment at %s: %d segments created again, rebuilding from their peers: %s",
            self.path,
            len(fresh),
            ", ".join(sorted(fresh)) or "none",
        )
        return sorted(fresh)

    def close(self) -> None:
        self.disk.close()

    # -- helpers --------------------------------------------------------------

    def segment(self, segment_id: str) -> Segment:
        seg = self.segments.get(segment_id)
        if seg is None:
            raise UnknownSegment(f"segment {segment_id!r} does not exist on this node")
        return seg

    def volume_epoch(self, segment_id: str) -> int:
        return self.segment(segment_id).meta.volume_epoch

    def _put_meta(self, txn: Any, meta: SegmentMeta) -> None:
        meta.raise_scl_high_water()
        encoded = meta.to_bytes()
        key = meta.segment_id.encode()
        txn.put(key, encoded, db=self.disk.dbs[b"segments"])
        txn.put(key, encoded, db=self.disk.dbs[b"segments_copy"])

    # -- segments -------------------------------------------------------------

    def create_segment(self, meta: SegmentMeta, rebuild: bool = False) -> tuple[SegmentMeta, bool]:
        """Create a segment (idempotent for an identical one). `meta.seg_no` is assigned here. `rebuild`:
        it replaces a copy that was lost, so it is not whole until it has caught up (SegmentMeta.rebuilding)."""
        existing = self.segments.get(meta.segment_id)
        if existing is not None:
            if existing.meta.same_shape(meta):
                return existing.meta, False
            raise AlreadyExists(
                f"segment {meta.segment_id!r} already exists on this node with a different shape "
                f"(volume {existing.meta.volume_id}, PG {existing.meta.pg_index}, pages "
                f"{existing.meta.first_page}+{existing.meta.page_count}, page size {existing.meta.page_size})"
            )
        seg_no = self._next_seg_no
        if seg_no > SEG_NO_MAX:
            raise StorageError(f"this node has used every one of its {SEG_NO_MAX} segment numbers")
        fresh = SegmentMeta(**{**meta.__dict__, "seg_no": seg_no, "truncation_ranges": [], "rebuilding": rebuild})
        self.disk.write(self._put_meta, fresh)
        self._next_seg_no = seg_no + 1
        self.lost.pop(fresh.segment_id, None)
        self.segments[fresh.segment_id] = Segment(meta=fresh, tracker=SclTracker(scl=fresh.scl))
        return fresh, True

    def drop_segment(self, segment_id: str) -> int:
        seg = self.segment(segment_id)

        def txn_fn(txn: Any) -> None:
            txn.delete(segment_id.encode(), db=self.disk.dbs[b"segments"])
            txn.delete(segment_id.encode(), db=self.disk.dbs[b"segments_copy"])

        self.disk.write(txn_fn)
        del self.segments[segment_id]
        return self._delete_rows(seg.meta.seg_no)

    def _delete_rows(self, seg_no: int) -> int:
        """Delete every row of `seg_no` (records, page index, versions) in bounded transactions; return the
        records removed. The metadata is gone first, so a crash midway leaves orphans the next start clears."""
        removed = 0
        for db_name in (b"records", b"page_index", b"versions"):
            while True:
                n = self.disk.write(
                    self._delete_prefix, self.disk.dbs[db_name], prefix(seg_no), DELETE_ROWS_PER_TXN_MAX
                )
                if db_name == b"records":
                    removed += n
                if n < DELETE_ROWS_PER_TXN_MAX:
                    break
        return removed

    @staticmethod
    def _delete_prefix(txn: Any, db: Any, key_prefix: bytes, limit: int) -> int:
        cursor = txn.cursor(db=db)
        removed = 0
        if cursor.set_range(key_prefix):
            while removed < limit and cursor.key() and bytes(cursor.key()).startswith(key_prefix):
                removed += 1
                if not cursor.delete():
                    break
        return removed

    # -- epochs ---------------------------------------------------------------

    def raise_volume_epoch(self, segment_id: str, volume_epoch: int, writer_id: str = "") -> int:
        """Take `volume_epoch` for `writer_id` durably (storage/epochs.py rule 4; the same writer raising the
        same epoch again is a no-op). Returns the epoch. Runs on the writer thread."""
        current = self.segment(segment_id)
        if not epochs.plan_raise(
            volume_epoch, writer_id, current.meta.volume_epoch, current.meta.volume_epoch_owner, segment_id
        ):
            return volume_epoch

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.volume_epoch = volume_epoch
            seg.meta.volume_epoch_owner = writer_id
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)
        return volume_epoch

    def update_membership(self, segment_id: str, membership_epoch: int, peers: list[list[str]]) -> int:
        """Install a PG membership epoch (and its peers) durably; equal epochs are idempotent."""
        current = self.segment(segment_id)
        epochs.check_membership_raise(membership_epoch, current.meta.membership_epoch, segment_id)
        if membership_epoch == current.meta.membership_epoch and peers == current.meta.peers:
            return membership_epoch

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.membership_epoch = membership_epoch
            seg.meta.peers = [list(p) for p in peers]
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)
        return membership_epoch

    def set_rebuild_target(self, segment_id: str, target_lsn: int) -> Segment:
        """A rebuilding segment measured, from its peers, the highest SCL it may have acknowledged before
        its copy was lost (storage/gossip.py): it must catch up to there before it is whole again. Runs on
        the writer thread."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            seg.meta.scl_high_water = max(seg.meta.scl_high_water, min(target_lsn, LSN_MAX))
            seg.meta.rebuilding = False
            self._put_meta(txn, seg.meta)
            return seg

        seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return seg

    # -- appends --------------------------------------------------------------

    def commit_appends(self, batches: list[AppendBatch]) -> list[BatchResult | StorageError]:
        """Persist every acceptable batch in one synced transaction.

        Each batch is accepted or refused whole; a refused batch gets its error in
        the result list and does not affect the others. The work is done on copies
        of the segments' state, published only once the transaction has committed,
        so a concurrent reader never trusts an SCL whose records are not yet durable.
        """

        def txn_fn(txn: Any) -> tuple[list[BatchResult | StorageError], dict[str, Segment]]:
            work: dict[str, Segment] = {}
            results: list[BatchResult | StorageError] = []
            for batch in batches:
                # Each batch in its own nested transaction on its own copy: a refused batch
                # leaves no trace, neither on disk nor in memory.
                try:
                    seg = (work.get(batch.segment_id) or self.segment(batch.segment_id)).copy()
                    with self.disk.env.begin(write=True, parent=txn) as child:
                        results.append(self._append_one(child, batch, seg))
                    work[batch.segment_id] = seg
                except StorageError as error:
                    results.append(error)
                except lmdb.Error:
                    raise  # the disk's, not the batch's (storage/lmdb_env.py rule 4)
                except Exception as error:
                    log.exception("batch %d for segment %s failed", batch.batch_id, batch.segment_id)
                    results.append(StorageError(f"the node could not apply the batch: {type(error).__name__}: {error}"))
            for seg in work.values():
                self._put_meta(txn, seg.meta)
            return results, work

        results, work = self.disk.write(txn_fn)
        self.segments.update(work)
        with self._dirty_lock:
            for batch, result in zip(batches, results):
                if not isinstance(result, StorageError):
                    self._dirty_pages.setdefault(batch.segment_id, Counter()).update(
                        r.page_no for r, _ in batch.records
                    )
        return results

    def take_dirty_pages(self, segment_id: str) -> Counter[int]:
        """Per page, a count that is never below the number of its records above its newest page
        version, then forget them all (the caller gives back what it does not settle). Appends add to
        it; coalescing skips a page whose count is below its chain minimum without reading it."""
        with self._dirty_lock:
            return self._dirty_pages.pop(segment_id, Counter())

    def mark_dirty_pages(self, segment_id: str, counts: dict[int, int]) -> None:
        """Give pages back with `counts` records above their newest version (added to any counted since)."""
        with self._dirty_lock:
            self._dirty_pages.setdefault(segment_id, Counter()).update(counts)

    def _unmark_folded(self, segment_id: str, folded: dict[int, int]) -> None:
        """A fold took these records out of 'above the newest version': count them off."""
        with self._dirty_lock:
            counts = self._dirty_pages.setdefault(segment_id, Counter())
            counts.subtract(folded)
            for page in folded:
                if counts[page] <= 0:
                    del counts[page]

    def dirty_pages(self, segment_id: str) -> dict[int, int]:
        """A copy of the counts, for status and tests."""
        with self._dirty_lock:
            return dict(self._dirty_pages.get(segment_id, {}))

    def _append_one(self, txn: Any, batch: AppendBatch, seg: Segment) -> BatchResult:
        seg.check_epochs(batch.volume_epoch, batch.membership_epoch)
        if batch.vdl_hint > LSN_MAX:
            raise InvalidRequest(f"VDL hint {batch.vdl_hint} is above the highest LSN {LSN_MAX}")
        fresh = seg.new_truncations(batch.truncation_ranges, batch.volume_epoch)
        # Truncations first: they decide which of the batch's records are void.
        for r in fresh:
            self._truncate_in_txn(txn, seg, r)
        seg_no = seg.meta.seg_no

        def lookup(lsn: int) -> bytes | None:
            return txn.get(record_key(seg_no, lsn), db=self._records)

        plan: AppendPlan = seg.plan_append(batch, lookup)
        for record, encoded in plan.puts:
            txn.put(record_key(seg_no, record.lsn), encoded, db=self._records)
            txn.put(page_key(seg_no, record.page_no, record.lsn), b"", db=self._page_index)
        seg.commit_plan(plan, batch.vdl_hint)
        seg.meta.volume_epoch = max(seg.meta.volume_epoch, batch.volume_epoch)
        return BatchResult(
            batch.batch_id, batch.segment_id, plan.scl, plan.highest_lsn, len(plan.puts), plan.duplicates
        )

    # -- truncation -----------------------------------------------------------

    def truncate(self, segment_id: str, volume_epoch: int, r: TruncationRange) -> int:
        """Apply an epoch-stamped truncation range durably; return the number of records removed."""
        current = self.segment(segment_id)
        current.check_epochs(volume_epoch, current.meta.membership_epoch)
        if not current.new_truncations([r], volume_epoch):
            return 0

        def txn_fn(txn: Any) -> tuple[int, Segment]:
            seg = self.segment(segment_id).copy()
            removed = self._truncate_in_txn(txn, seg, r)
            seg.meta.volume_epoch = max(seg.meta.volume_epoch, volume_epoch)
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
                raw = cursor.value()
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
        kept_from_start = held_above(txn, self._records, seg.meta, below)
        highest = seg.meta.highest_lsn
        if highest >= r.start_lsn:
            highest = self._highest_lsn_in_txn(txn, seg_no)
        seg.note_truncation(r, below, kept_from_start, removed, highest, stored_tail)
        return removed

    def _highest_lsn_in_txn(self, txn: Any, seg_no: int) -> int:
        cursor = txn.cursor(db=self._records)
        moved = cursor.prev() if cursor.set_range(record_key(seg_no + 1, 0)) else cursor.last()
        if moved:
            key_seg, lsn = SEG_LSN.unpack(cursor.key())
            if key_seg == seg_no:
                return lsn
        return 0

    # -- reads ----------------------------------------------------------------

    def read_page(self, segment_id: str, page_no: int, read_point: int) -> PageRead:
        """Materialize a page at `read_point` from its newest version at or below it plus later records."""
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

    def _materialize(self, txn: Any, meta: SegmentMeta, page_no: int, read_point: int) -> tuple[bytes, int]:
        """(image, page_lsn) of a page at `read_point`, every copy CRC-checked."""
        seg_no, segment_id = meta.seg_no, meta.segment_id
        page = bytearray(meta.page_size)
        page_lsn = 0
        vcursor = txn.cursor(db=self._versions)
        found = vcursor.set_range(page_key(seg_no, page_no, read_point + 1))
        moved = vcursor.prev() if found else vcursor.last()
        if moved:
            key_seg, key_page, lsn = SEG_PAGE_LSN.unpack(vcursor.key())
            if key_seg == seg_no and key_page == page_no and lsn <= read_point:
                where = f"page version of page {page_no} at LSN {lsn} in segment {segment_id}"
                _, _, image = decode_page_version(vcursor.value(), where=where)
                page[:] = image
                page_lsn = lsn
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
                record = decode_record(raw, where=f"record LSN {lsn} in segment {segment_id}")
                if record.page_no != page_no or record.lsn != lsn:
                    raise ChecksumMismatch(
                        f"record stored under LSN {lsn} of page {page_no} in segment {segment_id} says it is "
                        f"LSN {record.lsn} of page {record.page_no}; it is not served"
                    )
                apply_record(page, record)
                page_lsn = lsn
        return bytes(page), page_lsn

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
                    record = decode_record(raw, where=f"record LSN {lsn} in segment {segment_id}")
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

    # -- scrubbing (storage/scrub.py) ---------------------------------------------

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

            problem = record_problem(meta, lsn, raw, indexed)
            if problem is not None:
                return BadCopy(RECORDS, lsn, 0, problem)
            if snapshot is None or lsn > snapshot.scl:
                return None
            prev_pg = peek_header(raw)[1]  # sound: record_problem checked its CRC

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
            problem = version_problem(meta, page_no, lsn, raw)
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
        checked, size, bad = 0, 0, []
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

    def _stored_meta(self, txn: Any, segment_id: str) -> SegmentMeta | None:
        """The segment's metadata as this transaction's snapshot stores it (either good copy), or None."""
        return segment_load.trusted_copy(
            (txn.get(segment_id.encode(), db=self.disk.dbs[table]) for table in segment_load.META_TABLES), segment_id
        )

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

    def _write_published(
        self,
        segment_id: str,
        txn_fn: Callable[[Any], tuple[Quarantined, Segment] | None],
    ) -> Quarantined | None:
        """Run `txn_fn` (which returns None, or what it did and the segment's new state) and publish the state
        once the transaction committed."""
        result = self.disk.write(txn_fn)
        if result is None:
            return None
        done, seg = result
        self.segments[segment_id] = seg
        return done

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

            problem = record_problem(seg.meta, lsn, raw, indexed)
            if problem is None:
                return None
            txn.delete(key, db=self._records)
            rows = self._delete_index_rows(txn, seg, lsn, raw)
            scl_before = seg.tracker.scl
            self._break_chain_at(txn, seg, lsn)
            seg.meta.record_count = max(0, seg.meta.record_count - 1)
            if lsn >= seg.meta.highest_lsn:
                seg.meta.highest_lsn = self._highest_lsn_in_txn(txn, seg_no)
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
        seg.tracker = SclTracker.rebuilt(base, held_above(txn, self._records, seg.meta, base))
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
            if raw is None or version_problem(seg.meta, page_no, lsn, raw) is None:
                return False
            txn.delete(key, db=self._versions)
            # Records the version covered are above the page's newest version again: look at it.
            self.mark_dirty_pages(segment_id, {page_no: LOOK_AGAIN})
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

    # -- retention: coalescing, GC, pins, hydration (storage/retention.py) -------------

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

    def _newest_version_at_or_below(self, txn: Any, seg_no: int, page_no: int, lsn: int) -> int:
        cursor = txn.cursor(db=self._versions)
        moved = cursor.prev() if cursor.set_range(page_key(seg_no, page_no, lsn + 1)) else cursor.last()
        if moved:
            key_seg, key_page, at = SEG_PAGE_LSN.unpack(cursor.key())
            if key_seg == seg_no and key_page == page_no:
                return at
        return 0

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
        with self.disk.read() as txn:
            page: int | None = max(start_page, meta.first_page)
            for _ in range(pages_max):
                page = self._next_page(txn, self._page_index, seg_no, page)
                if page is None:
                    return found, remaining, None
                self._look_at(txn, meta, page, limit, chain_min, found, remaining)
                page += 1
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

        def txn_fn(txn: Any) -> tuple[int, Segment]:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            bound = min(limit, seg.tracker.scl, meta.vdl_hint)  # SCL may have dropped since (a quarantine)
            if seg.tracker.scl < meta.retention_horizon_lsn:
                return 0, seg  # lost a copy, or being hydrated: what it holds is not to be folded
            folded: dict[int, int] = {}  # page -> records the new version covers above the old one
            for page in pages:
                newest = self._newest_version_at_or_below(txn, meta.seg_no, page, LSN_MAX)
                lsns = self._page_lsns(txn, self._page_index, meta.seg_no, page, above=newest, upto=bound)
                target = coalesce_target(lsns, bound, chain_min)
                if target is None:
                    continue
                image, page_lsn = self._materialize(txn, meta, page, target)
                assert page_lsn == target, (page_lsn, target)
                txn.put(
                    page_key(meta.seg_no, page, target), encode_page_version(page, target, image), db=self._versions
                )
                folded[page] = sum(1 for lsn in lsns if lsn <= target)
            meta.versions_coalesced += len(folded)
            if folded:
                self._put_meta(txn, meta)
            return folded, seg

        folded, seg = self.disk.write(txn_fn)
        if folded:
            self.segments[segment_id] = seg
            self._unmark_folded(segment_id, folded)
        return len(folded)

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
            page: int | None = max(start_page, meta.first_page)
            if seg.tracker.scl < horizon:
                return None, seg  # being hydrated: hydration replaces everything at or below the horizon
            for _ in range(pages_max):
                page = self._next_page(txn, self._versions, seg_no, page)
                if page is None:
                    break
                plan = plan_page_gc(
                    page,
                    horizon,
                    self._page_lsns(txn, self._versions, seg_no, page, upto=horizon),
                    self._page_lsns(txn, self._page_index, seg_no, page, upto=horizon),
                )
                for lsn in plan.versions_to_delete:
                    txn.delete(page_key(seg_no, page, lsn), db=self._versions)
                for lsn in plan.records_to_delete:
                    txn.delete(page_key(seg_no, page, lsn), db=self._page_index)
                    txn.delete(record_key(seg_no, lsn), db=self._records)
                meta.versions_collected += len(plan.versions_to_delete)
                meta.records_collected += len(plan.records_to_delete)
                meta.record_count = max(0, meta.record_count - len(plan.records_to_delete))
                page += 1
            self._put_meta(txn, meta)
            return page, seg

        page, seg = self.disk.write(txn_fn)
        self.segments[segment_id] = seg
        return page

    def pin_lsns(self, segment_id: str, lsns: list[int]) -> None:
        """Replace the segment's pinned LSNs durably. Runs on the writer thread."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            for lsn in lsns:
                if lsn < seg.meta.retention_horizon_lsn or lsn > LSN_MAX:
                    raise ReadPointOutOfRange(
                        f"LSN {lsn} cannot be pinned on segment {segment_id}: it is below the retention horizon "
                        f"{seg.meta.retention_horizon_lsn} (its page versions are no longer kept) or above "
                        f"the highest LSN"
                    )
            seg.meta.pinned_lsns = sorted(set(lsns))
            self._put_meta(txn, seg.meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)

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
            seg_no = meta.seg_no
            tail = self._chain_tail_at_or_below(txn, meta, at_lsn)
            page: int | None = max(start_page, meta.first_page)
            while True:
                candidates = [
                    p
                    for p in (
                        self._next_page(txn, self._page_index, seg_no, page),
                        self._next_page(txn, self._versions, seg_no, page),
                    )
                    if p is not None
                ]
                if not candidates:
                    return out, None, tail
                page = min(candidates)
                if len(out) >= pages_max or (out and size + meta.page_size > max_bytes):
                    return out, page, tail
                image, page_lsn = self._materialize(txn, meta, page, at_lsn)
                if page_lsn:
                    out.append((page, page_lsn, image))
                    size += len(image)
                page += 1

    def begin_hydration(self, segment_id: str, at_lsn: int) -> None:
        """Before copying a peer's pages at `at_lsn`: raise the horizon (and GC floor) to it while SCL stays
        below, so the segment serves nothing while its pages are being replaced (retention rule 5).
        Runs on the writer thread."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            assert at_lsn >= meta.retention_horizon_lsn, (at_lsn, meta.retention_horizon_lsn)
            if seg.tracker.scl >= at_lsn:  # only a segment below the peer's LSN hydrates
                seg.tracker = SclTracker(scl=min(seg.tracker.scl, at_lsn - 1))
                meta.scl = seg.tracker.scl
            meta.retention_horizon_lsn = at_lsn
            meta.vdl_hint = max(meta.vdl_hint, at_lsn)  # the peer's horizon was at or below a writer's VDL
            self._put_meta(txn, meta)
            return seg

        self.segments[segment_id] = self.disk.write(txn_fn)

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
        transaction. Returns the bytes stored. Runs on the writer thread."""

        def txn_fn(txn: Any) -> tuple[int, Segment]:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            assert meta.retention_horizon_lsn == at_lsn and seg.tracker.scl < at_lsn, "begin_hydration first"
            seg_no = meta.seg_no
            stop = meta.first_page + meta.page_count if end_page is None else end_page
            page: int | None = max(start_page, meta.first_page)
            removed = 0
            while True:
                candidates = [
                    p
                    for p in (
                        self._next_page(txn, self._page_index, seg_no, page),
                        self._next_page(txn, self._versions, seg_no, page),
                    )
                    if p is not None
                ]
                if not candidates or min(candidates) >= stop:
                    break
                page = min(candidates)
                for lsn in self._page_lsns(txn, self._versions, seg_no, page, upto=at_lsn):
                    txn.delete(page_key(seg_no, page, lsn), db=self._versions)
                for lsn in self._page_lsns(txn, self._page_index, seg_no, page, upto=at_lsn):
                    txn.delete(page_key(seg_no, page, lsn), db=self._page_index)
                    txn.delete(record_key(seg_no, lsn), db=self._records)
                    removed += 1
                page += 1
            stored = 0
            for page_no, page_lsn, image in versions:
                seg.check_page(page_no)
                assert start_page <= page_no < stop and page_lsn <= at_lsn and len(image) == meta.page_size
                txn.put(
                    page_key(seg_no, page_no, page_lsn),
                    encode_page_version(page_no, page_lsn, image),
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
        and chain anchor move to it and the chain is rebuilt from the records held above. Returns SCL.
        Runs on the writer thread."""

        def txn_fn(txn: Any) -> Segment:
            seg = self.segment(segment_id).copy()
            meta = seg.meta
            assert meta.retention_horizon_lsn == at_lsn and chain_tail_lsn <= at_lsn
            held = held_above(txn, self._records, meta, at_lsn)
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
        encoded = encode_page_version(page_no, lsn, image)
        self.disk.write(lambda txn: txn.put(page_key(seg.meta.seg_no, page_no, lsn), encoded, db=self._versions))

    def used_bytes(self) -> int:
        return self.disk.used_bytes()

    def map_size(self) -> int:
        return self.disk.map_size()
