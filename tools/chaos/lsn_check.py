"""What every read of a page must show through clones and backtracks, judged by LSNs (pure).

Once a run makes a clone or backtracks a volume, a page is no longer one register in real time: a
clone shows its parent as of its branch point, a backtracked volume drops what it acknowledged after
the point it went back to. So the time-travel scenarios judge each read by the LSNs the writer
reported: an acknowledged write's commit LSN (WritePagesResponse.lsn, its CPL), a read's read point
(the VDL it was read at) and each page's page_lsn (the LSN of the newest record applied to it).

The model. A *line* is what one volume shows for a stretch of its life: each timeline of vol0 (a
backtrack makes a new one, whose own records lie above every LSN the volume ever allocated: its
`lsn_floor`), and each clone. A line has its own writes and, through its parent, its parent's
writes at or below its branch LSN. The lines of one volume are told apart by LSN: a write's line is
the one of its volume with the largest floor below the write's LSN.

Rules (this module owns them):
1. A write is visible in line L when it is one of L's own writes, or its LSN is at or below L's
   branch LSN and it is visible in L's parent (the bound only goes down on the way up).
2. A read of a volume may have seen any of its lines that was active at some moment between the
   read's invoke and its completion (a backtrack's new line is active from the backtrack's invoke,
   the old one until its return). A read passes if every page it returned passes rule 3 on one of
   those lines.
3. On line L at read point r, page p expects E: the visible acknowledged write to p with the highest
   LSN among those at or below r, or completed before the read was invoked (acknowledged means
   durable: VDL had passed it, and a line's VDL never goes back). The page passes when it shows
   - E's value (nothing, if there is no E), with page_lsn at or below E's LSN; or
   - a visible write newer than E: an acknowledged one with a higher LSN (the read point is a lower
     bound: pages are read a moment after it is taken), or an unknown (info) one whose record
     (page_lsn) lies in a line where it is visible, above E's LSN; an info write's value read
     without a page_lsn is accepted (its LSN is unknown).
   Else the page is *lost* (nothing, or a write older than E, where E should be), *leaked* (a
   write not visible in L: another volume's, or one a backtrack hid) or a *phantom* (a value no
   write explains: a failed write's, an unknown token, another page's write, a write invoked only
   after the read completed, a page_lsn above the value's commit or in no line of its volume).
4. An acknowledged write's LSN lies in a line of its volume that was active while the write ran;
   else it is *misplaced* (e.g. a write after a backtrack whose LSN is not above the old timeline's).

Pure: no clock, randomness, threads or I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sixfold.tools.chaos.check_support import INFINITY, capped, show
from sixfold.tools.chaos.history import FAIL, OK

LOST, LEAKED, PHANTOM = "lost", "leaked", "phantom"


@dataclass(frozen=True)
class Line:
    """What a volume shows for a stretch of its life (a timeline of it, or a clone)."""

    name: str
    volume: str
    parent: str | None = None  # the line it branched from (None: a root)
    branch_lsn: int = 0  # the parent's writes at or below this are visible
    lsn_floor: int = 0  # its own writes' LSNs lie above this
    active_from: float = -INFINITY  # when reads of `volume` may begin to see it
    active_to: float = INFINITY  # when they no longer may


@dataclass(frozen=True)
class Write:
    volume: str
    keys: tuple[int, ...]
    token: str
    outcome: str  # ok / fail / info
    lsn: int  # the commit LSN an acknowledged write returned (0: unknown)
    invoked: float
    completed: float


@dataclass(frozen=True)
class Read:
    """An ok read: the pages `keys` of `volume` showed `values` (None: never written)."""

    volume: str
    keys: tuple[int, ...]
    values: tuple[str | None, ...]
    page_lsns: tuple[int, ...]  # per key; 0: not known (or never written)
    read_point: int
    invoked: float
    completed: float
    via: str = "compute"  # where it was read (the writer's cache, storage, one segment)


@dataclass(frozen=True)
class LsnCheck:
    ok: bool
    reads: int  # reads judged
    pages: int  # pages judged
    lost: int
    leaked: int
    phantom: int
    misplaced: int  # acknowledged writes whose LSN lies in no line active while they ran
    writes_acknowledged: int
    explanations: tuple[str, ...]


class Lines:
    """The lines of a run, and rules 1, 2 and 4 over them."""

    def __init__(self, lines: Iterable[Line]) -> None:
        self.by_name = {line.name: line for line in lines}
        self.by_volume: dict[str, list[Line]] = defaultdict(list)
        for line in self.by_name.values():
            self.by_volume[line.volume].append(line)
        for owned in self.by_volume.values():
            owned.sort(key=lambda line: line.lsn_floor)
        for line in self.by_name.values():
            assert line.parent is None or line.parent in self.by_name, f"{line.name}'s parent is not a line"

    def of_lsn(self, volume: str, lsn: int) -> Line | None:
        """The line of `volume` that owns `lsn` (the largest floor below it)."""
        owner = None
        for line in self.by_volume.get(volume, ()):
            if line.lsn_floor < lsn:
                owner = line
        return owner

    def active(self, volume: str, start: float, end: float) -> list[Line]:
        """Rule 2: the lines of `volume` active at some moment in [start, end]."""
        return [line for line in self.by_volume.get(volume, ()) if line.active_from <= end and start <= line.active_to]

    def visible(self, owner: Line, lsn: int, reader: Line) -> bool:
        """Rule 1: is a write of line `owner` at `lsn` visible in line `reader`?"""
        bound = INFINITY
        line: Line | None = reader
        while line is not None:
            if line.name == owner.name:
                return lsn <= bound
            bound = min(bound, line.branch_lsn)
            line = self.by_name[line.parent] if line.parent is not None else None
        return False


@dataclass(frozen=True)
class _Acked:
    write: Write
    line: Line | None


def _describe(w: Write, origin: float) -> str:
    lsn = f"LSN {w.lsn}" if w.lsn else "LSN unknown"
    return f"{w.token!r} ({w.outcome}, {w.volume}, {lsn}, t={w.invoked - origin:.3f}..{w.completed - origin:.3f})"


class _Judge:
    def __init__(self, lines: Lines, writes: Sequence[Write], origin: float) -> None:
        self.lines = lines
        self.origin = origin
        self.by_token: dict[str, Write] = {}
        acked: dict[int, list[_Acked]] = defaultdict(list)
        for w in writes:
            self.by_token.setdefault(w.token, w)
            if w.outcome == OK:
                entry = _Acked(w, lines.of_lsn(w.volume, w.lsn) if w.lsn else None)
                for key in w.keys:
                    acked[key].append(entry)
        self.acked = {key: sorted(entries, key=lambda e: -e.write.lsn) for key, entries in acked.items()}

    def expected(self, key: int, line: Line, read: Read) -> Write | None:
        for entry in self.acked.get(key, ()):
            w = entry.write
            if entry.line is None or not self.lines.visible(entry.line, w.lsn, line):
                continue
            if w.lsn <= read.read_point or w.completed < read.invoked:
                return w
        return None

    def page(self, line: Line, read: Read, key: int, value: str | None, page_lsn: int) -> tuple[str, str] | None:
        """Rule 3 for one page: None if it passes, else (kind, why)."""
        e = self.expected(key, line, read)
        want = "nothing" if e is None else _describe(e, self.origin)
        if value is None:
            return None if e is None else (LOST, f"shows nothing where {want} should be")
        w = self.by_token.get(value)
        if w is None or key not in w.keys:
            return (PHANTOM, f"shows {show(value)}, which no write to page {key} wrote; expected {want}")
        if w.outcome == FAIL:
            return (PHANTOM, f"shows {_describe(w, self.origin)}, a write that failed; expected {want}")
        if w.invoked > read.completed:
            return (PHANTOM, f"shows {_describe(w, self.origin)}, invoked after the read completed")
        if w.outcome == OK:
            owner, lsn = self.lines.of_lsn(w.volume, w.lsn), w.lsn
            if page_lsn > w.lsn:
                return (PHANTOM, f"shows {_describe(w, self.origin)} with page_lsn {page_lsn} above its commit")
        elif page_lsn:
            owner, lsn = self.lines.of_lsn(w.volume, page_lsn), page_lsn
            if owner is None:
                return (PHANTOM, f"shows {_describe(w, self.origin)} at page_lsn {page_lsn}, in no line of {w.volume}")
        else:
            return None  # an unknown write at an unknown LSN: it may be there
        if owner is None or not self.lines.visible(owner, lsn, line):
            where = "no line" if owner is None else f"line {owner.name}"
            return (LEAKED, f"shows {_describe(w, self.origin)} (LSN {lsn}, {where}), not visible in {line.name}")
        if e is not None and e is not w and lsn <= e.lsn:
            return (LOST, f"shows the older {_describe(w, self.origin)} (LSN {lsn}) where {want} should be")
        return None

    def read(self, read: Read, candidates: list[Line]) -> list[tuple[str, str]]:
        """Rule 2: the failures on the candidate line that explains the read best (none: it passes)."""
        best: list[tuple[str, str]] | None = None
        for line in candidates:
            failures = []
            for key, value, page_lsn in zip(read.keys, read.values, read.page_lsns):
                failure = self.page(line, read, key, value, page_lsn)
                if failure is not None:
                    kind, why = failure
                    failures.append((kind, f"page {key} on line {line.name}: {why}"))
            if best is None or len(failures) < len(best):
                best = failures
            if not failures:
                break
        if best is None:
            return [(PHANTOM, f"no line of {read.volume} was active between its invoke and its completion")]
        return best


def check_reads(lines: Iterable[Line], writes: Sequence[Write], reads: Sequence[Read], origin: float = 0.0) -> LsnCheck:
    """Judge `reads` (ok reads only) against `writes` (every write of every volume involved), rules 1-4.
    `origin` only shifts the times shown in the explanations."""
    model = Lines(lines)
    judge = _Judge(model, writes, origin)
    counts = {LOST: 0, LEAKED: 0, PHANTOM: 0}
    notes: list[str] = []
    misplaced = 0
    acknowledged = [w for w in writes if w.outcome == OK]
    for w in acknowledged:
        owner = model.of_lsn(w.volume, w.lsn) if w.lsn else None
        if owner is None or owner not in model.active(w.volume, w.invoked, w.completed):
            misplaced += 1
            where = "no line" if owner is None else f"line {owner.name}, not active while it ran"
            notes.append(f"acknowledged {_describe(w, origin)}: its LSN lies in {where}")
    pages = 0
    for read in reads:
        assert len(read.keys) == len(read.values) == len(read.page_lsns), read
        pages += len(read.keys)
        candidates = model.active(read.volume, read.invoked, read.completed)
        for kind, why in judge.read(read, candidates):
            counts[kind] += 1
            notes.append(
                f"{kind}: {read.volume} read via {read.via} at t={read.invoked - origin:.3f} "
                f"(read point {read.read_point}): {why}"
            )
    return LsnCheck(
        ok=not misplaced and not any(counts.values()),
        reads=len(reads),
        pages=pages,
        lost=counts[LOST],
        leaked=counts[LEAKED],
        phantom=counts[PHANTOM],
        misplaced=misplaced,
        writes_acknowledged=len(acknowledged),
        explanations=capped(notes),
    )


__all__ = ["LEAKED", "LOST", "PHANTOM", "Line", "Lines", "LsnCheck", "Read", "Write", "check_reads"]
