"""The writer's log: LSN allocation, MTRs, quorum tracking, VCL, VDL and commit release.

Pure: the writer process feeds it acknowledgements and carries out what it
returns. Rules (this module owns them):
1. LSNs are allocated densely, in order, never reused; an MTR's records get
   consecutive LSNs and its last record is its CPL. No LSN above VDL + LAL is
   allocated: `allocate_mtr` raises `LalExceeded` and the caller waits for VDL.
   After recovery allocation starts above the truncated range, so the bound
   counts from there: max(VDL, first LSN of this writer - 1) + LAL.
2. Every record carries three backlinks: the previous LSN in the volume, in
   its PG, and for its page.
3. A record is complete once its LSN <= its PG's PGCL (see compute.quorum).
   VCL is the highest allocated LSN at or below which every record is complete;
   VDL is the highest CPL <= VCL. Both only move forward.
4. Commits are released here and only here, strictly in LSN order: `advance`
   returns the CPLs that VDL has passed, lowest first.
5. Invariant: vdl <= vcl <= lsn_allocated.
6. A PG's read point is its newest record at or below VDL (`PgTracker.durable_lsn`):
   the page state there equals the state at VDL, and a segment's SCL is always
   one of its own PG's LSNs, so a write quorum's SCLs reach it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sixfold.compute.quorum import Membership
from sixfold.storage.errors import VolumeFull
from sixfold.storage.records import LSN_MAX, LogRecord, PayloadKind

LAL_DEFAULT = 100_000
MTR_RECORDS_MAX = 1_000
MTR_BYTES_MAX = 4 * 1024 * 1024


class LalExceeded(Exception):
    """Allocating would run more than LAL past VDL; wait for VDL to advance."""


@dataclass(frozen=True)
class Patch:
    page_no: int
    offset: int
    data: bytes


@dataclass
class Mtr:
    cpl: int
    records: list[LogRecord]
    pg_of_record: list[int]


@dataclass
class PgTracker:
    membership: Membership
    scl_of: dict[str, int] = field(default_factory=dict)
    pgcl: int = 0
    last_lsn: int = 0  # the PG's newest record (its chain tail), for prev_pg_lsn
    durable_lsn: int = 0  # the PG's newest record at or below VDL: its read point

    def on_scl(self, segment_id: str, scl: int) -> int:
        if scl > self.scl_of.get(segment_id, -1):  # first report counts even at 0: the segment is known
            self.scl_of[segment_id] = scl
            self.pgcl = max(self.pgcl, self.membership.pgcl(self.scl_of))
        return self.pgcl


@dataclass
class VolumeLog:
    """`pg_of_page(page_no)` maps a page to its PG index (the caller checks geometry first)."""

    pg_of_page: Callable[[int], int]
    epoch: int
    lal: int = LAL_DEFAULT
    # Recovery sets these: everything at or below `vdl` is durable; allocation resumes at next_lsn.
    vdl: int = 0
    next_lsn: int = 1
    prev_volume_lsn: int = 0
    pgs: dict[int, PgTracker] = field(default_factory=dict)
    page_lsn: dict[int, int] = field(default_factory=dict)  # newest LSN of each page, for prev_page_lsn

    def __post_init__(self) -> None:
        assert self.next_lsn > self.vdl
        self.vcl = self.vdl
        self.lsn_allocated = self.next_lsn - 1
        self._lal_floor = self.next_lsn - 1
        self._record_lsn_max = self.vdl  # newest record allocated or adopted (never inside a truncated gap)
        self.last_commit_time_us = 0
        self._pending: deque[tuple[int, int]] = deque()  # (lsn, pg) not yet known complete, in LSN order
        self._cpls: deque[int] = deque()  # CPLs above VDL, in LSN order
        self._above_vdl: deque[tuple[int, int]] = deque()  # (lsn, pg) of records above VDL, in LSN order

    # -- PGs --------------------------------------------------------------------

    def add_pg(self, pg_index: int, membership: Membership, last_lsn: int = 0) -> None:
        """`last_lsn` is the PG's chain tail at or below VDL (recovery finds it)."""
        assert pg_index not in self.pgs
        assert last_lsn <= max(self.vdl, self.prev_volume_lsn)
        self.pgs[pg_index] = PgTracker(membership, last_lsn=last_lsn, durable_lsn=min(last_lsn, self.vdl))

    def set_membership(self, pg_index: int, membership: Membership) -> list[int]:
        """Change a PG's quorum sets; return the CPLs that became durable (finishing a change can
        complete records)."""
        pg = self.pgs[pg_index]
        pg.membership = membership
        # A segment that left every set is forgotten: if its node joins again later, it is a new segment
        # whose SCL starts low, and `on_scl` ignores decreases.
        for gone in set(pg.scl_of) - membership.segments:
            del pg.scl_of[gone]
        pg.pgcl = max(pg.pgcl, membership.pgcl(pg.scl_of))
        return self.advance()

    # -- allocation ---------------------------------------------------------------

    def allocate_mtr(self, patches: list[Patch], commit_time_us: int = 0) -> Mtr:
        """The MTR's records; its CPL carries `commit_time_us` (the writer's wall clock), never below the one
        the previous MTR carried, so commit times rise with LSNs within a writer (0: none)."""
        assert patches and len(patches) <= MTR_RECORDS_MAX
        last = self.next_lsn + len(patches) - 1
        if last > LSN_MAX:
            raise VolumeFull(f"the volume has used up its LSNs: LSN {last} would be above the highest LSN {LSN_MAX}")
        if last > max(self.vdl, self._lal_floor) + self.lal:
            raise LalExceeded(f"LSN {last} would be more than LAL {self.lal} above VDL {self.vdl}")
        records, pgs = [], []
        if commit_time_us:
            commit_time_us = self.last_commit_time_us = max(commit_time_us, self.last_commit_time_us)
        for i, patch in enumerate(patches):
            lsn = self.next_lsn + i
            pg_index = self.pg_of_page(patch.page_no)
            pg = self.pgs[pg_index]
            records.append(
                LogRecord(
                    lsn=lsn,
                    page_no=patch.page_no,
                    kind=PayloadKind.PATCH,
                    offset=patch.offset,
                    data=patch.data,
                    prev_volume_lsn=self.prev_volume_lsn,
                    prev_pg_lsn=pg.last_lsn,
                    prev_page_lsn=self.page_lsn.get(patch.page_no, 0),
                    epoch=self.epoch,
                    cpl=i == len(patches) - 1,
                    commit_time_us=commit_time_us if i == len(patches) - 1 else 0,
                )
            )
            pgs.append(pg_index)
            self.prev_volume_lsn = lsn
            pg.last_lsn = lsn
            self.page_lsn[patch.page_no] = lsn
            self._pending.append((lsn, pg_index))
            self._above_vdl.append((lsn, pg_index))
        self.next_lsn = last + 1
        self.lsn_allocated = last
        self._record_lsn_max = last
        self._cpls.append(last)
        return Mtr(cpl=last, records=records, pg_of_record=pgs)

    def adopt(self, records: list[tuple[LogRecord, int]], vdl_target: int) -> None:
        """Recovery: records already in the volume chain (LSN order) that must reach write quorum
        before VDL may move to `vdl_target` (which must be one of their CPLs)."""
        for record, pg_index in records:
            assert record.lsn > self.vcl and (not self._pending or record.lsn > self._pending[-1][0])
            self._pending.append((record.lsn, pg_index))
            self._above_vdl.append((record.lsn, pg_index))
            self.pgs[pg_index].last_lsn = max(self.pgs[pg_index].last_lsn, record.lsn)
            self._record_lsn_max = max(self._record_lsn_max, record.lsn)
            self.prev_volume_lsn = max(self.prev_volume_lsn, record.lsn)
            self.page_lsn[record.page_no] = max(self.page_lsn.get(record.page_no, 0), record.lsn)
        if vdl_target > self.vdl:
            self._cpls.append(vdl_target)

    # -- acknowledgements -----------------------------------------------------------

    def reset_scl(self, pg_index: int, segment_id: str, scl: int) -> list[int]:
        """A segment said its SCL when its stream (re)connected: it may be lower than before (it lost a copy
        and is rebuilding), so reads stop going there; the PG's PGCL never goes back. Returns the CPLs now
        durable, as `on_ack` does."""
        pg = self.pgs[pg_index]
        pg.scl_of[segment_id] = scl
        pg.pgcl = max(pg.pgcl, pg.membership.pgcl(pg.scl_of))
        return self.advance()

    def on_ack(self, pg_index: int, segment_id: str, scl: int) -> list[int]:
        """A segment reported its SCL; return the CPLs now durable (commits to release), in order."""
        self.pgs[pg_index].on_scl(segment_id, scl)
        return self.advance()

    def advance(self) -> list[int]:
        pending = self._pending
        while pending and pending[0][0] <= self.pgs[pending[0][1]].pgcl:
            self.vcl = pending.popleft()[0]
        if not pending:
            self.vcl = max(self.vcl, self._record_lsn_max)
        released = []
        while self._cpls and self._cpls[0] <= self.vcl:
            self.vdl = self._cpls.popleft()
            released.append(self.vdl)
        above = self._above_vdl
        while above and above[0][0] <= self.vdl:
            lsn, pg_index = above.popleft()
            self.pgs[pg_index].durable_lsn = lsn
        assert self.vdl <= self.vcl <= self._record_lsn_max
        return released

    def read_point(self, pg_index: int) -> int:
        """Where to read the PG's pages so they are exactly as of VDL."""
        return self.pgs[pg_index].durable_lsn

    @property
    def records_pending(self) -> int:
        return len(self._pending)
