"""The judge of "no write acknowledged without a quorum" (kill-az-plus-one, kill-four), on finished
runs made by hand: the client's records, the marks and the fault log, no processes.
"""

from __future__ import annotations

import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from sixfold.tools.chaos.fault_log import FaultEvent, FaultLog
from sixfold.tools.chaos.faults import Nemesis
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE
from sixfold.tools.chaos.scenario_base import Context, Criterion, Timing, ops
from sixfold.tools.chaos.scenarios import SCENARIOS
from sixfold.tools.chaos.scenarios_crash import quorum_possible_again
from sixfold.tools.chaos.workload import OpRecord
from sixfold.tools.cluster import Cluster

pytestmark = pytest.mark.unit

FAULT, HEAL = 10.0, 16.0  # the "fault" mark (every victim dead) and the "heal_start" mark


def write_op(token: str, invoked: float, completed: float, outcome: str = OK) -> OpRecord:
    code = {OK: "OK", FAIL: "UNAVAILABLE", INFO: "DEADLINE_EXCEEDED"}[outcome]
    return OpRecord(WRITE, (0,), token, (), invoked, completed, outcome, code, "", "compute")


def read_op(invoked: float, completed: float) -> OpRecord:
    return OpRecord(READ, (0,), None, ("p0-1",), invoked, completed, OK, "OK", "", "compute", from_storage=True)


def refusals(start: float = FAULT + 0.1, end: float = HEAL - 1.0) -> list[OpRecord]:
    """Writes the writer refused after its 1 s wait for a quorum, one after another, while the nodes were down."""
    out, t, n = [], start, 0
    while t + 1.0 <= end:
        n += 1
        out.append(write_op(f"p1-{n}", t, t + 1.0, FAIL))
        t += 1.05
    return out


@pytest.fixture
def idle_cluster(tmp_path: Path) -> Cluster:
    """A cluster that is never started: the judge reads only the nemesis's fault log."""
    return Cluster(tmp_path / "cluster")


def no_quorum_context(
    cluster: Cluster, records: list[OpRecord], victims: list[str], restarts: list[tuple[str, float]] | None = None
) -> Context:
    """A finished run as the scenario's judge sees it: marks, victims, the client's records and the fault
    log (kills before the fault mark; `restarts` = (node, time the nemesis began to start it)); no processes."""
    log = FaultLog()
    for i, node in enumerate(victims):
        at = FAULT - 0.1 * (len(victims) - i)
        log.add(FaultEvent("kill", node, at, at + 0.05, "SIGKILL"))
    for node, at in restarts or []:
        log.add(FaultEvent("start", node, at, at + 0.3, "same port and data"))
    return Context(
        name="synthetic",
        rng=random.Random(0),
        cluster=cluster,
        nemesis=Nemesis(cluster, log),
        workload=SimpleNamespace(records=records, origin=0.0),  # Context.workload is Any: what the judge reads
        timing=Timing(2.0, 6.0, 3.0),
        out_dir=None,
        marks={"load_start": 7.0, "fault_start": 8.0, "fault": FAULT, "heal_start": HEAL, "healed": HEAL + 1.5},
        data={"victims": victims},
    )


AZ_PLUS_ONE = ["a1", "a2", "b1"]


def criterion(ctx: Context, name: str) -> Criterion:
    """One criterion of the scenario's own judge (kill-az-plus-one for three victims, kill-four otherwise)."""
    scenario = "kill-az-plus-one" if len(ctx.data["victims"]) == 3 else "kill-four"
    return next(c for c in SCENARIOS[scenario].judge(ctx) if c.name == name)


NO_FALSE_ACK = "no write acknowledged without a quorum"


def test_no_quorum_write_invoked_before_heal_acknowledged_after_it_is_no_false_ack(idle_cluster: Cluster) -> None:
    # The flaky runs (seeds 424242, 424243 on a busy machine): writes invoked < 0.6 s before the heal,
    # acknowledged once the first victim was back. The old criterion (any ok write *invoked* between the
    # fault and the heal) failed this run; nothing in it shows an acknowledgement without a quorum.
    records = [
        write_op("p0-1", FAULT - 0.3, FAULT + 0.2),  # invoked before the kills were over: not judged
        *refusals(),
        write_op("p2-1", HEAL - 0.9, HEAL - 0.05, INFO),  # in doubt while the nodes were down: fine
        write_op("p3-1", HEAL - 0.55, HEAL + 0.9),  # waited for its streams, allocated after the restart
        write_op("p4-1", HEAL - 0.2, HEAL + 1.2),
        write_op("p5-1", HEAL + 2.0, HEAL + 2.01),
        read_op(FAULT + 1.0, FAULT + 1.01),
    ]
    restarts = [("a1", HEAL + 0.01), ("a2", HEAL + 0.4), ("b1", HEAL + 0.8)]
    ctx = no_quorum_context(idle_cluster, records, AZ_PLUS_ONE, restarts)
    assert quorum_possible_again(ctx)[0] == HEAL + 0.01
    verdict = criterion(ctx, NO_FALSE_ACK)
    assert verdict.ok is True, verdict.detail
    assert "0 acknowledged, 4 refused, 1 unknown" in verdict.detail
    assert "not judged: 2 invoked before then and answered after it (2 acknowledged" in verdict.detail
    # What the old criterion counted: ok writes invoked within [fault, heal_start].
    assert len(ops(ctx, "write", "ok", invoked_from=FAULT, invoked_to=HEAL)) == 2


