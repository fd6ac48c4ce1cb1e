"""Recent records: the decoded form of the rows this node stored lately, so coalescing (and reads) need not
open and decode them again.

Coalescing folds a page once 32 records lie above its version, seconds after they were appended; opening
(AES-GCM) and decoding each of them again was the largest part of a node's CPU under write load.

Rules:
1. An entry is (segment id, LSN) -> (the exact bytes stored in the row, the record they encode). It is put
   only after the transaction that stored those bytes committed, from the record that was checked (CRC,
   bounds, epochs) and sealed into them.
2. `get` answers only when the row read now is byte for byte the row stored then: a row truncated and
   written again, quarantined, replaced by a resend, rotted on disk or moved under another segment's
   environment misses, and the caller opens and checks the stored row as before. So the cache never needs
   invalidating, and never answers with anything but what opening the row would give.
3. Bounded: at most `capacity` entries, the oldest put first out (a record is wanted once, by the fold
   that follows its append; reading it does not keep it). Thread-safe (the writer thread puts
   and folds, the event loop reads).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sixfold.storage.records import LogRecord

RECENT_RECORDS_MAX = 1 << 16  # ~0.5 KiB each with its stored row: ~32 MiB per node at most


class RecentRecords:
    def __init__(self, capacity: int = RECENT_RECORDS_MAX) -> None:
        assert capacity >= 0
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, int], tuple[bytes, LogRecord]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put_all(self, stored: list[tuple[str, int, bytes, LogRecord]]) -> None:
        """Rule 1: (segment id, LSN, stored row, record) for rows a committed transaction stored."""
        if not self.capacity:
            return
        with self._lock:
            entries = self._entries
            for segment_id, lsn, row, record in stored:
                key = (segment_id, lsn)
                entries[key] = (row, record)
                entries.move_to_end(key)
            while len(entries) > self.capacity:
                entries.popitem(last=False)

    def get(self, segment_id: str, lsn: int, row: bytes | memoryview) -> LogRecord | None:
        """Rule 2: the record, only if `row` is exactly the row that was stored with it."""
        with self._lock:
            found = self._entries.get((segment_id, lsn))
            if found is None or found[0] != row:
                self.misses += 1
                return None
            self.hits += 1
            return found[1]
