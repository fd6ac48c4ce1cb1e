"""The deterministic simulator: seeds pass within the design's fault budget, replay exactly, and the
simulator catches deliberate protocol breaks."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from sixfold.tools.sim.harness import FAULT_BUDGET, SimConfig, SimResult, simulate
from sixfold.tools.sim.network import NetConfig
from sixfold.tools.sim_cli import FAULT_MODES, parse_replay, replay_args

pytestmark = pytest.mark.sim

SEEDS_WITHIN = range(8)
SEEDS_BEYOND = range(100, 104)
SEEDS_AZ_PLUS_ONE = range(4)
# A deliberate break must be caught within this many seeds (each stated in the test below).
TEETH_SEEDS = 20
REGRESSIONS = Path(__file__).with_name("sim_regressions.txt")


@pytest.fixture(autouse=True)
def quiet_logs() -> None:
    logging.getLogger("sixfold").setLevel(logging.CRITICAL)


def replay_hint(config: SimConfig) -> str:
    return f"replay with: sixfold sim {' '.join(replay_args(config))} --events\n"


def describe(result) -> str:
    return (
        f"seed {result.seed}: {result.ops}, {result.virtual_s:.1f} virtual s, digest {result.digest}; "
        f"violations: {result.violations}"
    )


_results: dict[tuple[str, ...], SimResult] = {}


def run(config: SimConfig) -> SimResult:
    """`simulate`, once per config in this session (a seed replays exactly, so a second run would add nothing)."""
    key = tuple(replay_args(config))
    if key not in _results:
        _results[key] = simulate(config)
    return _results[key]


@pytest.mark.parametrize("seed", SEEDS_WITHIN)
def test_seed_within_the_fault_budget_keeps_every_invariant(seed: int) -> None:
    config = SimConfig(seed=seed)
    result = run(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and result.ops["read_ok"] > 0
    assert result.ops["nodes_down_max"] <= 2, describe(result)  # "within" stays within
    assert result.ops["open_failed"] == 0, describe(result)  # within the budget every writer opens


def test_rot_hits_records_and_page_versions_several_times_a_run_and_is_found() -> None:
    """A rotten copy is never served (every read is checked against the model) and a full scrub pass after
    healing finds every one still stored; page versions rot too, and a run may rot more than once."""
    results = [run(SimConfig(seed=seed)) for seed in SEEDS_WITHIN]
    assert all(r.ok for r in results), [describe(r) for r in results if not r.ok]
    assert sum(r.ops["rot_versions"] for r in results) > 0 and sum(r.ops["rot_records"] for r in results) > 0
    assert any(r.ops["rot_records"] + r.ops["rot_versions"] > 1 for r in results)


@pytest.mark.parametrize("seed", range(6))
def test_with_a_short_history_window_gc_and_hydration_keep_every_invariant(seed: int) -> None:
    """Coalescing, GC and hydration from page versions run under the same faults (a record folded at or
    below a segment's GC floor counts as held there; every read is still checked against the model)."""
    config = SimConfig(seed=seed, history_window_s=2.0)
    result = simulate(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and result.ops["read_ok"] > 0


@pytest.mark.parametrize("seed", SEEDS_BEYOND)
def test_beyond_the_fault_budget_the_system_refuses_rather_than_lies(seed: int) -> None:
    """Three, then four nodes really are down at once while clients write and read: writes are refused (an
    acknowledged one must be on a true write quorum, checked at the acknowledgement), and after healing every
    final check passes."""
    config = SimConfig(seed=seed, faults="beyond")
    result = run(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["outages"] == 1 and result.ops["nodes_down_max"] >= 4, describe(result)
    assert result.ops["write_refused_over_2_down"] > 0, describe(result)


@pytest.mark.parametrize("seed", SEEDS_AZ_PLUS_ONE)
def test_with_one_az_and_one_more_node_down_reads_still_succeed(seed: int) -> None:
    """The design's read claim: one whole AZ plus one more node down (three of six), reads still succeed (a read
    that fails from start to end of that stretch is a violation; during it every read goes to the segments);
    writes meanwhile are refused or acknowledged only on a true write quorum."""
    config = SimConfig(seed=seed, faults="az-plus-one")
    result = simulate(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["outages"] == 1 and result.ops["nodes_down_max"] == 3, describe(result)
    assert result.ops["read_ok_over_2_down"] > 0 and result.ops["read_failed_over_2_down"] == 0, describe(result)
    assert result.ops["open_failed"] == 0, describe(result)  # a writer opened with at most two down opens


def test_integrity_faults_hit_every_run_kind_and_every_invariant_holds() -> None:
    """Metadata rot (flipped and forged copies), hostile epoch raises, corrupt trees and dropped copies are
    among the faults within the budget: over the within seeds each happens, and every check passed (a
    segment's SCL never claims a record it lacks; a writer is open again within the bound)."""
    from sixfold.tools.sim.integrity import WRITER_GAP_MAX_S

    results = [run(SimConfig(seed=seed)) for seed in SEEDS_WITHIN]
    assert all(r.ok for r in results), [describe(r) for r in results if not r.ok]
    for fault in ("meta_rot", "hostile_epochs", "tree_rot"):
        assert sum(r.ops[fault] for r in results) > 0, fault
    assert max(r.ops["writer_gap_ms_max"] for r in results) <= WRITER_GAP_MAX_S * 1000
    dropped = [simulate(SimConfig(seed=seed, replace=True)) for seed in (0, 1)]
    assert all(r.ok for r in dropped) and sum(r.ops["segments_dropped"] for r in dropped) > 0


@pytest.mark.parametrize("seed", [777232, 777648])
def test_a_failing_opener_or_a_crashed_writer_leaves_the_volume_without_a_writer_only_briefly(seed: int) -> None:
    """Regressions (issue 10): these seeds left the volume with no open writer for 36-45 virtual s (an opener
    that failed fenced the running writer first; or the previous writer crashed). They replay with the fault
    menu they were found with (`classic_faults`: the integrity faults added since would draw another
    schedule); the faults react to the writers, so once the fixed writer behaves differently the runs part
    from the old ones. Every open must succeed within the budget, a writer be open again within
    WRITER_GAP_MAX_S (the harness's supervisor), and a writer that declares itself fenced be right."""
    config = SimConfig(seed=seed, classic_faults=True)
    result = simulate(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["open_failed"] == 0, describe(result)


def test_the_old_fencing_rule_fails_the_first_regression_seed() -> None:
    """Teeth for the seeds above: the writer as it was (fenced by any segment's newer epoch, with no judgement
    and no regain) is caught on seed 777232, with the same fault menu."""
    config = SimConfig(seed=777232, classic_faults=True, mutation="fence-on-refusal")
    result = simulate(config)
    print(describe(result))
    assert not result.ok and "declared itself fenced" in result.violations[0], describe(result)


@pytest.mark.parametrize("seed,faults", [(1, "az-plus-one"), (21033, "within")])
def test_recovery_opens_within_the_budget(seed: int, faults: str) -> None:
    """Regressions: a writer opened with at most two nodes down must open.
    - az-plus-one seed 1: a node that caught up through gossip acknowledged nothing new, so the recovering
      writer, waiting for the records up to VDL to reach write quorum again, never counted it and could not
      open for 30 s. Recovery now asks segments for their SCLs while it waits.
    - within seed 21033: one lost TruncateSegment made an attempt fail, and all five attempts did. Each
      recovery step now asks the segments that did not answer again for a while."""
    config = SimConfig(seed=seed, faults=faults)
    result = simulate(config)
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["open_failed"] == 0, describe(result)


def test_a_seed_replays_exactly() -> None:
    first = run(SimConfig(seed=7))  # the within test's run, if it ran already
    second = simulate(SimConfig(seed=7))
    print(describe(first))
    assert first.events == second.events and first.digest == second.digest
    assert simulate(SimConfig(seed=8)).digest != first.digest
    outage = SimConfig(seed=SEEDS_BEYOND[0], faults="beyond")  # the seeded outage replays too
    assert run(outage).events == simulate(outage).events


@pytest.mark.parametrize(
    "mutation", ["ack-at-3", "skip-truncation", "read-past-vdl", "trust-stored-scl", "fence-on-refusal"]
)
def test_the_simulator_catches_a_deliberate_protocol_break(mutation: str) -> None:
    for seed in range(TEETH_SEEDS):
        result = simulate(SimConfig(seed=seed, mutation=mutation))
        if not result.ok:
            print(f"{mutation}: caught at seed {seed}: {result.violations[0]}")
            return
    pytest.fail(f"{mutation} went unnoticed for {TEETH_SEEDS} seeds")


SEEDS_REPLACE = range(4)


@pytest.mark.parametrize("seed, history_window_s", [(seed, 300.0) for seed in SEEDS_REPLACE] + [(0, 2.0), (1, 2.0)])
def test_with_segment_replacement_the_control_plane_heals_and_every_invariant_holds(
    seed: int, history_window_s: float
) -> None:
    """The real control plane runs in the simulation with a spare node per AZ: nodes fail for good and
    come back mid-change; a replacement's target must cover every acknowledged record, a completed new
    segment must hold them, and after the final heal every PG has six segments and no change in flight."""
    config = SimConfig(seed=seed, replace=True, history_window_s=history_window_s)
    result = simulate(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)
    assert result.ops["write_ok"] > 0 and result.ops["read_ok"] > 0


def test_segment_replacement_runs_replay_exactly_and_replace_something() -> None:
    first = simulate(SimConfig(seed=3, replace=True))
    assert first.events == simulate(SimConfig(seed=3, replace=True)).events
    assert first.ops["replace_completed"] > 0, describe(first)


@pytest.mark.parametrize("mutation", ["replace-target-0", "replace-skip-hydration"])
def test_the_simulator_catches_a_broken_replacement(mutation: str) -> None:
    for seed in range(TEETH_SEEDS):
        result = simulate(SimConfig(seed=seed, mutation=mutation, replace=True))
        if not result.ok:
            print(f"{mutation}: caught at seed {seed}: {result.violations[0]}")
            return
    pytest.fail(f"{mutation} went unnoticed for {TEETH_SEEDS} seeds")


def regression_cases() -> list[SimConfig]:
    cases = []
    if REGRESSIONS.exists():
        for line in REGRESSIONS.read_text().splitlines():
            if line.split("#", 1)[0].strip():
                cases.append(parse_replay(line))
    return cases


@pytest.mark.parametrize(
    "config",
    regression_cases() or [pytest.param(None, marks=pytest.mark.skip(reason="no regression seeds recorded yet"))],
    ids=lambda config: " ".join(replay_args(config)) if config is not None else "none",
)
def test_recorded_regression_seeds_stay_fixed(config: SimConfig) -> None:
    result = simulate(config)
    print(describe(result))
    assert result.ok, replay_hint(config) + "\n".join(result.violations)


def test_a_replay_line_carries_every_setting_that_differs_from_the_default() -> None:
    """The replay hint, the --failures-file line and tests/sim_regressions.txt use the same arguments: a config
    with every field changed comes back whole, and the older `SEED FAULTS MUTATION [replace]` lines still read."""
    changed = SimConfig(
        seed=12,
        clients=5,
        ops_per_client=7,
        pgs=3,
        pages_per_pg=8,
        duration_s=12.5,
        faults="beyond",
        mutation="ack-at-3",
        history_window_s=2.0,
        replace=True,
        classic_faults=True,
        time_travel=True,
        replicas=2,
        clear_at_rest=True,
        net=NetConfig(**{f.name: getattr(NetConfig(), f.name) + 0.125 for f in dataclasses.fields(NetConfig)}),
    )
    for f in dataclasses.fields(SimConfig):
        assert getattr(changed, f.name) != getattr(SimConfig(seed=0), f.name) or f.name == "seed", f.name
    assert parse_replay(" ".join(replay_args(changed)) + "  # a comment") == changed
    assert replay_args(SimConfig(seed=3)) == ["--seed", "3", "--faults", "within"]
    assert set(FAULT_MODES) == set(FAULT_BUDGET)
    assert parse_replay("5 within - replace  # old") == SimConfig(seed=5, replace=True)
    assert parse_replay("9 beyond ack-at-3") == SimConfig(seed=9, faults="beyond", mutation="ack-at-3")
    assert parse_replay("7") == SimConfig(seed=7)
    assert parse_replay("4 within - --history-window-s 2") == SimConfig(seed=4, history_window_s=2.0)
