"""The LSN checker of the time-travel chaos scenarios (tools/chaos/lsn_check.py), on hand-made runs:
a clone at a branch LSN, a backtrack and a move forward again, unknown writes, misplaced LSNs; and how
tools/chaos/time_travel_probe.py turns vol0's timelines, the backtracks and the clones into lines."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest

from sixfold.tools.chaos.history import FAIL, INFO, OK
from sixfold.tools.chaos.lsn_check import Line, Lines, LsnCheck, Read, Write, check_reads
from sixfold.tools.chaos.time_travel_probe import Action, Travel, lines

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
INF = float("inf")

VOL = Line("vol0", "vol0")
CLONE = Line("c1", "c1", parent="vol0", branch_lsn=10, lsn_floor=10)


def w(
    token: str, key: int, lsn: int, at: float, outcome: str = OK, volume: str = "vol0", keys: tuple[int, ...] = ()
) -> Write:
    return Write(volume, keys or (key,), token, outcome, lsn if outcome == OK else 0, at, at + 1)


def r(key: int, value: str | None, read_point: int, at: float, page_lsn: int = 0, volume: str = "vol0") -> Read:
    return Read(volume, (key,), (value,), (page_lsn,), read_point, at, at + 1)


WRITES = [w("a", 0, 5, 1), w("b", 0, 12, 3), w("c", 0, 15, 20, volume="c1"), w("x", 1, 8, 1)]


def check(reads: list[Read], writes: list[Write] = WRITES, lines: tuple[Line, ...] = (VOL, CLONE)) -> LsnCheck:
    return check_reads(lines, writes, reads)


def test_one_line_is_a_register_by_lsn() -> None:
    assert check([r(0, "b", 12, 10), r(1, "x", 12, 10), r(0, "a", 6, 2.5)]).ok
    lost = check([r(0, "a", 12, 10)])
    assert not lost.ok and lost.lost == 1 and "older 'a'" in lost.explanations[0]
    assert check([r(0, None, 12, 10)]).lost == 1
    assert check([r(0, "zz", 12, 10)]).phantom == 1
    assert check([r(1, "a", 12, 10)]).phantom == 1, "a value written to another page"


def test_an_acknowledged_write_is_expected_even_above_a_stale_read_point() -> None:
    # b completed at 4, the read began at 10: VDL had passed 12, a read point of 6 cannot leave it out
    assert check([r(0, "a", 6, 10)]).lost == 1
    # a newer visible write than the read point shows is fine: pages are read a moment later
    assert check([r(0, "b", 6, 2.5)]).ok


def test_a_clone_shows_the_parent_at_its_branch_plus_its_own_writes() -> None:
    assert check([r(0, "a", 11, 10, volume="c1"), r(0, "c", 16, 30, volume="c1"), r(1, "x", 16, 30, volume="c1")]).ok
    leak = check([r(0, "b", 16, 10, volume="c1")])
    assert leak.leaked == 1 and "not visible in c1" in leak.explanations[0]
    assert check([r(0, "a", 16, 30, volume="c1")]).lost == 1, "its own write c is newer"
    assert check([r(0, "c", 20, 30)]).leaked == 1, "the parent never shows a clone write"


def test_backtrack_hides_what_came_after_and_forward_brings_it_back() -> None:
    t0 = Line("vol0", "vol0", active_to=55)
    t1 = Line("vol0~1", "vol0", parent="vol0", branch_lsn=10, lsn_floor=100, active_from=50, active_to=85)
    t2 = Line("vol0~2", "vol0", parent="vol0", branch_lsn=12, lsn_floor=200, active_from=80)
    writes = [w("a", 0, 5, 1), w("b", 0, 12, 3), w("d", 0, 105, 60), w("e", 1, 205, 90), w("x", 1, 8, 1)]
    lines = (t0, t1, t2)
    assert check([r(0, "a", 100, 57), r(0, "d", 105, 70), r(0, "b", 12, 52)], writes, lines).ok
    assert check([r(0, "b", 100, 57)], writes, lines).leaked == 1, "hidden by the backtrack"
    assert check([r(0, "b", 200, 82), r(1, "e", 205, 95)], writes, lines).ok, "forward again to 12"
    assert check([r(0, "d", 200, 90)], writes, lines).leaked == 1, "the abandoned second timeline"
    assert check([r(0, "a", 200, 90)], writes, lines).lost == 1
    misplaced = check([], [*writes, w("f", 1, 30, 60)], lines)
    assert misplaced.misplaced == 1 and "vol0, not active" in misplaced.explanations[0]
    assert not Lines(lines).visible(t1, 105, t2) and Lines(lines).visible(t0, 12, t2)


def test_an_unknown_write_is_judged_by_its_page_lsn() -> None:
    writes = [*WRITES, w("i", 0, 0, 2, outcome=INFO), w("f", 0, 0, 2, outcome=FAIL)]
    assert check([r(0, "i", 12, 2.5)], writes).ok, "unknown LSN: it may be there"
    assert check([r(0, "i", 6, 2.5, page_lsn=7)], writes).ok
    assert check([r(0, "i", 13, 10, page_lsn=7)], writes).lost == 1, "older than the acknowledged b"
    assert check([r(0, "i", 16, 30, page_lsn=11, volume="c1")], writes).leaked == 1, "above the branch"
    assert check([r(0, "f", 12, 2.5)], writes).phantom == 1, "a failed write"


def test_phantoms_from_the_future_and_page_lsns_above_a_commit() -> None:
    assert check([r(0, "b", 20, 1)], [w("b", 0, 12, 3)]).phantom == 1, "invoked after the read completed"
    assert check([r(0, "b", 20, 10, page_lsn=13)]).phantom == 1


def test_a_read_during_a_backtrack_passes_on_either_line_and_explanations_are_capped() -> None:
    t0 = Line("vol0", "vol0", active_to=55)
    t1 = Line("vol0~1", "vol0", parent="vol0", branch_lsn=10, lsn_floor=100, active_from=50)
    writes = [w("a", 0, 5, 1), w("b", 0, 12, 3)]
    during = [Read("vol0", (0,), (v,), (0,), 100, 52, 53) for v in ("a", "b")]
    assert check(during, writes, (t0, t1)).ok
    many = check([r(0, None, 12, 10)] * 30)
    assert many.lost == 30 and len(many.explanations) == 10 and many.explanations[-1].startswith("... and")


def test_pair_writes_count_on_both_pages() -> None:
    writes = [w("p", 0, 20, 1, keys=(0, 1))]
    assert check([Read("vol0", (0, 1), ("p", "p"), (19, 20), 20, 5, 6)], writes, (VOL,)).ok


def test_the_checker_is_pure() -> None:
    tree = ast.parse((REPO / "tools/chaos/lsn_check.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m.split(".")[0] in {"grpc", "time", "random", "threading", "asyncio"}}


# --- vol0's timelines and the clones as lines (tools/chaos/time_travel_probe.py) --------------------


def _timeline(tid: str, parent: str, branch: int, floor: int) -> SimpleNamespace:
    return SimpleNamespace(timeline_id=tid, parent_timeline_id=parent, branch_lsn=branch, lsn_floor=floor)


def test_timelines_become_lines_matched_to_backtracks_by_branch_lsn() -> None:
    # Timeline ids move: the current one is named after the volume, the older ones get a suffix.
    t = Travel(
        backtracks=[
            Action("backtrack to 10", 50, 55, True, "", lsn=10, timeline="vol0"),
            Action("backtrack to 12", 80, 85, True, "", lsn=12, timeline="vol0"),
        ],
        clones=[Action("clone c1", 60, 61, True, "", lsn=120, volume="c1")],
        timelines=[
            _timeline("vol0~0", "", 0, 0),
            _timeline("vol0~1", "vol0~0", 10, 100),
            _timeline("vol0", "vol0~0", 12, 200),
        ],
    )
    t0, t1, t2, c1 = lines(t)
    assert (t0.active_from, t0.active_to) == (-INF, 55) and (t1.active_from, t1.active_to) == (50, 85)
    assert (t2.name, t2.parent, t2.branch_lsn, t2.lsn_floor, t2.active_from, t2.active_to) == (
        "vol0",
        "vol0~0",
        12,
        200,
        80,
        INF,
    )
    assert (c1.volume, c1.parent, c1.branch_lsn, c1.lsn_floor) == ("c1", "vol0~1", 120, 120), (
        "branched from the line active then"
    )


def test_a_timeline_no_successful_backtrack_made_is_active_from_the_first_failed_one() -> None:
    t = Travel(
        backtracks=[Action("backtrack to 10", 50, 55, False, "DEADLINE_EXCEEDED", lsn=10)],
        timelines=[_timeline("vol0~0", "", 0, 0), _timeline("vol0", "vol0~0", 10, 100)],
    )
    t0, t1 = lines(t)
    assert t0.active_to == INF and t1.active_from == 50
    assert lines(Travel()) == [Line("vol0", "vol0")], "no history: one line"
