"""A segment's metadata: what it is (volume, PG, pages), what it holds (SCL, LSNs, epochs, truncation
ranges, peers, pins) and its stored form, checked when read. Pure.

Stored segment metadata is magic | CRC-32C of the JSON body | JSON body; two copies are kept in
separate tables (storage/store/base.py). A copy that fails its CRC, a type or a bound (`validate`) is
never trusted (storage/segment_load.py decides what a node does then). The rules a segment applies
to requests are storage/segment.py's; the epoch bounds are storage/epochs.py's.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, fields, replace
from typing import Any

from sixfold.storage import epochs
from sixfold.storage.control_plane_limits import BACKTRACK_WINDOW_S_MAX
from sixfold.storage.errors import ChecksumMismatch, InvalidRequest
from sixfold.storage.records import LSN_MAX, crc32c
from sixfold.storage.truncation import TruncationRange

TRUNCATION_RANGES_MAX = 1_000
# Quarantined records not yet restored, remembered per segment (storage/scrub.py); past this many
# only the highest are kept (they bound what the segment must hold again: `Segment.whole`).
HOLES_MAX = 256
PEERS_MAX = 64
SEGMENT_ID_BYTES_MAX = 255
PAGE_SIZE_MIN = 512
PAGE_SIZE_MAX = 65536
PAGE_NO_LIMIT = 2**63  # first_page + page_count stays below this
SEG_NO_MAX = 2**32 - 1  # seg_no is the u32 prefix of every row key

WRAPPED_KEY_HEX_MAX = 2 * 512  # a wrapped data key is ~290 bytes (storage/security/envelope.py rule 5)

META_MAGIC = b"SFM1"  # then the CRC-32C of the body, then the body
_META_HEADER = struct.Struct(">4sI")


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
    # never this; a truncation lowers it to below its range (storage/store/truncate.py `_truncate_in_txn`).
    scl_high_water: int = 0
    volume_epoch_owner: str = ""  # the writer that raised `volume_epoch` (epochs.py rule 4)
    # Created to replace a copy that was lost (or in a fresh environment after the disk failed): it holds
    # nothing it may have acknowledged until it has measured, from its peers, how far it must catch up
    # (storage/gossip.py); until then it is not whole.
    rebuilding: bool = False
    holes: list[int] = field(default_factory=list)  # quarantined LSNs above SCL, not yet restored
    # A clone's segment (storage/lineage.py): a read of a page it never wrote falls through to the parent PG's
    # segment on this node at `parent_read_lsn`, the parent PG's chain tail at or below `branch_lsn` (the
    # volume LSN the clone branched at; every record this segment holds is above it). "": no parent.
    parent_segment_id: str = ""
    branch_lsn: int = 0
    parent_read_lsn: int = 0
    # New LSNs on the segment's volume start above this (a backtrack's new timeline: above every LSN the
    # volume ever allocated). highest_lsn never drops below max(branch_lsn, lsn_floor) (`highest_lsn_floor`).
    lsn_floor: int = 0
    # Encryption at rest (storage/store/sealing.py): the volume's data key wrapped by the key service's
    # master key, hex ("" : the segment's rows are stored in clear, on a node started without --kms).
    wrapped_data_key: str = ""
    # The volume's backtrack window (s): GC keeps at least this much of the segment's history, or the
    # node's --history-window-s if longer (storage/retention.py rule 2). 0: the node's window only.
    backtrack_window_s: int = 0

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
        # Metadata stored before clones (or LSN floors) existed lacks those fields: they take their defaults.
        if not isinstance(d, dict) or not set(_META_FIELDS) - set(_OPTIONAL_DEFAULTS) <= set(d) <= set(_META_FIELDS):
            raise ValueError("the fields are not those of segment metadata")
        values: dict[str, Any] = {}
        for name, kind in _META_TYPES.items():
            value = d.get(name, _OPTIONAL_DEFAULTS.get(name))
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
        if not epochs.stored_epochs_valid(self.volume_epoch, self.membership_epoch):
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
        self.check_lineage()
        if len(self.wrapped_data_key) > WRAPPED_KEY_HEX_MAX or not _is_hex(self.wrapped_data_key):
            raise InvalidRequest(f"the wrapped data key is not hex of at most {WRAPPED_KEY_HEX_MAX // 2} bytes")

    def check_lineage(self) -> None:
        """The parent link's values within their bounds (storage/lineage.py rule 1); InvalidRequest if not."""
        name, branch, read = self.parent_segment_id, self.branch_lsn, self.parent_read_lsn
        if branch > LSN_MAX or read > LSN_MAX:
            raise InvalidRequest(f"branch_lsn {branch} or parent_read_lsn {read} is above the highest LSN {LSN_MAX}")
        if self.lsn_floor > LSN_MAX:
            raise InvalidRequest(f"lsn_floor {self.lsn_floor} is above the highest LSN {LSN_MAX}")
        if self.backtrack_window_s > BACKTRACK_WINDOW_S_MAX:
            raise InvalidRequest(
                f"backtrack window {self.backtrack_window_s} s is longer than the longest kept, "
                f"{BACKTRACK_WINDOW_S_MAX} s (366 days)"
            )
        if not name:
            if branch or read:
                raise InvalidRequest("branch_lsn and parent_read_lsn are set but parent_segment_id is not")
            return
        if len(name.encode()) > SEGMENT_ID_BYTES_MAX:
            raise InvalidRequest(f"parent_segment_id is longer than {SEGMENT_ID_BYTES_MAX} bytes")
        if name == self.segment_id:
            raise InvalidRequest(f"segment {self.segment_id} cannot be its own parent")
        if branch < 1:
            raise InvalidRequest(f"clone segment {self.segment_id} needs a branch_lsn of at least 1")
        if read > branch:
            raise InvalidRequest(
                f"parent_read_lsn {read} is above branch_lsn {branch}: it must be the parent PG's chain tail at or "
                "below the branch"
            )

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

    @property
    def highest_lsn_floor(self) -> int:
        """The lowest highest_lsn the segment may report: its writer allocates above it (a clone's branch, a
        new timeline's LSN floor) even while the segment holds no record there."""
        return max(self.branch_lsn, self.lsn_floor)

    @property
    def lineage(self) -> tuple[str, int, int]:
        """(parent_segment_id, branch_lsn, parent_read_lsn): the parent link ("" , 0, 0 without one)."""
        return self.parent_segment_id, self.branch_lsn, self.parent_read_lsn

    def same_shape(self, other: SegmentMeta) -> bool:
        return (self.volume_id, self.pg_index, self.first_page, self.page_count, self.page_size) == (
            other.volume_id,
            other.pg_index,
            other.first_page,
            other.page_count,
            other.page_size,
        )


_META_FIELDS = [f.name for f in fields(SegmentMeta)]
# Fields metadata stored by older nodes may lack, with the value they mean then.
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "parent_segment_id": "",
    "branch_lsn": 0,
    "parent_read_lsn": 0,
    "lsn_floor": 0,
    "wrapped_data_key": "",
    "backtrack_window_s": 0,
}
# The scalar fields and their JSON types (the list fields are checked one by one in `_from_dict`).
_META_TYPES: dict[str, type] = {
    f.name: {"int": int, "str": str, "bool": bool}[str(f.type)]
    for f in fields(SegmentMeta)
    if str(f.type) in ("int", "str", "bool")
}


def _is_hex(text: str) -> bool:
    return len(text) % 2 == 0 and all(c in "0123456789abcdef" for c in text)
