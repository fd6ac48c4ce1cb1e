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
import struct
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sixfold.storage import epochs
from sixfold.storage.epochs import EPOCH_MAX
from sixfold.storage.errors import (
    BatchTooLarge,
    ChecksumMismatch,
    InvalidRequest,
    LsnConflict,
    PageOutOfRange,
    ReadPointOutOfRange,
    Truncated,
)
from sixfold.storage.records import LSN_MAX, LogRecord, crc32c, decode_record, encode_checked, validate_shape
from sixfold.storage.scl import SclTracker
from sixfold.storage.truncation import TruncationRange, voided

BATCH_RECORDS_MAX = 10_000
BATCH_BYTES_MAX = 16 * 1024 * 1024
TRUNCATION_RANGES_MAX = 1_000
# Quarantined records not yet restored, remembered per segment (storage/scrub.py); past this many
# only the highest are kept (they bound what the segment must hold again, see `whole`).
HOLES_MAX = 256
PEERS_MAX = 64
SEGMENT_ID_BYTES_MAX = 255
PAGE_SIZE_MIN = 512
PAGE_SIZE_MAX = 65536
PAGE_NO_LIMIT = 2**63  # first_page + page_count stays below this
SEG_NO_MAX = 2**32 - 1  # seg_no is the u32 prefix of every row key

# Stored segment metadata: magic | CRC-32C of the JSON body | JSON body. Two copies are kept in
# separate tables (storage/store.py); a copy that fails its CRC or its bounds is never trusted.
META_MAGIC = b"SFM1"
_META_HEADER = struct.Struct(">4sI")


