"""Placement against a brute-force oracle.

"Spreading load" (storage/placement.py, rule 3): among all valid choices (six
distinct healthy, non-excluded nodes, two in each of three AZs) the chosen one
has the smallest total segment count, ties broken by the lexicographically
smallest sorted tuple of node ids. The oracle enumerates every valid choice of
small fleets and takes the minimum of exactly that key, computed here on its own.
"""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.errors import Unavailable
from sixfold.storage.placement import AZ_COUNT, NODES_PER_AZ, PG_SEGMENT_COUNT, Candidate, choose_pg_nodes
from tests.depth import examples

pytestmark = pytest.mark.unit

AZ_NAMES = ["a", "b", "c", "d"]


def oracle(candidates: list[Candidate], exclude: frozenset[str] = frozenset()) -> tuple[Candidate, ...] | None:
    """Every valid choice, by brute force; the one with the least (total load, sorted ids), or None."""
    eligible = [c for c in candidates if c.healthy and c.node_id not in exclude]
    by_az: dict[str, list[Candidate]] = {}
    for c in eligible:
        by_az.setdefault(c.az, []).append(c)
    best: tuple[tuple[int, tuple[str, ...]], tuple[Candidate, ...]] | None = None
    for azs in itertools.combinations(sorted(by_az), AZ_COUNT):
        pair_lists = [list(itertools.combinations(by_az[az], NODES_PER_AZ)) for az in azs]
        for pairs in itertools.product(*pair_lists):
            choice = tuple(c for pair in pairs for c in pair)
            key = (sum(c.segment_count for c in choice), tuple(sorted(c.node_id for c in choice)))
            if best is None or key < best[0]:
                best = (key, choice)
    return None if best is None else best[1]


def is_valid(chosen: list[Candidate], exclude: frozenset[str] = frozenset()) -> bool:
    per_az: dict[str, int] = {}
    for c in chosen:
        per_az[c.az] = per_az.get(c.az, 0) + 1
    return (
        len(chosen) == PG_SEGMENT_COUNT
        and len({c.node_id for c in chosen}) == PG_SEGMENT_COUNT
        and all(c.healthy and c.node_id not in exclude for c in chosen)
        and len(per_az) == AZ_COUNT
        and all(n == NODES_PER_AZ for n in per_az.values())
    )


@st.composite
def _fleets(
    draw: st.DrawFn, az_counts: st.SearchStrategy[int], node_counts: st.SearchStrategy[int], unhealthy_max: int
) -> list[Candidate]:
    per_az = [draw(node_counts) for _ in range(draw(az_counts))]
    ids = draw(
        st.lists(st.text("xyz0123", min_size=1, max_size=3), min_size=sum(per_az), max_size=sum(per_az), unique=True)
    )
    azs = [az for az, n in zip(AZ_NAMES, per_az) for _ in range(n)]
    unhealthy = draw(st.sets(st.sampled_from(ids), max_size=unhealthy_max)) if ids else set()
    loads = draw(st.lists(st.integers(min_value=0, max_value=3), min_size=len(ids), max_size=len(ids)))
    return [Candidate(node_id, az, load, node_id not in unhealthy) for node_id, az, load in zip(ids, azs, loads)]


def fleets() -> st.SearchStrategy[list[Candidate]]:
    """Up to 4 AZs of up to 4 nodes, few distinct loads (many ties), ids not grouped by AZ.

    Half are roomy (a PG usually fits, so the choice is checked), half arbitrary
    (often too small, so the Unavailable path is checked)."""
    roomy = _fleets(st.integers(3, 4), st.integers(2, 4), unhealthy_max=2)
    arbitrary = _fleets(st.integers(1, 4), st.integers(0, 4), unhealthy_max=16)
    return st.one_of(roomy, arbitrary)


@settings(max_examples=examples(400), deadline=None)
@given(fleets())
def test_choice_matches_oracle(fleet: list[Candidate]) -> None:
    expected = oracle(fleet)
    if expected is None:
        with pytest.raises(Unavailable):
            choose_pg_nodes(fleet)
        return
    chosen = choose_pg_nodes(fleet)
    assert is_valid(chosen)
    assert sorted(c.node_id for c in chosen) == sorted(c.node_id for c in expected)


@settings(max_examples=examples(200), deadline=None)
@given(fleets(), st.data())
def test_exclusion_matches_oracle(fleet: list[Candidate], data: st.DataObject) -> None:
    node_ids = [c.node_id for c in fleet]
    exclude = frozenset(data.draw(st.sets(st.sampled_from(node_ids), max_size=3))) if node_ids else frozenset()
    expected = oracle(fleet, exclude)
    if expected is None:
        with pytest.raises(Unavailable):
            choose_pg_nodes(fleet, exclude)
        return
    chosen = choose_pg_nodes(fleet, exclude)
    assert is_valid(chosen, exclude)
    assert sorted(c.node_id for c in chosen) == sorted(c.node_id for c in expected)


