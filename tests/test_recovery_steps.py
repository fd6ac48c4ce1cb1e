"""The recovery sequence (compute/recovery_steps.py) against a deliberately naive oracle.

A scenario says, for every quorum step of every PG, what each round brings: which segments answer if
asked (and what they say), how long the round takes, whether the writer was fenced meanwhile; and whether
each PG's single-segment calls succeed. The driver plays the scenario to the step machine, asking what
the machine asks; the oracle walks the same scenario from scratch, counting quorums by hand, and says how
the attempt must end: recovered, or failed at which step of which PG, or superseded, or stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from sixfold.compute.quorum import Membership
from sixfold.compute.recovery import SegmentReport
from sixfold.compute.recovery_steps import (
    OPEN_DEADLINE_S,
    QUORUM_RETRY_PAUSE_S,
    QUORUM_STEP_TIMEOUT_S,
    RECOVERY_ATTEMPTS_MAX,
    RECOVERY_CALL_TRIES,
    RECOVERY_PAUSE_MAX_S,
    Action,
    Ask,
    Failed,
    FetchRecords,
    GiveUp,
    GiveWay,
    NewerEpochSeen,
    OpenAttempts,
    Pause,
    PgSegments,
    ReadTail,
    Recovered,
    RecoverySteps,
    Step,
    TakeEpoch,
    Truncating,
    ask_again,
)
from sixfold.storage.truncation import TruncationRange
from tests.depth import examples

pytestmark = pytest.mark.unit

SIX = ("a1", "a2", "b1", "b2", "c1", "c2")
REPLACED = ("a1", "a2", "b1", "b2", "c1", "c3")  # c2 being replaced by c3: both sets count
QUORUM_STEPS = (Step.READ_STATES, Step.RAISE_EPOCH, Step.READ_STATES_AGAIN, Step.TRUNCATE)
ORDER = list(Step)
LAL = 100
ROUNDS_MAX = 5  # rounds a scenario gives a PG's quorum step before it falls silent


def range_of_epoch(epoch: int) -> TruncationRange:
    return TruncationRange(1, 5, epoch)


# -- scenarios --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    scl: int = 0
    epoch: int = 0
    whole: bool = True
    vdl_hint: int = 0
    range_epoch: int = 0  # a truncation range of this epoch on the segment (0: none)

    def report(self, node: str) -> SegmentReport:
        ranges = (range_of_epoch(self.range_epoch),) if self.range_epoch else ()
        return SegmentReport(node, self.scl, self.scl, self.epoch, self.vdl_hint, ranges)


@dataclass(frozen=True)
class Round:
    answers: dict[str, Answer]  # who answers, if asked
    seconds: float
    fenced: bool = False
    refused: int = 0  # an epoch some segment refused this writer's with, meanwhile


SILENT = Round({}, QUORUM_STEP_TIMEOUT_S)  # what a step gets once its scenario rounds run out


@dataclass
class Scenario:
    sets: list[tuple[str, ...]]
    pg_count: int
    fetch_ok: list[bool]
    tails: list[tuple[bool, int] | None]  # per PG: (whole, SCL) of the tail answer, None: the call failed
    regain: bool = False
    running_epoch: int = 0
    sent_epochs: frozenset[int] = frozenset()
    refused: int = 0
    # A step's rounds are drawn when first needed (the driver and the oracle then see the same ones): up to
    # ROUNDS_MAX of them, then SILENT ones.
    draw: Callable[[st.SearchStrategy[Any]], Any] | None = None
    rounds: dict[tuple[Step, int], list[Round]] = field(default_factory=dict)
    round_counts: dict[tuple[Step, int], int] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n for s in self.sets for n in s))

    @property
    def sent(self) -> list[TruncationRange]:
        return [range_of_epoch(e) for e in sorted(self.sent_epochs)]

    def round(self, step: Step, pg: int, index: int) -> Round:
        assert self.draw is not None
        key = (step, pg)
        if key not in self.round_counts:
            self.round_counts[key] = self.draw(st.integers(1, ROUNDS_MAX))
        rounds = self.rounds.setdefault(key, [])
        while len(rounds) <= index and len(rounds) < self.round_counts[key]:
            rounds.append(self.draw(rounds_of(self.nodes)))
        return rounds[index] if index < len(rounds) else SILENT


# Answers a segment may give: mostly whole, now and then not; a truncation range of some epoch now and then.
ANSWERS = [
    Answer(scl, epoch, whole, hint, range_epoch)
    for scl, epoch, hint in ((0, 0, 0), (12, 3, 5), (20, 7, 12), (30, 12, 20))
    for whole, range_epoch in [(True, 0)] * 12 + [(False, 0), (False, 0), (True, 5), (True, 13)]
]


SILENT_COUNTS = [0, 0, 0, 1, 1, 2, 3, 4, 5]  # how many segments do not answer a round


def answers(nodes: tuple[str, ...]) -> st.SearchStrategy[dict[str, Answer]]:
    """Most segments answer a round; those in a small silent set do not."""
    return st.builds(
        lambda silent, given: {n: a for n, a in zip(nodes, given) if n not in silent},
        st.sampled_from(SILENT_COUNTS).flatmap(lambda k: st.sets(st.sampled_from(nodes), min_size=k, max_size=k)),
        st.lists(st.sampled_from(ANSWERS), min_size=len(nodes), max_size=len(nodes)),
    )


def rounds_of(nodes: tuple[str, ...]) -> st.SearchStrategy[Round]:
    return st.builds(
        Round,
        answers(nodes),
        st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 3.0, 4.5, 6.0]),
        st.sampled_from([False] * 7 + [True]),
        st.sampled_from([0, 0, 0, 7, 14]),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    pg_count = draw(st.integers(1, 3))
    return Scenario(
        sets=draw(st.sampled_from([[SIX], [SIX, REPLACED]])),
        pg_count=pg_count,
        fetch_ok=draw(st.lists(st.sampled_from([True] * 7 + [False]), min_size=pg_count, max_size=pg_count)),
        tails=draw(
            st.lists(
                st.sampled_from([(True, 30)] * 12 + [(False, 30), (True, 0), (True, 10), None]),
                min_size=pg_count,
                max_size=pg_count,
            )
        ),
        regain=draw(st.sampled_from([False, False, True])),
        running_epoch=draw(st.integers(0, 10)),
        sent_epochs=draw(st.frozensets(st.sampled_from([2, 5, 9, 13]), max_size=2)),
        refused=draw(st.integers(0, 8)),
    )


# -- the oracle -------------------------------------------------------------------------------------


def quorum_met(sets: list[tuple[str, ...]], step: Step, heard: dict[str, Answer]) -> bool:
    """By hand: a read needs 3 whole segments of ANY set, a write 4 of EVERY set."""
    if step in (Step.READ_STATES, Step.READ_STATES_AGAIN):
        return any(sum(1 for n in s if n in heard and heard[n].whole) >= 3 for s in sets)
    return all(sum(1 for n in s if n in heard) >= 4 for s in sets)


@dataclass
class Expected:
    end: str  # "recovered", "failed", "superseded", "stale"
    step: Step | None = None
    pg: int | None = None
    epoch: int | None = None
    seen_epochs: list[int] = field(default_factory=list)  # every epoch the writer saw before its raise


def oracle(s: Scenario) -> Expected:
    now = 0.0
    refused = s.refused
    heard_by: dict[Step, dict[int, dict[str, Answer]]] = {}
    epoch = 0
    seen: list[int] = []

    def ends(end: str, step: Step | None = None, pg: int | None = None) -> Expected:
        return Expected(end, step, pg, epoch or None, seen)

    for step in ORDER:
        if step in QUORUM_STEPS:
            heard_by[step] = {}
            for pg in range(s.pg_count):
                start = now
                heard: dict[str, Answer] = {}
                index = 0
                while True:
                    r = s.round(step, pg, index)
                    if index:
                        now += QUORUM_RETRY_PAUSE_S
                    for node, answer in r.answers.items():
                        heard.setdefault(node, answer)  # only the ones not heard yet are asked
                    now += r.seconds
                    refused = max(refused, r.refused)
                    if quorum_met(s.sets, step, heard):
                        break
                    if r.fenced or now >= start + QUORUM_STEP_TIMEOUT_S:
                        return ends("failed", step, pg)
                    index += 1
                heard_by[step][pg] = heard
        if step in (Step.READ_STATES, Step.READ_STATES_AGAIN):
            answered = [a for heard in heard_by[step].values() for a in heard.values()]
            if s.regain:
                foreign = [a.range_epoch for a in answered if a.range_epoch and a.range_epoch not in s.sent_epochs]
                if foreign and max(foreign) > s.running_epoch:
                    return ends("superseded", step)
            if step is Step.READ_STATES:
                seen = [a.epoch for a in answered] + [refused]
                epoch = max(seen) + 1
        if step is Step.FETCH_RECORDS:
            for pg in range(s.pg_count):
                if not s.fetch_ok[pg]:
                    return ends("failed", step, pg)
            heard_again = [a for heard in heard_by[Step.READ_STATES_AGAIN].values() for a in heard.values()]
            newest = max([a.range_epoch for a in heard_again] + list(s.sent_epochs), default=0)
            if epoch <= newest:
                return ends("stale", step)
        if step is Step.READ_TAILS:
            again = heard_by[Step.READ_STATES_AGAIN]
            vdl = max(a.vdl_hint for heard in again.values() for a in heard.values() if a.whole)
            for pg in range(s.pg_count):
                best_scl = max(a.scl for a in again[pg].values() if a.whole)
                tail = s.tails[pg]
                if tail is None or not tail[0] or tail[1] < min(vdl, best_scl):
                    return ends("failed", step, pg)
    return ends("recovered")


# -- the driver -------------------------------------------------------------------------------------


def play(s: Scenario) -> tuple[RecoverySteps, list[Action]]:
    """Play the scenario to the machine; check each request on the way; return the actions it took."""
    pgs = {pg: PgSegments(s.nodes, Membership.of(*s.sets)) for pg in range(s.pg_count)}
    steps = RecoverySteps(
        "vol", pgs, lal=LAL, running_epoch=s.running_epoch, regain=s.regain, sent=s.sent, refused_epoch=s.refused
    )
    now = 0.0
    refused = s.refused
    trace: list[Action] = []
    heard: dict[tuple[Step, int], dict[str, Answer]] = {}
    blocks: list[tuple[Step, int]] = []  # the (step, PG) the machine worked on, in order
    actions = steps.start(now)
    while True:
        trace += actions
        request = actions[-1]
        if isinstance(request, Ask | FetchRecords | ReadTail):
            step = request.step if isinstance(request, Ask) else steps.step
            assert step is not None
            block = (step, request.pg_index)
            if not blocks or blocks[-1] != block:
                if blocks:  # the block before this one must have had its quorum
                    before = blocks[-1]
                    if before[0] in QUORUM_STEPS:
                        assert quorum_met(s.sets, before[0], heard[before]), f"{block} began without {before}"
                assert block not in blocks, f"{block} again after other steps"
                expected_next = [(each, pg) for each in ORDER for pg in range(s.pg_count)]
                assert block == expected_next[len(blocks)], f"{block} out of order after {blocks}"
                blocks.append(block)
        match request:
            case Ask(step=step, pg_index=pg, nodes=nodes, pause_s=pause):
                got = heard.setdefault((step, pg), {})
                rounds_before = sum(1 for a in trace[:-1] if isinstance(a, Ask) and (a.step, a.pg_index) == (step, pg))
                assert nodes == tuple(n for n in s.nodes if n not in got), "asks exactly the ones not heard"
                assert pause == (QUORUM_RETRY_PAUSE_S if rounds_before else 0.0)
                r = s.round(step, pg, rounds_before)
                now += pause
                for node in nodes:
                    if node in r.answers:
                        answer = got[node] = r.answers[node]
                        if step is Step.RAISE_EPOCH:
                            steps.epoch_taken(node)
                        elif step is Step.TRUNCATE:
                            steps.truncation_taken(node, answer.scl)
                        else:
                            steps.state_answered(node, answer.report(node), answer.whole)
                assert steps.enough() == quorum_met(s.sets, step, got)
                now += r.seconds
                refused = max(refused, r.refused)
                actions = steps.round_over(now, r.fenced, refused)
            case FetchRecords(pg_index=pg):
                ok = s.fetch_ok[pg]
                actions = steps.records_fetched(now, []) if ok else steps.records_failed(f"PG {pg}: lost")
            case ReadTail(pg_index=pg, at_or_below_lsn=lsn):
                tail = s.tails[pg]
                actions = steps.tail_failed("lost") if tail is None else steps.tail_read(now, tail[0], tail[1], lsn)
            case Failed() | Recovered():
                assert steps.finished
                return steps, trace
            case _:
                raise AssertionError(f"the last action is not a request: {request}")


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_the_sequence_ends_as_the_oracle_says(data: st.DataObject) -> None:
    s = data.draw(scenarios())
    s.draw = data.draw
    expected = oracle(s)
    steps, trace = play(s)
    end = trace[-1]
    event(expected.end)
    if expected.end == "recovered":
        assert isinstance(end, Recovered), (expected, end)
        assert set(end.tails) == set(range(s.pg_count)) and set(end.scl_after) == set(range(s.pg_count))
    else:
        assert isinstance(end, Failed), (expected, end)
        assert end.superseded == (expected.end == "superseded"), (expected, end)
        assert (expected.end == "stale") == any(isinstance(a, NewerEpochSeen) for a in trace)
        if expected.step is not None:
            assert steps.step is expected.step, (expected, steps.step, end)
        if expected.pg is not None:
            assert steps.pg_index == expected.pg, (expected, steps.pg_index, end)
    taken = [a.epoch for a in trace if isinstance(a, TakeEpoch)]
    if expected.epoch is not None:
        # never below an epoch seen: one past every state's epoch and every refusal before the raise
        assert taken == [expected.epoch] and all(taken[0] > e for e in expected.seen_epochs)
        assert trace.index(TakeEpoch(taken[0])) < min(
            i for i, a in enumerate(trace) if isinstance(a, Ask) and a.step is Step.RAISE_EPOCH
        )
    else:
        assert taken == []
    truncating = [i for i, a in enumerate(trace) if isinstance(a, Truncating)]
    truncates = [i for i, a in enumerate(trace) if isinstance(a, Ask) and a.step is Step.TRUNCATE]
    assert not truncates or (len(truncating) == 1 and truncating[0] < truncates[0])


# -- explicit cases ---------------------------------------------------------------------------------


def all_answer(steps: RecoverySteps, ask: Ask, answer: Answer) -> list[Action]:
    for node in ask.nodes:
        if ask.step is Step.RAISE_EPOCH:
            steps.epoch_taken(node)
        elif ask.step is Step.TRUNCATE:
            steps.truncation_taken(node, answer.scl)
        else:
            steps.state_answered(node, answer.report(node), answer.whole)
    return steps.round_over(0.0, fenced=False, refused_epoch=0)


def test_every_segment_answering_runs_the_six_steps_in_order() -> None:
    steps = RecoverySteps("vol", {0: PgSegments(SIX, Membership.of(SIX))}, lal=LAL)
    actions = steps.start(0.0)
    kinds: list[str] = []
    while not isinstance(actions[-1], Failed | Recovered):
        kinds += [type(a).__name__ + (f" {a.step.value}" if isinstance(a, Ask) else "") for a in actions]
        request = actions[-1]
        if isinstance(request, Ask):
            actions = all_answer(steps, request, Answer(scl=10, epoch=3, vdl_hint=4))
        elif isinstance(request, FetchRecords):
            assert (request.from_lsn, request.to_lsn, request.node) == (4, 10, "c2")  # the floor; ties: highest id
            actions = steps.records_fetched(0.0, [])
        else:
            assert isinstance(request, ReadTail) and request.at_or_below_lsn == 4
            actions = steps.tail_read(0.0, True, 10, 4)
    assert kinds == [
        "Ask read states",
        "TakeEpoch",
        "Ask raise epoch",
        "Ask read states again",
        "FetchRecords",
        "Truncating",
        "Ask truncate",
        "ReadTail",
    ]
    end = actions[-1]
    assert isinstance(end, Recovered) and end.plan.vdl == 4 and end.tails == {0: 4}
    assert steps.epoch == 4 and end.scl_after == {0: dict.fromkeys(SIX, 10)}


def test_a_segment_that_is_not_whole_is_heard_but_not_counted() -> None:
    steps = RecoverySteps("vol", {0: PgSegments(SIX, Membership.of(SIX))}, lal=LAL)
    steps.start(0.0)
    for node in ("a1", "a2"):
        steps.state_answered(node, Answer(epoch=1).report(node), True)
    steps.state_answered("b1", Answer(epoch=8).report("b1"), False)
    assert not steps.enough()
    (again,) = steps.round_over(QUORUM_STEP_TIMEOUT_S, fenced=False, refused_epoch=0)
    assert isinstance(again, Failed) and "not whole, so not counted: ['b1']" in again.reason


def test_a_regain_gives_way_to_a_recovery_it_did_not_make() -> None:
    theirs, mine = range_of_epoch(6), range_of_epoch(5)
    for ranges, superseded in (((mine,), False), ((theirs,), True)):
        steps = RecoverySteps(
            "vol", {0: PgSegments(SIX, Membership.of(SIX))}, lal=LAL, running_epoch=4, regain=True, sent=[mine]
        )
        (ask,) = steps.start(0.0)
        assert isinstance(ask, Ask)
        for node in SIX:
            steps.state_answered(node, SegmentReport(node, 0, 0, 5, 0, ranges), True)
        end = steps.round_over(0.0, fenced=False, refused_epoch=0)
        assert isinstance(end[-1], Failed) == superseded
        assert not superseded or end[-1] == Failed("a writer with epoch 6 recovered the volume meanwhile", True)


@given(st.integers(1, RECOVERY_CALL_TRIES + 2), st.booleans())
def test_a_single_call_is_asked_again_only_when_lost_and_not_too_often(tries: int, lost: bool) -> None:
    assert ask_again(tries, lost) == (lost and tries < RECOVERY_CALL_TRIES)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.floats(0.0, 8.0), min_size=1, max_size=80),
    st.booleans(),
    st.lists(st.integers(0, 9), min_size=1, max_size=80),
)
def test_attempts_pause_grow_and_stop_as_the_oracle_says(
    durations: list[float], regain: bool, refusals: list[int]
) -> None:
    start = 100.0
    attempts = OpenAttempts("vol", start, regain)
    now = start
    outcomes: list[Pause | GiveUp | GiveWay] = []
    while attempts.next_attempt():
        n = attempts.attempt
        now += durations[(n - 1) % len(durations)]
        refused, epoch = refusals[(n - 1) % len(refusals)], 5
        outcome = attempts.failed(now, f"attempt {n}", refused, epoch)
        outcomes.append(outcome)
        # the oracle
        if regain and refused >= epoch:
            assert outcome == GiveWay(f"another writer took epoch {refused} meanwhile")
            return
        pause = min(RECOVERY_PAUSE_MAX_S, 0.2 * n)
        if now + pause > start + OPEN_DEADLINE_S:
            assert outcome == GiveUp(f"could not open volume vol in {OPEN_DEADLINE_S:.0f} s: attempt {n}")
            return
        assert outcome == Pause(pause)
        now += pause
    assert len(outcomes) == RECOVERY_ATTEMPTS_MAX


def test_a_quorum_step_asks_the_silent_again_until_its_time_is_up() -> None:
    steps = RecoverySteps("vol", {0: PgSegments(SIX, Membership.of(SIX))}, lal=LAL)
    steps.start(10.0)
    steps.state_answered("a1", Answer().report("a1"), True)
    again = steps.round_over(10.0 + QUORUM_STEP_TIMEOUT_S - 0.1, fenced=False, refused_epoch=0)
    assert again == [Ask(Step.READ_STATES, 0, SIX[1:], QUORUM_RETRY_PAUSE_S)]
    end = steps.round_over(10.0 + QUORUM_STEP_TIMEOUT_S, fenced=False, refused_epoch=0)
    assert isinstance(end[-1], Failed) and "only 1 whole segments of 6 answered" in end[-1].reason
