"""Checkers that judge a chaos history (see `history.py` for the event model).

The system under test is a set of registers: each key (a page number) holds the
value last written to it (a unique token such as "p3-17"), None before any
write. Every checker returns a small frozen result with a boolean `ok`, counts,
and at most `EXPLANATIONS_MAX` human-readable lines naming the operations
involved (`#<invoke index> p<process> <f> k<key> ...`).

Rules (this module owns them):
1. Real time: operation a precedes b iff a completed strictly before b was
   invoked (`a.complete_time < b.invoke_time`); otherwise they are concurrent.
2. Linearizability (`check_linearizable`) is decided per key, which is exact:
   linearizability is local (P-compositional; Herlihy & Wing 1990), so a history
   is linearizable iff each key's sub-history is. Taking part: `ok` writes and
   reads, and `info` writes (pending invokes are `info`), which may take effect
   at any time after their invoke or never. Dropped: `fail` operations
   (they did not happen) and reads that are not `ok` (they observed nothing).
3. Values are unique per write. Where a value is written once on its key (the
   normal case), three exact reductions keep the search small:
   - an `info` write whose value no `ok` read observed is dropped — a write nobody
     observed can always be taken out of a linearization (it may never have
     happened); one that was observed must take effect before its first observer
     completed, so that becomes its deadline instead of "never";
   - a write may not overwrite a value (or the initial None) that `ok` reads not
     yet linearized still have to return: the value can never come back;
   - an `ok` write that no read observed can only be followed by another write,
     so it is placed just before one (a no-op there) or, at its deadline, alone.
   A value written twice gets none of them: its `info` writes keep an
   unbounded deadline (taking effect after everything else is always allowed).
4. The search is Wing & Gong's (1993) with Lowe's (2017) memoization of
   configurations (the set of linearized operations as a bitset, and the
   register's value): a configuration seen before is never explored again.
   A read that matches the register can always be linearized at once, so when
   the search backs out of one it backs out of the configuration before it too.
   Each key's search is iterative (no recursion limit) and costs a few
   microseconds per configuration.
   The search stops after `configurations_max` configurations per key and says
   "unknown (search limit reached)" rather than guess.
5. `check_lost_writes` and `check_no_vanished_reads` judge acknowledged writes
   and observed values by the same real-time rule; only an `ok` write has a
   known completion, so only an `ok` write is "definitely older" than another.

Pure: no clock, randomness, threads or I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History, Operation

EXPLANATIONS_MAX = 10
CONFIGURATIONS_MAX = 500_000  # per key; a configuration costs roughly 200 bytes of cache

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNKNOWN = "unknown (search limit reached)"

INFINITY = float("inf")


def _show(value: str | None) -> str:
    return "None" if value is None else repr(value)


def _capped(lines: Iterable[str], limit: int = EXPLANATIONS_MAX) -> tuple[str, ...]:
    lines = list(lines)
    if len(lines) <= limit:
        return tuple(lines)
    return tuple(lines[: limit - 1]) + (f"... and {len(lines) - (limit - 1)} more",)


def _operations(history: History | Sequence[Operation]) -> list[Operation]:
    if isinstance(history, History):
        return history.pairs()
    return list(history)


def _completed_by(op: Operation) -> float:
    """When `op` had certainly taken effect: its completion if `ok`, else never (infinity)."""
    return op.complete_time if op.type == OK and op.complete_time is not None else INFINITY


# --- linearizability -------------------------------------------------------------------


@dataclass(frozen=True)
class KeyLinearizability:
    key: int
    verdict: str  # LINEARIZABLE | NOT_LINEARIZABLE | UNKNOWN
    operations: int  # operations the search ordered (after rule 3's reductions)
    configurations: int  # configurations explored
    explanations: tuple[str, ...]


@dataclass(frozen=True)
class LinearizabilityResult:
    ok: bool  # proven linearizable (False when a key is not, or is unknown)
    verdict: str  # LINEARIZABLE | NOT_LINEARIZABLE | UNKNOWN (NOT_LINEARIZABLE wins over UNKNOWN)
    keys: int
    operations: int  # operations that took part (ok writes, ok reads, info writes)
    dropped: int  # fail operations and reads that were not ok
    info_writes_unobserved: int  # info writes dropped by rule 3 (no read saw their value)
    configurations: int  # explored, over all keys
    bad_keys: tuple[int, ...]  # keys proven not linearizable
    unknown_keys: tuple[int, ...]  # keys where the search limit was reached
    explanations: tuple[str, ...]
    per_key: tuple[KeyLinearizability, ...]

    @property
    def unknown(self) -> bool:
        return self.verdict == UNKNOWN


def check_linearizable(
    history: History | Sequence[Operation], configurations_max: int = CONFIGURATIONS_MAX
) -> LinearizabilityResult:
    """Is the history linearizable as one register per key (initial value None)?"""
    assert configurations_max >= 1
    operations = _operations(history)
    participating: dict[int, list[Operation]] = defaultdict(list)
    dropped = 0
    for op in operations:
        if op.type == FAIL or (op.f == READ and op.type != OK):
            dropped += 1
        else:
            participating[op.key].append(op)
    keys_by_value: dict[str | None, set[int]] = defaultdict(set)
    for op in operations:
        if op.f == WRITE:
            keys_by_value[op.value].add(op.key)
    failed_writes = {(op.key, op.value): op for op in operations if op.f == WRITE and op.type == FAIL}

    per_key = []
    unobserved_total = 0
    for key in sorted(participating):
        result, unobserved = _check_key(key, participating[key], keys_by_value, failed_writes, configurations_max)
        per_key.append(result)
        unobserved_total += unobserved
    bad = tuple(r.key for r in per_key if r.verdict == NOT_LINEARIZABLE)
    unknown = tuple(r.key for r in per_key if r.verdict == UNKNOWN)
    verdict = NOT_LINEARIZABLE if bad else UNKNOWN if unknown else LINEARIZABLE
    explanations = [line for r in per_key if r.verdict != LINEARIZABLE for line in r.explanations]
    return LinearizabilityResult(
        ok=verdict == LINEARIZABLE,
        verdict=verdict,
        keys=len(per_key),
        operations=sum(len(ops) for ops in participating.values()),
        dropped=dropped,
        info_writes_unobserved=unobserved_total,
        configurations=sum(r.configurations for r in per_key),
        bad_keys=bad,
        unknown_keys=unknown,
        explanations=_capped(explanations),
        per_key=tuple(per_key),
    )


def _impossible_reads(
    key: int,
    ops: list[Operation],
    writers: dict[str | None, list[Operation]],
    keys_by_value: dict[str | None, set[int]],
    failed_writes: dict[tuple[int, str | None], Operation],
) -> list[str]:
    """Reads no ordering can explain: of a value never written here, or before its write began."""
    lines = []
    for read in ops:
        if read.f != READ or read.value is None:
            continue
        candidates = writers.get(read.value)
        if not candidates:
            failed = failed_writes.get((key, read.value))
            elsewhere = sorted(keys_by_value.get(read.value, set()) - {key})
            if failed is not None:
                why = f"whose write failed: {failed.describe()}"
            elif elsewhere:
                why = f"which was written to key(s) {elsewhere}, not k{key}"
            else:
                why = "which no operation wrote"
            lines.append(f"k{key}: {read.describe()} returned {_show(read.value)}, {why}")
        elif all(w.invoke_time > read.complete_time for w in candidates):
            lines.append(
                f"k{key}: {read.describe()} returned {_show(read.value)} before its write was invoked: "
                f"{candidates[0].describe()}"
            )
    return lines


def _check_key(
    key: int,
    ops: list[Operation],
    keys_by_value: dict[str | None, set[int]],
    failed_writes: dict[tuple[int, str | None], Operation],
    configurations_max: int,
) -> tuple[KeyLinearizability, int]:
    writers: dict[str | None, list[Operation]] = defaultdict(list)
    readers: dict[str | None, list[Operation]] = defaultdict(list)
    for op in ops:
        (writers if op.f == WRITE else readers)[op.value].append(op)

    impossible = _impossible_reads(key, ops, writers, keys_by_value, failed_writes)
    if impossible:
        lines = [f"k{key}: not linearizable: {len(impossible)} read(s) of a value no write can explain"] + impossible
        return KeyLinearizability(key, NOT_LINEARIZABLE, len(ops), 0, _capped(lines)), 0

    # Rule 3: deadlines; unobserved info writes drop out; guarded values cannot be overwritten early.
    unique_values = {value for value, ws in writers.items() if len(ws) == 1}
    guarded = unique_values | {None}
    searched: list[tuple[Operation, float]] = []  # (operation, deadline)
    unobserved = 0
    for op in ops:
        if op.f == READ or op.type == OK:
            assert op.complete_time is not None
            searched.append((op, op.complete_time))
        elif op.value not in unique_values:
            searched.append((op, INFINITY))
        elif readers.get(op.value):
            searched.append((op, min(r.complete_time for r in readers[op.value])))  # type: ignore[type-var]
        else:
            unobserved += 1
    verdict, configurations, best = _search(searched, guarded, configurations_max)
    lines: list[str] = []
    if verdict == UNKNOWN:
        lines.append(
            f"k{key}: unknown: search limit of {configurations_max} configurations reached "
            f"with {len(searched)} operations"
        )
    elif verdict == NOT_LINEARIZABLE:
        lines = _explain_failure(key, searched, best, configurations)
    return KeyLinearizability(key, verdict, len(searched), configurations, _capped(lines)), unobserved


def _search(
    searched: list[tuple[Operation, float]], guarded: set[str | None], configurations_max: int
) -> tuple[str, int, tuple[list[int], str | None]]:
    """Wing-Gong search with memoized configurations (rules 3 and 4).

    The operations' calls and deadlines form one time-ordered doubly linked list;
    a linearized operation is lifted out of it. From each configuration the search
    tries, in order, every call before the first deadline left; reaching that
    deadline means the configuration fails, and the search backs out.

    A write of a unique value that no read observed ("unobserved") is a no-op when
    it is directly followed by another write, and it cannot be followed by a read.
    So it is never tried on its own: each write linearized also takes along every
    unobserved write that could go now (placed just before it, which only frees
    the search), and an unobserved write still left at its deadline is linearized
    there as a write of its own.

    Returns the verdict, the configurations explored, and the deepest partial
    linearization reached (operation numbers in order, the register's value then).
    """
    n = len(searched)
    if n == 0:
        return LINEARIZABLE, 0, ([], None)
    is_write = [op.f == WRITE for op, _ in searched]
    value = [op.value for op, _ in searched]
    observed = {op.value for op, _ in searched if op.f == READ}
    unobserved = [is_write[i] and value[i] in guarded and value[i] not in observed for i in range(n)]
    # Entries: a call and a deadline per operation, by time; at equal times calls first (rule 1).
    order = sorted(
        [(op.invoke_time, 0, i) for i, (op, _) in enumerate(searched)]
        + [(deadline, 1, i) for i, (_, deadline) in enumerate(searched)]
    )
    entries = len(order)
    head = entries  # sentinel
    entry_op = [i for _, _, i in order]
    entry_is_call = [kind == 0 for _, kind, _ in order]
    match = [0] * entries  # call entry -> its deadline entry
    call_entry = [0] * n
    for e in range(entries):
        if entry_is_call[e]:
            call_entry[entry_op[e]] = e
    for e in range(entries):
        if not entry_is_call[e]:
            match[call_entry[entry_op[e]]] = e
    nxt = list(range(1, entries + 1)) + [0]
    nxt[entries - 1] = -1
    prv = [head] + list(range(entries - 1)) + [-1]
    nxt[head] = 0

    def lift(e: int) -> None:
        for x in (e, match[e]):
            p, q = prv[x], nxt[x]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(e: int) -> None:
        for x in (match[e], e):
            p, q = prv[x], nxt[x]
            nxt[p] = x
            if q != -1:
                prv[q] = x

    pending_readers: dict[str | None, int] = defaultdict(int)  # guarded value -> ok reads not yet linearized
    for i in range(n):
        if not is_write[i] and value[i] in guarded:
            pending_readers[value[i]] += 1

    bit = [1 << i for i in range(n)]
    cache: set[tuple[int, str | None]] = set()
    # (call entry, register value before it, unobserved writes' call entries taken along, forced at its deadline)
    stack: list[tuple[int, str | None, list[int], bool]] = []
    state: str | None = None
    linearized = 0
    count = 0  # operations linearized
    best: tuple[list[int], str | None] = ([], None)
    entry = nxt[head]
    while nxt[head] != -1:
        i = entry_op[entry]
        forced = not entry_is_call[entry]
        if forced and not unobserved[i]:
            allowed = False  # the earliest deadline left passed without its operation: back out
        elif not forced and unobserved[i]:
            entry = nxt[entry]  # only ever taken along by another write, or at its deadline
            continue
        elif is_write[i]:
            allowed = not (pending_readers[state] > 0 and state in guarded)
        else:
            allowed = value[i] == state
        if allowed:
            new_state = value[i] if is_write[i] else state
            new_linearized = linearized | bit[i]
            along: list[int] = []
            if is_write[i]:
                e = nxt[head]
                while e != -1 and entry_is_call[e]:
                    if unobserved[entry_op[e]] and entry_op[e] != i:
                        along.append(e)
                        new_linearized |= bit[entry_op[e]]
                    e = nxt[e]
            configuration = (new_linearized, new_state)
            if configuration not in cache:
                if len(cache) >= configurations_max:
                    return UNKNOWN, len(cache), best
                cache.add(configuration)
                call = call_entry[i]
                stack.append((call, state, along, forced))
                linearized, state = configuration
                count += 1 + len(along)
                if not is_write[i] and value[i] in guarded:
                    pending_readers[value[i]] -= 1
                lift(call)
                for e in along:
                    lift(e)
                entry = nxt[head]
                continue
            if is_write[i] and not forced:
                entry = nxt[entry]
                continue
            # A matching read (or forced write) already explored from here failed: so does this configuration.
        elif not forced:
            entry = nxt[entry]
            continue
        # Back out of the last step; past a read or a forced write, out of the one before it too.
        if count > len(best[0]):  # the deepest configuration so far, for the explanation
            best = ([entry_op[e] for call, _, taken, _ in stack for e in (*taken, call)], state)
        while True:
            if not stack:
                return NOT_LINEARIZABLE, len(cache), best
            call, state, along, forced = stack.pop()
            i = entry_op[call]
            for e in reversed(along):
                unlift(e)
                linearized &= ~bit[entry_op[e]]
            unlift(call)
            linearized &= ~bit[i]
            count -= 1 + len(along)
            if not is_write[i] and value[i] in guarded:
                pending_readers[value[i]] += 1
            if is_write[i] and not forced:
                break
            # Rule 4: the configuration before a matching read fails whenever the one after it does;
            # a forced write was the only way on from the configuration before it.
        entry = nxt[call]
    return LINEARIZABLE, len(cache), best


def _explain_failure(
    key: int, searched: list[tuple[Operation, float]], best: tuple[list[int], str | None], configurations: int
) -> list[str]:
    done, state = best
    done_set = set(done)
    lines = [
        f"k{key}: not linearizable: no order of its {len(searched)} operations fits "
        f"({configurations} configurations explored)"
    ]
    if done:
        last = ", ".join(searched[i][0].describe() for i in done[-3:])
        lines.append(
            f"k{key}: longest linearizable prefix: {len(done)} operation(s), register then holds "
            f"{_show(state)}; last: {last}"
        )
    else:
        lines.append(f"k{key}: not even the first operation can be linearized (register holds None)")
    left = [i for i in range(len(searched)) if i not in done_set]
    stuck = min(left, key=lambda i: (searched[i][1], searched[i][0].invoke_time))
    stuck_op, stuck_deadline = searched[stuck]
    by = "completed" if stuck_op.type == OK else "was observed"
    unread = [i for i in left if searched[i][0].f == READ and searched[i][0].value == state]

    def why(i: int) -> str:
        op = searched[i][0]
        if op.f == READ:
            return f"it reads {_show(op.value)} but the register holds {_show(state)}"
        if unread:
            return f"it would overwrite {_show(state)}, which {searched[unread[0]][0].describe()} must still read"
        return "it can go first, but nothing fits after it"

    lines.append(
        f"k{key}: then {stuck_op.describe()} must take effect before it {by} (t={stuck_deadline:.3f}), but {why(stuck)}"
    )
    rivals = [i for i in left if i != stuck and searched[i][0].invoke_time <= stuck_deadline]
    for i in rivals[:4]:
        lines.append(f"k{key}:   concurrent {searched[i][0].describe()}: {why(i)}")
    if len(rivals) > 4:
        lines.append(f"k{key}:   ... and {len(rivals) - 4} more concurrent operations")
    return lines


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
    operations = _operations(history)
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
            return older is None or older is w or not _completed_by(older) < w.invoke_time

        for w in acked:
            if not any(survives(w, read) for read in finals):
                lost.append(w)
                seen = sorted({_show(r.value) for r in finals})
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
        explanations=_capped(lines),
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
    operations = _operations(history)
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
        by_completion = sorted(reads, key=lambda r: r.complete_time)  # type: ignore[arg-type, return-value]
        by_invoke = sorted(reads, key=lambda r: r.invoke_time)
        # Sweep: for each read, the earlier read (completed before it was invoked) whose value's
        # write was invoked last; going back is judged against that one.
        newest: Operation | None = None
        newest_invoke = -INFINITY
        j = 0
        for later in by_invoke:
            while j < len(by_completion) and by_completion[j].complete_time < later.invoke_time:  # type: ignore[operator]
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
            if older is not None and _completed_by(older) < newest_invoke:
                violations.append((newest, later))
    lines = []
    for earlier, later in violations:
        older = writer_of.get((later.key, later.value))
        detail = "" if older is None else f", written by {older.describe()}"
        lines.append(
            f"k{later.key}: {later.describe()} went back to {_show(later.value)}{detail} "
            f"after {earlier.describe()} had returned {_show(earlier.value)}, "
            f"written by {writer_of[(earlier.key, earlier.value)].describe()}"
        )
    return VanishedReadsResult(
        ok=not violations,
        reads=sum(len(rs) for rs in reads_by_key.values()),
        vanished=len(violations),
        violations=tuple(violations),
        explanations=_capped(lines),
    )


# --- summary ----------------------------------------------------------------------------


def summary(history: History | Sequence[Operation]) -> dict[str, int]:
    """Operation counts: operations, ok, fail, info (pending included), pending, reads, writes, reads_ok, writes_ok."""
    operations = _operations(history)
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
        for op in _operations(history)
        if op.f == WRITE and op.type == OK and op.complete_time is not None and op.complete_time >= fault_time
    ]
    return min(done) - fault_time if done else None
