"""What a read on a compute instance may show of the bank, judged against the bank's final committed order.

Pure: the records a reader probe (tools/chaos/reader_probe.py) leaves, and the checker. No clock, no I/O.

The committed order. A transfer inserts its row into `transfers`, a rowid table, so SQLite gives the row
rowid max+1 inside the transaction; the writer runs one write transaction at a time, so among the
transfers that took effect rowid order is commit order, and the final state read in rowid order (read
once the run is healed) is the whole committed order. A read transaction on any instance sees one state
of the bank: the rows up to its read point. `ProbeRead` keeps of it the row count, the last few ids and a
digest of its (rowid, id) rows in rowid order (`digest_rows`), computed the same way for the final order's
every prefix.

Rules, for every ok probe read r (on a reader, or the writer):
1. Never above durable: r's state is exactly a prefix of the final committed order (same count and
   digest as the final order's first `r.count` rows). A row the final state lacks (a commit that was not
   durable, or a transfer that failed), a row at another place, or more rows than the final state holds,
   all break it. Since no acknowledged transfer may be lost (tools/chaos/bank.py), a state that is not a
   prefix showed something that later disappeared, or the final state lost something.
2. Never a write not yet sent: every transfer in r's prefix was invoked before r completed (a commit
   cannot be seen before its client sent it).
3. Whole: r's balances are the initial ones plus the net of the transfers r sees, and sum to the total.
4. Never backwards: per instance address, a read invoked after another read completed sees at least as
   many committed transfers (with rule 1, a superset).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sixfold.tools.chaos.history import OK
from sixfold.tools.chaos.scenario_base import Criterion

EXPLAIN_MAX = 5
TAIL = 3  # the last ids a probe read keeps, for explanations


def _hasher() -> hashlib.blake2b:
    return hashlib.blake2b(digest_size=16)


def _feed(h: hashlib.blake2b, rowid: int, tid: str) -> None:
    h.update(f"{rowid}:{tid}\n".encode())


def digest_rows(rows: Iterable[tuple[int, str]]) -> str:
    """The digest of (rowid, id) rows in the order given (rowid order)."""
    h = _hasher()
    for rowid, tid in rows:
        _feed(h, rowid, tid)
    return h.hexdigest()


def prefix_digests(rows: Sequence[tuple[int, str]]) -> list[str]:
    """digest_rows(rows[:n]) for every n in 0..len(rows)."""
    h = _hasher()
    out = [h.hexdigest()]
    for rowid, tid in rows:
        _feed(h, rowid, tid)
        out.append(h.hexdigest())
    return out


@dataclass
class ProbeRead:
    """One read transaction of a reader probe: what it saw of the bank."""

    target: str  # what the probe aimed at: an instance name, or "reader-endpoint"
    address: str  # the instance address the read went to
    invoked: float
    completed: float = 0.0
    outcome: str = "info"  # ok / fail (an ok read saw a state)
    detail: str = ""  # a failed read: "CODE: details"
    read_point: int = 0  # the VDL the instance read at
    count: int = 0  # transfer rows seen
    digest: str = ""  # digest_rows of the rows seen
    tail: tuple[str, ...] = ()  # the last TAIL ids seen, in rowid order
    unbalanced: str = ""  # rule 3 broken: what is off ("" when whole)

    def describe(self, origin: float = 0.0) -> str:
        return (
            f"{self.target}@{self.address} read [{self.invoked - origin:.3f}-{self.completed - origin:.3f}] "
            f"at read point {self.read_point}: {self.count} transfers (last {list(self.tail)})"
        )


@dataclass
class ReaderCheck:
    reads: int = 0  # ok reads judged
    failed: int = 0
    by_address: dict[str, int] = field(default_factory=dict)
    above_durable: list[str] = field(default_factory=list)  # rule 1
    not_sent: list[str] = field(default_factory=list)  # rule 2
    unbalanced: list[str] = field(default_factory=list)  # rule 3
    backwards: list[str] = field(default_factory=list)  # rule 4
    final_known: bool = True

    def criteria(self, what: str = "reader reads") -> list[Criterion]:
        if not self.final_known:
            return [
                Criterion(f"{what} never above durable", False, "not judged: the final committed order was not read")
            ]
        seen = ", ".join(f"{a}: {n}" for a, n in sorted(self.by_address.items()))
        return [
            Criterion(
                f"{what} never above durable",
                not (self.above_durable or self.not_sent or self.unbalanced),
                f"{self.reads} ok read transactions ({seen}; {self.failed} refused or failed): "
                f"{len(self.above_durable)} not a prefix of the final committed order"
                + _some(self.above_durable)
                + f"; {len(self.not_sent)} saw a transfer before its client sent it"
                + _some(self.not_sent)
                + f"; {len(self.unbalanced)} with balances off their transfers"
                + _some(self.unbalanced),
            ),
            Criterion(
                f"{what} never go backwards",
                not self.backwards,
                f"per instance, {len(self.backwards)} reads saw fewer committed transfers than a read of the same "
                "instance that completed before they began" + _some(self.backwards),
            ),
        ]


def _some(items: Sequence[str]) -> str:
    return (": " + "; ".join(items[:EXPLAIN_MAX]) + (" ..." if len(items) > EXPLAIN_MAX else "")) if items else ""


def check_reader_reads(
    reads: Sequence[ProbeRead],
    final_rows: Sequence[tuple[int, str]] | None,
    invoked_of: dict[str, float],
    origin: float = 0.0,
) -> ReaderCheck:
    """Rules 1-4 of the module docstring. `final_rows`: the final state's (rowid, id) in rowid order (None:
    not read); `invoked_of`: when each transfer's client invoked it."""
    check = ReaderCheck()
    ok = [r for r in reads if r.outcome == OK]
    check.reads, check.failed = len(ok), len(reads) - len(ok)
    for r in ok:
        check.by_address[r.target] = check.by_address.get(r.target, 0) + 1
        if r.unbalanced:
            check.unbalanced.append(f"{r.describe(origin)}: {r.unbalanced}")
    if final_rows is None:
        check.final_known = False
    else:
        _judge_prefixes(check, ok, final_rows, invoked_of, origin)
    _judge_monotonic(check, ok, origin)
    return check