def intact(encoded: bytes) -> bool:
    try:
        decode_record(encoded)
    except ChecksumMismatch:
        return False
    return True


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
    # The highest SCL ever had, kept a chain LSN: every record at or below it the segment once held (it may
    # have acknowledged them), so it must hold them again before it counts as whole. Scrubbing lowers SCL,
    # never this; a truncation lowers it to below its range (storage/store.py `_truncate_in_txn`).
    scl_high_water: int = 0
    volume_epoch_owner: str = ""  # the writer that raised `volume_epoch` (epochs.py rule 4)
    # Created to replace a copy that was lost (or in a fresh environment after the disk failed): it holds
    # nothing it may have acknowledged until it has measured, from its peers, how far it must catch up
    # (storage/gossip.py); until then it is not whole.
    rebuilding: bool = False
    holes: list[int] = field(default_factory=list)  # quarantined LSNs above SCL, not yet restored

    def to_bytes(self) -> bytes:
        """The stored form: magic, CRC-32C of the body, then the body (compact JSON)."""
        fields = {f: getattr(self, f) for f in _META_FIELDS}
        fields["truncation_ranges"] = [[r.start_lsn, r.end_lsn, r.epoch] for r in self.truncation_ranges]
        body = json.dumps(fields, separators=(",", ":")).encode()
        return _META_HEADER.pack(META_MAGIC, crc32c(body)) + body

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview, where: str = "segment metadata") -> SegmentMeta:
        """Decode and check a stored copy; raise ChecksumMismatch if any byte, type or bound is wrong."""
        raw = bytes(raw)
        if len(raw) < _META_HEADER.size:
            raise ChecksumMismatch(f"{where} is {len(raw)} bytes, shorter than its header; it is not trusted")
        magic, stored_crc = _META_HEADER.unpack_from(raw, 0)
        body = raw[_META_HEADER.size :]
        if magic != META_MAGIC:
            raise ChecksumMismatch(f"{where} does not start with {META_MAGIC!r}; it is not trusted")
        actual = crc32c(body)
        if actual != stored_crc:
            raise ChecksumMismatch(
                f"{where} failed its CRC-32C check (stored {stored_crc:08x}, computed {actual:08x}); it is not trusted"
            )
        try:
            d = json.loads(body)
            meta = cls._from_dict(d)
            meta.validate()
        except (ValueError, TypeError, KeyError, InvalidRequest) as error:
            text = error.message if isinstance(error, InvalidRequest) else f"{type(error).__name__}: {error}"
            raise ChecksumMismatch(
                f"{where} passes its CRC-32C but does not make sense ({text}); it is not trusted"
            ) from error
        return meta

    @classmethod
    def _from_dict(cls, d: Any) -> SegmentMeta:
        if not isinstance(d, dict) or set(d) != set(_META_FIELDS):
            raise ValueError("the fields are not those of segment metadata")
        values: dict[str, Any] = {}
        for name, kind in _META_TYPES.items():
            value = d[name]
            if kind is int and (type(value) is not int or value < 0):
                raise ValueError(f"{name} is not a non-negative integer")
            if kind is str and type(value) is not str:
                raise ValueError(f"{name} is not a string")
            if kind is bool and type(value) is not bool:
                raise ValueError(f"{name} is not a boolean")
            values[name] = value
        ranges, peers, pins, holes = d["truncation_ranges"], d["peers"], d["pinned_lsns"], d["holes"]
        if not isinstance(ranges, list) or not all(
            isinstance(r, list) and len(r) == 3 and all(type(x) is int for x in r) for r in ranges
        ):
            raise ValueError("truncation_ranges is not a list of [start, end, epoch]")
        if not isinstance(peers, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(type(x) is str for x in p) for p in peers
        ):
            raise ValueError("peers is not a list of [node_id, address]")
        for name, lsns in (("pinned_lsns", pins), ("holes", holes)):
            if not isinstance(lsns, list) or not all(type(x) is int and x >= 0 for x in lsns):
                raise ValueError(f"{name} is not a list of LSNs")
        values["truncation_ranges"] = [TruncationRange(*r) for r in ranges]
        values["peers"] = [list(p) for p in peers]
        values["pinned_lsns"] = list(pins)
        values["holes"] = list(holes)
        return cls(**values)

    def validate(self) -> None:
        """Every field within its bounds (what a stored copy must satisfy to be trusted)."""
        if not self.segment_id or len(self.segment_id.encode()) > SEGMENT_ID_BYTES_MAX or not self.volume_id:
            raise InvalidRequest("segment or volume id is empty or too long")
        if not PAGE_SIZE_MIN <= self.page_size <= PAGE_SIZE_MAX or self.page_size & (self.page_size - 1):
            raise InvalidRequest(f"page size {self.page_size} is not a power of two in range")
        if self.page_count == 0 or self.first_page + self.page_count > PAGE_NO_LIMIT or self.pg_index > SEG_NO_MAX:
            raise InvalidRequest("the page range or PG index is out of bounds")
        if not 1 <= self.seg_no <= SEG_NO_MAX:
            raise InvalidRequest(f"seg_no {self.seg_no} is out of bounds")
        if not 1 <= self.membership_epoch <= EPOCH_MAX or self.volume_epoch > EPOCH_MAX:
            raise InvalidRequest("an epoch is out of bounds")
        lsns = [
            self.scl,
            self.highest_lsn,
            self.retention_horizon_lsn,
            self.vdl_hint,
            self.chain_anchor_lsn,
            self.scl_high_water,
            *self.pinned_lsns,
            *self.holes,
        ]
        if any(lsn > LSN_MAX for lsn in lsns):
            raise InvalidRequest("an LSN is above the highest LSN")
        if self.chain_anchor_lsn > self.retention_horizon_lsn:
            raise InvalidRequest("the chain anchor is above the GC floor")
        if (
            len(self.truncation_ranges) > TRUNCATION_RANGES_MAX
            or len(self.peers) > PEERS_MAX
            or len(self.holes) > HOLES_MAX
        ):
            raise InvalidRequest("too many truncation ranges, peers or holes")
        for r in self.truncation_ranges:
            r.validate()

    def copy(self) -> SegmentMeta:
        return replace(
            self,
            truncation_ranges=list(self.truncation_ranges),
            peers=[list(p) for p in self.peers],
            pinned_lsns=list(self.pinned_lsns),
            holes=list(self.holes),
        )

    def raise_scl_high_water(self) -> None:
        """`scl_high_water` follows SCL up; holes SCL has passed are restored (the chain runs through them)."""
        self.scl_high_water = max(self.scl_high_water, self.scl)
        if self.holes:
            self.holes = [h for h in self.holes if h > self.scl]

    def note_hole(self, lsn: int) -> None:
        self.holes = sorted(set(self.holes) | {lsn})[-HOLES_MAX:]

    def same_shape(self, other: SegmentMeta) -> bool:
        return (self.volume_id, self.pg_index, self.first_page, self.page_count, self.page_size) == (
            other.volume_id,
            other.pg_index,
            other.first_page,
            other.page_count,
            other.page_size,
        )


_META_FIELDS = [f.name for f in fields(SegmentMeta)]
# The scalar fields and their JSON types (the list fields are checked one by one in `_from_dict`).
_META_TYPES: dict[str, type] = {
    f.name: {"int": int, "str": str, "bool": bool}[str(f.type)]
    for f in fields(SegmentMeta)
    if str(f.type) in ("int", "str", "bool")
}


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
        whole segment counts towards a read quorum (compute/volume.py): a quorum of three must include one
        of the four that acknowledged a write, and still hold it."""
        m = self.meta
        return not m.rebuilding and self.tracker.scl >= m.retention_horizon_lsn and self.tracker.scl >= m.scl_high_water

    # -- epochs (the rules live in storage/epochs.py) -------------------------------

    def check_epochs(self, volume_epoch: int, membership_epoch: int) -> None:
        epochs.check_request(
            volume_epoch, membership_epoch, self.meta.volume_epoch, self.meta.membership_epoch, self.meta.segment_id
        )

    # -- truncation -----------------------------------------------------------

    def new_truncations(self, ranges: list[TruncationRange], volume_epoch: int) -> list[TruncationRange]:
        known = set(self.meta.truncation_ranges)
        fresh = []
        for r in ranges:
            r.validate()
            epochs.check_carried(f"truncation range [{r.start_lsn}, {r.end_lsn}]", r.epoch, volume_epoch)
            if r not in known and r not in fresh:
                fresh.append(r)
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