def test_no_quorum_ack_completed_while_the_nodes_were_down_is_flagged(idle_cluster: Cluster) -> None:
    ctx = no_quorum_context(
        idle_cluster,
        [*refusals(), write_op("p3-1", FAULT + 2.0, FAULT + 2.3)],
        AZ_PLUS_ONE,
        [("a1", HEAL + 0.01), ("a2", HEAL + 0.4), ("b1", HEAL + 0.8)],
    )
    verdict = criterion(ctx, NO_FALSE_ACK)
    assert verdict.ok is False
    assert "1 acknowledged" in verdict.detail and "'p3-1'" in verdict.detail
    # Also an ack just before the heal began, of a write invoked while the nodes were down.
    ctx = no_quorum_context(
        idle_cluster, [*refusals(), write_op("p3-1", HEAL - 0.6, HEAL - 0.01)], AZ_PLUS_ONE, [("a1", HEAL + 0.01)]
    )
    assert criterion(ctx, NO_FALSE_ACK).ok is False


def test_no_quorum_ack_after_the_heal_began_but_before_enough_victims_restarted_is_flagged(
    idle_cluster: Cluster,
) -> None:
    # kill-four with five victims: a quorum needs three of them back. An ack after the heal began but
    # before the third restart began is still one without a quorum; one after it is not judged.
    victims = ["a1", "a2", "b1", "b2", "c1"]
    restarts = [("a1", HEAL + 0.01), ("a2", HEAL + 0.5), ("b1", HEAL + 1.0), ("b2", HEAL + 1.5), ("c1", HEAL + 2.0)]
    early = no_quorum_context(idle_cluster, [*refusals(), write_op("p3-1", HEAL - 0.3, HEAL + 0.7)], victims, restarts)
    q, how = quorum_possible_again(early)
    assert q == HEAL + 1.0 and "3 needed of 5 victims" in how
    assert criterion(early, "unavailable meanwhile").ok is False
    late = no_quorum_context(idle_cluster, [*refusals(), write_op("p3-1", HEAL - 0.3, HEAL + 1.1)], victims, restarts)
    assert criterion(late, "unavailable meanwhile").ok is True


def test_no_quorum_without_restarts_in_the_fault_log_uses_the_heal_start(idle_cluster: Cluster) -> None:
    before = no_quorum_context(idle_cluster, [*refusals(), write_op("p3-1", HEAL - 0.5, HEAL - 0.1)], AZ_PLUS_ONE)
    after = no_quorum_context(idle_cluster, [*refusals(), write_op("p3-1", HEAL - 0.5, HEAL + 0.1)], AZ_PLUS_ONE)
    assert quorum_possible_again(before)[0] == HEAL
    assert criterion(before, NO_FALSE_ACK).ok is False
    assert criterion(after, NO_FALSE_ACK).ok is True


def test_no_quorum_does_not_pass_vacuously(idle_cluster: Cluster) -> None:
    restarts = [("a1", HEAL + 0.01)]
    # No write answered while the nodes were down (the writer hung, or no client wrote): nothing was shown.
    hung = no_quorum_context(
        idle_cluster,
        [write_op("p3-1", FAULT + 0.5, HEAL + 0.5, INFO), read_op(FAULT + 1, FAULT + 1.01)],
        AZ_PLUS_ONE,
        restarts,
    )
    verdict = criterion(hung, NO_FALSE_ACK)
    assert verdict.ok is None and "nothing to judge" in verdict.detail  # reported, never a pass
    # Two victims never stop a quorum: this judge cannot say anything about such a run.
    two = no_quorum_context(idle_cluster, refusals(), ["a1", "a2"], restarts)
    assert criterion(two, "unavailable meanwhile").ok is None
