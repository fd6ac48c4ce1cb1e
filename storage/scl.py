"""SCL — the segment complete LSN — as a pure function of the PG backlinks.

Every record of a protection group carries `prev_pg_lsn`, the LSN of the PG's
previous record (0 for the PG's first record). One writer per epoch makes these
links a single chain, and a truncation range removes an abandoned tail before a
newer writer extends the chain, so the chain never forks.

Rules (this module owns them):
1. SCL is the highest LSN reachable from the segment's base (0 for a new
   segment) by following forward links through records the segment holds.
2. Every record at or below SCL is in the chain; records above SCL wait in
   `pending` (keyed by their predecessor) until the hole below them fills.
3. A predecessor has at most one successor. A second, different successor is a
   conflict the caller must refuse (`successor_conflict`).
4. After a truncation of [start, end] the tracker is rebuilt: the chain is
   complete to the highest record held below `start` (every held record below
   SCL is in the chain), and every record kept at or above `start` (records the
   range spared, records above it) waits again for its predecessor.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SclTracker:
    scl: int = 0
    # prev_pg_lsn -> lsn, for records held above SCL whose chain is not yet complete.
    pending: dict[int, int] = field(default_factory=dict)

    def successor_conflict(self, lsn: int, prev_pg_lsn: int) -> int | None:
        """The LSN that already follows `prev_pg_lsn` if it is not `lsn`, else None.

        Below SCL the chain is complete, so any predecessor under SCL already has its
        successor (the next chain record), which cannot be `lsn` unless it is stored.
        The caller checks stored duplicates first.
        """
        if prev_pg_lsn < self.scl:
            return -1  # the chain already continues from prev_pg_lsn (successor not tracked here)
        if prev_pg_lsn == self.scl:
            return None
        other = self.pending.get(prev_pg_lsn)
        return other if other is not None and other != lsn else None

    def add(self, lsn: int, prev_pg_lsn: int) -> int:
        """Record that the segment now holds `lsn`; return the new SCL."""
        assert prev_pg_lsn < lsn, (lsn, prev_pg_lsn)
        if lsn <= self.scl:
            return self.scl  # already in the chain (an idempotent resend)
        if prev_pg_lsn == self.scl:
            self.scl = lsn
            while self.scl in self.pending:
                self.scl = self.pending.pop(self.scl)
        else:
            assert self.pending.get(prev_pg_lsn, lsn) == lsn, (lsn, prev_pg_lsn, self.pending)
            self.pending[prev_pg_lsn] = lsn
        return self.scl

    @classmethod
    def rebuilt(cls, base: int, held: list[tuple[int, int]]) -> SclTracker:
        """A tracker for a segment complete to `base` that also holds `held` = [(lsn, prev_pg_lsn)]
        above it (after a truncation: every record kept above the range's start)."""
        tracker = cls(scl=base)
        for lsn, prev in sorted(held):
            if lsn > base and tracker.successor_conflict(lsn, prev) is None:
                tracker.add(lsn, prev)
        return tracker


def scl_oracle(base: int, prev_pg_of: dict[int, int]) -> int:
    """Brute force: the highest held LSN whose backward chain reaches `base` through held records."""
    best = base
    for lsn in prev_pg_of:
        cursor = lsn
        while cursor in prev_pg_of and cursor > base:
            cursor = prev_pg_of[cursor]
        if cursor == base and lsn > best:
            best = lsn
    return best
