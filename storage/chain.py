"""Builds a well-formed chain of log records for one protection group.

Pure. Used by benchmarks, tests and fault tools that talk to storage nodes
directly; the writer (compute/) allocates LSNs for a whole volume itself.
Backlinks: previous LSN in the volume, in the PG, and for the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sixfold.storage.records import LogRecord, PayloadKind


@dataclass
class ChainBuilder:
    epoch: int = 1
    next_lsn: int = 1
    last_lsn: int = 0  # previous record in the volume and the PG (one PG here)
    last_lsn_of_page: dict[int, int] = field(default_factory=dict)

    def patch(self, page_no: int, data: bytes, offset: int = 0, *, cpl: bool = True, lsn_gap: int = 0) -> LogRecord:
        return self._next(page_no, PayloadKind.PATCH, offset, data, cpl, lsn_gap)

    def image(self, page_no: int, data: bytes, *, cpl: bool = True) -> LogRecord:
        return self._next(page_no, PayloadKind.IMAGE, 0, data, cpl, 0)

    def _next(self, page_no: int, kind: PayloadKind, offset: int, data: bytes, cpl: bool, lsn_gap: int) -> LogRecord:
        lsn = self.next_lsn + lsn_gap
        record = LogRecord(
            lsn=lsn,
            page_no=page_no,
            kind=kind,
            offset=offset,
            data=data,
            prev_volume_lsn=self.last_lsn,
            prev_pg_lsn=self.last_lsn,
            prev_page_lsn=self.last_lsn_of_page.get(page_no, 0),
            epoch=self.epoch,
            cpl=cpl,
        )
        self.last_lsn = lsn
        self.last_lsn_of_page[page_no] = lsn
        self.next_lsn = lsn + 1
        return record
