"""Lineage: a clone's segment reads the pages it never wrote through its parent segment on the same node.

Pure: the LMDB store (storage/store/rows.py `_materialize`, storage/store/clones.py) looks things up and
carries out what is decided here; `resolve` states the read rule over plain values, for the tests'
brute-force oracle and as the reference the store follows. Rules (this module owns them):

1. The link. A segment may name a parent (`SegmentMeta.parent_segment_id`): the segment of the parent
   volume's PG on this node, with the same pages and page size. `branch_lsn` b is the volume LSN the
   clone branched at and `parent_read_lsn` a the parent PG's chain tail at or below b, so the parent PG
   has no record in (a, b] and its pages at a are those at b. Every record the clone's segment ever
   holds is above b. A new clone segment holds nothing of its own and starts as if hydrated at a
   (`start_clone`): SCL = GC floor = chain anchor = high water = a, VDL hint = b and highest LSN =
   max(b, lsn_floor) (`SegmentMeta.highest_lsn_floor`, which it never drops below).
2. Resolution (`resolve`). A read of page p at read point r on a segment starts from its own newest
   version of p at or below r; if it has none, from its parent's page p read at a (rule 2 again, up the
   chain), or from a zero page if it has no parent. Then the segment's own records of p above where the
   start left the page (its page LSN) and at or below r are applied.
3. Bounds. A fall-through walks at most `LINEAGE_DEPTH_MAX` links; a chain that names a segment twice
   is refused.
4. A fall-through read is served only while the parent is held, has the same pages, is whole (not
   rebuilding, not hydrating, back at its high water) and its SCL is at or above a; otherwise the read
   is refused with ReadPointOutOfRange (the compute reads another copy) — `check_fall_through`.
5. Keep points. Each child's a is a keep point of its parent: the parent's GC keeps what a read at a
   needs (storage/retention.py rule 6) while its horizon moves on, and the store reads the parent at a
   keep point below its horizon only for a fall-through.
6. Creation (`check_create`) is refused (LineageRefused, FAILED_PRECONDITION) unless the parent is
   held here with the same pages and page size, is whole, has SCL >= a, can still be read at a (a at or
   above its GC floor, or a is its chain anchor: the PG then has no record in (a, floor], so nothing a
   read at a needs was collected), and its own chain tail at or below min(SCL, b) is a. The store checks
   this in the write transaction that creates the child, so GC cannot move the floor in between. A
   segment created to rebuild a lost copy has no parent: it is a flattened copy that hydrates every page
   (its own and those it would fall through for) from a peer.
7. A parent with children is never dropped (`check_drop`). When the parent's pages at a are replaced
   (it starts hydrating at an LSN above a) or are gone (its disk failed, or its metadata was lost at
   start), the child loses its link (`lose_parent`; b stays its LSN floor): it holds only its own
   records, so it becomes a rebuilding segment whose SCL is below its GC floor; it serves nothing until
   gossip hydrates it from a peer as a flattened copy. (With a = 0 nothing is lost: every page of the
   lineage is zero at LSN 0, so only the link goes.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sixfold.storage.errors import InvalidRequest, ReadPointOutOfRange, StorageError
from sixfold.storage.scl import SclTracker
from sixfold.storage.segment import Segment, SegmentMeta

LINEAGE_DEPTH_MAX = 1_000  # links a fall-through read may walk (rule 3)

REASON_LINEAGE_REFUSED = "LINEAGE_REFUSED"  # metadata: segment_id, parent_segment_id, condition
# `condition` values in a LineageRefused's metadata: what a caller may branch on.
PARENT_MISSING = "parent_missing"
PARENT_SHAPE = "parent_shape"
PARENT_NOT_WHOLE = "parent_not_whole"
PARENT_BEHIND = "parent_behind"
BELOW_GC_FLOOR = "below_gc_floor"
TAIL_MISMATCH = "tail_mismatch"
HAS_CHILDREN = "has_children"


class LineageRefused(StorageError):
    """A clone segment's creation, or a parent's drop, refused for what the parent or its children are now."""

    status_code_name = "FAILED_PRECONDITION"
    reason = REASON_LINEAGE_REFUSED


# -- rule 2 over plain values -----------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """One segment of a lineage, for one page: its own version and record LSNs of the page, and the LSN
    it reads its parent at (None: no parent, the root or a flattened copy). Levels run from the segment
    read up to its root."""

    version_lsns: tuple[int, ...]
    record_lsns: tuple[int, ...]
    parent_read_lsn: int | None = None


@dataclass(frozen=True)
class Resolution:
    """Where a read starts and what it applies: the version at `base_lsn` of level `base_level` (0: a
    zero page there), then each (level, record LSNs) of `applied` in order, the deepest level first."""

    base_level: int
    base_lsn: int
    applied: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def page_lsn(self) -> int:
        return max([self.base_lsn, *(lsns[-1] for _, lsns in self.applied if lsns)])


def resolve(chain: list[Level], read_point: int) -> Resolution:
    """Rule 2: the read of one page at `read_point` on `chain[0]`."""
    steps: list[tuple[int, int]] = []  # (level, read point there), the segment read first
    level, at = 0, read_point
    while True:
        steps.append((level, at))
        here = chain[level]
        base = max((v for v in here.version_lsns if v <= at), default=0)
        if base or here.parent_read_lsn is None:
            break
        if len(steps) > LINEAGE_DEPTH_MAX or level + 1 >= len(chain):
            raise ValueError(f"the lineage runs past {len(chain)} levels or {LINEAGE_DEPTH_MAX} links")
        level, at = level + 1, here.parent_read_lsn
    page_lsn = base
    applied = []
    for level, at in reversed(steps):
        lsns = tuple(sorted(r for r in chain[level].record_lsns if page_lsn < r <= at))
        if lsns:
            page_lsn = lsns[-1]
        applied.append((level, lsns))
    return Resolution(steps[-1][0], base, tuple(applied))


# -- the store's checks (rules 1, 3, 4, 6, 7) ------------------------------------------------------


def start_clone(meta: SegmentMeta) -> None:
    """Rule 1: a new clone segment's watermarks, as if hydrated at parent_read_lsn."""
    a, b = meta.parent_read_lsn, meta.branch_lsn
    meta.scl = meta.retention_horizon_lsn = meta.chain_anchor_lsn = meta.scl_high_water = a
    meta.vdl_hint = b
    meta.highest_lsn = meta.highest_lsn_floor
    meta.rebuilding = False


