"""A segment's life on the node: the environment opened at start (what is trusted is decided by
storage/segment_load.py), a failed disk replaced by a fresh environment, segments created and dropped.

A failed disk (storage/lmdb_env.py rule 4): `rebuild_in_fresh_environment` moves the environment
aside, opens a fresh one and creates every segment it knew again, empty and `rebuilding`, to be
filled from its peers (storage/gossip.py), a clone's segment without its parent link (a flattened copy:
storage/lineage.py rule 7); segments whose metadata could not be read are left to the
control plane, which sees them missing from the node's heartbeats and creates them again.

Rows go in bounded transactions (`DELETE_ROWS_PER_TXN_MAX`); the metadata goes first, so a crash
midway leaves orphan rows that the next start clears.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import lmdb

from sixfold.storage import lineage, segment_load, tree_check
from sixfold.storage.errors import AlreadyExists, InvalidRequest, KeyUnavailable, StorageError
from sixfold.storage.keys import prefix
from sixfold.storage.scl import SclTracker
from sixfold.storage.segment import SEG_NO_MAX, Segment, SegmentMeta
from sixfold.storage.store.clones import Clones

log = logging.getLogger(__name__)

# Rows deleted per write transaction when clearing out orphan or dropped rows (bounds one transaction).
DELETE_ROWS_PER_TXN_MAX = 50_000


class Lifecycle(Clones):
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
                    loaded = segment_load.load(txn, self.disk.dbs, self._open_record)
            except lmdb.Error as error:  # at start, any LMDB error means the environment cannot be trusted
                raise self.disk.fail(error) from None
        except KeyUnavailable:
            self.disk.close()  # not damage: nothing is salvaged or rebuilt; the node waits for its keys
            raise
        except StorageError as error:
            salvaged = segment_load.salvage(self.disk.env, self.disk.dbs)
            log.warning(
                "%s; %d segments' metadata salvaged, rebuilt empty from their peers", error.message, len(salvaged)
            )
            self.rebuild_in_fresh_environment(salvaged)
            return
        self.segments, self.lost, self._next_seg_no = loaded.segments, loaded.lost, loaded.next_seg_no
        self._index_lineage()
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
        Its identity, epochs, truncation ranges, pins, high water and LSN floor are kept; nothing it stored is.
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
                highest_lsn=meta.highest_lsn_floor,
                lsn_floor=meta.highest_lsn_floor,  # its writer still allocates above a clone's branch
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
                # Every parent here is empty too: a clone's segment comes back as a flattened copy
                # (storage/lineage.py rule 7).
                parent_segment_id="",
                branch_lsn=0,
                parent_read_lsn=0,
            )
            next_seg_no += 1
            fresh[meta.segment_id] = Segment(meta=rebuilt, tracker=SclTracker(scl=0))

        def put_all(txn: Any) -> None:
            for seg in fresh.values():
                self._put_meta(txn, seg.meta)

        self.disk.write(put_all)
        self.segments, self._next_seg_no = fresh, next_seg_no
        self._index_lineage()
        self._dirty.clear()
        log.warning(
            "fresh LMDB environment at %s: %d segments created again, rebuilding from their peers: %s",
            self.path,
            len(fresh),
            ", ".join(sorted(fresh)) or "none",
        )
        return sorted(fresh)

    # -- segments -------------------------------------------------------------

    def create_segment(self, meta: SegmentMeta, rebuild: bool = False) -> tuple[SegmentMeta, bool]:
        """Create a segment (idempotent for an identical one). `meta.seg_no` is assigned here. `rebuild`:
        it replaces a copy that was lost, so it is not whole until it has caught up (SegmentMeta.rebuilding).
        With `meta.parent_segment_id`: a clone's segment, checked against its parent and started as
        storage/lineage.py rules 1 and 6 say (its watermarks are set here)."""
        meta.check_lineage()
        if rebuild and meta.parent_segment_id:
            raise InvalidRequest(
                f"segment {meta.segment_id} is created to rebuild a lost copy, so it has no parent: it is a "
                "flattened copy that hydrates every page from its peers; send the request without parent_segment_id"
            )
        existing = self.segments.get(meta.segment_id)
        if existing is not None:
            old = existing.meta
            if old.same_shape(meta):
                # The same segment (a flattened copy of a clone's segment is one too).
                if not old.parent_segment_id or not meta.parent_segment_id or old.lineage == meta.lineage:
                    return old, False
                raise AlreadyExists(
                    f"segment {meta.segment_id!r} already exists on this node as a clone of "
                    f"{old.parent_segment_id} at branch LSN {old.branch_lsn} (read at LSN {old.parent_read_lsn}), "
                    f"not of {meta.parent_segment_id} at branch LSN {meta.branch_lsn} (read at LSN "
                    f"{meta.parent_read_lsn})"
                )
            raise AlreadyExists(
                f"segment {meta.segment_id!r} already exists on this node with a different shape "
                f"(volume {existing.meta.volume_id}, PG {existing.meta.pg_index}, pages "
                f"{existing.meta.first_page}+{existing.meta.page_count}, page size {existing.meta.page_size})"
            )
        seg_no = self._next_seg_no
        if seg_no > SEG_NO_MAX:
            raise StorageError(f"this node has used every one of its {SEG_NO_MAX} segment numbers")
        fresh = SegmentMeta(**{**meta.__dict__, "seg_no": seg_no, "truncation_ranges": [], "rebuilding": rebuild})
        fresh.highest_lsn = max(fresh.highest_lsn, fresh.highest_lsn_floor)  # its writer allocates above it
        self.disk.write(self._put_clone if fresh.parent_segment_id else self._put_meta, fresh)
        self._next_seg_no = seg_no + 1
        self.lost.pop(fresh.segment_id, None)
        self.segments[fresh.segment_id] = Segment(meta=fresh, tracker=SclTracker(scl=fresh.scl))
        if fresh.parent_segment_id:
            self._index_lineage()
        return fresh, True

    def drop_segment(self, segment_id: str) -> int:
        """Drop a segment and its rows; refused while a clone's segment reads through it (lineage rule 7)."""
        seg = self.segment(segment_id)
        lineage.check_drop(segment_id, self.child_segment_ids(segment_id))

        def txn_fn(txn: Any) -> None:
            txn.delete(segment_id.encode(), db=self.disk.dbs[b"segments"])
            txn.delete(segment_id.encode(), db=self.disk.dbs[b"segments_copy"])

        self.disk.write(txn_fn)
        del self.segments[segment_id]
        if seg.meta.parent_segment_id:
            self._index_lineage()
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
