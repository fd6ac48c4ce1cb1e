"""What a storage node trusts of its LMDB environment when it starts, and what it salvages from a
failed one. The store (storage/store/lifecycle.py) carries out what `load` finds.

Rules (this module owns them):
1. Metadata. Each segment's metadata is stored twice, in tables `segments`
   and `segments_copy`, each copy with its CRC-32C and checked bounds
   (`SegmentMeta.from_bytes`). A copy that fails is never trusted: the other
   one is used and both are written again. Two copies that both check but
   differ (one was forged, or written by another program) are merged the
   safe way (`merge_copies`: the newer epochs, every truncation range and pin,
   the higher high water, the lower chain anchor and VDL hint, the higher GC
   floor) when they name the same segment and seg_no. Copies naming another
   segment or seg_no, or two segments claiming one seg_no: none can be
   trusted over the other, so the segment is lost. A lost segment's rows are deleted; the node reports it missing and
   the control plane creates it again, to be rebuilt from its peers.
2. Watermarks are recomputed from the records, never taken from a stored
   number: SCL is the end of the PG chain walked from the chain anchor
   through the sound records held (storage/scl.py); highest_lsn and
   record_count are counted. A segment already known to lack copies below its
   GC floor (SCL below its horizon: hydrating, or it lost the only copy of
   something there) keeps its stored, lower SCL and the walk starts from it.
3. Rows whose seg_no no trusted segment owns (a lost segment's, a drop cut
   short) are orphans and are deleted. The next seg_no lies above every seg_no
   in the metadata and in every table's keys, never reusing one.
4. Every key of every table is walked before the node serves, so a corrupt
   tree page (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, ...) fails the environment now,
   before anything is served from it (storage/lmdb_env.py rule 4).
5. A clone's segment whose parent is not among the trusted segments loses its
   link (storage/lineage.py rule 7): the pages it read through it are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import lmdb

from sixfold.storage import lineage
from sixfold.storage.errors import ChecksumMismatch, StorageError
from sixfold.storage.keys import SEG_LSN, prefix, record_key, seg_no_of
from sixfold.storage.records import decode_record
from sixfold.storage.scl import SclTracker
from sixfold.storage.segment import Segment, SegmentMeta

log = logging.getLogger(__name__)

META_TABLES = (b"segments", b"segments_copy")
ROW_TABLES = (b"records", b"page_index", b"versions")


@dataclass
class Loaded:
    segments: dict[str, Segment] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # segment_id -> why its metadata is not trusted
    rewrite: list[SegmentMeta] = field(default_factory=list)  # metas to store again (both copies)
    orphan_seg_nos: list[int] = field(default_factory=list)
    next_seg_no: int = 1
    rows: int = 0  # keys walked


# A stored record's plaintext (storage/store/sealing.py): ChecksumMismatch if it does not open,
# KeyUnavailable (passed up untouched) if its key is not at hand. None: rows are stored in clear.
OpenRecord = Callable[[SegmentMeta, int, bytes], bytes]


def load(txn: Any, dbs: dict[bytes, Any], open_record: OpenRecord | None = None) -> Loaded:
    """Rules 1-5 in one read transaction; lmdb corruption errors propagate (the caller fails the disk)."""
    out = Loaded()
    metas, repaired = _read_metas(txn, dbs, out.lost)
    records_per_seg, out.rows = _walk_tree(txn, dbs)
    for meta in metas.values():
        seg, changed = _verified(txn, dbs[b"records"], meta, records_per_seg.get(meta.seg_no, 0), open_record)
        if meta.parent_segment_id and meta.parent_segment_id not in metas:
            log.warning(
                "segment %s: its parent segment %s is not trusted or gone; it loses its link and is hydrated "
                "from a peer as a flattened copy",
                meta.segment_id,
                meta.parent_segment_id,
            )
            lineage.lose_parent(seg)
            changed = True
        out.segments[meta.segment_id] = seg
        if changed or meta.segment_id in repaired:
            out.rewrite.append(seg.meta)
    known = {m.seg_no for m in metas.values()}
    present = _seg_nos_in_rows(txn, dbs)
    out.orphan_seg_nos = sorted(present - known)
    out.next_seg_no = max([0, *known, *present]) + 1
    return out


def _read_metas(txn: Any, dbs: dict[bytes, Any], lost: dict[str, str]) -> tuple[dict[str, SegmentMeta], set[str]]:
    copies: dict[bytes, list[bytes | None]] = {}
    for i, table in enumerate(META_TABLES):
        for key, raw in txn.cursor(db=dbs[table]):
            copies.setdefault(bytes(key), [None, None])[i] = bytes(raw)
    trusted: dict[str, SegmentMeta] = {}
    repaired: set[str] = set()
    for key in sorted(copies):
        segment_id = key.decode(errors="replace")
        decoded: list[SegmentMeta | None] = []
        problems = []
        for table, raw in zip(META_TABLES, copies[key]):
            if raw is None:
                decoded.append(None)
                problems.append(f"its copy in {table.decode()} is missing")
                continue
            try:
                meta = SegmentMeta.from_bytes(raw, where=f"metadata of segment {segment_id} in {table.decode()}")
            except ChecksumMismatch as error:
                decoded.append(None)
                problems.append(error.message)
                continue
            if meta.segment_id != segment_id:
                decoded.append(None)
                problems.append(f"its copy in {table.decode()} describes segment {meta.segment_id!r}")
                continue
            decoded.append(meta)
        good = [m for m in decoded if m is not None]
        if len(good) == 2 and good[0] != good[1]:
            merged = merge_copies(good[0], good[1])
            if merged is None:
                lost[segment_id] = "its two metadata copies both check but name different segments or seg_nos"
                continue
            trusted[segment_id] = merged
            repaired.add(segment_id)
            log.warning(
                "segment %s: its two metadata copies both check but differ; merged the safe way (newer "
                "epochs, every truncation range, the lower chain anchor) and written again",
                segment_id,
            )
        elif not good:
            lost[segment_id] = "; ".join(problems)
        else:
            trusted[segment_id] = good[0]
            if len(good) == 1:
                repaired.add(segment_id)
                log.warning(
                    "segment %s: %s; using the other copy and writing both again", segment_id, "; ".join(problems)
                )
    by_seg_no: dict[int, list[str]] = {}
    for meta in trusted.values():
        by_seg_no.setdefault(meta.seg_no, []).append(meta.segment_id)
    for seg_no, ids in by_seg_no.items():
        if len(ids) > 1:
            for segment_id in ids:
                lost[segment_id] = f"segments {', '.join(ids)} all claim seg_no {seg_no}"
                trusted.pop(segment_id)
    for segment_id, why in lost.items():
        log.error(
            "segment %s is lost: %s; its rows are deleted and the control plane creates it again, to be "
            "rebuilt from its peers",
            segment_id,
            why,
        )
    return trusted, repaired


def merge_copies(a: SegmentMeta, b: SegmentMeta) -> SegmentMeta | None:
    """Two copies that both check but differ: keep what is safe from both (rule 1), or None when they do
    not describe the same segment under the same seg_no. The watermarks are recomputed from the records
    anyway (rule 2); of what is not, a newer epoch fences more, a truncation range or pin kept voids or
    keeps more, a higher high water demands more, a lower chain anchor walks from further back (a walk that
    meets a collected record stops: SCL claims less), a lower VDL hint is still a durable bound, a higher GC
    floor serves less, a higher LSN floor allocates higher."""
    identity = (
        "segment_id",
        "volume_id",
        "pg_index",
        "first_page",
        "page_count",
        "page_size",
        "seg_no",
        "parent_segment_id",
        "branch_lsn",
        "parent_read_lsn",
    )
    if any(getattr(a, f) != getattr(b, f) for f in identity):
        return None
    m = a.copy()
    newer_members = b if b.membership_epoch > a.membership_epoch else a
    m.membership_epoch, m.peers = newer_members.membership_epoch, [list(p) for p in newer_members.peers]
    newer_writer = b if b.volume_epoch > a.volume_epoch else a
    m.volume_epoch, m.volume_epoch_owner = newer_writer.volume_epoch, newer_writer.volume_epoch_owner
    m.truncation_ranges = sorted(
        set(a.truncation_ranges) | set(b.truncation_ranges), key=lambda r: (r.start_lsn, r.end_lsn, r.epoch)
    )
    m.pinned_lsns = sorted(set(a.pinned_lsns) | set(b.pinned_lsns))
    m.holes = sorted(set(a.holes) | set(b.holes))
    m.rebuilding = a.rebuilding or b.rebuilding
    m.scl_high_water = max(a.scl_high_water, b.scl_high_water)
    m.scl = min(a.scl, b.scl)
    m.retention_horizon_lsn = max(a.retention_horizon_lsn, b.retention_horizon_lsn)
    m.chain_anchor_lsn = min(a.chain_anchor_lsn, b.chain_anchor_lsn)
    m.vdl_hint = min(a.vdl_hint, b.vdl_hint)
    m.lsn_floor = max(a.lsn_floor, b.lsn_floor)
    m.backtrack_window_s = max(a.backtrack_window_s, b.backtrack_window_s)
    try:
        m.validate()
    except StorageError:
        return None
    return m


def _walk_tree(txn: Any, dbs: dict[bytes, Any]) -> tuple[dict[int, int], int]:
    """Every key of every table (rule 4); returns the record count per seg_no and the keys walked."""
    per_seg: dict[int, int] = {}
    walked = 0
    for name, db in dbs.items():
        count_records = name == b"records"
        for key in txn.cursor(db=db).iternext(keys=True, values=False):
            walked += 1
            if count_records:
                seg_no = seg_no_of(key)
                per_seg[seg_no] = per_seg.get(seg_no, 0) + 1
    return per_seg, walked


def _seg_nos_in_rows(txn: Any, dbs: dict[bytes, Any]) -> set[int]:
    """Every seg_no with a row in a row table: one seek per seg_no, not a scan."""
    found: set[int] = set()
    for table in ROW_TABLES:
        cursor = txn.cursor(db=dbs[table])
        seg_no = 0
        while cursor.set_range(prefix(seg_no)):
            seg_no = seg_no_of(cursor.key())
            found.add(seg_no)
            seg_no += 1
            if seg_no > 0xFFFFFFFF:
                break
    return found


def _verified(
    txn: Any, records: Any, meta: SegmentMeta, record_count: int, open_record: OpenRecord | None
) -> tuple[Segment, bool]:
    """Rule 2: the segment with watermarks its records prove; True if any stored value was wrong."""
    damaged = meta.scl < meta.retention_horizon_lsn
    base = meta.scl if damaged else meta.chain_anchor_lsn
    tracker = SclTracker.rebuilt(base, held_above(txn, records, meta, base, warn=True, open_record=open_record))
    # A clone's segment holds nothing at or below its branch (a new timeline's, its LSN floor), yet its
    # writer's LSNs are above it.
    highest = max(last_lsn(txn, records, meta.seg_no), meta.chain_anchor_lsn, tracker.scl, meta.highest_lsn_floor)
    stored = (meta.scl, meta.highest_lsn, meta.record_count)
    if tracker.scl != meta.scl:
        log.warning(
            "segment %s: its metadata says SCL %d but its records prove %d; SCL is %d",
            meta.segment_id,
            meta.scl,
            tracker.scl,
            tracker.scl,
        )
    fixed = meta.copy()
    fixed.scl, fixed.highest_lsn, fixed.record_count = tracker.scl, highest, record_count
    fixed.raise_scl_high_water()
    return Segment(meta=fixed, tracker=tracker), stored != (fixed.scl, fixed.highest_lsn, fixed.record_count)


def trusted_copy(copies: Iterable[bytes | memoryview | None], segment_id: str) -> SegmentMeta | None:
    """The first of a segment's stored metadata copies that checks and names it, or None (rule 1 in brief,
    for readers that need the metadata as stored: scrubbing's snapshot, the simulator's checks)."""
    for raw in copies:
        if raw is None:
            continue
        try:
            meta = SegmentMeta.from_bytes(raw)
        except ChecksumMismatch:
            continue
        if meta.segment_id == segment_id:
            return meta
    return None


def held_above(
    txn: Any, records: Any, meta: SegmentMeta, base: int, warn: bool = False, open_record: OpenRecord | None = None
) -> list[tuple[int, int]]:
    """(LSN, PG backlink) of every sound record above `base`, for rebuilding the SCL tracker. A record
    that fails its CRC or is malformed is left out: a hole, to be repaired (`warn`: log each one)."""
    held = []
    cursor = txn.cursor(db=records)
    if cursor.set_range(record_key(meta.seg_no, base + 1)):
        for key, raw in cursor:
            seg_no, lsn = SEG_LSN.unpack(key)
            if seg_no != meta.seg_no:
                break
            try:
                plain = open_record(meta, lsn, raw) if open_record is not None else raw
                record = decode_record(plain, where=f"record LSN {lsn} in segment {meta.segment_id}")
            except ChecksumMismatch as error:
                if warn:
                    log.warning("%s; left out of the chain until repaired", error.message)
                continue
            if record.lsn != lsn or not record.prev_pg_lsn < lsn:
                if warn:
                    log.warning("record stored under LSN %d in segment %s is malformed; left out", lsn, meta.segment_id)
                continue
            held.append((lsn, record.prev_pg_lsn))
    return held


def last_lsn(txn: Any, records: Any, seg_no: int) -> int:
    """The highest LSN stored for `seg_no` (0 if none)."""
    cursor = txn.cursor(db=records)
    moved = cursor.prev() if cursor.set_range(prefix(seg_no + 1)) else cursor.last()
    if moved:
        key_seg, lsn = SEG_LSN.unpack(cursor.key())
        if key_seg == seg_no:
            return int(lsn)
    return 0


def salvaged_from(copies: Iterable[tuple[bytes, bytes, bytes]]) -> list[SegmentMeta]:
    """Segments whose metadata a walk of a failed environment read, (table, key, value) each, as
    `salvage` would trust them (either copy that checks and names its key)."""
    found: dict[str, SegmentMeta] = {}
    for _, key, value in copies:
        segment_id = key.decode(errors="replace")
        if segment_id not in found:
            meta = trusted_copy([value], segment_id)
            if meta is not None:
                found[segment_id] = meta
    return [found[k] for k in sorted(found)]


def salvage(env: Any, dbs: dict[bytes, Any]) -> list[SegmentMeta]:
    """From a failed environment: every segment whose metadata still reads and checks (either copy), as
    far as the tree can be read; nothing else of it is trusted (the caller rebuilds them from peers)."""
    found: dict[str, SegmentMeta] = {}
    if env is None:
        return []
    for table in META_TABLES:
        try:
            with env.begin() as txn:
                for key, raw in txn.cursor(db=dbs[table]):
                    segment_id = bytes(key).decode(errors="replace")
                    if segment_id in found:
                        continue
                    try:
                        meta = SegmentMeta.from_bytes(raw, where=f"metadata of segment {segment_id}")
                    except ChecksumMismatch:
                        continue
                    if meta.segment_id == segment_id:
                        found[segment_id] = meta
        except (lmdb.Error, StorageError, KeyError) as error:
            log.warning("salvaging segment metadata from %s stopped: %s", table.decode(), error)
    return [found[k] for k in sorted(found)]
