"""Quorum arithmetic for one protection group, including membership changes.

Pure. Rules (this module owns them):
1. V = 6 copies, W = 4 for writes, R = 3 for reads; W + R > V (every read quorum
   meets every write quorum) and 2W > V (two write quorums always overlap) are
   checked when the module loads (invariant 1).
2. A PG's membership is one quorum set, or more during changes ([P18] §4.1):
   ABCDEF -> (ABCDEF and ABCDEG) -> ABCDEG. A write needs W of EVERY set; a
   read needs R of ANY set. Changes compose: with k changes in flight the sets
   are the base set with every subset of the changes applied (2^k sets; at
   most `CHANGES_MAX` changes).
3. A segment's SCL says it holds every record of the PG up to that LSN, so the
   PG's complete LSN (PGCL) is, for each write set, the W-th highest SCL among
   its members; with two sets, the lower of the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The numbers have one owner, storage/quorum.py (which checks W + R > V and 2W > V); named here
# as module globals, so the simulator's ack-at-3 mutation can still patch this module's WRITE_QUORUM.
from sixfold.storage.quorum import COPIES, READ_QUORUM, WRITE_QUORUM
from sixfold.storage.quorum import MEMBERSHIP_CHANGES_MAX as CHANGES_MAX


@dataclass(frozen=True)
class QuorumSet:
    members: frozenset[str]

    def __post_init__(self) -> None:
        assert len(self.members) == COPIES, f"a quorum set has {COPIES} members, not {len(self.members)}"


@dataclass(frozen=True)
class Membership:
    """One quorum set normally; two while a segment is being replaced."""

    sets: tuple[QuorumSet, ...]

    def __post_init__(self) -> None:
        assert 1 <= len(self.sets) <= 2**CHANGES_MAX, "a membership is one set, or up to four during changes"

    @classmethod
    def of(cls, *member_lists: Iterable[str]) -> Membership:
        return cls(tuple(QuorumSet(frozenset(m)) for m in member_lists))

    @classmethod
    def with_changes(cls, base: Iterable[str], changes: Iterable[tuple[str, str]]) -> Membership:
        """Rule 2: the base set with every subset of the (old, new) changes applied."""
        sets = [frozenset(base)]
        for old, new in changes:
            assert old in sets[0] and new not in sets[0], (old, new)
            sets += [(s - {old}) | {new} for s in sets]
        assert len(sets) <= 2**CHANGES_MAX, "at most two changes compose"
        return cls(tuple(QuorumSet(s) for s in dict.fromkeys(sets)))

    @property
    def segments(self) -> frozenset[str]:
        return frozenset().union(*(s.members for s in self.sets))

    def write_quorum_met(self, acked: Iterable[str]) -> bool:
        acked = set(acked)
        return all(len(s.members & acked) >= WRITE_QUORUM for s in self.sets)

    def read_quorum_met(self, answered: Iterable[str]) -> bool:
        answered = set(answered)
        return any(len(s.members & answered) >= READ_QUORUM for s in self.sets)

    def pgcl(self, scl_of: Mapping[str, int]) -> int:
        """The highest LSN up to which a write quorum of every set holds every PG record."""
        complete = []
        for s in self.sets:
            scls = sorted((scl_of.get(m, 0) for m in s.members), reverse=True)
            complete.append(scls[WRITE_QUORUM - 1])
        return min(complete)
