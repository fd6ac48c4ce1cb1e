"""The deterministic simulator: seeds pass within the design's fault budget, replay exactly, and the
simulator catches deliberate protocol breaks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tools.sim.harness import SimConfig, simulate

SEEDS_WITHIN = range(0, 8)
SEEDS_BEYOND = range(100, 104)
# A deliberate break must be caught within this many seeds (each stated in the test below).
TEETH_SEEDS = 20
REGRESSIONS = Path(__file__).with_name("sim_regressions.txt")


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    logging.getLogger("compute").setLevel(logging.CRITICAL)
    logging.getLogger("storage").setLevel(logging.CRITICAL)


def describe(result) -> str:  # type: ignore[no-untyped-def]
    return (f"seed {result.seed}: {result.ops}, {result.virtual_s:.1f} virtual s, digest {result.digest}; "
            f"violations: {result.violations}")


@pytest.mark.parametrize("seed", SEEDS_WITHIN)
def test_seed_within_the_fault_budget_keeps_every_invariant(seed: int) -> None:
    result = simulate(SimConfig(seed=seed))
    print(describe(result))
    assert result.ok, f"replay with: sixfold sim --seed {seed} --events\n" + "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and result.ops["read_ok"] > 0


@pytest.mark.parametrize("seed", range(0, 6))
def test_with_a_short_history_window_gc_and_hydration_keep_every_invariant(seed: int) -> None:
    """Coalescing, GC and hydration from page versions run under the same faults (a record folded at or
    below a segment's GC floor counts as held there; every read is still checked against the model)."""
    result = simulate(SimConfig(seed=seed, history_window_s=2.0))
    print(describe(result))
    assert result.ok, "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and result.ops["read_ok"] > 0


@pytest.mark.parametrize("seed", SEEDS_BEYOND)
def test_beyond_the_fault_budget_the_system_refuses_rather_than_lies(seed: int) -> None:
    result = simulate(SimConfig(seed=seed, faults="beyond"))
    print(describe(result))
    assert result.ok, f"replay with: sixfold sim --seed {seed} --faults beyond --events\n" + "\n".join(result.violations)


def test_a_seed_replays_exactly() -> None:
    first = simulate(SimConfig(seed=7))
    second = simulate(SimConfig(seed=7))
    print(describe(first))
    assert first.events == second.events and first.digest == second.digest
    assert simulate(SimConfig(seed=8)).digest != first.digest


@pytest.mark.parametrize("mutation", ["ack-at-3", "skip-truncation", "read-past-vdl"])
def test_the_simulator_catches_a_deliberate_protocol_break(mutation: str) -> None:
    for seed in range(TEETH_SEEDS):
        result = simulate(SimConfig(seed=seed, mutation=mutation))
        if not result.ok:
            print(f"{mutation}: caught at seed {seed}: {result.violations[0]}")
            return
    pytest.fail(f"{mutation} went unnoticed for {TEETH_SEEDS} seeds")


def regression_cases() -> list[tuple[int, str, str | None]]:
    cases = []
    if REGRESSIONS.exists():
        for line in REGRESSIONS.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                seed, faults, mutation = (line.split() + ["within", "-"])[:3]
                cases.append((int(seed), faults, None if mutation == "-" else mutation))
    return cases


@pytest.mark.parametrize("seed, faults, mutation", regression_cases() or [pytest.param(0, "within", None, marks=pytest.mark.skip(reason="no regression seeds recorded yet"))])
def test_recorded_regression_seeds_stay_fixed(seed: int, faults: str, mutation: str | None) -> None:
    result = simulate(SimConfig(seed=seed, faults=faults, mutation=mutation))
    print(describe(result))
    assert result.ok, "\n".join(result.violations)
