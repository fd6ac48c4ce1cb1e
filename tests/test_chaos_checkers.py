"""Chaos histories and the checkers beside linearizability: lost writes, vanished reads, the history's
bookkeeping and its JSONL round trip, and the checker modules' purity.

The linearizability checker has its own tests (test_chaos_linearizability.py); the
histories here are built by hand (tests/chaos_histories.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sixfold.tools.chaos.checkers import check_lost_writes, check_no_vanished_reads, summary, writes_resumed_after
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History, Op
from tests.chaos_histories import build, r, w

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
PURE_MODULES = (
    "tools/chaos/history.py",
    "tools/chaos/check_support.py",
    "tools/chaos/linearizability.py",
    "tools/chaos/checkers.py",
)


# --- lost writes and vanished reads ----------------------------------------------------


def test_lost_write() -> None:
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 3), r(2, 0, "a", 4, 5), r(2, 0, "a", 6, 7))
    result = check_lost_writes(h)
    assert not result.ok and result.lost_writes == 1 and result.final_reads == 2
    assert result.lost[0].value == "b" and "#2 p1 write k0 'b'" in result.explanations[0]
    h = build(w(1, 0, "a", 0, 1), r(2, 0, None, 4, 5))
    assert check_lost_writes(h).lost_writes == 1


def test_write_survives_when_some_final_read_sees_it_or_something_newer() -> None:
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 3), r(2, 0, "a", 4, 5), r(2, 0, "b", 6, 7))
    assert check_lost_writes(h).ok  # a stale read, but "b" is there in the end
    h = build(w(1, 0, "a", 0, 3), w(2, 0, "b", 1, 4), r(3, 0, "a", 5, 6))  # concurrent: either may win
    assert check_lost_writes(h).ok
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 2, 3, type=INFO), r(3, 0, "b", 4, 5))  # overwritten by an info write
    assert check_lost_writes(h).ok


def test_only_reads_after_every_write_settled_are_final() -> None:
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 2, 9, type=INFO), r(3, 0, None, 3, 4), r(3, 0, "a", 10, 11))
    result = check_lost_writes(h)
    assert result.ok and result.final_reads == 1
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 2, 9, type=INFO), r(3, 0, None, 3, 4))
    result = check_lost_writes(h)
    assert result.ok and result.final_reads == 0 and result.keys_without_final_read == (0,)


def test_vanished_read() -> None:
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 3), r(2, 0, "b", 4, 5), r(2, 0, "a", 6, 7))
    result = check_no_vanished_reads(h)
    assert not result.ok and result.vanished == 1 and result.reads == 2
    earlier, later = result.violations[0]
    assert (earlier.value, later.value) == ("b", "a") and "went back to 'a'" in result.explanations[0]
    h = build(w(1, 0, "a", 0, 1), r(2, 0, "a", 2, 3), r(2, 0, None, 4, 5))
    assert check_no_vanished_reads(h).vanished == 1


def test_reads_that_do_not_vanish() -> None:
    # Concurrent writes: reads may see them in either order once, and an overlapping read is not "later".
    h = build(w(1, 0, "a", 0, 5), w(2, 0, "b", 1, 6), r(3, 0, "b", 2, 3), r(3, 0, "a", 7, 8))
    assert check_no_vanished_reads(h).ok
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 3), r(2, 0, "b", 4, 6), r(3, 0, "a", 5, 7))
    assert check_no_vanished_reads(h).ok
    h = build(
        w(1, 0, "a", 0, 1), w(2, 0, "b", 2, 3, type=INFO), r(3, 0, "a", 4, 5), r(3, 0, "b", 6, 7), r(3, 0, "b", 8, 9)
    )
    assert check_no_vanished_reads(h).ok


# --- history bookkeeping ---------------------------------------------------------------


def test_history_records_and_pairs() -> None:
    h = History()
    a = h.invoke(1, WRITE, 3, "p1-0", 0.0)
    b = h.invoke(2, READ, 3, None, 0.5)
    h.complete(a, OK, time=1.0)
    h.complete(b, INFO, time=2.0, error="deadline exceeded")
    c = h.invoke(1, READ, 3, None, 2.5)
    h.complete(c, OK, "p1-0", time=3.0)
    h.invoke(2, WRITE, 3, "p2-1", 3.5)  # never completes
    pairs = h.pairs()
    assert [(op.f, op.type, op.value, op.pending) for op in pairs] == [
        (WRITE, OK, "p1-0", False),
        (READ, INFO, None, False),
        (READ, OK, "p1-0", False),
        (WRITE, INFO, "p2-1", True),
    ]
    assert pairs[1].error == "deadline exceeded" and (pairs[0].invoke_time, pairs[0].complete_time) == (0.0, 1.0)
    assert h.counts() == {"invoke": 4, OK: 2, FAIL: 0, INFO: 1, "pending": 1}
    assert summary(h) == {
        "operations": 4,
        OK: 2,
        FAIL: 0,
        INFO: 2,
        "pending": 1,
        "reads": 2,
        "writes": 2,
        "reads_ok": 1,
        "writes_ok": 1,
    }
    assert h.outstanding() == {2: h[6]}


def test_history_asserts_its_rules() -> None:
    h = History()
    a = h.invoke(1, WRITE, 0, "x", 0.0)
    with pytest.raises(AssertionError, match="outstanding"):
        h.invoke(1, READ, 0, None, 1.0)
    with pytest.raises(AssertionError):
        h.complete(a, "invoke", time=1.0)
    with pytest.raises(AssertionError, match="earlier"):
        h.complete(a, OK, time=-1.0)
    with pytest.raises(AssertionError, match="another value"):
        h.complete(a, OK, "y", time=1.0)
    with pytest.raises(AssertionError, match="without an outstanding invoke"):
        h.append(Op(process=2, type=OK, f=READ, key=0, value=None, time=1.0, index=1))
    with pytest.raises(AssertionError, match="index"):
        h.append(Op(process=2, type="invoke", f=READ, key=0, value=None, time=1.0, index=7))
    h.complete(a, OK, time=1.0)
    with pytest.raises(AssertionError):
        h.complete(a, OK, time=2.0)  # completed already


def test_jsonl_round_trip(tmp_path: Path) -> None:
    h = History()
    a = h.invoke(0, WRITE, 7, "p0-1", 10.25)
    b = h.invoke(1, READ, 7, None, 10.5)
    h.complete(b, OK, None, time=10.75)
    h.complete(a, INFO, time=11.0 + 1e-9, error="UNAVAILABLE: lost quorum")
    h.invoke(1, READ, 7, None, 12.0)
    path = tmp_path / "history.jsonl"
    h.to_jsonl(path)
    lines = path.read_text().splitlines()
    assert len(lines) == 5
    assert (
        lines[0]
        == '{"process": 0, "type": "invoke", "f": "write", "key": 7, "value": "p0-1", "time": 10.25, "index": 0}'
    )
    assert '"error": "UNAVAILABLE: lost quorum"' in lines[3]
    again = History.from_jsonl(path)
    assert again.events == h.events and again.pairs() == h.pairs() and again.outstanding() == h.outstanding()
    path.write_text(lines[0].replace('"index": 0', '"index": 0, "extra": 1') + "\n")
    with pytest.raises(ValueError, match="unknown"):
        History.from_jsonl(path)


def test_writes_resumed_after() -> None:
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 5, type=INFO), w(1, 0, "c", 6, 8), w(1, 0, "d", 9, 9.5))
    assert writes_resumed_after(h, 1.5) == 6.5
    assert h.writes_resumed_after(1.5) == 6.5
    assert writes_resumed_after(h, 8.0) == 0.0
    assert writes_resumed_after(h, 10.0) is None


def test_checker_modules_are_pure() -> None:
    forbidden = {"grpc", "lmdb", "time", "random", "threading", "asyncio", "socket", "subprocess"}
    for module in PURE_MODULES:
        roots = set()
        for node in ast.walk(ast.parse((REPO / module).read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
        assert not roots & forbidden, (module, roots & forbidden)
