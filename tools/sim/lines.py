"""The model of a run's volume records ("lines"): what each one's writers wrote, and what a read of it shows.

A line is one volume record of the control plane, named by its segment-id prefix, which never changes (a
timeline a backtrack left keeps its segment ids): the root volume `simvol`, a clone `clone-1.3`, a snapshot
`@snap-1.4`, a backtrack's new timeline `simvol.5`. Without time travel the run has one line, the root.
Each line has its own records (every record its writers allocated, by LSN: two lines may use one LSN),
truncation ranges, acknowledged and definitely refused writes, and, but for the root, a parent line and the
LSN it branched at (storage/control_plane_lineage.py rule 3; a backtrack's new timeline is a clone of the
timeline it goes back to, storage/control_plane_history.py rule 2).

What a read of line L at read point r shows (`page_at`, DESIGN.md "Time travel"): L's parent's view at
min(r, branch LSN), recursively, then L's own records at or below r that no truncation range of L voids, in
LSN order. Every own record of a line lies above its branch (`check_allocation` says so when one does not),
so the parent's records above the branch (a clone's source writing on, the records a backtrack hid) and the
line's own records never mix in a view but through that rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sixfold.compute.volume_log import Patch
from sixfold.storage.records import LogRecord, apply_record
from sixfold.storage.segment import TruncationRange
from sixfold.storage.truncation import voided

ROOT, CLONE, SNAPSHOT, TIMELINE = "root", "clone", "snapshot", "timeline"  # Line.kind


@dataclass(eq=False)
class Line:
    """One volume record's history in the model (see the module docstring)."""

    prefix: str  # its segment ids are PREFIX/pg-NNNNN
    volume_id: str  # the control plane's id of the record now (a timeline left: NAME~SERIAL)
    kind: str = ROOT
    parent: Line | None = None
    branch_lsn: int = 0
    lsn_floor: int = 0  # its writers allocate above this (a clone: its branch; a backtrack's timeline: above all)
    records: dict[int, LogRecord] = field(default_factory=dict)  # every record its writers allocated, by LSN
    truncations: list[TruncationRange] = field(default_factory=list)
    acked: dict[int, tuple[str, list[Patch], int]] = field(default_factory=dict)  # CPL -> (token, patches, epoch)
    refused: list[bytes] = field(default_factory=list)  # tokens of writes refused definitely
    end_vdl: int | None = None  # a timeline a backtrack left: the VDL its writer ended at
    _sorted: list[int] = field(default_factory=list)  # `records`' LSNs in order, kept up to date lazily

    def segment_id(self, pg_index: int) -> str:
        return f"{self.prefix}/pg-{pg_index:05d}"

    def owns_segment(self, segment_id: str) -> bool:
        return segment_id.rpartition("/")[0] == self.prefix

    def truncated(self, record: LogRecord) -> bool:
        return voided(self.truncations, record.lsn, record.epoch)

    def lsns(self) -> list[int]:
        if len(self._sorted) != len(self.records):
            self._sorted = sorted(self.records)
        return self._sorted

    def page_at(self, page_no: int, read_point: int, page_size: int) -> bytes:
        """The page a read at `read_point` must return (the module docstring's rule)."""
        if self.parent is not None:
            page = bytearray(self.parent.page_at(page_no, min(read_point, self.branch_lsn), page_size))
        else:
            page = bytearray(page_size)
        for lsn in self.lsns():
            if lsn > read_point:
                break
            record = self.records[lsn]
            if record.page_no == page_no and not self.truncated(record):
                apply_record(page, record)
        return bytes(page)

    def mtr_records(self, cpl: int) -> list[LogRecord]:
        """The records of the MTR whose CPL is `cpl`: consecutive LSNs back to the previous CPL."""
        out = [self.records[cpl]]
        lsn = cpl - 1
        while lsn in self.records and not self.records[lsn].cpl:
            out.append(self.records[lsn])
            lsn -= 1
        return out

    def check_allocation(self, record: LogRecord) -> str | None:
        """Why a record a writer of this line allocated is wrong (None: it is not): an LSN used twice on the
        line, or one at or below the line's floor (its branch: the record would hide under the parent's view)."""
        if record.lsn in self.records:
            return f"LSN {record.lsn} allocated twice on {self.prefix}"
        if self.parent is not None and record.lsn <= self.lsn_floor:
            return (
                f"a writer of {self.prefix} allocated LSN {record.lsn}, at or below its LSN floor {self.lsn_floor} "
                f"(it branched from {self.parent.prefix} at {self.branch_lsn})"
            )
        return None

    def lineage(self) -> str:
        """`simvol.5 <- simvol@120 <- ...`: the line and its ancestors with their branch LSNs, for messages."""
        parts = [self.prefix]
        line = self
        while line.parent is not None:
            parts.append(f"{line.parent.prefix}@{line.branch_lsn}")
            line = line.parent
        return " <- ".join(parts)


def prefix_of_segment(segment_id: str) -> str:
    return segment_id.rpartition("/")[0]


def tokens_in(line: Line, data: bytes) -> list[str]:
    """Tokens of `line`'s acknowledged writes found in `data` (for a message: whose write a page shows)."""
    return sorted({token for token, _, _ in line.acked.values() if token.encode() in data})