def _refused(child: SegmentMeta, condition: str, why: str) -> LineageRefused:
    return LineageRefused(
        f"segment {child.segment_id} cannot be created as a clone of segment {child.parent_segment_id}: {why}",
        {"segment_id": child.segment_id, "parent_segment_id": child.parent_segment_id, "condition": condition},
    )


def check_create(child: SegmentMeta, parent: Segment | None, parent_tail: int) -> None:
    """Rule 6. `parent_tail`: the parent's chain tail at or below min(its SCL, branch_lsn), as stored in
    the transaction that creates the child (any value when `parent` is None)."""
    a, b = child.parent_read_lsn, child.branch_lsn
    name = child.parent_segment_id
    if parent is None:
        raise _refused(child, PARENT_MISSING, f"this node does not hold {name}; create it on the parent's nodes")
    p = parent.meta
    if (p.first_page, p.page_count, p.page_size) != (child.first_page, child.page_count, child.page_size):
        raise _refused(
            child,
            PARENT_SHAPE,
            f"{name} holds pages {p.first_page}+{p.page_count} of {p.page_size} bytes, not pages "
            f"{child.first_page}+{child.page_count} of {child.page_size} bytes",
        )
    if not parent.whole:
        raise _refused(
            child,
            PARENT_NOT_WHOLE,
            f"{name} is not whole now (rebuilding a lost copy, hydrating or catching up); retry once it is",
        )
    if parent.tracker.scl < a:
        raise _refused(
            child,
            PARENT_BEHIND,
            f"{name} is complete only to LSN {parent.tracker.scl}, below parent_read_lsn {a}; retry once it "
            "has caught up",
        )
    if a < p.retention_horizon_lsn and a != p.chain_anchor_lsn:
        raise _refused(
            child,
            BELOW_GC_FLOOR,
            f"{name} no longer keeps its pages at LSN {a}: its GC floor is {p.retention_horizon_lsn}; clone at "
            "a later LSN",
        )
    if parent_tail != a:
        raise _refused(
            child,
            TAIL_MISMATCH,
            f"{name}'s chain tail at or below LSN {min(parent.tracker.scl, b)} is {parent_tail}, not "
            f"parent_read_lsn {a}",
        )


