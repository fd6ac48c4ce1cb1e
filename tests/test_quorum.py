"""Quorum maths (compute/quorum.py) against deliberately naive brute-force oracles.

Membership is one quorum set of six segments, or two during a change
(ABCDEF -> ABCDEF and ABCDEG -> ABCDEG, [P18] §4.1). Write quorum = 4 of EVERY
set, read quorum = 3 of ANY set; PGCL = the highest LSN L such that every set
has 4 members with SCL >= L.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain, combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.compute.quorum import COPIES, READ_QUORUM, WRITE_QUORUM, Membership
from tests.depth import examples

pytestmark = pytest.mark.unit

POOL = "ABCDEFGHIJ"
ABCDEF = "ABCDEF"
ABCDEG = "ABCDEG"


# -- oracles ------------------------------------------------------------------------


def has_subset_of_size(members: Iterable[str], present: set[str], size: int) -> bool:
    """Some `size`-subset of `members` lies wholly inside `present` (enumerated, not counted)."""
    return any(set(subset) <= present for subset in combinations(sorted(members), size))


def write_quorum_oracle(sets: list[frozenset[str]], acked: set[str]) -> bool:
    return all(has_subset_of_size(s, acked, 4) for s in sets)


def read_quorum_oracle(sets: list[frozenset[str]], answered: set[str]) -> bool:
    return any(has_subset_of_size(s, answered, 3) for s in sets)


def pgcl_oracle(sets: list[frozenset[str]], scl_of: Mapping[str, int]) -> int:
    """Try every candidate L (0 and every SCL value); keep those that 4 members of every set reach."""
    best = 0
    for candidate in {0, *scl_of.values()}:
        if all(sum(1 for m in s if scl_of.get(m, 0) >= candidate) >= 4 for s in sets):
            best = max(best, candidate)
    return best


def all_subsets(items: Iterable[str]) -> list[set[str]]:
    items = sorted(items)
    return [set(c) for c in chain.from_iterable(combinations(items, k) for k in range(len(items) + 1))]


# -- strategies ---------------------------------------------------------------------


@st.composite
def memberships(draw: st.DrawFn) -> list[frozenset[str]]:
    """One set of six, or two: the first and the first with one member replaced by a newcomer."""
    first = draw(st.lists(st.sampled_from(POOL), min_size=6, max_size=6, unique=True))
    sets = [frozenset(first)]
    if draw(st.booleans()):
        leaving = draw(st.sampled_from(first))
        joining = draw(st.sampled_from([s for s in POOL if s not in first]))
        second = (sets[0] - {leaving}) | {joining}
        sets.append(frozenset(second))
        if draw(st.booleans()):
            sets.reverse()  # the order of the sets must not matter
    return sets


def scl_maps(max_lsn: int = 12) -> st.SearchStrategy[dict[str, int]]:
    # Small LSNs so that ties are common; segments may be missing (SCL 0) or not members at all.
    return st.dictionaries(st.sampled_from(POOL), st.integers(min_value=0, max_value=max_lsn), max_size=len(POOL))


# -- constants ------------------------------------------------------------------------


def test_quorum_constants() -> None:
    assert (COPIES, WRITE_QUORUM, READ_QUORUM) == (6, 4, 3)
    assert WRITE_QUORUM + READ_QUORUM > COPIES and 2 * WRITE_QUORUM > COPIES


# -- PGCL -------------------------------------------------------------------------------


@settings(max_examples=examples(300), deadline=None)
@given(memberships(), scl_maps())
def test_pgcl_matches_brute_force(sets: list[frozenset[str]], scl_of: dict[str, int]) -> None:
    membership = Membership.of(*sets)
    assert membership.pgcl(scl_of) == pgcl_oracle(sets, scl_of)


@settings(max_examples=examples(200), deadline=None)
@given(memberships(), scl_maps())
def test_pgcl_agrees_with_write_quorum_at_every_lsn(sets: list[frozenset[str]], scl_of: dict[str, int]) -> None:
    """pgcl >= L exactly when the segments holding L form a write quorum."""
    membership = Membership.of(*sets)
    pgcl = membership.pgcl(scl_of)
    for lsn in range(1, 14):
        holders = {m for m, scl in scl_of.items() if scl >= lsn}
        assert (pgcl >= lsn) == membership.write_quorum_met(holders), (lsn, holders)


@settings(max_examples=examples(150), deadline=None)
@given(memberships(), scl_maps(), st.sampled_from(POOL), st.integers(min_value=0, max_value=12))
def test_pgcl_never_falls_when_an_scl_grows(
    sets: list[frozenset[str]], scl_of: dict[str, int], segment: str, scl: int
) -> None:
    membership = Membership.of(*sets)
    before = membership.pgcl(scl_of)
    grown = dict(scl_of)
    grown[segment] = max(grown.get(segment, 0), scl)
    assert membership.pgcl(grown) >= before


def test_pgcl_two_sets_is_the_lower_of_the_two() -> None:
    membership = Membership.of(ABCDEF, ABCDEG)
    # ABCDEF: 9 9 9 9(F) ... -> 4th highest 9; ABCDEG: 9 9 9 G=2 D=1 E=0 -> 4th highest 2.
    scl_of = {"A": 9, "B": 9, "C": 9, "F": 9, "G": 2, "D": 1}
    assert Membership.of(ABCDEF).pgcl(scl_of) == 9
    assert Membership.of(ABCDEG).pgcl(scl_of) == 2
    assert membership.pgcl(scl_of) == 2 == pgcl_oracle([frozenset(ABCDEF), frozenset(ABCDEG)], scl_of)


# -- write and read quorums -----------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(memberships(), st.sets(st.sampled_from(POOL)))
def test_write_and_read_quorum_match_brute_force(sets: list[frozenset[str]], present: set[str]) -> None:
    membership = Membership.of(*sets)
    assert membership.write_quorum_met(present) == write_quorum_oracle(sets, present)
    assert membership.read_quorum_met(present) == read_quorum_oracle(sets, present)
    assert membership.segments == frozenset().union(*sets)


@pytest.mark.parametrize(
    "sets", [[ABCDEF], [ABCDEF, ABCDEG], [ABCDEG, ABCDEF]], ids=["one-set", "two-sets", "two-sets-rev"]
)
def test_every_subset_against_oracle(sets: list[str]) -> None:
    frozen = [frozenset(s) for s in sets]
    membership = Membership.of(*sets)
    for present in all_subsets(POOL[:8]):  # A..H: every member plus one outsider
        assert membership.write_quorum_met(present) == write_quorum_oracle(frozen, present), present
        assert membership.read_quorum_met(present) == read_quorum_oracle(frozen, present), present


def test_transition_needs_four_of_both_sets() -> None:
    both = Membership.of(ABCDEF, ABCDEG)
    # Every 4-subset of ABCDEF is a write quorum of ABCDEF, but of both sets only if it avoids F.
    for four in combinations(ABCDEF, 4):
        assert Membership.of(ABCDEF).write_quorum_met(four)
        assert both.write_quorum_met(four) == ("F" not in four), four
    assert not both.write_quorum_met("ABCF")  # 4/6 of ABCDEF, 3/6 of ABCDEG
    assert not both.write_quorum_met("ABCG")  # 3/6 of ABCDEF, 4/6 of ABCDEG
    assert both.write_quorum_met("ABCFG")  # 4/6 of each
    assert both.write_quorum_met("ABEFG")
    assert both.write_quorum_met("ABCD")
    assert not both.write_quorum_met("ABFG")  # 3/6 of each
    # Reads need 3 of ANY set.
    assert both.read_quorum_met("ABF") and both.read_quorum_met("ABG") and both.read_quorum_met("DEG")
    assert not both.read_quorum_met("AFG")  # 2 of each set
    assert not both.read_quorum_met("FG")


@pytest.mark.parametrize("sets", [[ABCDEF], [ABCDEF, ABCDEG]], ids=["one-set", "two-sets"])
def test_every_read_quorum_meets_every_write_quorum(sets: list[str]) -> None:
    membership = Membership.of(*sets)
    subsets = all_subsets(membership.segments)
    writes = [s for s in subsets if membership.write_quorum_met(s)]
    reads = [s for s in subsets if membership.read_quorum_met(s)]
    assert writes and reads
    for w in writes:
        for r in reads:
            assert w & r, (w, r)
    # And two write quorums always overlap (2W > V).
    for w1 in writes:
        for w2 in writes:
            assert w1 & w2, (w1, w2)
    # Minimality: the smallest quorums are exactly as small as the rules say.
    assert min(len(w) for w in writes) == 4
    assert min(len(r) for r in reads) == 3


@settings(max_examples=examples(150), deadline=None)
@given(memberships(), st.sets(st.sampled_from(POOL)), st.sets(st.sampled_from(POOL)))
def test_random_read_and_write_quorums_intersect(sets: list[frozenset[str]], write: set[str], read: set[str]) -> None:
    membership = Membership.of(*sets)
    if membership.write_quorum_met(write) and membership.read_quorum_met(read):
        assert write & read & membership.segments
