"""One segment's rules: what an append, a truncation or a read may do.

Pure: the LMDB store (`storage/store.py`) looks things up and carries out the
plans made here; the gRPC servicer translates. Rules (this module owns them):

1. Epochs. A request whose volume epoch is older than the one the segment has
   durably seen, or whose membership epoch is older than the segment's, is
   refused whole (invariant 5). A newer volume epoch is adopted durably in the
   same transaction as the batch that carries it. Epochs are kept per segment:
   a writer raises them on a write quorum of every PG.
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
6. A read point is served only if retention horizon <= read point <= SCL.
7. Retention (storage/retention.py): the retention horizon is also the GC floor;
   records at or below it may have been garbage-collected, so a record read that
   starts below the chain anchor (the newest chain record at or below the floor;
   the PG has none between the two) is refused, and a resend of an LSN at or below it that is no
   longer stored is a duplicate of a record already folded into a page version.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from typing import Callable

from storage.errors import (
    BatchTooLarge,
    InvalidRequest,
    LsnConflict,
    PageOutOfRange,
    ReadPointOutOfRange,
    StaleEpoch,
    Truncated,
)
from storage.errors import ChecksumMismatch
from storage.records import LSN_MAX, LogRecord, decode_record, encode_checked, validate_shape
from storage.scl import SclTracker

BATCH_RECORDS_MAX = 10_000
BATCH_BYTES_MAX = 16 * 1024 * 1024
TRUNCATION_RANGES_MAX = 1_000


def intact(encoded: bytes) -> bool:
    try:
        decode_record(encoded)
    except ChecksumMismatch:
        return False
    return True


@dataclass(frozen=True)
class TruncationRange:
    """Records with start_lsn <= LSN <= end_lsn and an epoch older than `epoch` are void."""

    start_lsn: int
    end_lsn: int
    epoch: int

    def covers(self, lsn: int, record_epoch: int) -> bool:
        return self.start_lsn <= lsn <= self.end_lsn and record_epoch < self.epoch

    def validate(self) -> None:
        if not (1 <= self.start_lsn <= self.end_lsn <= LSN_MAX):
            raise InvalidRequest(
                f"truncation range [{self.start_lsn}, {self.end_lsn}] is empty, starts at 0 or ends past the "
                f"highest LSN; it must satisfy 1 <= start_lsn <= end_lsn <= {LSN_MAX}"
            )
        if self.epoch == 0:
            raise InvalidRequest("a truncation range must carry the epoch of the writer that made it (not 0)")


@dataclass
class SegmentMeta:
    segment_id: str
    volume_id: str
    pg_index: int
    first_page: int
    page_count: int
    page_size: int
    membership_epoch: int
    seg_no: int  # the node-local key prefix of this segment's rows in LMDB
    scl: int = 0
    highest_lsn: int = 0
    record_count: int = 0
    retention_horizon_lsn: int = 0
    truncation_ranges: list[TruncationRange] = field(default_factory=list)
    vdl_hint: int = 0  # highest VDL a writer reported with a batch
    volume_epoch: int = 0  # highest volume epoch durably seen by this segment
    peers: list[list[str]] = field(default_factory=list)  # [node_id, address] of the PG's other segments
    # Retention (storage/retention.py). retention_horizon_lsn is also the GC floor.
    chain_anchor_lsn: int = 0  # newest PG chain record at or below the GC floor (it may be gone itself)
    pinned_lsns: list[int] = field(default_factory=list)
    versions_coalesced: int = 0
    records_collected: int = 0
    versions_collected: int = 0
    pages_hydrated: int = 0
    bytes_hydrated: int = 0
    # The highest SCL ever had (scrubbing may lower SCL; truncation lowers this too): see raise_scl_high_water.
    scl_high_water: int = 0

    def to_json(self) -> bytes:
        fields = {f: getattr(self, f) for f in _META_FIELDS}
        fields["truncation_ranges"] = [[r.start_lsn, r.end_lsn, r.epoch] for r in self.truncation_ranges]
        return json.dumps(fields).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "SegmentMeta":
        d = json.loads(raw)
        d["truncation_ranges"] = [
            TruncationRange(**r) if isinstance(r, dict) else TruncationRange(*r) for r in d["truncation_ranges"]
        ]
        return cls(**d)

    def copy(self) -> "SegmentMeta":
        return replace(self, truncation_ranges=list(self.truncation_ranges), peers=[list(p) for p in self.peers],
                       pinned_lsns=list(self.pinned_lsns))

    def raise_scl_high_water(self) -> None:
        """Keep `scl_high_water` = the highest SCL ever had, except LSNs inside a truncation range:
        those were never durable, so no acknowledged write lies there."""
        high = max(self.scl_high_water, self.scl)
        for r in self.truncation_ranges:
            if r.start_lsn <= high <= r.end_lsn:
                high = max(self.scl, r.start_lsn - 1)
        self.scl_high_water = high

    def same_shape(self, other: "SegmentMeta") -> bool:
        return (self.volume_id, self.pg_index, self.first_page, self.page_count, self.page_size) == (
            other.volume_id, other.pg_index, other.first_page, other.page_count, other.page_size,
        )


_META_FIELDS = [f.name for f in fields(SegmentMeta)]


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

    def copy(self) -> "Segment":
        """A working copy: the store plans on it and publishes it only after the commit."""
        return Segment(self.meta.copy(), SclTracker(self.tracker.scl, dict(self.tracker.pending)))

    # -- epochs ---------------------------------------------------------------

    def check_epochs(self, volume_epoch: int, membership_epoch: int) -> None:
        durable_volume_epoch = self.meta.volume_epoch
        if volume_epoch == 0:
            raise InvalidRequest("the request carries volume epoch 0; every write names the writer's volume epoch")
        if volume_epoch < durable_volume_epoch:
            raise StaleEpoch(
                f"volume epoch {volume_epoch} is older than epoch {durable_volume_epoch} segment "
                f"{self.meta.segment_id} has durably seen: a newer writer has opened the volume (this writer is fenced)"
            )
        if membership_epoch < self.meta.membership_epoch:
            raise StaleEpoch(
                f"membership epoch {membership_epoch} is older than epoch {self.meta.membership_epoch} of segment "
                f"{self.meta.segment_id}: refresh the volume's geometry"
            )

    # -- truncation -----------------------------------------------------------

    def new_truncations(self, ranges: list[TruncationRange], volume_epoch: int) -> list[TruncationRange]:
        known = set(self.meta.truncation_ranges)
        fresh = []
        for r in ranges:
            r.validate()
            if r.epoch > volume_epoch:
                raise InvalidRequest(
                    f"truncation range [{r.start_lsn}, {r.end_lsn}] is stamped with epoch {r.epoch}, newer than the "
                    f"request's volume epoch {volume_epoch}; a writer only truncates with its own epoch or older"
                )
            if r not in known and r not in fresh:
                fresh.append(r)
        if len(self.meta.truncation_ranges) + len(fresh) > TRUNCATION_RANGES_MAX:
            raise BatchTooLarge(
                f"segment {self.meta.segment_id} would keep more than {TRUNCATION_RANGES_MAX} truncation ranges"
            )
        return fresh

    def note_truncation(
        self, r: TruncationRange, chain_lsn_below_start: int, kept_from_start: list[tuple[int, int]],
        removed: int, highest_lsn: int,
    ) -> None:
        """After the store removed the range's records: remember it and rebuild SCL from what is kept."""
        self.meta.truncation_ranges.append(r)
        self.tracker = SclTracker.rebuilt(chain_lsn_below_start, kept_from_start)
        self.meta.scl = self.tracker.scl
        self.meta.record_count -= removed
        self.meta.highest_lsn = highest_lsn

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
            if record.epoch > batch.volume_epoch:
                raise InvalidRequest(
                    f"record LSN {record.lsn} has epoch {record.epoch}, newer than the request's volume epoch "
                    f"{batch.volume_epoch}"
                )
            for r in m.truncation_ranges:
                if r.covers(record.lsn, record.epoch):
                    raise Truncated(
                        f"record LSN {record.lsn} (epoch {record.epoch}) lies in truncation range "
                        f"[{r.start_lsn}, {r.end_lsn}] made by epoch {r.epoch}; it must not come back"
                    )
            stored = in_batch.get(record.lsn)
            if stored is None and record.lsn <= m.highest_lsn:  # above it nothing is stored yet
                stored = lookup_stored(record.lsn)
            if stored is not None and stored != encoded and not intact(stored):
                # The stored copy is rotten: the good copy replaces it (invariant 6, repair by resend).
                # A restart leaves rotten records out of the chain, so put it back in if it is missing.
                if record.lsn > self.tracker.scl and self.tracker.pending.get(record.prev_pg_lsn) != record.lsn:
                    if self.tracker.successor_conflict(record.lsn, record.prev_pg_lsn) is None:
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
        return AppendPlan(puts=puts, duplicates=duplicates, scl=self.tracker.scl, highest_lsn=highest,
                          repaired=repaired)

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
                f"page {page_no} is outside segment {m.segment_id} (pages {m.first_page}..{m.first_page + m.page_count - 1})"
            )

    def check_read_point(self, read_point: int) -> None:
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
        if read_point < m.retention_horizon_lsn:
            raise ReadPointOutOfRange(
                f"read point {read_point} is below segment {m.segment_id}'s retention horizon "
                f"{m.retention_horizon_lsn}; page versions that old are no longer kept"
            )

    def check_records_from(self, from_lsn: int) -> None:
        """Rule 7: records above `from_lsn` are all still stored."""
        m = self.meta
        # Below the floor only the chain anchor is known: the PG has no record in (anchor, floor].
        if from_lsn < m.chain_anchor_lsn:
            raise ReadPointOutOfRange(
                f"records at or below LSN {m.retention_horizon_lsn} of segment {m.segment_id} were "
                f"garbage-collected; hydrate from page versions (ReadPageVersions at LSN "
                f"{m.retention_horizon_lsn}) and read records above it"
            )