def _judge_prefixes(
    check: ReaderCheck,
    ok: Sequence[ProbeRead],
    final_rows: Sequence[tuple[int, str]],
    invoked_of: dict[str, float],
    origin: float,
) -> None:
    digests = prefix_digests(final_rows)
    latest_invoked = [float("-inf")]  # the latest invocation among the first n transfers
    for _, tid in final_rows:
        latest_invoked.append(max(latest_invoked[-1], invoked_of.get(tid, float("inf"))))
    for r in ok:
        name = r.describe(origin)
        if r.count > len(final_rows):
            check.above_durable.append(f"{name}: more transfers than the final state holds ({len(final_rows)})")
            continue
        if r.digest != digests[r.count]:
            check.above_durable.append(
                f"{name}: not the first {r.count} committed transfers (the final order has "
                f"{[t for _, t in final_rows[max(0, r.count - TAIL) : r.count]]} there)"
            )
            continue
        if latest_invoked[r.count] >= r.completed:
            late = next(t for _, t in final_rows[: r.count] if invoked_of.get(t, float("inf")) >= r.completed)
            when = invoked_of.get(late)
            check.not_sent.append(
                f"{name}: saw {late}, "
                + ("which no client asked for" if when is None else f"invoked only at {when - origin:.3f}")
            )


def _judge_monotonic(check: ReaderCheck, ok: Sequence[ProbeRead], origin: float) -> None:
    by_address: dict[str, list[ProbeRead]] = defaultdict(list)
    for r in ok:
        by_address[r.address].append(r)
    for reads in by_address.values():
        by_completion = sorted(reads, key=lambda r: r.completed)
        newest: ProbeRead | None = None
        j = 0
        for later in sorted(reads, key=lambda r: r.invoked):
            while j < len(by_completion) and by_completion[j].completed < later.invoked:
                if newest is None or by_completion[j].count > newest.count:
                    newest = by_completion[j]
                j += 1
            if newest is not None and later.count < newest.count:
                check.backwards.append(
                    f"{later.describe(origin)} after {newest.describe(origin)} had seen {newest.count}"
                )