def check_fall_through(child: SegmentMeta, parent: Segment | None, walked: set[str]) -> None:
    """Rules 3 and 4, before `child` reads a page from its parent at parent_read_lsn; `walked`: the
    segments the read has walked through so far (the child among them)."""
    a, name = child.parent_read_lsn, child.parent_segment_id
    prefix = f"segment {child.segment_id} reads the pages it never wrote from its parent segment {name} at LSN {a}, "
    if name in walked or len(walked) > LINEAGE_DEPTH_MAX:
        raise ReadPointOutOfRange(
            prefix + f"but its lineage loops or runs deeper than {LINEAGE_DEPTH_MAX} segments; read from another copy"
        )
    if parent is None:
        raise ReadPointOutOfRange(prefix + "which this node does not hold; read from another copy")
    p = parent.meta
    if (p.first_page, p.page_count, p.page_size) != (child.first_page, child.page_count, child.page_size):
        raise ReadPointOutOfRange(prefix + "which holds other pages; read from another copy")
    if not parent.whole:
        raise ReadPointOutOfRange(
            prefix + "which is not whole now (rebuilding, hydrating or catching up); read from another copy or "
            "retry later"
        )
    if parent.tracker.scl < a:
        raise ReadPointOutOfRange(
            prefix + f"which is complete only to LSN {parent.tracker.scl}; read from another copy or retry later"
        )
    parent.check_read_point(a, keep_points=(a,))  # a is the parent's keep point while the child is linked


def check_drop(segment_id: str, children: Iterable[str]) -> None:
    """Rule 7: a segment others read through is not dropped."""
    held = sorted(children)
    if held:
        raise LineageRefused(
            f"segment {segment_id} cannot be dropped: segment{'s' if len(held) > 1 else ''} {', '.join(held)} "
            "on this node read the pages they never wrote through it; drop them first",
            {"segment_id": segment_id, "parent_segment_id": segment_id, "condition": HAS_CHILDREN},
        )


def lose_parent(seg: Segment) -> None:
    """Rule 7, on a working copy: the link goes; unless a = 0 the segment is rebuilding with SCL 0 below its
    GC floor (at or above a >= 1), so it serves nothing until it is hydrated as a flattened copy."""
    m = seg.meta
    read_lsn = m.parent_read_lsn
    m.lsn_floor = m.highest_lsn_floor  # its writer still allocates above the branch
    m.parent_segment_id, m.branch_lsn, m.parent_read_lsn = "", 0, 0
    if read_lsn == 0:
        return
    m.retention_horizon_lsn = max(m.retention_horizon_lsn, read_lsn)  # it started there (rule 1)
    m.rebuilding = True
    seg.tracker = SclTracker(scl=0)
    m.scl = 0


def children_index(metas: Iterable[SegmentMeta]) -> dict[str, list[str]]:
    """parent segment id -> the ids of the segments linked to it, sorted."""
    out: dict[str, list[str]] = {}
    for m in metas:
        if m.parent_segment_id:
            out.setdefault(m.parent_segment_id, []).append(m.segment_id)
    return {parent: sorted(children) for parent, children in out.items()}


def keep_points(children: Iterable[SegmentMeta]) -> list[int]:
    """Rule 5: the parent_read_lsn of each child, once each, lowest first."""
    return sorted({c.parent_read_lsn for c in children})


# -- branch points (a clone's or a backtrack's, chosen by the compute node or the control plane) ---------


def branch_tail(answers: Iterable[tuple[bool, int, int]], lsn: int) -> int | None:
    """A PG's chain tail at or below `lsn`, from its segments' answers (whole, SCL, stored tail at or below
    `lsn`): only a whole segment whose chain reaches past `lsn` knows it exactly. None: none such answered."""
    knowing = [tail for whole, scl, tail in answers if whole and scl >= lsn]
    return max(knowing) if knowing else None


def ends_an_mtr(records: Iterable[Any], lsn: int, asked_lsn: int, where: str = "") -> Any | None:
    """The record `lsn` among `records` (anything with .lsn and .cpl), refused unless it ends an MTR: a branch
    whose newest record does not would show half a transaction. None: not among them."""
    for record in records:
        if record.lsn != lsn:
            continue
        if not record.cpl:
            raise InvalidRequest(
                f"LSN {asked_lsn} falls inside a transaction{where} (its newest record, LSN {lsn}, does not end "
                "one); choose the LSN a write returned (a commit)"
            )
        return record
    return None
