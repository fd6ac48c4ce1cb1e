"""Dirty pages: per segment, how many records each page received since coalescing last looked at it.

Appends count pages up on the writer thread (`add`); the coalescer (storage/coalesce.py) takes the
counts on the event loop (`take`), gives back what it does not settle (`mark`), and a fold counts off
what it really took once its transaction committed (`unmark_folded`). A count is never below the
number of the page's records above its newest page version, so a page whose count is below the chain
minimum is skipped without being read.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

# A dirty count that makes coalescing read the page at its next round, whatever its chain minimum.
LOOK_AGAIN = 1 << 30


class DirtyPages:
    """Thread-safe: every method takes `lock`."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._pages: dict[str, Counter[int]] = {}

    def add(self, appended: Iterable[tuple[str, Iterable[int]]]) -> None:
        """For each (segment_id, pages) one more record for each page of `pages` (a page may appear
        several times), all under one hold of the lock."""
        with self._lock:
            for segment_id, pages in appended:
                self._pages.setdefault(segment_id, Counter()).update(pages)

    def take(self, segment_id: str) -> Counter[int]:
        """The segment's counts; forgotten here (the caller gives back what it does not settle)."""
        with self._lock:
            return self._pages.pop(segment_id, Counter())

    def mark(self, segment_id: str, counts: dict[int, int]) -> None:
        """Give pages back with `counts` records above their newest version (added to any counted since)."""
        with self._lock:
            self._pages.setdefault(segment_id, Counter()).update(counts)

    def unmark_folded(self, segment_id: str, folded: dict[int, int]) -> None:
        """A fold took these records out of 'above the newest version': count them off."""
        with self._lock:
            counts = self._pages.setdefault(segment_id, Counter())
            counts.subtract(folded)
            for page in folded:
                if counts[page] <= 0:
                    del counts[page]

    def copy_of(self, segment_id: str) -> dict[int, int]:
        with self._lock:
            return dict(self._pages.get(segment_id, {}))

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
