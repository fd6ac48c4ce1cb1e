"""Chaos histories for the checker tests: built by hand, drawn at random, or chaos-sized, and a
deliberately naive brute-force linearizability oracle to hold the checker against.

Random histories come from a seeded `random.Random`; each is a real register per
key (every operation takes effect at one point), so it is linearizable until
`mutate` changes it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History, Operation

INFINITY = float("inf")

# --- building histories by hand --------------------------------------------------------

INVOKE_EVENT, COMPLETE_EVENT = "invoke", "complete"


@dataclass
class Spec:
    """One operation of a hand-made history; `end=None` leaves it pending."""

    process: int
    f: str
    key: int
    value: str | None  # write: written; read: observed (on ok)
    start: float
    end: float | None
    type: str = OK


def w(process: int, key: int, value: str, start: float, end: float | None, type: str = OK) -> Spec:
    return Spec(process, WRITE, key, value, start, end, type)


def r(process: int, key: int, value: str | None, start: float, end: float | None, type: str = OK) -> Spec:
    return Spec(process, READ, key, value if type == OK else None, start, end, type)


def build(*specs: Spec) -> History:
    """The history of these operations, events in time order (a completion before an invoke at the same time)."""
    events = []
    for n, spec in enumerate(specs):
        assert spec.end is None or spec.end > spec.start, spec
        events.append((spec.start, 1, n, INVOKE_EVENT, spec))
        if spec.end is not None:
            events.append((spec.end, 0, n, COMPLETE_EVENT, spec))
    events.sort(key=lambda e: e[:3])
    history = History()
    handles = {}
    for _, _, n, kind, spec in events:
        if kind == INVOKE_EVENT:
            handles[n] = history.invoke(
                spec.process, spec.f, spec.key, spec.value if spec.f == WRITE else None, spec.start
            )
        else:
            history.complete(handles[n], spec.type, spec.value if spec.type == OK else None, time=spec.end)
    return history


# --- the oracle ------------------------------------------------------------------------


def brute_force_linearizable(history: History) -> bool:
    """Try every order of the operations that respects real time, for every choice of info writes.

    Deliberately naive: no per-key split, no deadlines, no caching. An info write
    either is left out (never happened) or takes effect somewhere after its invoke.
    """
    ops = [op for op in history.pairs() if op.type == OK or (op.f == WRITE and op.type == INFO)]
    optional = [i for i, op in enumerate(ops) if op.type != OK]
    for included in itertools.product((False, True), repeat=len(optional)):
        left_out = {i for i, keep in zip(optional, included) if not keep}
        chosen = [op for i, op in enumerate(ops) if i not in left_out]
        ends = [op.complete_time if op.type == OK and op.complete_time is not None else INFINITY for op in chosen]

        def extend(
            done: frozenset[int],
            registers: dict[int, str | None],
            chosen: list[Operation] = chosen,
            ends: list[float] = ends,
        ) -> bool:
            if len(done) == len(chosen):
                return True
            for i, op in enumerate(chosen):
                if i in done:
                    continue
                if any(j not in done and ends[j] < op.invoke_time for j in range(len(chosen))):
                    continue  # an operation that precedes this one in real time is not placed yet
                if op.f == READ:
                    if registers.get(op.key) == op.value and extend(done | {i}, registers):
                        return True
                elif extend(done | {i}, {**registers, op.key: op.value}):
                    return True
            return False

        if extend(frozenset(), {}):
            return True
    return False


# --- random histories ------------------------------------------------------------------


def execution(rng: random.Random, ops_max: int = 7, keys_max: int = 2, processes_max: int = 3) -> list[Spec]:
    """A small history of a real register per key: each operation takes effect at one point
    (ok: inside its interval; info/pending write: at any time after its invoke, or never)."""
    processes = rng.randint(1, processes_max)
    keys = rng.randint(1, keys_max)
    clocks = {p: rng.randint(0, 3) for p in range(processes)}
    specs: list[Spec] = []
    effects: list[tuple[float, float, int]] = []  # (time, tie-break, spec number)
    for n in range(rng.randint(1, ops_max)):
        p = rng.randrange(processes)
        start = clocks[p] + rng.randint(0, 3)
        end = start + rng.randint(1, 6)
        clocks[p] = end
        f = rng.choice((WRITE, READ))
        type = rng.choice((OK, OK, OK, FAIL, INFO))
        specs.append(Spec(p, f, rng.randrange(keys), f"p{p}-{n}" if f == WRITE else None, start, end, type))
    for p in range(processes):  # the last operation of a process may never complete
        mine = [s for s in specs if s.process == p]
        if mine and rng.random() < 0.2:
            mine[-1].end, mine[-1].type = None, INFO
    for n, spec in enumerate(specs):
        if spec.type == OK:
            assert spec.end is not None, spec  # only a pending operation has no end, and it is info
            effects.append((rng.uniform(spec.start, spec.end), rng.random(), n))
        elif spec.f == WRITE and spec.type == INFO and rng.random() < 0.6:
            effects.append((spec.start + rng.uniform(0, 20), rng.random(), n))
    registers: dict[int, str | None] = {}
    for _, _, n in sorted(effects):
        spec = specs[n]
        if spec.f == WRITE:
            registers[spec.key] = spec.value
        else:
            spec.value = registers.get(spec.key)
    return specs


def mutate(rng: random.Random, specs: list[Spec]) -> list[Spec]:
    """One to three changes that often break linearizability (but not always)."""
    specs = [Spec(**vars(s)) for s in specs]
    written = [s.value for s in specs if s.f == WRITE]
    for _ in range(rng.randint(1, 3)):
        spec = rng.choice(specs)
        choice = rng.choice((0, 0, 1, 2, 3, 4))
        if choice == 0 and spec.f == READ and spec.type == OK:
            spec.value = rng.choice(written + [None, "ghost"])
        elif choice == 1 and spec.end is not None:
            spec.type = rng.choice((OK, FAIL, INFO))
            if spec.f == READ:
                spec.value = rng.choice(written + [None]) if spec.type == OK else None
        elif choice == 2 and spec.end is not None and spec.end - spec.start > 1:
            spec.end = spec.start + rng.randint(
                1, int(spec.end - spec.start) - 1
            )  # shrink: stays inside the process's slot
        elif choice == 3 and spec.end is not None and spec.end - spec.start > 1:
            spec.start = spec.end - rng.randint(1, int(spec.end - spec.start) - 1)
        elif choice == 4 and spec.f == WRITE:
            spec.value = rng.choice(written)  # a duplicate value: the checker's unique-value shortcuts must step aside
    return specs


def describe(history: History) -> str:
    return "\n".join(op.describe() for op in history.pairs())


# --- a chaos-sized history -------------------------------------------------------------


def chaos_history(
    rng: random.Random, operations: int = 3000, keys: int = 8, processes: int = 6, timeout: float = 0.5
) -> History:
    """A real register per key driven by `processes` clients; during two fault windows operations
    time out (info) and a timed-out write takes effect later or never. Linearizable by construction."""
    faults = [(0.3, 0.5), (0.7, 0.8)]  # fractions of the run
    specs: list[Spec] = []
    clocks = [rng.uniform(0, 0.01) for _ in range(processes)]
    span = operations / processes * 0.01
    effects: list[tuple[float, int]] = []
    while len(specs) < operations:
        p = min(range(processes), key=lambda q: clocks[q])
        start = clocks[p] + rng.uniform(0, 0.002)
        f = rng.choice((WRITE, READ))
        in_fault = any(a * span <= start <= b * span for a, b in faults)
        n = len(specs)
        if in_fault and rng.random() < 0.3:
            end, type = start + timeout, INFO
        else:
            end, type = start + rng.uniform(0.001, 0.03), OK
        clocks[p] = end
        spec = Spec(p, f, rng.randrange(keys), f"p{p}-{n}" if f == WRITE else None, start, end, type)
        specs.append(spec)
        if type == OK:
            effects.append((rng.uniform(start, end), n))
        elif f == WRITE and rng.random() < 0.5:
            effects.append((start + rng.uniform(0, 3 * timeout), n))
    registers: dict[int, str | None] = {}
    for _, n in sorted(effects):
        spec = specs[n]
        if spec.f == WRITE:
            registers[spec.key] = spec.value
        else:
            spec.value = registers.get(spec.key)
    return build(*specs)
