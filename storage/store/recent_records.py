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
   invalidating, and never answers with anything but what opening the row would give. The caller still
   requires a sealed segment's key to be at hand before it serves a record from memory
   (storage/store/sealing.py `require_key`): no key, no rows, from disk or from here.
3. Bounded: at most `capacity` entries and `bytes_max` bytes of rows and record data (a page image record
   weighs a page, twice), the oldest put first out (a record is wanted once, by the fold that follows its
   append; reading it does not keep it). Thread-safe (the writer thread puts and folds, the event loop reads).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from sixfold.storage.records import LogRecord

RECENT_RECORDS_MAX = 1 << 16
RECENT_BYTES_MAX = 32 << 20  # rows and record data held, per node
ENTRY_OVERHEAD_BYTES = 256  # what an entry costs beyond its row and data (objects, key, links), roughly


class RecentRecords:
    def __init__(self, capacity: int = RECENT_RECORDS_MAX, bytes_max: int = RECENT_BYTES_MAX) -> None:
        assert capacity >= 0 and bytes_max >= 0
        self.capacity = capacity
        self.bytes_max = bytes_max
        self.bytes_held = 0
        self._entries: OrderedDict[tuple[str, int], tuple[bytes, LogRecord]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def put_all(self, stored: list[tuple[str, int, bytes, LogRecord]]) -> None:
        """Rule 1: (segment id, LSN, stored row, record) for rows a committed transaction stored."""
        if not self.capacity or not self.bytes_max:
            return
        with self._lock:
            entries = self._entries
            for segment_id, lsn, row, record in stored:
                key = (segment_id, lsn)
                replaced = entries.pop(key, None)
                if replaced is not None:
                    self.bytes_held -= _weight(*replaced)
                entries[key] = (row, record)
                self.bytes_held += _weight(row, record)
            while entries and (len(entries) > self.capacity or self.bytes_held > self.bytes_max):
                self.bytes_held -= _weight(*entries.popitem(last=False)[1])

    def get(self, segment_id: str, lsn: int, row: bytes | memoryview) -> LogRecord | None:
        """Rule 2: the record, only if `row` is exactly the row that was stored with it."""
        with self._lock:
            found = self._entries.get((segment_id, lsn))
            if found is None or found[0] != row:
                self.misses += 1
                return None
            self.hits += 1
            return found[1]


def _weight(row: bytes, record: LogRecord) -> int:
    return len(row) + len(record.data) + ENTRY_OVERHEAD_BYTES
