"""The read points the writer's reads are in flight at, so storage keeps what they need.

Pure. Rules:
1. A read takes its read point before its first await (`acquire`) and gives it
   back when it ends (`release`), whatever the outcome.
2. `lowest(default)` is the lowest read point in flight, else `default` (the
   read point the next read would use). Each batch to a segment carries it as
   `min_read_point`; the segment's retention horizon never passes it
   (storage/retention.py), so a read never finds its page versions collected.
"""

from __future__ import annotations

from collections import Counter


class ReadPoints:
    def __init__(self) -> None:
        self._in_flight: Counter[int] = Counter()

    def acquire(self, read_point: int) -> int:
        self._in_flight[read_point] += 1
        return read_point

    def release(self, read_point: int) -> None:
        assert self._in_flight[read_point] > 0, read_point
        self._in_flight[read_point] -= 1
        if not self._in_flight[read_point]:
            del self._in_flight[read_point]

    def lowest(self, default: int) -> int:
        return min(self._in_flight, default=default)

    def __len__(self) -> int:
        return sum(self._in_flight.values())
