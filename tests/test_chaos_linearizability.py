"""The linearizability checker: classic hand-made histories, a brute-force oracle on small random
histories, the search limit, and the search's speed on a chaos-sized history.

Random histories come from a seeded `random.Random` (the seed is printed; set
CHAOS_CHECKERS_SEED to replay a run) and from Hypothesis (which prints a
failing example and shrinks it).
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sixfold.tools.chaos.checkers import check_lost_writes, check_no_vanished_reads
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE, History, Op
from sixfold.tools.chaos.linearizability import LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, check_linearizable
from tests.chaos_histories import brute_force_linearizable, build, chaos_history, describe, execution, mutate, r, w
from tests.depth import examples

pytestmark = pytest.mark.unit

SEED = int(os.environ.get("CHAOS_CHECKERS_SEED", "20240607"))


def test_random_executions_are_linearizable_and_mutations_match_the_oracle() -> None:
    print(f"seed {SEED} (replay with CHAOS_CHECKERS_SEED={SEED})")
    outcomes = {True: 0, False: 0}
    for case in range(3000):
        rng = random.Random(SEED * 100_003 + case)
        specs = execution(rng)
        history = build(*specs)
        assert check_linearizable(history).verdict == LINEARIZABLE, f"case {case}\n{describe(history)}"
        assert brute_force_linearizable(history), f"case {case}: oracle\n{describe(history)}"
        mutated = build(*mutate(rng, specs))
        expected = brute_force_linearizable(mutated)
        result = check_linearizable(mutated)
        assert result.verdict == (LINEARIZABLE if expected else NOT_LINEARIZABLE), (
            f"case {case} (seed {SEED}): oracle says {expected}, checker {result.verdict}\n{describe(mutated)}\n"
            + "\n".join(result.explanations)
        )
        outcomes[expected] += 1
    print(f"mutated histories: {outcomes[True]} linearizable, {outcomes[False]} not")
    assert outcomes[True] >= 300 and outcomes[False] >= 300, outcomes


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), mutations=st.booleans())
def test_checker_matches_brute_force_oracle(rng: random.Random, mutations: bool) -> None:
    specs = execution(rng)
    if mutations:
        specs = mutate(rng, specs)
    history = build(*specs)
    expected = brute_force_linearizable(history)
    assert check_linearizable(history).verdict == (LINEARIZABLE if expected else NOT_LINEARIZABLE), describe(history)


# --- classic histories -----------------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    h = build(w(1, 0, "a", 0, 1), r(2, 0, "a", 2, 3), w(1, 0, "b", 4, 5), r(2, 0, "b", 6, 7))
    result = check_linearizable(h)
    assert result.ok and result.verdict == LINEARIZABLE and result.operations == 4 and result.explanations == ()


def test_read_before_any_write_sees_none() -> None:
    assert check_linearizable(build(r(1, 0, None, 0, 1), w(2, 0, "a", 2, 3))).ok
    assert not check_linearizable(build(w(2, 0, "a", 0, 1), r(1, 0, None, 2, 3))).ok


def test_stale_read_is_not_linearizable() -> None:
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 3), r(2, 0, "a", 4, 5))
    result = check_linearizable(h)
    assert not result.ok and result.verdict == NOT_LINEARIZABLE and result.bad_keys == (0,)
    text = "\n".join(result.explanations)
    assert "#2 p1 write k0 'b'" in text and "-> 'a'" in text, text
    assert 1 < len(result.explanations) <= 10


def test_concurrent_writes_allow_both_orders() -> None:
    for last in ("a", "b"):
        h = build(w(1, 0, "a", 0, 4), w(2, 0, "b", 1, 5), r(3, 0, last, 6, 7))
        assert check_linearizable(h).ok, last
    # ... but not both orders at once: two later reads cannot flip back.
    h = build(w(1, 0, "a", 0, 4), w(2, 0, "b", 1, 5), r(3, 0, "b", 6, 7), r(3, 0, "a", 8, 9))
    assert not check_linearizable(h).ok


def test_read_concurrent_with_write_sees_old_or_new() -> None:
    for seen in ("a", "b"):
        h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 6), r(2, 0, seen, 3, 4))
        assert check_linearizable(h).ok, seen
    # new then old while the write is still running: the new value was already visible.
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 9), r(2, 0, "b", 3, 4), r(2, 0, "a", 5, 6))
    assert not check_linearizable(h).ok


def test_info_write_that_took_effect_late() -> None:
    # The write timed out at t=2, yet was applied later: a read at t=10 sees it. Allowed.
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 1, 2, type=INFO), r(3, 0, "a", 3, 4), r(3, 0, "b", 10, 11))
    assert check_linearizable(h).ok
    # A pending write (the run ended before its completion) counts as info.
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 1, None), r(3, 0, "a", 3, 4), r(3, 0, "b", 10, 11))
    assert check_linearizable(h).ok


def test_info_write_that_never_took_effect() -> None:
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 1, 2, type=INFO), r(3, 0, "a", 3, 4), r(3, 0, "a", 10, 11))
    result = check_linearizable(h)
    assert result.ok and result.info_writes_unobserved == 1


def test_info_write_observed_then_overwritten_value_cannot_return() -> None:
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 1, 2, type=INFO), r(3, 0, "b", 3, 4), r(3, 0, "a", 5, 6))
    assert not check_linearizable(h).ok


def test_failed_ops_are_dropped() -> None:
    h = build(w(1, 0, "a", 0, 1), w(2, 0, "b", 2, 3, type=FAIL), r(3, 0, "a", 4, 5), r(3, 0, None, 6, 7, type=INFO))
    result = check_linearizable(h)
    assert result.ok and result.dropped == 2 and result.operations == 2


def test_read_of_a_failed_write_is_not_linearizable() -> None:
    h = build(w(1, 0, "a", 0, 1, type=FAIL), r(2, 0, "a", 2, 3))
    result = check_linearizable(h)
    assert not result.ok and "whose write failed" in result.explanations[-1], result.explanations


def test_read_of_a_value_never_written_is_not_linearizable() -> None:
    h = build(w(1, 0, "a", 0, 1), r(2, 0, "zz", 2, 3))
    result = check_linearizable(h)
    assert not result.ok and "which no operation wrote" in "\n".join(result.explanations)
    h = build(w(1, 1, "a", 0, 1), r(2, 0, "a", 2, 3))  # written to another key
    result = check_linearizable(h)
    assert not result.ok and "written to key(s) [1]" in "\n".join(result.explanations)


def test_read_from_the_future_is_not_linearizable() -> None:
    h = build(r(2, 0, "a", 0, 1), w(1, 0, "a", 2, 3))
    result = check_linearizable(h)
    assert not result.ok and "before its write was invoked" in "\n".join(result.explanations)


def test_keys_are_independent() -> None:
    h = build(w(1, 0, "a", 0, 1), w(4, 1, "x", 0.5, 1.5), r(2, 0, "a", 2, 3), w(1, 1, "y", 2, 3), r(2, 1, "x", 4, 5))
    result = check_linearizable(h)
    assert result.verdict == NOT_LINEARIZABLE and result.bad_keys == (1,) and result.keys == 2
    assert [k.verdict for k in result.per_key] == [LINEARIZABLE, NOT_LINEARIZABLE]


def test_equal_times_are_concurrent() -> None:
    # b's invoke at the very instant a completed: neither precedes the other.
    h = build(w(1, 0, "a", 0, 2), w(2, 0, "b", 2, 3), r(3, 0, "a", 4, 5))
    assert check_linearizable(h).ok
    h = build(w(1, 0, "a", 0, 1.999), w(2, 0, "b", 2, 3), r(3, 0, "a", 4, 5))
    assert not check_linearizable(h).ok


def test_duplicate_values_are_handled_without_the_unique_value_shortcuts() -> None:
    h = build(w(1, 0, "a", 0, 1), w(1, 0, "b", 2, 3), w(2, 0, "a", 1, 2, type=INFO), r(3, 0, "a", 4, 5))
    assert check_linearizable(h).ok == brute_force_linearizable(h) is True


def test_search_limit_gives_unknown_not_a_wrong_answer() -> None:
    # Ten concurrent writes, each observed by a concurrent read, so any order of them fits until
    # the last two reads, which no order explains: only an exhaustive search can tell.
    specs = [w(p, 0, f"v{p}", 0, 10) for p in range(10)] + [r(10 + p, 0, f"v{p}", 0, 10) for p in range(10)]
    h = build(*specs, r(20, 0, "v0", 11, 12), r(20, 0, "v1", 13, 14))
    limited = check_linearizable(h, configurations_max=20)
    assert limited.verdict == UNKNOWN and limited.unknown and not limited.ok and limited.unknown_keys == (0,)
    assert "search limit" in limited.explanations[0]
    full = check_linearizable(h)
    assert full.verdict == NOT_LINEARIZABLE and not full.unknown and full.configurations > 20
    print(f"{full.configurations} configurations to refute it")


def test_explanations_are_capped() -> None:
    specs = [w(1, 0, "a", 0, 1)] + [r(2, 0, f"ghost{n}", 2 + 2 * n, 3 + 2 * n) for n in range(30)]
    result = check_linearizable(build(*specs))
    assert not result.ok and len(result.explanations) == 10 and result.explanations[-1].startswith("...")


@pytest.mark.timeout(60)
def test_chaos_sized_history_is_checked_quickly() -> None:
    print(f"seed {SEED}")
    history = chaos_history(random.Random(SEED))
    result = check_linearizable(history)
    print(
        f"{result.operations} operations over {result.keys} keys: {result.verdict}, "
        f"{result.configurations} configurations, {result.info_writes_unobserved} unobserved info writes"
    )
    assert result.ok, result.explanations
    assert result.configurations < 50_000
    assert check_no_vanished_reads(history).ok
    assert check_lost_writes(history).ok
    # Make one late read stale: the search must find it.
    pairs = history.pairs()
    reads = [op for op in pairs if op.f == READ and op.type == OK and op.value is not None]
    target = reads[len(reads) // 2]
    older = [
        op
        for op in pairs
        if op.f == WRITE
        and op.key == target.key
        and op.type == OK
        and op.complete_time is not None
        and op.complete_time < target.invoke_time - 1.0
    ]
    if older:
        events = [
            e if e.index != target.complete_index else Op(**{**vars(e), "value": older[0].value})
            for e in history.events
        ]
        broken = check_linearizable(History(events))
        assert broken.verdict == NOT_LINEARIZABLE and broken.bad_keys == (target.key,)