@settings(max_examples=examples(200), deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_choice_ignores_candidate_order(fleet: list[Candidate], rnd: random.Random) -> None:
    shuffled = list(fleet)
    rnd.shuffle(shuffled)
    try:
        first = choose_pg_nodes(fleet)
    except Unavailable:
        with pytest.raises(Unavailable):
            choose_pg_nodes(shuffled)
        return
    assert choose_pg_nodes(shuffled) == first


def test_repeated_placement_keeps_each_az_balanced() -> None:
    """Placing PG after PG on a fleet spreads segments evenly: within an AZ loads differ by at most 1."""
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rnd = random.Random(seed)
    nodes_per_az = {az: rnd.randint(2, 6) for az in "abc"}
    loads = {f"{az}{i}": 0 for az, n in nodes_per_az.items() for i in range(n)}
    for _ in range(rnd.randint(1, 200)):
        fleet = [Candidate(node_id, node_id[0], load) for node_id, load in loads.items()]
        for c in choose_pg_nodes(fleet):
            loads[c.node_id] += 1
    for az in "abc":
        az_loads = [load for node_id, load in loads.items() if node_id[0] == az]
        assert max(az_loads) - min(az_loads) <= 1, (seed, az, az_loads)


def test_tie_break_is_by_node_id() -> None:
    fleet = [Candidate(n, n[0], 0) for n in ["c2", "b3", "a3", "c1", "a1", "b1", "a2", "b2", "c3"]]
    assert [c.node_id for c in choose_pg_nodes(fleet)] == ["a1", "a2", "b1", "b2", "c1", "c2"]


def test_fewest_segments_first() -> None:
    fleet = [
        Candidate("a1", "a", 5),
        Candidate("a2", "a", 1),
        Candidate("a3", "a", 0),
        Candidate("b1", "b", 0),
        Candidate("b2", "b", 0),
        Candidate("c1", "c", 9),
        Candidate("c2", "c", 9),
        Candidate("c3", "c", 2),
    ]
    assert [c.node_id for c in choose_pg_nodes(fleet)] == ["a2", "a3", "b1", "b2", "c1", "c3"]


def test_least_loaded_azs_when_more_than_three() -> None:
    fleet = [Candidate(f"{az}{i}", az, load) for az, load in [("a", 3), ("b", 0), ("c", 1), ("d", 0)] for i in (1, 2)]
    assert sorted({c.az for c in choose_pg_nodes(fleet)}) == ["b", "c", "d"]


def test_unhealthy_nodes_are_skipped() -> None:
    fleet = [Candidate(f"{az}{i}", az, 0, healthy=(i != 1)) for az in "abc" for i in (1, 2, 3)]
    assert [c.node_id for c in choose_pg_nodes(fleet)] == ["a2", "a3", "b2", "b3", "c2", "c3"]


def test_unavailable_names_the_short_az() -> None:
    fleet = [
        Candidate("a1", "a", 0),
        Candidate("a2", "a", 0),
        Candidate("b1", "b", 0),
        Candidate("b2", "b", 0, healthy=False),
        Candidate("c1", "c", 0),
        Candidate("c2", "c", 0),
    ]
    with pytest.raises(Unavailable) as info:
        choose_pg_nodes(fleet)
    message = info.value.message
    assert "AZ b has only 1 healthy node" in message
    assert "a PG needs 2 healthy nodes per AZ in 3 AZs" in message
    assert "AZs that qualify: a, c" in message


def test_unavailable_with_two_azs_and_with_no_nodes() -> None:
    fleet = [Candidate(f"{az}{i}", az, 0) for az in "ab" for i in (1, 2, 3)]
    with pytest.raises(Unavailable, match=r"only 2 AZs \(a, b\) have any registered node"):
        choose_pg_nodes(fleet)
    with pytest.raises(Unavailable, match="no storage nodes are registered"):
        choose_pg_nodes([])
    all_down = [Candidate(f"{az}{i}", az, 0, healthy=False) for az in "abc" for i in (1, 2)]
    with pytest.raises(Unavailable, match="AZ a has no healthy node; AZ b has no healthy node"):
        choose_pg_nodes(all_down)


def test_placement_is_pure() -> None:
    import sixfold.storage.placement as module

    source = open(module.__file__).read()
    for forbidden in ("grpc", "lmdb", "time", "random", "threading"):
        assert f"import {forbidden}" not in source and f"from {forbidden}" not in source, forbidden
