"""What every chaos checker shares: how a history is read, when an operation certainly took effect,
and how explanations are shown and capped.

Real time (rule 1 of checkers.py): operation a precedes b iff a completed strictly
before b was invoked (`a.complete_time < b.invoke_time`); otherwise they are concurrent.

Pure: no clock, randomness, threads or I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sixfold.tools.chaos.history import OK, History, Operation

EXPLANATIONS_MAX = 10
INFINITY = float("inf")


def show(value: str | None) -> str:
    return "None" if value is None else repr(value)


def capped(lines: Iterable[str], limit: int = EXPLANATIONS_MAX) -> tuple[str, ...]:
    """At most `limit` lines, the last of them saying how many more there were."""
    lines = list(lines)
    if len(lines) <= limit:
        return tuple(lines)
    return tuple(lines[: limit - 1]) + (f"... and {len(lines) - (limit - 1)} more",)


def operations_of(history: History | Sequence[Operation]) -> list[Operation]:
    if isinstance(history, History):
        return history.pairs()
    return list(history)


def completed_by(op: Operation) -> float:
    """When `op` had certainly taken effect: its completion if `ok`, else never (infinity)."""
    return op.complete_time if op.type == OK and op.complete_time is not None else INFINITY


def completed_at(op: Operation) -> float:
    """The completion time of an operation that completed (an `ok` one: checkers use it for those only)."""
    assert op.complete_time is not None, f"{op.describe()} never completed"
    return op.complete_time
