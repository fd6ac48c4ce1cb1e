"""The model a run checks the system against: what the writers wrote and where it must be stored.

Every record any writer allocated is kept with every truncation range a recovery set, per line (a volume
record: tools/sim/lines.py; `SimState.records` are the current line's), so the oracle knows the exact page
at any read point (`page_at`, through a line's ancestors), which records an MTR has (`mtr_records`), which
are void (`truncated`), and which nodes hold a record on disk (`holders`: the committed state, as a crash
would leave it).
"""

from __future__ import annotations

from sixfold.storage.records import LogRecord
from sixfold.storage.store import record_key
from sixfold.tools.sim import integrity
from sixfold.tools.sim.config import PAGE_SIZE, RECORDS
from sixfold.tools.sim.keys import opened_record
from sixfold.tools.sim.lines import Line
from sixfold.tools.sim.state import SimState


class Oracle(SimState):
    """What must be stored, from the records the writers allocated (the next layer up checks it is). Each
    question is about a line (tools/sim/lines.py): the one the volume shows now unless another is given."""

    def truncated(self, record: LogRecord, line: Line | None = None) -> bool:
        return (line or self.line).truncated(record)

    def page_at(self, page_no: int, read_point: int, line: Line | None = None) -> bytes:
        return (line or self.line).page_at(page_no, read_point, PAGE_SIZE)

    def holders(self, record: LogRecord, line: Line | None = None) -> list[str]:
        """Nodes whose committed (on-disk) segment holds `record` (a copy rotted on purpose counts:
        it was durable; the rot is a disk fault, not a protocol one; so does a record at or below the
        segment's GC floor: it lives on in the page versions kept there)."""
        segment_id = (line or self.line).segment_id(self.pg_of(record.page_no))
        out = []
        for name in self.nodes:
            meta = integrity.meta_on_disk(self.disk, name, segment_id)
            if meta is None:
                continue
            key = record_key(meta.seg_no, record.lsn)
            raw = self.disk.get(name, RECORDS, key)
            if raw is not None and (
                opened_record(self.keys, meta, record.lsn, raw) == record.encode()
                or (name, RECORDS, key) in self.rotten
            ):
                out.append(name)
            elif record.lsn <= meta.retention_horizon_lsn <= meta.scl:
                out.append(name)  # folded into the page versions kept at the GC floor (reads check them)
        return out

    def mtr_records(self, cpl: int, line: Line | None = None) -> list[LogRecord]:
        """The records of the MTR whose CPL is `cpl`: consecutive LSNs back to the previous CPL."""
        return (line or self.line).mtr_records(cpl)

    def acked_lsn_max(self) -> dict[int, int]:
        """Per PG, the highest LSN of its records in an acknowledged MTR."""
        out: dict[int, int] = {}
        for cpl in self.acked:
            for record in self.mtr_records(cpl):
                pg = self.pg_of(record.page_no)
                out[pg] = max(out.get(pg, 0), record.lsn)
        return out
