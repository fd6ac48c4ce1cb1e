"""SCL is a pure function of the PG backlinks: the incremental tracker against a brute-force oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.scl import SclTracker, scl_oracle
from tests.depth import examples

pytestmark = pytest.mark.unit


@st.composite
def chains_and_arrivals(draw: st.DrawFn) -> tuple[list[tuple[int, int]], list[int]]:
    """A PG chain with gaps in LSN (other PGs' records) and an arrival order that may drop records."""
    length = draw(st.integers(min_value=0, max_value=40))
    gaps = draw(st.lists(st.integers(min_value=1, max_value=5), min_size=length, max_size=length))
    chain, prev, lsn = [], 0, 0
    for gap in gaps:
        lsn += gap
        chain.append((lsn, prev))
        prev = lsn
    order = draw(st.permutations(range(length)))
    keep = draw(st.lists(st.booleans(), min_size=length, max_size=length))
    arrivals = [i for i in order if keep[i]]
    return chain, arrivals


@settings(max_examples=examples(400))
@given(chains_and_arrivals())
def test_tracker_matches_oracle_after_every_arrival(case: tuple[list[tuple[int, int]], list[int]]) -> None:
    chain, arrivals = case
    tracker = SclTracker()
    held: dict[int, int] = {}
    for i in arrivals:
        lsn, prev = chain[i]
        assert tracker.successor_conflict(lsn, prev) is None
        held[lsn] = prev
        assert tracker.add(lsn, prev) == scl_oracle(0, held)
        # A resend changes nothing.
        assert tracker.add(lsn, prev) == scl_oracle(0, held)
    # Everything below SCL is held; everything pending is above it.
    assert all(lsn in held for lsn, _ in chain if lsn <= tracker.scl)
    assert all(lsn > tracker.scl for lsn in tracker.pending.values())


@settings(max_examples=examples(400))
@given(chains_and_arrivals(), st.data())
def test_truncation_matches_oracle(case: tuple[list[tuple[int, int]], list[int]], data: st.DataObject) -> None:
    chain, arrivals = case
    tracker = SclTracker()
    held: dict[int, int] = {}
    for i in arrivals:
        lsn, prev = chain[i]
        held[lsn] = prev
        tracker.add(lsn, prev)
    top = chain[-1][0] if chain else 1
    start = data.draw(st.integers(min_value=1, max_value=top + 1))
    end = data.draw(st.integers(min_value=start, max_value=top + 5))
    remaining = {lsn: prev for lsn, prev in held.items() if not start <= lsn <= end}
    chain_below = max((lsn for lsn in held if lsn < start and lsn <= tracker.scl), default=0)
    kept_above = [(lsn, prev) for lsn, prev in remaining.items() if lsn >= start]
    rebuilt = SclTracker.rebuilt(chain_below, kept_above)
    assert rebuilt.scl == scl_oracle(0, remaining)
    assert all(lsn in remaining for lsn, _ in chain if lsn <= rebuilt.scl)


def test_second_successor_is_a_conflict() -> None:
    tracker = SclTracker()
    tracker.add(1, 0)
    tracker.add(5, 3)  # pending above a hole
    assert tracker.successor_conflict(6, 3) == 5
    assert tracker.successor_conflict(5, 3) is None
    # Below SCL the chain is complete: any new successor of 0 forks it.
    assert tracker.successor_conflict(2, 0) == -1


def test_paper_style_interleaving_of_two_pgs() -> None:
    """Odd LSNs in this PG, even ones elsewhere: the PG chain skips the others' LSNs."""
    tracker = SclTracker()
    for lsn in (1, 3, 7, 5):  # 7 arrives before 5
        tracker.add(lsn, lsn - 2 if lsn > 1 else 0)
    assert tracker.scl == 7 and tracker.pending == {}
