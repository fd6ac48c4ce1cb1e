"""The model a run checks the system against: what the writers wrote and where it must be stored.

Every record any writer allocated is kept (`SimState.records`) with every truncation range a
recovery set, so the oracle knows the exact page at any read point (`page_at`), which records an
MTR has (`mtr_records`), which are void (`truncated`), and which nodes hold a record on disk
(`holders`: the committed state, as a crash would leave it).
"""

from __future__ import annotations

from sixfold.storage.records import LogRecord, apply_record
from sixfold.storage.store import record_key
from sixfold.storage.truncation import voided
from sixfold.tools.sim import integrity
from sixfold.tools.sim.config import PAGE_SIZE, RECORDS, VOLUME
from sixfold.tools.sim.state import SimState


class Oracle(SimState):
    """What must be stored, from the records the writers allocated (the next layer up checks it is)."""

    def truncated(self, record: LogRecord) -> bool:
        return voided(self.truncations, record.lsn, record.epoch)

    def page_at(self, page_no: int, read_point: int) -> bytes:
        page = bytearray(PAGE_SIZE)
        for lsn in sorted(self.records):
            if lsn > read_point:
                break
            record = self.records[lsn]
            if record.page_no == page_no and not self.truncated(record):
                apply_record(page, record)
        return bytes(page)

    def holders(self, record: LogRecord) -> list[str]:
        """Nodes whose committed (on-disk) segment holds `record` (a copy rotted on purpose counts:
        it was durable; the rot is a disk fault, not a protocol one; so does a record at or below the
        segment's GC floor: it lives on in the page versions kept there)."""
        segment_id = f"{VOLUME}/pg-{self.pg_of(record.page_no):05d}".encode()
        out = []
        for name in self.nodes:
            meta = integrity.meta_on_disk(self.disk, name, segment_id.decode())
            if meta is None:
                continue
            key = record_key(meta.seg_no, record.lsn)
            raw = self.disk.get(name, RECORDS, key)
            if raw is not None and (raw == record.encode() or (name, RECORDS, key) in self.rotten):
                out.append(name)
            elif record.lsn <= meta.retention_horizon_lsn <= meta.scl:
                out.append(name)  # folded into the page versions kept at the GC floor (reads check them)
        return out

    def mtr_records(self, cpl: int) -> list[LogRecord]:
        """The records of the MTR whose CPL is `cpl`: consecutive LSNs back to the previous CPL."""
        out = [self.records[cpl]]
        lsn = cpl - 1
        while lsn in self.records and not self.records[lsn].cpl:
            out.append(self.records[lsn])
            lsn -= 1
        return out

    def acked_lsn_max(self) -> dict[int, int]:
        """Per PG, the highest LSN of its records in an acknowledged MTR."""
        out: dict[int, int] = {}
        for cpl in self.acked:
            for record in self.mtr_records(cpl):
                pg = self.pg_of(record.page_no)
                out[pg] = max(out.get(pg, 0), record.lsn)
        return out
