"""One segment's rules: what an append, a truncation or a read may do.

Pure: the LMDB store (`storage/store/`) looks things up and carries out the
plans made here; the gRPC servicer translates. A segment's metadata and its
stored form are storage/segment_meta.py. Rules (this module owns them):

1. Epochs (the rules are storage/epochs.py's; a segment applies them to what it
   holds). A request with a stale epoch is refused whole (invariant 5); a newer
   volume epoch is adopted durably in the same transaction as the batch that
   carries it. Epochs are kept per segment: a writer raises them on a write
   quorum of every PG.
2. A batch is refused whole or stored whole. Limits: `BATCH_RECORDS_MAX`
   records and `BATCH_BYTES_MAX` encoded bytes.
3. Each record: its CRC-32C matches its contents; its shape is valid
   (`records.validate_shape`); its page lies in the segment; its epoch is not
   above the request's; it is not inside a truncation range stamped with a
   newer epoch than its own.
4. An LSN already stored is accepted again only with identical bytes (a
   resend); with different bytes it is a conflict. An LSN at or below SCL that is
   not stored cannot belong to the chain and is refused. A record whose PG
   predecessor already has a different successor is refused (the chain never forks).
5. Truncation ranges arrive on their own or with a batch; each is applied once,
   before the batch's records, and kept forever (they must outlive any record
   gossip could bring back).
6. A read point is served only if retention horizon <= read point <= SCL (or, for a clone's
   fall-through read inside the store only, at a keep point below the horizon: storage/lineage.py).
7. Retention (storage/retention.py): the retention horizon is also the GC floor;
   records at or below it may have been garbage-collected, so a record read that
   starts below the chain anchor (the newest chain record at or below the floor;
   the PG has none between the two) is refused, and a resend of an LSN at or below it that is no
   longer stored is a duplicate of a record already folded into a page version.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from sixfold.storage import epochs
from sixfold.storage.errors import (
    BatchTooLarge,
    ChecksumMismatch,
    InvalidRequest,
    LsnConflict,
    PageOutOfRange,
    ReadPointOutOfRange,
    Truncated,
)
from sixfold.storage.records import LSN_MAX, LogRecord, decode_record, encode_checked, validate_shape
from sixfold.storage.scl import SclTracker
from sixfold.storage.segment_meta import (
    HOLES_MAX,
    META_MAGIC,
    PAGE_NO_LIMIT,
    PAGE_SIZE_MAX,
    PAGE_SIZE_MIN,
    PEERS_MAX,
    SEG_NO_MAX,
    SEGMENT_ID_BYTES_MAX,
    TRUNCATION_RANGES_MAX,
    SegmentMeta,
)
from sixfold.storage.truncation import TruncationRange, voided

# What other modules import from here (the metadata moved to storage/segment_meta.py).
__all__ = [
    "BATCH_BYTES_MAX",
    "BATCH_RECORDS_MAX",
    "HOLES_MAX",
    "META_MAGIC",
    "PAGE_NO_LIMIT",
    "PAGE_SIZE_MAX",
    "PAGE_SIZE_MIN",
    "PEERS_MAX",
    "SEGMENT_ID_BYTES_MAX",
    "SEG_NO_MAX",
    "TRUNCATION_RANGES_MAX",
    "AppendBatch",
    "AppendPlan",
    "Segment",
    "SegmentMeta",
    "TruncationRange",
    "intact",
]

BATCH_RECORDS_MAX = 10_000
BATCH_BYTES_MAX = 16 * 1024 * 1024


def intact(encoded: bytes) -> bool:
    try:
        decode_record(encoded)
    except ChecksumMismatch:
        return False
    return True


@dataclass
class AppendBatch:
    """A batch as it came off the wire, converted to plain values."""

    segment_id: str
    volume_epoch: int
    membership_epoch: int
    batch_id: int
    records: list[tuple[LogRecord, int]]  # (record, CRC-32C it carried)
    truncation_ranges: list[TruncationRange] = field(default_factory=list)
    vdl_hint: int = 0
    min_read_point: int = 0  # the writer's lowest read point in use (0: not reported)


@dataclass
class AppendPlan:
    """What the store must write for one accepted batch."""

    puts: list[tuple[LogRecord, bytes]]  # (record, encoded bytes) not yet stored
    duplicates: int
    scl: int
    highest_lsn: int
    repaired: int = 0  # rotten stored copies replaced by the good copy sent again


@dataclass
class Segment:
    meta: SegmentMeta
    tracker: SclTracker

    def copy(self) -> Segment:
        """A working copy: the store plans on it and publishes it only after the commit."""
        return Segment(self.meta.copy(), SclTracker(self.tracker.scl, dict(self.tracker.pending)))

    @property
    def whole(self) -> bool:
        """Whether the segment holds every record it may ever have acknowledged: not rebuilding a lost copy,
        not hydrating (SCL below its GC floor), and back at or past the highest SCL it ever had. Only a
        whole segment counts towards a read quorum (compute/recovery_steps.py): a quorum of three must include one
        of the four that acknowledged a write, and still hold it."""
        m = self.meta
        return not m.rebuilding and self.tracker.scl >= m.retention_horizon_lsn and self.tracker.scl >= m.scl_high_water

    # -- epochs (the rules live in storage/epochs.py) -------------------------------

    def check_epochs(self, volume_epoch: int, membership_epoch: int) -> None:
        """A write on a writer's behalf (epochs rules 1-3)."""
        epochs.check_request(
            volume_epoch, membership_epoch, self.meta.volume_epoch, self.meta.membership_epoch, self.meta.segment_id
        )

    def check_read_epoch(self, volume_epoch: int) -> None:
        """A read that may name the reader's volume epoch (0: none; epochs rule 2)."""
        epochs.check_read_epoch(volume_epoch, self.meta.volume_epoch, self.meta.segment_id)

    # -- truncation -----------------------------------------------------------

    def new_truncations(self, ranges: list[TruncationRange], volume_epoch: int) -> list[TruncationRange]:
        """The ranges not applied yet, each cut to start above the chain anchor: what lies at or below it is
        durable (below every VDL a recovery can find, or a clone's branch), so no sound recovery's range reaches
        it; a stale writer's range from before a backtrack may, and must not void the chain there."""
        known = set(self.meta.truncation_ranges)
        fresh = []
        anchor = self.meta.chain_anchor_lsn
        for r in ranges:
            r.validate()
            epochs.check_carried(f"truncation range [{r.start_lsn}, {r.end_lsn}]", r.epoch, volume_epoch)
            if r.end_lsn <= anchor:
                continue
            cut = TruncationRange(anchor + 1, r.end_lsn, r.epoch) if r.start_lsn <= anchor else r
            if cut not in known and cut not in fresh:
                fresh.append(cut)
        if len(self.meta.truncation_ranges) + len(fresh) > TRUNCATION_RANGES_MAX:
            raise BatchTooLarge(
                f"segment {self.meta.segment_id} would keep more than {TRUNCATION_RANGES_MAX} truncation ranges"
            )
        return fresh

    def note_truncation(
        self,
        r: TruncationRange,
        chain_lsn_below_start: int,
        kept_from_start: list[tuple[int, int]],
        removed: int,
        highest_lsn: int,
        stored_tail_below_start: int,
    ) -> None:
        """After the store removed what the range voids: remember it and rebuild SCL from what is kept.

        The high water falls with it when the range voids it: what the segment must hold again is then
        the PG's records below the range, up to the newest it stores there (`stored_tail_below_start`) or
        a quarantined one above that; nothing inside the range was ever durable."""
        m = self.meta
        m.truncation_ranges.append(r)
        m.record_count = max(0, m.record_count - removed)
        m.highest_lsn = highest_lsn
        self.tracker = SclTracker.rebuilt(chain_lsn_below_start, kept_from_start)
        m.scl = self.tracker.scl
        m.holes = [h for h in m.holes if not r.start_lsn <= h <= r.end_lsn]
        if r.start_lsn <= m.scl_high_water <= r.end_lsn:
            m.scl_high_water = max([m.scl, stored_tail_below_start, *(h for h in m.holes if h < r.start_lsn)])

    # -- appends --------------------------------------------------------------

    def plan_append(self, batch: AppendBatch, lookup_stored: Callable[[int], bytes | None]) -> AppendPlan:
        """Validate every record of `batch` and advance SCL tentatively.

        Raises a StorageError if any record is refused; the segment may then be half-planned,
        so the caller works on a copy and drops it. `lookup_stored(lsn)` returns the stored
        encoding of `lsn`, or None.
        """
        if len(batch.records) > BATCH_RECORDS_MAX:
            raise BatchTooLarge(
                f"batch of {len(batch.records)} records exceeds the limit of {BATCH_RECORDS_MAX}; split it"
            )
        return self._plan(batch, lookup_stored)

    def _plan(self, batch: AppendBatch, lookup_stored: Callable[[int], bytes | None]) -> AppendPlan:
        m = self.meta
        batch_bytes = 0
        in_batch: dict[int, bytes] = {}
        puts: list[tuple[LogRecord, bytes]] = []
        duplicates = 0
        repaired = 0
        highest = m.highest_lsn
        for record, carried_crc in batch.records:
            encoded = encode_checked(record, carried_crc)
            validate_shape(record, m.page_size)
            batch_bytes += record.encoded_size()
            if batch_bytes > BATCH_BYTES_MAX:
                raise BatchTooLarge(
                    f"batch exceeds the limit of {BATCH_BYTES_MAX} encoded bytes at record LSN {record.lsn}; split it"
                )
            if not m.first_page <= record.page_no < m.first_page + m.page_count:
                raise PageOutOfRange(
                    f"record LSN {record.lsn} is for page {record.page_no}, outside segment {m.segment_id} "
                    f"(pages {m.first_page}..{m.first_page + m.page_count - 1})"
                )
            epochs.check_carried(f"record LSN {record.lsn}", record.epoch, batch.volume_epoch)
            if voided(m.truncation_ranges, record.lsn, record.epoch):
                raise Truncated(
                    f"record LSN {record.lsn} (epoch {record.epoch}) lies in a truncation range a newer writer's "
                    "recovery made; it must not come back"
                )
            stored = in_batch.get(record.lsn)
            if stored is None and record.lsn <= m.highest_lsn:  # above it nothing is stored yet
                stored = lookup_stored(record.lsn)
            if stored is not None and stored != encoded and not intact(stored):
                # The stored copy is rotten: the good copy replaces it (invariant 6, repair by resend).
                # A restart leaves rotten records out of the chain, so put it back in if it is missing.
                if (
                    record.lsn > self.tracker.scl
                    and self.tracker.pending.get(record.prev_pg_lsn) != record.lsn
                    and self.tracker.successor_conflict(record.lsn, record.prev_pg_lsn) is None
                ):
                    self.tracker.add(record.lsn, record.prev_pg_lsn)
                puts.append((record, encoded))
                in_batch[record.lsn] = encoded
                repaired += 1
                continue
            if stored is not None:
                if stored != encoded:
                    raise LsnConflict(
                        f"LSN {record.lsn} is already stored in segment {m.segment_id} with different content; "
                        "LSNs are never reused"
                    )
                duplicates += 1
                continue
            if record.lsn <= min(self.tracker.scl, m.retention_horizon_lsn):
                duplicates += 1  # rule 7: garbage-collected after it was folded into a page version
                continue
            if record.lsn <= self.tracker.scl:
                raise LsnConflict(
                    f"LSN {record.lsn} is at or below the segment's SCL {self.tracker.scl} but is not in its chain; "
                    "it cannot belong to this PG"
                )
            other = self.tracker.successor_conflict(record.lsn, record.prev_pg_lsn)
            if other is not None:
                follower = "the complete chain" if other < 0 else f"LSN {other}"
                raise LsnConflict(
                    f"record LSN {record.lsn} names PG predecessor {record.prev_pg_lsn}, which {follower} already "
                    "follows; the PG chain cannot fork"
                )
            self.tracker.add(record.lsn, record.prev_pg_lsn)
            in_batch[record.lsn] = encoded
            puts.append((record, encoded))
            highest = max(highest, record.lsn)
        return AppendPlan(
            puts=puts, duplicates=duplicates, scl=self.tracker.scl, highest_lsn=highest, repaired=repaired
        )

    def commit_plan(self, plan: AppendPlan, vdl_hint: int = 0) -> None:
        self.meta.vdl_hint = max(self.meta.vdl_hint, vdl_hint)
        self.meta.scl = plan.scl
        self.meta.highest_lsn = plan.highest_lsn
        self.meta.record_count += len(plan.puts) - plan.repaired

    # -- reads ----------------------------------------------------------------

    def check_page(self, page_no: int) -> None:
        m = self.meta
        if not m.first_page <= page_no < m.first_page + m.page_count:
            raise PageOutOfRange(
                f"page {page_no} is outside segment {m.segment_id} "
                f"(pages {m.first_page}..{m.first_page + m.page_count - 1})"
            )

    def check_read_point(self, read_point: int, keep_points: Collection[int] = ()) -> None:
        """Rule 6. `keep_points`: read points below the horizon a child segment's fall-through may still use
        (storage/lineage.py rule 5); only the store's own fall-through read passes them."""
        m = self.meta
        if self.tracker.scl < m.retention_horizon_lsn:
            raise ReadPointOutOfRange(
                f"segment {m.segment_id} lost a copy it needed at or below its GC floor "
                f"{m.retention_horizon_lsn} and serves no reads until it is hydrated again from a peer; "
                "read from another segment"
            )
        if read_point > LSN_MAX:
            raise InvalidRequest(f"read point {read_point} is above the highest LSN {LSN_MAX}")
        if read_point > self.tracker.scl:
            raise ReadPointOutOfRange(
                f"read point {read_point} is above segment {m.segment_id}'s SCL {self.tracker.scl}: it does not yet "
                "hold every record up to there; read from a complete segment or retry later"
            )
        if read_point < m.retention_horizon_lsn and read_point not in keep_points:
            raise ReadPointOutOfRange(
                f"read point {read_point} is below segment {m.segment_id}'s retention horizon "
                f"{m.retention_horizon_lsn}; page versions that old are no longer kept"
            )

    def check_records_from(self, from_lsn: int) -> None:
        """Rule 7: records above `from_lsn` are all still stored (and none is being replaced by hydration)."""
        m = self.meta
        if self.tracker.scl < m.retention_horizon_lsn:
            raise ReadPointOutOfRange(
                f"segment {m.segment_id} is being hydrated again from a peer (it lacks copies at or below its GC "
                f"floor {m.retention_horizon_lsn}) and sends no records meanwhile; read them from another segment"
            )
        # Below the floor only the chain anchor is known: the PG has no record in (anchor, floor].
        if from_lsn < m.chain_anchor_lsn:
            raise ReadPointOutOfRange(
                f"records at or below LSN {m.retention_horizon_lsn} of segment {m.segment_id} were "
                f"garbage-collected; hydrate from page versions (ReadPageVersions at LSN "
                f"{m.retention_horizon_lsn}) and read records above it"
            )
