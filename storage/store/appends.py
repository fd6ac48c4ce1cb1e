"""Appends: group commit's one synced write transaction for any number of batches from any streams.

Each batch is accepted or refused whole (storage/segment.py plans it, storage/epochs.py checks its
epochs); a refused batch gets its error in the result list and does not affect the others. The work
is done on copies of the segments' state, published only once the transaction has committed, so a
concurrent reader never trusts an SCL whose records are not yet durable. One sync per group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import lmdb

from sixfold.storage import epochs
from sixfold.storage.errors import InvalidRequest, StorageError
from sixfold.storage.keys import page_key, record_key
from sixfold.storage.records import LSN_MAX, LogRecord
from sixfold.storage.segment import AppendBatch, AppendPlan, Segment
from sixfold.storage.store.truncate import Truncating

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    batch_id: int
    segment_id: str
    scl: int
    highest_lsn: int
    stored: int
    duplicates: int


class Appends(Truncating):
    def commit_appends(self, batches: list[AppendBatch]) -> list[BatchResult | StorageError]:
        """Persist every acceptable batch in one synced transaction (see the module's docstring)."""

        stored: list[tuple[str, int, bytes, LogRecord]] = []  # for the recent-records cache, once committed

        def txn_fn(txn: Any) -> tuple[list[BatchResult | StorageError], dict[str, Segment]]:
            work: dict[str, Segment] = {}
            results: list[BatchResult | StorageError] = []
            del stored[:]  # a retried transaction (the map grew) starts again
            for batch in batches:
                # Each batch in its own nested transaction on its own copy: a refused batch
                # leaves no trace, neither on disk nor in memory.
                mark = len(stored)
                try:
                    seg = (work.get(batch.segment_id) or self.segment(batch.segment_id)).copy()
                    with self.disk.env.begin(write=True, parent=txn) as child:
                        results.append(self._append_one(child, batch, seg, stored))
                    work[batch.segment_id] = seg
                except StorageError as error:
                    del stored[mark:]
                    results.append(error)
                except lmdb.Error:
                    raise  # the disk's, not the batch's (storage/lmdb_env.py rule 4)
                except Exception as error:
                    del stored[mark:]
                    log.exception("batch %d for segment %s failed", batch.batch_id, batch.segment_id)
                    results.append(StorageError(f"the node could not apply the batch: {type(error).__name__}: {error}"))
            for seg in work.values():
                self._put_meta(txn, seg.meta)
            return results, work

        results, work = self.disk.write(txn_fn)
        self.segments.update(work)
        self.recent.put_all(stored)
        self._dirty.add(
            (batch.segment_id, (r.page_no for r, _ in batch.records))
            for batch, result in zip(batches, results)
            if not isinstance(result, StorageError)
        )
        return results

    def _append_one(
        self, txn: Any, batch: AppendBatch, seg: Segment, stored: list[tuple[str, int, bytes, LogRecord]]
    ) -> BatchResult:
        seg.check_epochs(batch.volume_epoch, batch.membership_epoch)
        if batch.vdl_hint > LSN_MAX:
            raise InvalidRequest(f"VDL hint {batch.vdl_hint} is above the highest LSN {LSN_MAX}")
        fresh = seg.new_truncations(batch.truncation_ranges, batch.volume_epoch)
        # Truncations first: they decide which of the batch's records are void.
        for r in fresh:
            self._truncate_in_txn(txn, seg, r)
        seg_no = seg.meta.seg_no

        def lookup(lsn: int) -> bytes | None:
            stored = txn.get(record_key(seg_no, lsn), db=self._records)
            if stored is None:
                return None
            # A sealed row that does not open is a rotten copy: b"" fails `intact`, so a resend replaces it.
            return self._opened_or_problem(self._open_record, seg.meta, lsn, stored)[0]

        plan: AppendPlan = seg.plan_append(batch, lookup)
        segment_id = seg.meta.segment_id
        for record, encoded in plan.puts:
            row = self._seal_record(seg.meta, record.lsn, encoded)
            txn.put(record_key(seg_no, record.lsn), row, db=self._records)
            txn.put(page_key(seg_no, record.page_no, record.lsn), b"", db=self._page_index)
            stored.append((segment_id, record.lsn, row, record))
        seg.commit_plan(plan, batch.vdl_hint)
        seg.meta.volume_epoch = epochs.adopted(seg.meta.volume_epoch, batch.volume_epoch)
        return BatchResult(
            batch.batch_id, batch.segment_id, plan.scl, plan.highest_lsn, len(plan.puts), plan.duplicates
        )
