"""Scrubbing: every stored record and page version is re-checked on a schedule.

Invariant 6 says a copy is checked against its CRC-32C whenever it is read; a
copy nobody reads could rot unseen until the day it is the last good one. The
scrubber reads every copy of every segment again, pass after pass.

Rules (this module owns them):
1. What is checked. A record: its CRC-32C, that it says it is the LSN it is
   stored under, that its page lies in the segment, that its PG backlink points
   back, and that the page index has its row (a read would skip it otherwise).
   A page version: its CRC-32C, that it says it is the page and LSN it is stored
   under, and that its image is one page long. The chain: every record at or
   below SCL (as the same snapshot stores it) names a PG predecessor the
   segment holds, or one at or below its chain anchor (GC may have collected
   those): SCL never claims more than the records prove. The metadata: both
   stored copies pass their CRC-32C and bounds and are equal. The checks are
   the pure functions `record_problem`, `version_problem` and `chain_gap`; the
   store runs them.
2. How it reads. A pass walks one segment after another, first its metadata,
   then its records, then its page versions, in key order. Each tick is one short read
   transaction of at most `SCRUB_RECORDS_PER_TICK_MAX` rows and
   `SCRUB_BYTES_PER_TICK_MAX` bytes; no transaction is held across an await.
   Between ticks the scrubber sleeps `SCRUB_TICK_PAUSE_S`, so a big segment is
   spread over many ticks and appends keep the event loop and the writer. While
   appends are arriving (the node's count of committed batches moved since the
   last tick), it sleeps `SCRUB_BUSY_PAUSE_S` instead: background work yields
   to foreground work, as in Aurora, and the pass still moves on. A
   per-segment cursor (the next key) lets the pass resume where it stopped.
   A pass starts `interval_s` after the previous one ended (the first one
   `interval_s` after start, not in the restart's catch-up rush).
3. What a bad copy becomes. It is quarantined on the writer thread
   (`quarantine_record` / `quarantine_version`, storage/store/quarantine.py), which checks it
   again inside the write transaction (a resend may have repaired it since the
   read) and deletes it in one transaction. A record: its row and its
   page-index row go, and the SCL tracker is rebuilt so the chain breaks at the
   hole — SCL falls to the record's chain predecessor, records above it wait as
   pending — and the lowered SCL is persisted in the same transaction (a
   restart trusts the persisted SCL). From then on a read at or above the hole
   is refused, never served wrong, and gossip (storage/gossip.py), seeing peers
   with a higher SCL, pulls the record again. A segment with no peers keeps
   the hole (logged). A page version: it is deleted; reads fall back to an older
   version plus the records after it, and coalescing may write it again.
   Garbage collection (storage/retention.py) makes some copies the only ones:
   a record at or below the GC floor, or the version a page keeps as its base
   there once its own record was collected. Losing one cannot be repaired from
   records (the peers collected them too), so the store lowers SCL below the
   floor in the same transaction: the segment refuses every read (rule 5 of
   storage/retention.py) until gossip hydrates it again from a peer's page
   versions, never serving a page built from what is left.
   A chain gap: the chain breaks at the missing LSN (SCL falls below it, as
   for a quarantined record) and gossip fetches it. A metadata copy that fails:
   both copies are written again from the segment's state in memory (checked
   when the node started, kept since).
4. Counters (in memory, per segment, since the node started, like gossip's
   `records_repaired`): `records_quarantined`, `versions_quarantined`,
   `chain_gaps`, `metadata_repaired`, `scrub_passes` (completed passes over the
   segment).
5. While the node's disk is failed or full nothing is scrubbed (the disk's
   condition is reported once, by storage/lmdb_env.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sixfold.storage.errors import ChecksumMismatch, StorageError, UnknownSegment
from sixfold.storage.records import decode_page_version, decode_record
from sixfold.storage.tasks import cancel_and_wait

if TYPE_CHECKING:
    from sixfold.storage.lmdb_env import LmdbEnvironment
    from sixfold.storage.node_writer import OnWriter
    from sixfold.storage.segment import Segment, SegmentMeta

log = logging.getLogger(__name__)

SCRUB_INTERVAL_S = 5.0  # from the end of one pass to the start of the next
SCRUB_RECORDS_PER_TICK_MAX = 128  # rows (records or page versions) checked in one read transaction (~1.5 ms)
SCRUB_BYTES_PER_TICK_MAX = 1 << 20  # bytes of values checked in one read transaction
SCRUB_TICK_PAUSE_S = 0.1  # sleep between two ticks: at most ~1,300 rows a second, a few % of one core
SCRUB_BUSY_PAUSE_S = 0.5  # the sleep while appends are arriving: ~260 rows a second (rule 2)

RECORDS = "records"
VERSIONS = "versions"
CHAIN = "chain"


# -- the checks (pure) ----------------------------------------------------------------


def record_problem(meta: SegmentMeta, lsn: int, raw: bytes, indexed: Callable[[int], bool]) -> str | None:
    """Why the record stored under `lsn` must not be served (None: it is sound).
    `indexed(page_no)` says whether the page index has the row (page_no, lsn)."""
    where = f"record LSN {lsn} in segment {meta.segment_id}"
    try:
        record = decode_record(raw, where=where)
    except ChecksumMismatch as error:
        return error.message
    if record.lsn != lsn:
        return f"{where} says it is LSN {record.lsn}"
    if not meta.first_page <= record.page_no < meta.first_page + meta.page_count:
        return f"{where} is for page {record.page_no}, outside the segment"
    if not record.prev_pg_lsn < lsn:
        return f"{where} has PG backlink {record.prev_pg_lsn}, not below itself"
    if not indexed(record.page_no):
        return f"{where} has no page-index row for page {record.page_no}, so reads would skip it"
    return None


def version_problem(meta: SegmentMeta, page_no: int, lsn: int, raw: bytes) -> str | None:
    """Why the page version stored under (`page_no`, `lsn`) must not be served (None: it is sound)."""
    where = f"page version of page {page_no} at LSN {lsn} in segment {meta.segment_id}"
    try:
        stored_page, stored_lsn, image = decode_page_version(raw, where=where)
    except ChecksumMismatch as error:
        return error.message
    if (stored_page, stored_lsn) != (page_no, lsn):
        return f"{where} says it is page {stored_page} at LSN {stored_lsn}"
    if len(image) != meta.page_size:
        return f"{where} is {len(image)} bytes, not one page of {meta.page_size}"
    return None


def chain_gap(meta: SegmentMeta, lsn: int, prev_pg_lsn: int, held: Callable[[int], bool]) -> str | None:
    """Why the record `lsn` (at or below the snapshot's SCL) shows SCL claims more than the records prove:
    its PG predecessor is above the chain anchor yet not held (None: the link is sound). `meta` is the
    segment's metadata as the same snapshot stored it; `held(lsn)` says whether a record is stored."""
    if meta.scl < meta.retention_horizon_lsn or lsn > meta.scl:
        return None  # hydrating, or above SCL: no claim to check
    if prev_pg_lsn == 0 or prev_pg_lsn <= meta.chain_anchor_lsn or held(prev_pg_lsn):
        return None
    return (
        f"record LSN {lsn} of segment {meta.segment_id} lies at or below SCL {meta.scl}, but its PG "
        f"predecessor LSN {prev_pg_lsn} is not held: SCL claims a chain its records do not prove"
    )


# -- values the store hands back ------------------------------------------------------------


@dataclass(frozen=True)
class BadCopy:
    """A stored copy that failed its check, as a tick found it (it is checked again before it goes)."""

    kind: str  # RECORDS, VERSIONS or CHAIN
    lsn: int  # CHAIN: the missing predecessor
    page_no: int  # the key's page for a page version; 0 for a record
    problem: str


@dataclass
class ScrubChunk:
    """What one tick checked."""

    checked: int
    bad: list[BadCopy]
    next_key: bytes | None  # where the next tick starts; None: this kind is done for the segment


@dataclass(frozen=True)
class Quarantined:
    """A record the store deleted as rotten, and what that did to the segment's SCL."""

    segment_id: str
    lsn: int
    problem: str
    scl_before: int
    scl_after: int
    index_rows_removed: int


@dataclass
class ScrubCounts:
    records_quarantined: int = 0
    versions_quarantined: int = 0
    chain_gaps: int = 0
    metadata_repaired: int = 0
    scrub_passes: int = 0


@dataclass
class ScrubCursor:
    """Where the pass over one segment stands."""

    seg_no: int  # a segment dropped and created again gets a new seg_no: start over
    kind: str = RECORDS
    next_key: bytes | None = None  # None: the start of `kind`


# -- the adapter ----------------------------------------------------------------------


class ScrubbedStore(Protocol):
    """What the scrubber reads and changes of the store (storage/store/scrubbing.py and quarantine.py
    carry it out): the store imports this module's checks, so this module names no store class."""

    @property
    def segments(self) -> Mapping[str, Segment]: ...

    @property
    def disk(self) -> LmdbEnvironment: ...

    def scrub_records(self, segment_id: str, start_key: bytes | None, rows_max: int, bytes_max: int) -> ScrubChunk: ...

    def scrub_versions(self, segment_id: str, start_key: bytes | None, rows_max: int, bytes_max: int) -> ScrubChunk: ...

    def scrub_metadata(self, segment_id: str) -> str | None: ...

    def repair_metadata(self, segment_id: str) -> bool: ...

    def break_chain_at_gap(self, segment_id: str, missing_lsn: int) -> Quarantined | None: ...

    def quarantine_record(self, segment_id: str, lsn: int) -> Quarantined | None: ...

    def quarantine_version(self, segment_id: str, page_no: int, lsn: int) -> bool: ...


class Scrubber:
    """Runs passes over every segment of a store; quarantines through `on_writer(fn, *args)`, the
    node-writer handle (storage/node_writer.py), which runs `fn` on the node's single writer thread."""

    def __init__(
        self,
        store: ScrubbedStore,
        on_writer: OnWriter,
        interval_s: float = SCRUB_INTERVAL_S,
        tick_pause_s: float = SCRUB_TICK_PAUSE_S,
        rows_per_tick_max: int = SCRUB_RECORDS_PER_TICK_MAX,
        bytes_per_tick_max: int = SCRUB_BYTES_PER_TICK_MAX,
        appends_committed: Callable[[], int] | None = None,
        busy_pause_s: float = SCRUB_BUSY_PAUSE_S,
    ) -> None:
        """`appends_committed()` is a count that moves whenever the node commits appended batches (rule 2's
        load signal; None: always the idle pace)."""
        assert interval_s > 0 and tick_pause_s >= 0 and rows_per_tick_max > 0 and bytes_per_tick_max > 0
        assert busy_pause_s >= tick_pause_s
        self.store = store
        self.on_writer = on_writer
        self.interval_s = interval_s
        self.tick_pause_s = tick_pause_s
        self.rows_per_tick_max = rows_per_tick_max
        self.bytes_per_tick_max = bytes_per_tick_max
        self.appends_committed = appends_committed
        self.busy_pause_s = busy_pause_s
        self._appends_seen = appends_committed() if appends_committed is not None else 0
        self.busy_ticks = 0  # ticks followed by the longer pause because appends were arriving
        self.counts: dict[str, ScrubCounts] = {}
        self.cursors: dict[str, ScrubCursor] = {}
        self.passes = 0  # completed passes over the whole store
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="scrub")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def counts_of(self, segment_id: str) -> ScrubCounts:
        return self.counts.get(segment_id) or ScrubCounts()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.scrub_pass()

    async def scrub_pass(self) -> None:
        """One pass over every segment the store holds (each resumes where an earlier pass stopped)."""
        for segment_id in sorted(self.store.segments):
            if self.store.disk.condition.state != "ok":
                return  # rule 5: a failed or full disk is reported by the disk, not scrubbed
            try:
                await self.scrub_segment(segment_id)
            except asyncio.CancelledError:
                raise
            except UnknownSegment:
                self.cursors.pop(segment_id, None)  # dropped meanwhile
            except StorageError as error:
                log.warning("scrub of %s stopped; the next pass resumes there: %s", segment_id, error.message)
            except Exception:
                log.exception("scrub of %s failed; the next pass resumes there", segment_id)
        self.passes += 1

    async def scrub_segment(self, segment_id: str) -> None:
        """Finish the pass over one segment, tick by tick: records, then page versions."""
        while True:
            seg = self.store.segments.get(segment_id)
            if seg is None:
                self.cursors.pop(segment_id, None)
                return
            cursor = self.cursors.get(segment_id)
            if cursor is None or cursor.seg_no != seg.meta.seg_no:
                cursor = self.cursors[segment_id] = ScrubCursor(seg.meta.seg_no)
                await self._check_metadata(segment_id)
            chunk = self._tick(segment_id, cursor)  # one short read transaction, no await inside
            for bad in chunk.bad:
                await self._quarantine(segment_id, bad)
            cursor.next_key = chunk.next_key
            if chunk.next_key is None:
                if cursor.kind == RECORDS:
                    cursor.kind = VERSIONS
                else:
                    del self.cursors[segment_id]
                    self.counts.setdefault(segment_id, ScrubCounts()).scrub_passes += 1
                    return
            await asyncio.sleep(self._pause_s())

    def _pause_s(self) -> float:
        """Rule 2: the idle pace, or the busy one when appends were committed since the last tick."""
        if self.appends_committed is None:
            return self.tick_pause_s
        seen, self._appends_seen = self._appends_seen, self.appends_committed()
        if seen == self._appends_seen:
            return self.tick_pause_s
        self.busy_ticks += 1
        return self.busy_pause_s

    def _tick(self, segment_id: str, cursor: ScrubCursor) -> ScrubChunk:
        scan = self.store.scrub_records if cursor.kind == RECORDS else self.store.scrub_versions
        return scan(segment_id, cursor.next_key, self.rows_per_tick_max, self.bytes_per_tick_max)

    async def _check_metadata(self, segment_id: str) -> None:
        problem = self.store.scrub_metadata(segment_id)
        if problem is None:
            return
        if await self.on_writer(self.store.repair_metadata, segment_id):
            self.counts.setdefault(segment_id, ScrubCounts()).metadata_repaired += 1
            log.warning("scrub: %s; both copies written again from the segment's state", problem)

    async def _quarantine(self, segment_id: str, bad: BadCopy) -> None:
        counts = self.counts.setdefault(segment_id, ScrubCounts())
        if bad.kind == CHAIN:
            gap = await self.on_writer(self.store.break_chain_at_gap, segment_id, bad.lsn)
            if gap is not None:
                counts.chain_gaps += 1
                log.warning(
                    "scrub: %s; SCL %d -> %d: gossip fetches it from a peer", bad.problem, gap.scl_before, gap.scl_after
                )
            return
        if bad.kind == VERSIONS:
            if await self.on_writer(self.store.quarantine_version, segment_id, bad.page_no, bad.lsn):
                counts.versions_quarantined += 1
                log.warning(
                    "scrub: %s; page version quarantined (deleted): reads use an older version and the "
                    "records after it",
                    bad.problem,
                )
            return
        done = await self.on_writer(self.store.quarantine_record, segment_id, bad.lsn)
        if done is None:
            log.info(
                "scrub: record LSN %d of %s was repaired or removed before it could be quarantined", bad.lsn, segment_id
            )
            return
        counts.records_quarantined += 1
        seg = self.store.segments.get(segment_id)
        peers = len(seg.meta.peers) if seg is not None else 0
        if peers:
            log.warning(
                "scrub: %s; quarantined (deleted), SCL %d -> %d: gossip fetches it again from one of %d peers",
                done.problem,
                done.scl_before,
                done.scl_after,
                peers,
            )
        else:
            log.warning(
                "scrub: %s; quarantined (deleted), SCL %d -> %d: segment %s has no peers, so it stays a "
                "hole and reads at or above LSN %d are refused until the record is sent again",
                done.problem,
                done.scl_before,
                done.scl_after,
                segment_id,
                done.lsn,
            )
