"""Linearizability of a chaos history, one register per key (rules 2-4 of checkers.py).

The system under test is a set of registers: each key (a page number) holds the
value last written to it (a unique token such as "p3-17"), None before any write.

Rules (this module owns them):
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

Pure: no clock, randomness, threads or I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sixfold.tools.chaos.check_support import INFINITY, capped, completed_at, operations_of, show
from sixfold.tools.chaos.history import FAIL, OK, READ, WRITE, History, Operation

CONFIGURATIONS_MAX = 500_000  # per key; a configuration costs roughly 200 bytes of cache

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
UNKNOWN = "unknown (search limit reached)"


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
    operations = operations_of(history)
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
        explanations=capped(explanations),
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
            lines.append(f"k{key}: {read.describe()} returned {show(read.value)}, {why}")
        elif all(w.invoke_time > completed_at(read) for w in candidates):
            lines.append(
                f"k{key}: {read.describe()} returned {show(read.value)} before its write was invoked: "
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
        refuted = [f"k{key}: not linearizable: {len(impossible)} read(s) of a value no write can explain"] + impossible
        return KeyLinearizability(key, NOT_LINEARIZABLE, len(ops), 0, capped(refuted)), 0

    # Rule 3: deadlines; unobserved info writes drop out; guarded values cannot be overwritten early.
    unique_values = {value for value, ws in writers.items() if len(ws) == 1}
    guarded = unique_values | {None}
    searched: list[tuple[Operation, float]] = []  # (operation, deadline)
    unobserved = 0
    for op in ops:
        if op.f == READ or op.type == OK:
            searched.append((op, completed_at(op)))
        elif op.value not in unique_values:
            searched.append((op, INFINITY))
        elif readers.get(op.value):
            searched.append((op, min(completed_at(r) for r in readers[op.value])))
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
    return KeyLinearizability(key, verdict, len(searched), configurations, capped(lines)), unobserved


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
            f"{show(state)}; last: {last}"
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
            return f"it reads {show(op.value)} but the register holds {show(state)}"
        if unread:
            return f"it would overwrite {show(state)}, which {searched[unread[0]][0].describe()} must still read"
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
