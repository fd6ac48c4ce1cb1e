"""Read routing: which segment to read a page from, and when to hedge.

Pure. Rules:
1. A segment may serve read point P only if its known SCL >= P.
2. Candidates are tried lowest smoothed latency first (segments never timed go
   first, so every segment gets measured).
3. If the first read has not answered after `hedge_delay_ms`, a second one goes
   to the next candidate; the first answer wins.
4. If no segment is known to be complete to P, the caller asks a read quorum of
   the PG for their SCLs (a quorum read) and routes again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EWMA_WEIGHT = 0.2
HEDGE_DELAY_MIN_MS = 5.0
HEDGE_DELAY_MAX_MS = 200.0
HEDGE_FACTOR = 3.0


@dataclass
class ReadRouter:
    latency_ms: dict[str, float] = field(default_factory=dict)

    def candidates(self, scl_of: dict[str, int], read_point: int, exclude: frozenset[str] = frozenset()) -> list[str]:
        ok = [s for s, scl in scl_of.items() if scl >= read_point and s not in exclude]
        return sorted(ok, key=lambda s: (self.latency_ms.get(s, -1.0), s))

    def observe(self, segment: str, latency_ms: float) -> None:
        old = self.latency_ms.get(segment)
        self.latency_ms[segment] = latency_ms if old is None else old + EWMA_WEIGHT * (latency_ms - old)

    def penalize(self, segment: str) -> None:
        """A failed or timed-out read: push the segment to the back of the queue."""
        self.observe(segment, HEDGE_DELAY_MAX_MS * 10)

    def hedge_delay_ms(self, segment: str) -> float:
        latency = self.latency_ms.get(segment)
        if latency is None:
            return HEDGE_DELAY_MAX_MS / 4
        return min(HEDGE_DELAY_MAX_MS, max(HEDGE_DELAY_MIN_MS, HEDGE_FACTOR * latency))
