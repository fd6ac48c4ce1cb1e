"""What a segment needs from its peers: the planning half of gossip repair.

Pure. Rules (this module owns them):
1. Truncation ranges travel first: every range a peer holds that this segment
   lacks is applied before any record is pulled, so a record a newer writer
   truncated is never brought back (invariant 4).
2. Records are pulled from the peer with the highest SCL, from this segment's
   SCL up to that peer's SCL, at most `PULL_RECORDS_MAX` per round.
3. A pulled record is dropped if a known truncation range voids it; the rest go
   through the ordinary append path (CRC, shape and chain checks, idempotent
   for records already held) as one batch.
4. The batch carries the highest epoch among this segment's and the records'
   own (`epochs.peer_copy_epoch`, storage/epochs.py rule 6): a record of epoch
   E exists only because writer E opened the volume.
5. Hydration (storage/retention.py): when the chosen peer has garbage-collected
   records this segment lacks (this segment's SCL is below the peer's chain
   anchor), or this segment lost a copy below its own GC floor (its SCL is
   below its horizon), it copies the peer's pages at
   max(peer's horizon, own horizon) instead — if the peer's SCL reaches that
   far — and pulls records above it in later rounds.
6. A segment created again to replace a lost copy (`rebuilding`) measures how
   far it must catch up before it counts as whole: the highest SCL (or high
   water: a peer that lost a record still counts what it once held) among at
   least REBUILD_PEERS_MIN peers that are not rebuilding themselves. Any write
   it may have acknowledged before it lost its copy is on a write quorum of four,
   so on at least three of its five peers, and any three of those five include
   one of them (`rebuild_target`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sixfold.storage.quorum import COPIES, WRITE_QUORUM
from sixfold.storage.records import LogRecord
from sixfold.storage.truncation import TruncationRange, voided

PULL_RECORDS_MAX = 2_000
# Rule 6: of a segment's COPIES - 1 peers, a write quorum includes at least WRITE_QUORUM - 1, so any
# COPIES - WRITE_QUORUM + 1 of them (3) include one that holds every acknowledged record.
REBUILD_PEERS_MIN = COPIES - WRITE_QUORUM + 1


@dataclass(frozen=True)
class PeerView:
    node_id: str
    scl: int
    truncation_ranges: tuple[TruncationRange, ...]
    horizon: int = 0  # the peer's retention horizon (its GC floor)
    chain_anchor: int = 0  # records above it are all still stored on the peer
    high_water: int = 0  # the highest SCL the peer ever had
    rebuilding: bool = False  # the peer is itself rebuilding a lost copy


@dataclass(frozen=True)
class RepairPlan:
    ranges_to_apply: tuple[TruncationRange, ...]
    pull_from: str | None  # node_id of the peer to pull records from
    from_lsn: int  # pull records with from_lsn < LSN <= to_lsn
    to_lsn: int
    hydrate_at: int = 0  # non-zero: copy pull_from's pages at this LSN instead of pulling records (rule 5)


def plan_repair(scl: int, known: list[TruncationRange], peers: list[PeerView], horizon: int = 0) -> RepairPlan:
    """`scl` and `horizon` are this segment's."""
    known_set = set(known)
    missing: dict[TruncationRange, None] = {}
    for peer in peers:
        for r in peer.truncation_ranges:
            if r not in known_set:
                missing[r] = None
    damaged = scl < horizon
    ahead = [p for p in peers if p.scl > scl]
    if not ahead:
        return RepairPlan(tuple(missing), None, scl, scl)
    best = max(ahead, key=lambda p: (p.scl, p.node_id))
    if damaged or scl < best.chain_anchor:
        at = max(best.horizon, horizon)
        if at > best.scl:
            return RepairPlan(tuple(missing), None, scl, scl)
        return RepairPlan(tuple(missing), best.node_id, scl, best.scl, hydrate_at=at)
    return RepairPlan(tuple(missing), best.node_id, scl, best.scl)


def rebuild_target(peers: list[PeerView]) -> int | None:
    """Rule 6: the LSN a rebuilding segment must reach, or None until enough peers answered."""
    counted = [p for p in peers if not p.rebuilding]
    if len(counted) < REBUILD_PEERS_MIN:
        return None
    return max(max(p.scl, p.high_water) for p in counted)


def records_to_append(records: list[LogRecord], ranges: list[TruncationRange]) -> list[LogRecord]:
    """The pulled records a known truncation range does not void (resends of held ones are harmless)."""
    return [r for r in records if not voided(ranges, r.lsn, r.epoch)]
