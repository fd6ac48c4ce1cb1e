"""storage/replacement.py against brute-force oracles: which segment is replaced and by which node
(rules 1-3), the target LSN (rule 6) and reaching it (rule 7), the membership transitions (rule 4);
and storage/quorum.py as the one owner of the quorum constants."""

from __future__ import annotations

import ast
import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage import quorum
from sixfold.storage.control_plane_values import MembershipChange, ProtectionGroup, segment_id_for
from sixfold.storage.replacement import (
    HeldLsns,
    NodeState,
    Replacement,
    begin,
    choose_replacements,
    complete,
    measure_target,
    reached_target,
    roll_back,
    with_target,
)
from tests.depth import examples

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
AZS = ["a", "b", "c", "d"]
HEALTHY, UNHEALTHY, FAILED = "healthy", "unhealthy", "failed"  # failed implies unhealthy (failure >= heartbeat)


# ---------------------------------------------------------------------------
# Rules 1-3: the oracle tries every (old, new) pair of every PG


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[tuple[str, ProtectionGroup]], dict[str, NodeState], set[tuple[str, str]]]:
    """3-4 AZs of 2-4 nodes; 1-3 PGs, each two nodes per AZ in three AZs with up to two changes in flight
    (a change's new node is in its old node's AZ); some orphans; every node healthy, unhealthy or failed."""
    azs = AZS[: draw(st.integers(3, 4))]
    names = {az: [f"{az}{i}" for i in range(1, draw(st.integers(2, 4)) + 1)] for az in azs}
    nodes = {
        n: NodeState(n, az, draw(st.integers(0, 4)), *_health(draw(st.sampled_from([HEALTHY, UNHEALTHY, FAILED]))))
        for az in azs
        for n in names[az]
    }
    pgs = []
    for index in range(draw(st.integers(1, 3))):
        pg_azs = draw(st.permutations(azs))[:3]
        base = [n for az in pg_azs for n in draw(st.permutations(names[az]))[:2]]
        pg = ProtectionGroup(index, 0, 1, 1, tuple(draw(st.permutations(base))))
        for old in draw(st.lists(st.sampled_from(base), unique=True, max_size=2)):
            free = [n for n in names[nodes[old].az] if n not in pg.all_node_ids]
            if free:
                pg = ProtectionGroup(
                    index, 0, 1, pg.membership_epoch + 1, pg.node_ids, (*pg.changes, MembershipChange(old, free[0]))
                )
        pgs.append((draw(st.sampled_from(["v", "w"])), pg))
    segments = [segment_id_for(volume_id, pg.pg_index) for volume_id, pg in pgs]
    orphans = draw(st.sets(st.tuples(st.sampled_from(sorted(nodes)), st.sampled_from(segments)), max_size=4))
    return pgs, nodes, orphans


def _health(kind: str) -> tuple[bool, bool]:
    return kind == HEALTHY, kind == FAILED


def oracle(
    pgs: list[tuple[str, ProtectionGroup]], nodes: dict[str, NodeState], orphans: set[tuple[str, str]]
) -> list[Replacement]:
    """Every (old, new) pair that satisfies rules 1-2, by brute force; per PG the least by (old's place in the
    base set, new's load counting this round's earlier choices, new's id)."""
    planned: Counter[str] = Counter()
    chosen = []
    for volume_id, pg in pgs:
        if len(pg.changes) >= quorum.MEMBERSHIP_CHANGES_MAX:
            continue
        segment_id = segment_id_for(volume_id, pg.pg_index)
        holding = set(pg.node_ids) | {c.new_node_id for c in pg.changes}
        replaced = {c.old_node_id for c in pg.changes}
        pairs = [
            ((place, new.segment_count + planned[new.node_id], new.node_id), old, new.node_id)
            for (place, old), new in itertools.product(enumerate(pg.node_ids), nodes.values())
            if nodes[old].failed
            and old not in replaced
            and new.az == nodes[old].az
            and new.healthy
            and new.node_id not in holding
            and (new.node_id, segment_id) not in orphans
        ]
        if pairs:
            _, old, new_id = min(pairs)
            planned[new_id] += 1
            chosen.append(Replacement(volume_id, pg.pg_index, old, new_id))
    return chosen


@settings(max_examples=examples(300))
@given(fleets())
def test_replacements_match_the_oracle(fleet: tuple[list, dict[str, NodeState], set[tuple[str, str]]]) -> None:
    pgs, nodes, orphans = fleet
    assert choose_replacements(pgs, nodes, orphans) == oracle(pgs, nodes, orphans)


