"""A read replica's state of one volume: what the writer's redo stream (compute.v1 FollowRedo) says, applied.

Pure: compute/replica_volume.py feeds it the stream's messages (`apply`) and reads pages through it.
Rules (this module owns them):
1. The applied VDL (`vdl`) is the replica's read point: it never goes down and never exceeds a VDL the
   writer sent, and the writer sends only durable VDLs, so the replica never shows a change that is not
   durable and never goes backwards.
2. A stream starts with a snapshot (and a snapshot comes whenever the replica may have missed records): the
   cache is dropped (a new one, which knows nothing durable before it), the PGs' read points and SCLs are
   taken, and records follow from the snapshot's VDL on. A message from an older volume epoch than one
   heard (an old writer) is refused; a batch (not a snapshot) must carry the epoch of the stream's snapshot,
   a VDL at or above the previous one, and records that continue the volume chain: each above the last,
   at or below the message's VDL, linked by `prev_volume_lsn` (the first after a snapshot to at or below
   its VDL, each later one to the record before it), CRC-checked, whole MTRs (the last has the CPL flag).
   A refused message changes nothing (`RedoRefused`): the follower reconnects for a snapshot.
3. A snapshot below the applied VDL (a new writer whose first VDL is lower than one the replica applied,
   which a correct recovery never does, since everything at or below a released VDL is on a write quorum
   and every later recovery keeps it): the replica keeps serving at its applied VDL, with each PG's read
   point the higher of the two, and skips records at or below it, until the new writer's VDL passes it.
   Going back would show readers a state older than one they already saw; staying is safe because what it
   serves was durable, so storage still holds it at that read point.
4. Records are applied only to cached pages (compute/cache.py `on_durable`, in LSN order); a page read from
   storage at read point P enters the cache only if no record of it above P was applied meanwhile
   (`BufferCache.put`), only the cache that existed when the read began (a snapshot replaces it), and only
   if P is at or above the applied VDL when that cache started (it knows no record below).
5. A page at read point R (R <= `vdl`): the cached image when its page LSN is at or below R, else a
   segment at min(R, the PG's read point) whose SCL is known to be at least that (as the writer reads).
6. Lag: each message that moves the applied VDL up is a sample, apply time minus the writer's release time
   (`released_at_us`); p50 and p99 over the last `LAG_SAMPLES_MAX` samples within `LAG_WINDOW_US`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sixfold.compute.cache import CACHE_PAGES_DEFAULT, BufferCache
from sixfold.storage.errors import REASON_READ_REPLICA, StorageError
from sixfold.storage.records import LogRecord, decode_record

LAG_SAMPLES_MAX = 1000
LAG_WINDOW_US = 10_000_000


class ReadReplicaWrite(StorageError):
    """A write (SQL, KV, pages) sent to a read replica."""

    status_code_name = "FAILED_PRECONDITION"
    reason = REASON_READ_REPLICA


def read_replica_sentence(instance_id: str, writer_id: str) -> str:
    now = f", now {writer_id}" if writer_id else ""
    return f"instance {instance_id} is a read replica; send writes to the cluster endpoint (the writer{now})"


class RedoRefused(StorageError):
    """A message of the writer's redo stream that breaks the stream's rules: nothing of it was applied."""

    status_code_name = "FAILED_PRECONDITION"


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


@dataclass
class LagWindow:
    """Rule 6."""

    samples: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=LAG_SAMPLES_MAX))

    def add(self, now_us: int, lag_ms: float) -> None:
        self.samples.append((now_us, max(0.0, lag_ms)))

    def p50_p99(self, now_us: int) -> tuple[float, float]:
        recent = sorted(lag for at, lag in self.samples if now_us - at <= LAG_WINDOW_US)
        return percentile(recent, 0.5), percentile(recent, 0.99)


@dataclass
class ReplicaState:
    cache_pages_max: int = CACHE_PAGES_DEFAULT
    page_size: int = 0  # 0 until the geometry is known: no cache, every page from storage
    cache: BufferCache | None = None
    cache_base: int = 0  # the applied VDL when the cache started: it knows every record applied above it
    epoch: int = 0
    writer_id: str = ""
    vdl: int = 0  # the applied VDL: the read point (rule 1)
    writer_vdl: int = 0  # the newest VDL the writer sent
    page_count: int = 0
    geometry_epoch: int = 0
    pg_read_points: dict[int, int] = field(default_factory=dict)
    scl_of: dict[int, dict[str, int]] = field(default_factory=dict)
    expect_snapshot: bool = True
    snapshots: int = 0
    records_applied: int = 0
    last_applied_us: int = 0
    lag: LagWindow = field(default_factory=LagWindow)
    _stream_vdl: int = 0  # the VDL of the stream's last message
    _stream_lsn: int = 0  # the stream's last record (its snapshot's VDL before the first)
    _first_after_snapshot: bool = True

    def set_page_size(self, page_size: int) -> None:
        """The geometry is known: from here on pages are cached (a cache that starts now, rule 4)."""
        if self.page_size != page_size:
            self.page_size = page_size
            self._new_cache()

    def _new_cache(self) -> None:
        self.cache = BufferCache(self.page_size, self.cache_pages_max)
        self.cache_base = self.vdl

    def stream_lost(self) -> None:
        """The stream ended: the next one must start with a snapshot."""
        self.expect_snapshot = True

    # -- applying the stream (rules 1 to 3) --------------------------------------------------------

    def apply(self, msg: Any, now_us: int) -> None:
        """Apply one FollowRedoResponse; raise RedoRefused (nothing applied) if it breaks rule 2."""
        if msg.volume_epoch < self.epoch:
            raise RedoRefused(
                f"the redo stream carries volume epoch {msg.volume_epoch}, older than epoch {self.epoch} this replica "
                "already follows: it comes from a writer that a newer one replaced"
            )
        if msg.snapshot:
            self._snapshot(msg)
        else:
            self._batch(msg, now_us)
        self.page_count = max(self.page_count, msg.page_count)
        self.geometry_epoch = max(self.geometry_epoch, msg.geometry_epoch)
        self.last_applied_us = now_us

    def _snapshot(self, msg: Any) -> None:
        if msg.volume_epoch != self.epoch:
            self.writer_vdl = msg.vdl
        self.epoch, self.writer_id = msg.volume_epoch, msg.writer_id
        holding = msg.vdl < self.vdl  # rule 3
        for pg in msg.pgs:
            known = self.pg_read_points.get(pg.pg_index, 0)
            self.pg_read_points[pg.pg_index] = max(known, pg.read_point) if holding else pg.read_point
            self.scl_of[pg.pg_index] = dict(pg.scl_of)
        self.vdl = max(self.vdl, msg.vdl)
        if self.page_size:
            self._new_cache()
        self.writer_vdl = max(self.writer_vdl, msg.vdl)
        self._stream_vdl = self._stream_lsn = msg.vdl
        self._first_after_snapshot = True
        self.expect_snapshot = False
        self.snapshots += 1

    def _batch(self, msg: Any, now_us: int) -> None:
        if self.expect_snapshot:
            raise RedoRefused("the redo stream sent records before its snapshot")
        if msg.volume_epoch != self.epoch:
            raise RedoRefused(
                f"the redo stream changed volume epoch from {self.epoch} to {msg.volume_epoch} without a snapshot"
            )
        if msg.vdl < self._stream_vdl:
            raise RedoRefused(f"the redo stream's VDL went back from {self._stream_vdl} to {msg.vdl}")
        records = self._checked_records(msg)
        cache = self.cache
        fresh = [r for r in records if r.lsn > self.vdl]  # rule 3: at or below the applied VDL: reflected already
        if fresh and cache is not None:
            cache.on_durable(fresh)
        self.records_applied += len(fresh)
        for pg in msg.pgs:
            self.pg_read_points[pg.pg_index] = max(self.pg_read_points.get(pg.pg_index, 0), pg.read_point)
            if pg.scl_of:
                self.scl_of[pg.pg_index] = dict(pg.scl_of)
        if records:
            self._stream_lsn = records[-1].lsn
            self._first_after_snapshot = False
        self._stream_vdl = msg.vdl
        self.writer_vdl = max(self.writer_vdl, msg.vdl)
        if msg.vdl > self.vdl:
            self.vdl = msg.vdl
            if msg.released_at_us:
                self.lag.add(now_us, (now_us - msg.released_at_us) / 1000)

    def _checked_records(self, msg: Any) -> list[LogRecord]:
        out: list[LogRecord] = []
        last, first = self._stream_lsn, self._first_after_snapshot
        for i, encoded in enumerate(msg.records):
            try:
                record = decode_record(encoded, where=f"record {i} of the redo stream")
            except StorageError as error:
                raise RedoRefused(error.message) from None
            if record.lsn <= last or record.lsn > msg.vdl:
                raise RedoRefused(
                    f"record LSN {record.lsn} of the redo stream is out of order (after LSN {last}) or above the "
                    f"message's VDL {msg.vdl}"
                )
            linked = record.prev_volume_lsn <= last if first else record.prev_volume_lsn == last
            if not linked:
                raise RedoRefused(
                    f"record LSN {record.lsn} of the redo stream links to LSN {record.prev_volume_lsn}, not to the "
                    f"stream's previous record {last}: records are missing"
                )
            out.append(record)
            last, first = record.lsn, False
        if out and not out[-1].cpl:
            raise RedoRefused(f"the redo stream's message ends inside an MTR (record LSN {out[-1].lsn} is no CPL)")
        return out

    # -- reading (rules 4 and 5) -------------------------------------------------------------------------

    def cached_at(self, page_no: int, read_point: int) -> bytes | None:
        if self.cache is None:
            return None
        cached = self.cache.get(page_no)
        if cached is not None and cached[1] <= read_point:
            return cached[0]
        return None

    def put(self, cache: BufferCache | None, page_no: int, image: bytes, page_lsn: int, read_point: int) -> None:
        """A page read from storage at `read_point` by a read that began with `cache` (rule 4). A read point
        below the cache's base is not cached: the cache does not know the records between."""
        if cache is not None and cache is self.cache and read_point >= self.cache_base:
            cache.put(page_no, image, page_lsn, read_point)

    def pg_read_point(self, pg_index: int, read_point: int) -> int:
        return min(read_point, self.pg_read_points.get(pg_index, read_point))

    def lag_ms(self, now_us: int) -> tuple[float, float]:
        return self.lag.p50_p99(now_us)
