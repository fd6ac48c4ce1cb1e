"""The deterministic simulator with time travel on (tools/sim/time_travel.py): clones (at VDL and at earlier
commits, of clones too), snapshots and restores, backtracks and moves forward again, made through the real
control plane while the faults run; every read of every volume is checked against its lineage, and deliberate
breaks of the time-travel code are caught. Each test carries its tier (`sim`; the model's rule alone `unit`)."""

from __future__ import annotations

import logging

import pytest

from sixfold.storage.records import LogRecord, PayloadKind
from sixfold.tools.sim.config import PAGE_SIZE
from sixfold.tools.sim.harness import SimConfig, SimResult, simulate
from sixfold.tools.sim.lines import CLONE, Line
from sixfold.tools.sim_cli import parse_replay, replay_args

SEEDS = range(6)
TEETH_SEEDS = 20  # a deliberate break must be caught within this many seeds
OPERATIONS = ("clones", "clones_at_earlier_lsn", "clones_of_clones", "snapshots", "restores", "backtracks", "forwards")


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    logging.getLogger("sixfold").setLevel(logging.CRITICAL)


def describe(result: SimResult) -> str:
    return f"seed {result.seed}: {result.ops}, {result.virtual_s:.1f} virtual s; violations: {result.violations}"


def hint(config: SimConfig) -> str:
    return f"replay with: sixfold sim {' '.join(replay_args(config))} --events\n"


_results: dict[tuple[str, ...], SimResult] = {}


def run(config: SimConfig) -> SimResult:
    key = tuple(replay_args(config))
    if key not in _results:
        _results[key] = simulate(config)
    return _results[key]


@pytest.mark.unit
def test_a_line_shows_its_parent_at_the_branch_then_its_own_records() -> None:
    """The model's rule (tools/sim/lines.py): a clone shows its parent's view at the branch, never the parent's
    later records, then its own; the parent never shows the clone's."""

    def record(lsn: int, data: bytes, page_no: int = 0) -> LogRecord:
        return LogRecord(lsn, page_no, PayloadKind.PATCH, 0, data, lsn - 1, 0, 0, 1, cpl=True)

    root = Line("simvol", "simvol")
    root.records = {1: record(1, b"a"), 5: record(5, b"bb"), 9: record(9, b"ccc")}
    clone = Line("clone-1.1", "clone-1", CLONE, root, branch_lsn=5, lsn_floor=5)
    clone.records = {7: record(7, b"X")}
    assert clone.page_at(0, 100, PAGE_SIZE)[:3] == b"Xb\x00"  # root at 5 ("bb"), then its own "X"
    assert clone.page_at(0, 6, PAGE_SIZE)[:3] == b"bb\x00"
    assert root.page_at(0, 100, PAGE_SIZE)[:3] == b"ccc"  # never the clone's write
    assert clone.check_allocation(record(5, b"y")) is not None  # at or below the branch: refused by the model
    assert clone.check_allocation(record(7, b"y")) is not None  # used twice
    assert clone.lineage() == "clone-1.1 <- simvol@5"


@pytest.mark.sim
@pytest.mark.parametrize("seed", SEEDS)
def test_time_travel_under_faults_keeps_every_invariant(seed: int) -> None:
    config = SimConfig(seed=seed, time_travel=True)
    result = run(config)
    print(describe(result))
    assert result.ok, hint(config) + "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and sum(result.ops[op] for op in OPERATIONS) > 0, describe(result)


@pytest.mark.sim
def test_every_kind_of_time_travel_happens_and_is_read() -> None:
    """Over the seeds: clones at VDL and at earlier commits, clones of clones, snapshots and their restores,
    backtracks (by LSN and by time) and moves forward again; clones are written and read."""
    results = [run(SimConfig(seed=seed, time_travel=True)) for seed in SEEDS]
    assert all(r.ok for r in results), [describe(r) for r in results if not r.ok]
    for op in (*OPERATIONS, "backtracks_by_time", "clone_write_ok", "clone_read_ok"):
        assert sum(r.ops[op] for r in results) > 0, op


@pytest.mark.sim
@pytest.mark.parametrize("seed", range(3))
def test_with_a_short_history_window_gc_keeps_what_clones_read(seed: int) -> None:
    """GC, hydration and coalescing run under the faults too: a parent's GC keeps each child's read point."""
    config = SimConfig(seed=seed, time_travel=True, history_window_s=2.0)
    result = simulate(config)
    print(describe(result))
    assert result.ok, hint(config) + "\n".join(result.violations)


@pytest.mark.sim
def test_time_travel_in_the_other_fault_modes() -> None:
    for config in (
        SimConfig(seed=100, time_travel=True, faults="beyond"),
        SimConfig(seed=1, time_travel=True, faults="az-plus-one"),
    ):
        result = simulate(config)
        print(describe(result))
        assert result.ok, hint(config) + "\n".join(result.violations)


@pytest.mark.sim
def test_a_time_travel_seed_replays_exactly() -> None:
    first = run(SimConfig(seed=2, time_travel=True))
    second = simulate(SimConfig(seed=2, time_travel=True))
    assert first.events == second.events and first.digest == second.digest
    assert parse_replay(" ".join(replay_args(SimConfig(seed=2, time_travel=True)))) == SimConfig(
        seed=2, time_travel=True
    )


@pytest.mark.sim
@pytest.mark.parametrize("mutation, history_window_s", [("gc-ignores-pin", 2.0), ("resurrect-on-return", 300.0)])
def test_the_simulator_catches_a_broken_time_travel(mutation: str, history_window_s: float) -> None:
    """GC that ignores a child's keep point, and a node that comes back serving what a backtrack hid (it reads
    its clone segments' parents at their tails), are each caught within TEETH_SEEDS seeds."""
    for seed in range(TEETH_SEEDS):
        config = SimConfig(seed=seed, mutation=mutation, time_travel=True, history_window_s=history_window_s)
        result = simulate(config)
        if not result.ok:
            print(f"{mutation}: caught at seed {seed}: {result.violations[0]}")
            return
    pytest.fail(f"{mutation} went unnoticed for {TEETH_SEEDS} seeds")


@pytest.mark.sim
@pytest.mark.parametrize(
    "config",
    [
        SimConfig(seed=5, time_travel=True),  # two writers on a fresh timeline allocated the same LSNs
        SimConfig(seed=1921, time_travel=True),  # a stale writer regained onto the new timeline, fencing its writer
        SimConfig(seed=13, replace=True, time_travel=True),  # a replaced parent segment a clone reads stayed an orphan
        SimConfig(seed=27, replace=True, time_travel=True),
    ],
    ids=lambda c: " ".join(replay_args(c)),
)
def test_the_seeds_that_found_time_travel_gaps_run_clean(config: SimConfig) -> None:
    """Each of these seeds found a real gap (in recovery's truncation range, in a regain following the name to
    a new timeline, in the orphans a clone still reads through); the run has no workaround for them any more."""
    result = run(config)
    print(describe(result))
    assert result.ok, hint(config) + "\n".join(result.violations)
