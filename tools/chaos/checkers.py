"""Checkers that judge a chaos history (see `history.py` for the event model).

The system under test is a set of registers: each key (a page number) holds the
value last written to it (a unique token such as "p3-17"), None before any
write. Every checker returns a small frozen result with a boolean `ok`, counts,
and at most `EXPLANATIONS_MAX` human-readable lines naming the operations
involved (`#<invoke index> p<process> <f> k<key> ...`).

Rules (this module and the ones it names own them):
1. Real time: operation a precedes b iff a completed strictly before b was
   invoked (`a.complete_time < b.invoke_time`); otherwise they are concurrent
   (check_support.py).
2.-4. Linearizability (`check_linearizable`): decided per key by a memoized
   Wing & Gong search (linearizability.py, which states these rules).
5. `check_lost_writes` and `check_no_vanished_reads` judge acknowledged writes
   and observed values by the same real-time rule; only an `ok` write has a
   known completion, so only an `ok` write is "definitely older" than another.

Pure: no clock, randomness, threads or I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sixfold.tools.chaos.check_support import (
    EXPLANATIONS_MAX,
    INFINITY,
    capped,
    completed_at,
    completed_by,
    operations_of,
    show,
)
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History, Operation
from sixfold.tools.chaos.linearizability import (
    CONFIGURATIONS_MAX,
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    KeyLinearizability,
    LinearizabilityResult,
    check_linearizable,
)

# --- lost writes ------------------------------------------------------------------------


@dataclass(frozen=True)
class LostWritesResult:
    ok: bool  # no acknowledged write is definitely lost
    writes_acknowledged: int  # ok writes
    writes_judged: int  # ok writes on keys that have final reads
    lost_writes: int
    final_reads: int  # ok reads invoked after every write on their key had completed or been abandoned
    keys_without_final_read: tuple[int, ...]  # keys with ok writes that no final read judges
    lost: tuple[Operation, ...]
    explanations: tuple[str, ...]


def check_lost_writes(history: History | Sequence[Operation]) -> LostWritesResult:
    """Acknowledged writes that no final read of their key is consistent with.

    Final reads of a key are its `ok` reads invoked after every write on the key
    completed (any outcome) or, for a pending write, was invoked. An `ok` write w
    survives a final read that returns w's value, or the value of a write not
    definitely older than w; it is lost if every final read returns None, or a
    value whose `ok` write completed before w was invoked. (A final read of a value
    no write explains is left to `check_linearizable`.)
    """
    operations = operations_of(history)
    writes_by_key: dict[int, list[Operation]] = defaultdict(list)
    reads_by_key: dict[int, list[Operation]] = defaultdict(list)
    for op in operations:
        if op.f == WRITE:
            writes_by_key[op.key].append(op)
        elif op.type == OK:
            reads_by_key[op.key].append(op)
    acknowledged = sum(1 for ws in writes_by_key.values() for w in ws if w.type == OK)
    judged = 0
    final_total = 0
    without_final = []
    lost: list[Operation] = []
    lines: list[str] = []
    for key in sorted(writes_by_key):
        writes = writes_by_key[key]
        settled = max(w.complete_time if w.complete_time is not None else w.invoke_time for w in writes)
        finals = [r for r in reads_by_key.get(key, []) if r.invoke_time > settled]
        final_total += len(finals)
        acked = [w for w in writes if w.type == OK]
        if not acked:
            continue
        if not finals:
            without_final.append(key)
            continue
        judged += len(acked)
        writer_of = {w.value: w for w in writes}

        def survives(w: Operation, read: Operation, writer_of: dict[str | None, Operation] = writer_of) -> bool:
            if read.value is None:
                return False
            older = writer_of.get(read.value)
            return older is None or older is w or not completed_by(older) < w.invoke_time

        for w in acked:
            if not any(survives(w, read) for read in finals):
                lost.append(w)
                seen = sorted({show(r.value) for r in finals})
                lines.append(
                    f"k{key}: lost {w.describe()}: {len(finals)} final read(s) returned "
                    f"{', '.join(seen)}, e.g. {finals[0].describe()}"
                )
    return LostWritesResult(
        ok=not lost,
        writes_acknowledged=acknowledged,
        writes_judged=judged,
        lost_writes=len(lost),
        final_reads=final_total,
        keys_without_final_read=tuple(without_final),
        lost=tuple(lost),
        explanations=capped(lines),
    )


# --- vanished reads ---------------------------------------------------------------------


@dataclass(frozen=True)
class VanishedReadsResult:
    ok: bool
    reads: int  # ok reads considered
    vanished: int  # ok reads that went back to an older value (or None) after a newer one was read
    violations: tuple[tuple[Operation, Operation], ...]  # (earlier read, later read)
    explanations: tuple[str, ...]


def check_no_vanished_reads(history: History | Sequence[Operation]) -> VanishedReadsResult:
    """Once an `ok` read returned v, no later `ok` read of the key returns None or a value definitely older than v.

    Later: invoked after the first read completed. Definitely older: its write was
    `ok` and completed before v's write was invoked. Values no write explains are
    left to `check_linearizable`.
    """
    operations = operations_of(history)
    writer_of: dict[tuple[int, str | None], Operation] = {}
    reads_by_key: dict[int, list[Operation]] = defaultdict(list)
    for op in operations:
        if op.f == WRITE:
            writer_of.setdefault((op.key, op.value), op)
        elif op.type == OK:
            reads_by_key[op.key].append(op)
    violations: list[tuple[Operation, Operation]] = []
    for key in sorted(reads_by_key):
        reads = reads_by_key[key]
        by_completion = sorted(reads, key=completed_at)
        by_invoke = sorted(reads, key=lambda r: r.invoke_time)
        # Sweep: for each read, the earlier read (completed before it was invoked) whose value's
        # write was invoked last; going back is judged against that one.
        newest: Operation | None = None
        newest_invoke = -INFINITY
        j = 0
        for later in by_invoke:
            while j < len(by_completion) and completed_at(by_completion[j]) < later.invoke_time:
                earlier = by_completion[j]
                j += 1
                write = writer_of.get((key, earlier.value)) if earlier.value is not None else None
                if write is not None and write.invoke_time > newest_invoke:
                    newest, newest_invoke = earlier, write.invoke_time
            if newest is None:
                continue
            if later.value is None:
                violations.append((newest, later))
                continue
            older = writer_of.get((key, later.value))
            if older is not None and completed_by(older) < newest_invoke:
                violations.append((newest, later))
    lines = []
    for earlier, later in violations:
        older = writer_of.get((later.key, later.value))
        detail = "" if older is None else f", written by {older.describe()}"
        lines.append(
            f"k{later.key}: {later.describe()} went back to {show(later.value)}{detail} "
            f"after {earlier.describe()} had returned {show(earlier.value)}, "
            f"written by {writer_of[(earlier.key, earlier.value)].describe()}"
        )
    return VanishedReadsResult(
        ok=not violations,
        reads=sum(len(rs) for rs in reads_by_key.values()),
        vanished=len(violations),
        violations=tuple(violations),
        explanations=capped(lines),
    )


# --- summary ----------------------------------------------------------------------------


def summary(history: History | Sequence[Operation]) -> dict[str, int]:
    """Operation counts: operations, ok, fail, info (pending included), pending, reads, writes, reads_ok, writes_ok."""
    operations = operations_of(history)
    counts = {
        "operations": len(operations),
        OK: 0,
        FAIL: 0,
        INFO: 0,
        "pending": 0,
        "reads": 0,
        "writes": 0,
        "reads_ok": 0,
        "writes_ok": 0,
    }
    for op in operations:
        counts[op.type] += 1
        counts["pending"] += op.pending
        counts["reads" if op.f == READ else "writes"] += 1
        if op.type == OK:
            counts["reads_ok" if op.f == READ else "writes_ok"] += 1
    return counts


def writes_resumed_after(history: History | Sequence[Operation], fault_time: float) -> float | None:
    """Seconds from `fault_time` until the first `ok` write completed after it (None: none did)."""
    done = [
        op.complete_time
        for op in operations_of(history)
        if op.f == WRITE and op.type == OK and op.complete_time is not None and op.complete_time >= fault_time
    ]
    return min(done) - fault_time if done else None


__all__ = [
    "CONFIGURATIONS_MAX",
    "EXPLANATIONS_MAX",
    "LINEARIZABLE",
    "NOT_LINEARIZABLE",
    "UNKNOWN",
    "KeyLinearizability",
    "LinearizabilityResult",
    "LostWritesResult",
    "VanishedReadsResult",
    "check_linearizable",
    "check_lost_writes",
    "check_no_vanished_reads",
    "summary",
    "writes_resumed_after",
]
