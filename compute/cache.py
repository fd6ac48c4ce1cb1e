"""The writer's buffer cache: page images exactly as of the current VDL.

Pure. Rules:
1. An entry holds a page image with every durable record of that page applied,
   and nothing that is not yet durable: records are applied only when their MTR
   is released (in LSN order), so a cached image is the page at VDL.
2. A page read from storage at read point P is cached only if no record of that
   page became durable above P meanwhile (otherwise the image is already old).
3. At most `pages_max` entries; the least recently used one goes first.
"""

from __future__ import annotations

from collections import OrderedDict

from sixfold.storage.records import LogRecord, apply_record

CACHE_PAGES_DEFAULT = 8192


class BufferCache:
    def __init__(self, page_size: int, pages_max: int = CACHE_PAGES_DEFAULT) -> None:
        assert pages_max >= 1
        self.page_size = page_size
        self.pages_max = pages_max
        self._pages: OrderedDict[int, tuple[bytearray, int]] = OrderedDict()  # page -> (image, page_lsn)
        self._durable_lsn: dict[int, int] = {}  # page -> newest durable record LSN seen by this writer
        self.hits = 0
        self.misses = 0

    def get(self, page_no: int) -> tuple[bytes, int] | None:
        entry = self._pages.get(page_no)
        if entry is None:
            self.misses += 1
            return None
        self._pages.move_to_end(page_no)
        self.hits += 1
        return bytes(entry[0]), entry[1]

    def put(self, page_no: int, image: bytes, page_lsn: int, read_point: int) -> bool:
        """Cache a page read from storage at `read_point`; refused if it is already stale."""
        assert len(image) == self.page_size
        if self._durable_lsn.get(page_no, 0) > read_point:
            return False
        self._pages[page_no] = (bytearray(image), page_lsn)
        self._pages.move_to_end(page_no)
        while len(self._pages) > self.pages_max:
            self._pages.popitem(last=False)
        return True

    def on_durable(self, records: list[LogRecord]) -> None:
        """Records of a released MTR (called in LSN order)."""
        for record in records:
            assert record.lsn > self._durable_lsn.get(record.page_no, 0)
            self._durable_lsn[record.page_no] = record.lsn
            entry = self._pages.get(record.page_no)
            if entry is not None:
                apply_record(entry[0], record)
                self._pages[record.page_no] = (entry[0], record.lsn)

    def __len__(self) -> int:
        return len(self._pages)