@settings(max_examples=examples(300))
@given(fleets())
def test_every_replacement_keeps_the_placement_invariants(
    fleet: tuple[list, dict[str, NodeState], set[tuple[str, str]]],
) -> None:
    """Checked on the result alone: same AZ, a healthy node new to the PG, a failed old one; one change per PG;
    the PG with the change begun still has two segments per AZ in its base set and every quorum set."""
    pgs, nodes, orphans = fleet
    by_key = {(v, pg.pg_index): pg for v, pg in pgs}
    chosen = choose_replacements(pgs, nodes, orphans)
    assert len({(r.volume_id, r.pg_index) for r in chosen}) == len(chosen), "one change per PG per round"
    for r in chosen:
        pg = by_key[(r.volume_id, r.pg_index)]
        old, new = nodes[r.old_node_id], nodes[r.new_node_id]
        assert old.failed and r.old_node_id in pg.node_ids and new.healthy and new.az == old.az
        assert (r.new_node_id, segment_id_for(r.volume_id, r.pg_index)) not in orphans
        begun = begin(pg, r.old_node_id, r.new_node_id)
        assert begun.membership_epoch == pg.membership_epoch + 1
        for members in _quorum_sets(begun):
            assert sorted(Counter(nodes[n].az for n in members).values()) == [quorum.NODES_PER_AZ] * quorum.AZ_COUNT


def _quorum_sets(pg: ProtectionGroup) -> list[set[str]]:
    sets = [set(pg.node_ids)]
    for change in pg.changes:
        sets += [(s - {change.old_node_id}) | {change.new_node_id} for s in sets]
    return sets


# ---------------------------------------------------------------------------
# Rule 4: transitions


@given(st.permutations([f"{az}{i}" for az in "abc" for i in (1, 2)]), st.integers(0, 1000))
def test_begin_then_complete_or_roll_back(base: list[str], target: int) -> None:
    pg = ProtectionGroup(0, 0, 1, 7, tuple(base))
    old = base[0]
    begun = with_target(begin(pg, old, "spare"), old, target)
    completed, change = complete(begun, old)
    assert change == MembershipChange(old, "spare", target)
    assert completed.membership_epoch == 9 and completed.changes == ()
    assert completed.node_ids == tuple("spare" if n == old else n for n in base)
    rolled_back, _ = roll_back(begun, old)
    assert rolled_back.membership_epoch == 9 and rolled_back.node_ids == pg.node_ids and rolled_back.changes == ()


# ---------------------------------------------------------------------------
# Rules 6-7: the target and reaching it

BASE = ("a1", "a2", "b1", "b2", "c1", "c2")


@given(
    st.dictionaries(
        st.sampled_from([*BASE, "a3", "b3"]),
        st.tuples(st.integers(0, 100), st.integers(0, 100)).map(lambda t: HeldLsns(*t)),
    )
)
def test_the_target_matches_the_oracle(installed: dict[str, HeldLsns]) -> None:
    measured = measure_target(BASE, installed)
    holding = [installed[n] for n in BASE if n in installed]
    assert measured.holding == len(holding)
    # Fenced: the base segments without the epoch are too few for a write quorum of the older one.
    fenced = quorum.COPIES - len(holding) < quorum.WRITE_QUORUM
    expected = max((max(h.scl, h.scl_high_water) for h in holding), default=0) if fenced else None
    assert measured.target_lsn == expected


ranges = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 12)).map(lambda t: (t[0], t[0] + t[1])), max_size=4)


@given(st.integers(0, 30), ranges, st.integers(0, 45))
def test_reaching_the_target_matches_the_oracle(scl: int, truncations: list[tuple[int, int]], target: int) -> None:
    every_lsn_covered = all(any(a <= lsn <= b for a, b in truncations) for lsn in range(scl + 1, target + 1))
    assert reached_target(scl, truncations, target) == every_lsn_covered


# ---------------------------------------------------------------------------
# storage/quorum.py: the numbers and their one owner

QUORUM_NAMES = {
    "COPIES",
    "WRITE_QUORUM",
    "READ_QUORUM",
    "AZ_COUNT",
    "NODES_PER_AZ",
    "PG_SEGMENT_COUNT",
    "MEMBERSHIP_CHANGES_MAX",
    "CHANGES_MAX",
    "FENCING_SEGMENTS_MIN",
}


def test_the_quorum_constants() -> None:
    assert (quorum.COPIES, quorum.WRITE_QUORUM, quorum.READ_QUORUM) == (6, 4, 3)
    assert (quorum.AZ_COUNT, quorum.NODES_PER_AZ, quorum.MEMBERSHIP_CHANGES_MAX, quorum.FENCING_SEGMENTS_MIN) == (
        3,
        2,
        2,
        3,
    )
    # The fencing minimum is the least number of base segments that leaves the older epoch no write quorum.
    fences = [k for k in range(quorum.COPIES + 1) if quorum.COPIES - k < quorum.WRITE_QUORUM]
    assert min(fences) == quorum.FENCING_SEGMENTS_MIN


def test_no_module_but_storage_quorum_defines_a_quorum_constant() -> None:
    """One owner: elsewhere they are imported (`from sixfold.storage.quorum import ...`), never assigned."""
    owners = []
    for folder in ("storage", "compute", "tools"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                if isinstance(node, ast.AnnAssign):
                    targets = [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                owners += [f"{path.relative_to(REPO)}: {name}" for name in sorted(names & QUORUM_NAMES)]
    assert owners == [f"storage/quorum.py: {name}" for name in _assigned_in_storage_quorum()], owners


def _assigned_in_storage_quorum() -> list[str]:
    tree = ast.parse((REPO / "storage" / "quorum.py").read_text())
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]
