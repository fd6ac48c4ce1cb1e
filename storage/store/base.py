"""The store's state and the few things every part of it uses: the LMDB environment, its tables, the
segments in memory, writing both metadata copies, and publishing a segment's new state after a commit.

Rule (every write in this package follows it): a write transaction works on a copy of the segment
(`Segment.copy`) and the copy replaces the published one only once the transaction has committed, so
a reader never trusts state whose rows are not yet durable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import lmdb

from sixfold.storage import lineage
from sixfold.storage.errors import ChecksumMismatch, UnknownSegment
from sixfold.storage.lmdb_env import MAP_SIZE_DEFAULT_BYTES, LmdbEnvironment
from sixfold.storage.segment import Segment, SegmentMeta
from sixfold.storage.store.dirty import DirtyPages
from sixfold.storage.store.recent_records import RecentRecords
from sixfold.storage.store.sealing import DataKeys, record_aad, version_aad
from sixfold.storage.store.sealing import open_ as open_row
from sixfold.storage.store.sealing import seal as seal_row

T = TypeVar("T")


class StoreBase:
    """What the parts of `SegmentStore` (storage/store/__init__.py) share; it holds no behaviour of its own."""

    def __init__(
        self,
        path: str,
        map_size_bytes: int = MAP_SIZE_DEFAULT_BYTES,
        open_env: Callable[..., Any] = lmdb.open,
        discard_env: Callable[[str], None] | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        """`open_env` is `lmdb.open`; the simulator passes an in-memory stand-in with the same API, and
        `discard_env(path)` to throw a failed environment away (default: move it aside). `keys` opens the
        data keys of segments encrypted at rest (storage/store/sealing.py)."""
        self.path = path
        self.keys = keys
        self.disk = LmdbEnvironment(
            path, map_size_bytes, open_env=open_env, discard=discard_env, zero_slack=keys is not None
        )
        self.segments: dict[str, Segment] = {}
        self.lost: dict[str, str] = {}  # segment_id -> why its metadata was not trusted at start
        self.metadata_repaired = 0  # metadata copies written again after failing their check
        self._next_seg_no = 1
        # Pages that received records since coalescing last looked (storage/coalesce.py): appends mark
        # them on the writer thread, the coalescer takes them on the event loop.
        self._dirty = DirtyPages(threading.Lock())
        # The rows appended lately, decoded (storage/store/recent_records.py): coalescing and reads skip
        # opening and decoding a row that is byte for byte one of them.
        self.recent = RecentRecords()
        # parent segment id -> the segments linked to it (storage/lineage.py), from the metadata in memory:
        # rebuilt whenever a link appears or goes (`_index_lineage`), on the writer thread.
        self._children: dict[str, list[str]] = {}

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

    # -- encryption at rest (storage/store/sealing.py) -------------------------------

    def _seal_record(self, meta: SegmentMeta, lsn: int, plain: bytes) -> bytes:
        return seal_row(self.keys, meta, record_aad(meta, lsn), plain)

    def _open_record(self, meta: SegmentMeta, lsn: int, stored: bytes) -> bytes:
        where = f"record LSN {lsn} in segment {meta.segment_id}"
        return open_row(self.keys, meta, record_aad(meta, lsn), stored, where)

    def _seal_version(self, meta: SegmentMeta, page_no: int, lsn: int, plain: bytes) -> bytes:
        return seal_row(self.keys, meta, version_aad(meta, page_no, lsn), plain)

    def _open_version(self, meta: SegmentMeta, page_no: int, lsn: int, stored: bytes) -> bytes:
        where = f"page version of page {page_no} at LSN {lsn} in segment {meta.segment_id}"
        return open_row(self.keys, meta, version_aad(meta, page_no, lsn), stored, where)

    def _opened_or_problem(self, open_row: Callable[..., bytes], *where: Any) -> tuple[bytes, str | None]:
        """(plaintext, None) of `open_row(*where)`, or (b"", why) for a row that does not open: a bad copy
        (sealing rule 3)."""
        try:
            return open_row(*where), None
        except ChecksumMismatch as error:
            return b"", error.message

    # -- segments in memory ----------------------------------------------------

    def segment(self, segment_id: str) -> Segment:
        seg = self.segments.get(segment_id)
        if seg is None:
            raise UnknownSegment(f"segment {segment_id!r} does not exist on this node")
        return seg

    def child_segment_ids(self, segment_id: str) -> list[str]:
        """The segments on this node that read the pages they never wrote through `segment_id`."""
        return list(self._children.get(segment_id, ()))

    def _index_lineage(self) -> None:
        self._children = lineage.children_index(s.meta for s in self.segments.values())

    def volume_epoch(self, segment_id: str) -> int:
        return self.segment(segment_id).meta.volume_epoch

    def _put_meta(self, txn: Any, meta: SegmentMeta) -> None:
        """Write both metadata copies (tables `segments` and `segments_copy`), each with its CRC-32C."""
        meta.raise_scl_high_water()
        encoded = meta.to_bytes()
        key = meta.segment_id.encode()
        txn.put(key, encoded, db=self.disk.dbs[b"segments"])
        txn.put(key, encoded, db=self.disk.dbs[b"segments_copy"])

    def _write_published(self, segment_id: str, txn_fn: Callable[[Any], tuple[T, Segment] | None]) -> T | None:
        """Run `txn_fn` (which returns None, or what it did and the segment's new state) in one write
        transaction and publish the state once the transaction committed."""
        result = self.disk.write(txn_fn)
        if result is None:
            return None
        done, seg = result
        self.segments[segment_id] = seg
        return done

    # -- the environment ---------------------------------------------------------

    def close(self) -> None:
        self.disk.close()

    def used_bytes(self) -> int:
        return self.disk.used_bytes()

    def map_size(self) -> int:
        return self.disk.map_size()
