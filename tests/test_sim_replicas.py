"""The deterministic simulator with read replicas (tools/sim/replicas.py, tools/sim/promotion.py): readers follow
the writer's redo over a seeded link and serve read transactions, each checked (never above durable, never
backwards, exact pages); a crashed or cut-off writer's place goes to a promoted reader, the old writer's
acknowledged commits survive and it acknowledges nothing more; deliberate breaks of both are caught."""

from __future__ import annotations

import logging

import pytest

from sixfold.tools.sim.harness import SimConfig, SimResult, simulate
from sixfold.tools.sim_cli import parse_replay, replay_args

pytestmark = pytest.mark.sim

SEEDS = range(5)
TEETH_SEEDS = 20  # a deliberate break must be caught within this many seeds


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


@pytest.mark.parametrize("seed", SEEDS)
def test_readers_and_promotion_keep_every_invariant(seed: int) -> None:
    config = SimConfig(seed=seed, replicas=2)
    result = run(config)
    print(describe(result))
    assert result.ok, hint(config) + "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and result.ops["reader_read_ok"] > 0, describe(result)


def test_readers_resubscribe_pause_restart_and_get_promoted() -> None:
    """Over the seeds: links break (a snapshot follows), readers pause and restart, readers are promoted after a
    crash and beside an old writer still running (which must acknowledge nothing more)."""
    results = [run(SimConfig(seed=seed, replicas=2)) for seed in SEEDS]
    assert all(r.ok for r in results), [describe(r) for r in results if not r.ok]
    for counter in ("reader_link_drops", "reader_pauses", "reader_restarts", "promotions"):
        assert sum(r.ops[counter] for r in results) > 0, counter
    assert sum(r.ops["promotions_beside_old_writer"] for r in results) > 0
    assert all(r.ops["reader_subscribes"] > r.ops["promotions"] for r in results)


def test_three_readers_with_a_short_history_window() -> None:
    """GC runs under the readers too: a reader's pinned read point holds the writer's retention horizon."""
    for seed in range(2):
        config = SimConfig(seed=seed, replicas=3, history_window_s=2.0)
        result = run(config)
        print(describe(result))
        assert result.ok, hint(config) + "\n".join(result.violations)


def test_a_run_with_readers_replays_exactly() -> None:
    config = SimConfig(seed=3, replicas=1)
    assert simulate(config).digest == run(config).digest
    assert parse_replay(" ".join(replay_args(config))) == config


@pytest.mark.parametrize("mutation", ["reader-above-vdl", "promote-without-epoch"])
def test_deliberate_breaks_of_readers_and_promotion_are_caught(mutation: str) -> None:
    caught = []
    for seed in range(TEETH_SEEDS):
        result = run(SimConfig(seed=seed, replicas=2, mutation=mutation))
        if not result.ok:
            caught.append(seed)
            print(f"{mutation}: caught at seed {seed}: {result.violations[0]}")
            if len(caught) >= 2:
                break
    assert caught, f"{mutation} was not caught in {TEETH_SEEDS} seeds"
