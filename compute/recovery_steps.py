"""The recovery sequence as a step machine: what a writer asks next while it opens (or regains) a volume.

Pure, as h11's state machine is: events in, actions out. compute/opening.py carries the actions out over
gRPC and reports what came of them, with the event loop's time (`now`); nothing here awaits, sleeps or
reads a clock. compute/recovery.py does the arithmetic between the steps (the epoch, the floor, the plan).

One attempt (`RecoverySteps`) runs these steps in this order, each for one PG after the other:

1. READ_STATES: a read quorum of *whole* segments of the PG say their state (storage/segment.py `whole`: a
   segment that lost a copy it may have acknowledged is heard, so its truncation ranges and highest LSN
   count, but it is not counted towards the quorum and its SCL and VDL hint are never used).
2. RAISE_EPOCH: a write quorum of the PG takes the attempt's epoch (`TakeEpoch`): one past every epoch
   the states showed and every epoch a segment refused this writer's with. No older writer completes a
   write after this step.
3. READ_STATES_AGAIN: step 1 again, now that no older writer can change the volume; the plan is made of
   these answers.
4. FETCH_RECORDS: the PG's best segment (the highest SCL among the whole ones that answered; a tie goes to
   the higher node id) sends its records from the floor (the highest VDL hint) up to its SCL. Then the plan
   is made and its truncation ranges announced (`Truncating`).
5. TRUNCATE: a write quorum of the PG takes the plan's truncation range.
6. READ_TAILS: the best segment says its chain tail at or below min(VDL, its SCL); it must still be whole
   and complete to there.
Then the attempt is done (`Recovered`).

Rules (this module owns them):
1. A step begins for a PG only when it is done for the PG before it, and for the first PG only when the
   step before it is done for every PG.
2. A quorum step (1, 2, 3, 5) asks every segment of the PG; after a round that ends without the quorum it
   asks again, QUORUM_RETRY_PAUSE_S later, only those that have not answered. The attempt fails when a
   round ends without the quorum and the writer was fenced or QUORUM_STEP_TIMEOUT_S have passed since the
   PG's step began. Asking again is safe: reading a state, raising an epoch and applying a truncation range
   are idempotent.
3. A regain gives way (`Failed.superseded`) when a state read shows a truncation range with an epoch above
   the writer's running epoch that none of its own attempts sent: another writer recovered the volume
   since this one last opened.
4. The attempt fails when the plan finds a truncation range at least as new as the attempt's epoch
   (`NewerEpochSeen`: the next attempt picks an epoch above it), or when a single-segment call failed.
5. One call of a single-segment step (a page of records, a chain tail) is asked again, up to
   RECOVERY_CALL_TRIES times in all, only when it timed out or its node was unreachable (`ask_again`).
6. The attempts of one open or regain (`OpenAttempts`): after a failed attempt the next begins after a
   pause that grows by RECOVERY_PAUSE_STEP_S per attempt up to RECOVERY_PAUSE_MAX_S, as long as the pause
   ends within OPEN_DEADLINE_S of the first attempt's start, and at most RECOVERY_ATTEMPTS_MAX attempts
   run. A regain gives way instead when a segment refused an epoch at least as new as its attempt's.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from sixfold.compute.quorum import READ_QUORUM, WRITE_QUORUM, Membership
from sixfold.compute.recovery import (
    NewerRecovery,
    PgRecovered,
    RecoveryPlan,
    SegmentReport,
    floor_of,
    next_epoch,
    plan_recovery,
)
from sixfold.storage.records import LogRecord
from sixfold.storage.truncation import TruncationRange

QUORUM_STEP_TIMEOUT_S = 5.0  # a quorum step asks the segments that did not answer again, this long
QUORUM_RETRY_PAUSE_S = 0.2
RECOVERY_CALL_TRIES = 3  # a single recovery call (records, chain tail) is asked this many times
# An open (or a regain) tries recovery again, with a growing pause, until it succeeds or this long has
# passed; within the fault budget it succeeds well before (the simulator checks every writer opens).
OPEN_DEADLINE_S = 40.0
RECOVERY_ATTEMPTS_MAX = 60
RECOVERY_PAUSE_STEP_S = 0.2  # the pause after attempt n is n times this, at most RECOVERY_PAUSE_MAX_S
RECOVERY_PAUSE_MAX_S = 2.0


class Step(enum.Enum):
    READ_STATES = "read states"
    RAISE_EPOCH = "raise epoch"
    READ_STATES_AGAIN = "read states again"
    FETCH_RECORDS = "fetch records"
    TRUNCATE = "truncate"
    READ_TAILS = "read tails"


READ_STEPS = frozenset({Step.READ_STATES, Step.READ_STATES_AGAIN})  # a read quorum of whole segments
WRITE_STEPS = frozenset({Step.RAISE_EPOCH, Step.TRUNCATE})  # a write quorum
QUORUM_STEPS = READ_STEPS | WRITE_STEPS
STEP_AFTER = dict(zip(list(Step), list(Step)[1:]))


@dataclass(frozen=True)
class PgSegments:
    """One PG as recovery sees it: its segments' node ids (answers are kept in this order) and quorum sets."""

    nodes: tuple[str, ...]
    membership: Membership


@dataclass(frozen=True)
class StateAnswer:
    report: SegmentReport
    whole: bool


# -- actions: what the caller carries out, in order ---------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """After `pause_s`, ask `nodes` of the PG for the step's call; report each answer as it comes
    (`state_answered`, `epoch_taken`, `truncation_taken`), stop waiting (after a short grace) once `enough()`,
    then report `round_over`."""

    step: Step
    pg_index: int
    nodes: tuple[str, ...]
    pause_s: float = 0.0


@dataclass(frozen=True)
class TakeEpoch:
    """The attempt's epoch: the writer's from now on (the raise that follows asks segments to take it)."""

    epoch: int


@dataclass(frozen=True)
class FetchRecords:
    """Read the records of the PG's best segment from `from_lsn` up to `to_lsn`; report `records_fetched`
    or `records_failed`."""

    pg_index: int
    node: str
    from_lsn: int
    to_lsn: int


@dataclass(frozen=True)
class Truncating:
    """The plan is made: its truncation ranges are about to be sent (the writer keeps them from now on)."""

    plan: RecoveryPlan


@dataclass(frozen=True)
class ReadTail:
    """Ask the PG's best segment for its chain tail at or below `at_or_below_lsn`; report `tail_read` or
    `tail_failed`."""

    pg_index: int
    node: str
    at_or_below_lsn: int


@dataclass(frozen=True)
class NewerEpochSeen:
    """A newer writer's epoch showed up: the next attempt must pick one above it."""

    epoch: int


@dataclass(frozen=True)
class Failed:
    """The attempt is over without a recovery."""

    reason: str
    superseded: bool = False  # a regain gives way: another writer recovered the volume meanwhile


@dataclass(frozen=True)
class Recovered:
    """The attempt is done: the writer builds its log from the plan and serves once VDL is reached again."""

    plan: RecoveryPlan
    tails: dict[int, int]  # PG -> the LSN its chain ends at, at or below VDL (0: none)
    scl_after: dict[int, dict[str, int]]  # PG -> node -> the SCL each segment said as it took the truncation


Action = Ask | TakeEpoch | FetchRecords | Truncating | ReadTail | NewerEpochSeen | Failed | Recovered


def _range_key(r: TruncationRange) -> tuple[int, int, int]:
    return (r.start_lsn, r.end_lsn, r.epoch)


class RecoverySteps:
    """One recovery attempt. Each event returns the actions to carry out in order; the last one is a
    request whose outcome is the next event (`Ask`, `FetchRecords`, `ReadTail`) or the end (`Failed`,
    `Recovered`)."""

    def __init__(
        self,
        volume_id: str,
        pgs: dict[int, PgSegments],
        *,
        lal: int,
        running_epoch: int = 0,
        regain: bool = False,
        sent: Iterable[TruncationRange] = (),
        refused_epoch: int = 0,
    ) -> None:
        self.volume_id = volume_id
        self.pgs = pgs
        self.lal = lal
        self.running_epoch = running_epoch  # the epoch of the writer's last completed open or regain
        self.regain = regain
        self.sent = sorted(set(sent), key=_range_key)  # ranges the writer's earlier attempts sent
        self.step: Step | None = None  # None before `start`
        self.pg_index = -1  # the PG the step is at
        self.epoch = 0  # the attempt's epoch, once taken
        self.finished = False
        self._order = list(pgs)
        self._position = 0
        self._deadline = 0.0
        self._refused_epoch = refused_epoch  # the highest epoch a segment refused this writer's with
        self._heard: dict[str, StateAnswer] = {}  # this PG's state answers (read steps)
        self._taken: dict[str, int] = {}  # this PG's segments that took the raise or truncation (-> SCL)
        self._states: dict[int, dict[str, StateAnswer]] = {}  # the last state read, per PG
        self._floor = 0
        self._best: dict[int, tuple[str, int]] = {}  # PG -> (best node, its SCL)
        self._recovered: dict[int, PgRecovered] = {}
        self._plan: RecoveryPlan | None = None
        self._scl_after: dict[int, dict[str, int]] = {}
        self._tails: dict[int, int] = {}

    @property
    def plan(self) -> RecoveryPlan | None:
        """The attempt's plan, once made (after FETCH_RECORDS)."""
        return self._plan

    # -- events -------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        assert self.step is None, "an attempt starts once"
        return self._begin(Step.READ_STATES, 0, now)

    def state_answered(self, node: str, report: SegmentReport, whole: bool) -> None:
        self._expect_answer(READ_STEPS, node)
        self._heard[node] = StateAnswer(report, whole)

    def epoch_taken(self, node: str) -> None:
        self._expect_answer({Step.RAISE_EPOCH}, node)
        self._taken[node] = 0

    def truncation_taken(self, node: str, scl: int) -> None:
        self._expect_answer({Step.TRUNCATE}, node)
        self._taken[node] = scl

    def enough(self) -> bool:
        """Whether the PG's quorum step has its quorum (a caller stops waiting for the others)."""
        membership = self.pgs[self.pg_index].membership
        if self.step in READ_STEPS:
            return membership.read_quorum_met(n for n, a in self._heard.items() if a.whole)
        return membership.write_quorum_met(self._taken)

    def round_over(self, now: float, fenced: bool, refused_epoch: int) -> list[Action]:
        """A round of asking ended. `refused_epoch`: the highest epoch a segment refused this writer's
        with, so far (the epoch taken after READ_STATES is above it)."""
        assert not self.finished and self.step in QUORUM_STEPS, (self.step, self.finished)
        self._refused_epoch = max(self._refused_epoch, refused_epoch)
        if self.enough():
            return self._pg_done(now)
        if fenced or now >= self._deadline:
            return [self._fail(self._lacking())]
        answered = self._heard if self.step in READ_STEPS else self._taken
        missing = tuple(n for n in self.pgs[self.pg_index].nodes if n not in answered)
        return [Ask(self.step, self.pg_index, missing, QUORUM_RETRY_PAUSE_S)]

    def records_fetched(self, now: float, records: list[LogRecord]) -> list[Action]:
        self._expect(Step.FETCH_RECORDS)
        node, scl = self._best[self.pg_index]
        self._recovered[self.pg_index] = PgRecovered(node, scl, records)
        return self._pg_done(now)

    def records_failed(self, reason: str) -> list[Action]:
        self._expect(Step.FETCH_RECORDS)
        return [self._fail(reason)]

    def tail_read(self, now: float, whole: bool, scl: int, tail_lsn: int) -> list[Action]:
        self._expect(Step.READ_TAILS)
        assert self._plan is not None
        node, best_scl = self._best[self.pg_index]
        needed = min(self._plan.vdl, best_scl)
        if not whole or scl < needed:
            # Its copy changed since the read (it lost a record, or its disk failed and it is rebuilding):
            # its chain tail is no longer the PG's.
            return [
                self._fail(
                    f"PG {self.pg_index}: segment on {node} no longer holds the chain to LSN {needed} "
                    f"(SCL {scl}, whole {whole})"
                )
            ]
        self._tails[self.pg_index] = tail_lsn if needed > 0 else 0
        return self._pg_done(now)

    def tail_failed(self, reason: str) -> list[Action]:
        self._expect(Step.READ_TAILS)
        return [self._fail(reason)]

    # -- the sequence -------------------------------------------------------------------------------

    def _begin(self, step: Step, position: int, now: float) -> list[Action]:
        """Begin `step` for the PG at `position` (past the last PG: the step is done)."""
        self.step, self._position = step, position
        if position >= len(self._order):
            return self._step_done(now)
        self.pg_index = self._order[position]
        self._heard, self._taken = {}, {}
        if step in READ_STEPS and position == 0:
            self._states = {}
        if step in QUORUM_STEPS:
            self._deadline = now + QUORUM_STEP_TIMEOUT_S
            return [Ask(step, self.pg_index, self.pgs[self.pg_index].nodes)]
        node, scl = self._best[self.pg_index]
        if step is Step.FETCH_RECORDS:
            return [FetchRecords(self.pg_index, node, self._floor, scl)]
        assert step is Step.READ_TAILS and self._plan is not None
        return [ReadTail(self.pg_index, node, max(1, min(self._plan.vdl, scl)))]

    def _pg_done(self, now: float) -> list[Action]:
        assert self.step is not None
        nodes = self.pgs[self.pg_index].nodes
        if self.step in READ_STEPS:
            self._states[self.pg_index] = {n: self._heard[n] for n in nodes if n in self._heard}
        elif self.step is Step.TRUNCATE:
            self._scl_after[self.pg_index] = {n: self._taken[n] for n in nodes if n in self._taken}
        return self._begin(self.step, self._position + 1, now)

    def _step_done(self, now: float) -> list[Action]:
        step = self.step
        assert step is not None
        if step in READ_STEPS:
            reports, others = self._reports()
            newer = self._superseded_by([*reports, *others])
            if newer:
                return [self._fail(f"a writer with epoch {newer} recovered the volume meanwhile", superseded=True)]
            if step is Step.READ_STATES:
                self.epoch = next_epoch([*reports, *others], self._refused_epoch)
                return [TakeEpoch(self.epoch), *self._begin(Step.RAISE_EPOCH, 0, now)]
            self._floor = floor_of(reports)
            for pg_index, heard in self._states.items():
                whole = {n: a.report.scl for n, a in heard.items() if a.whole}
                best = max(whole, key=lambda n: (whole[n], n))
                self._best[pg_index] = (best, whole[best])
        elif step is Step.FETCH_RECORDS:
            return self._plan_made(now)
        elif step is Step.READ_TAILS:
            assert self._plan is not None
            self.finished = True
            return [Recovered(self._plan, self._tails, self._scl_after)]
        return self._begin(STEP_AFTER[step], 0, now)

    def _plan_made(self, now: float) -> list[Action]:
        reports, others = self._reports()
        try:
            self._plan = plan_recovery(reports, self._recovered, self.epoch, self.lal, others, self.sent)
        except NewerRecovery as newer:
            stale = f"epoch {self.epoch} is stale: {newer}; trying again with a newer one"
            return [NewerEpochSeen(newer.epoch), self._fail(stale)]
        return [Truncating(self._plan), *self._begin(Step.TRUNCATE, 0, now)]

    def _reports(self) -> tuple[list[SegmentReport], list[SegmentReport]]:
        """The last state read's reports: of the whole segments, and of the others that answered."""
        answers = [a for heard in self._states.values() for a in heard.values()]
        return [a.report for a in answers if a.whole], [a.report for a in answers if not a.whole]

    def _superseded_by(self, reports: list[SegmentReport]) -> int:
        """Rule 3: the epoch of a recovery a regain gives way to (0: none). The ranges this writer's own
        earlier attempts sent do not count."""
        if not self.regain:
            return 0
        sent = set(self.sent)
        newest = max((r.epoch for report in reports for r in report.truncation_ranges if r not in sent), default=0)
        return newest if newest > self.running_epoch else 0

    def _lacking(self) -> str:
        """Why the PG's quorum step failed."""
        pg = self.pg_index
        if self.step in READ_STEPS:
            whole = sorted(n for n, a in self._heard.items() if a.whole)
            not_whole = sorted(n for n, a in self._heard.items() if not a.whole)
            return (
                f"PG {pg} of volume {self.volume_id}: only {len(whole)} whole segments of 6 answered ({whole}"
                + (f"; not whole, so not counted: {not_whole}" if not_whole else "")
                + f"); recovery needs {READ_QUORUM}"
            )
        if self.step is Step.RAISE_EPOCH:
            return (
                f"PG {pg}: epoch {self.epoch} was taken by only {len(self._taken)} segments "
                f"({sorted(self._taken)}); fencing needs {WRITE_QUORUM}"
            )
        return f"PG {pg}: the truncation reached only {len(self._taken)} segments"

    def _fail(self, reason: str, superseded: bool = False) -> Failed:
        self.finished = True
        return Failed(reason, superseded)

    def _expect(self, step: Step) -> None:
        assert not self.finished and self.step is step, f"{step} event while at {self.step}"

    def _expect_answer(self, steps: Collection[Step], node: str) -> None:
        assert not self.finished and self.step in steps, f"an answer for {set(steps)} while at {self.step}"
        assert node in self.pgs[self.pg_index].nodes, f"{node} holds no segment of PG {self.pg_index}"


def ask_again(tries: int, timed_out_or_unreachable: bool) -> bool:
    """Rule 5: after `tries` tries of one call, the last failed: ask once more?"""
    return timed_out_or_unreachable and tries < RECOVERY_CALL_TRIES


# -- the attempts of one open or regain (rule 6) --------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """The next attempt begins after this pause."""

    seconds: float


@dataclass(frozen=True)
class GiveUp:
    """No attempt is left in time: the open (or regain) failed."""

    reason: str


@dataclass(frozen=True)
class GiveWay:
    """A regain stops: another writer took an epoch at least as new as its attempt's."""

    reason: str


class OpenAttempts:
    def __init__(self, volume_id: str, now: float, regain: bool = False) -> None:
        self.volume_id = volume_id
        self.regain = regain
        self.deadline = now + OPEN_DEADLINE_S
        self.attempt = 0  # the attempt under way (from 1)
        self.last_error = ""

    def next_attempt(self) -> bool:
        """Whether another attempt may begin (it is then number `attempt`)."""
        if self.attempt >= RECOVERY_ATTEMPTS_MAX:
            return False
        self.attempt += 1
        return True

    def failed(self, now: float, error: str, refused_epoch: int, epoch: int) -> Pause | GiveUp | GiveWay:
        """The attempt at `epoch` failed with `error`; `refused_epoch` is the highest epoch a segment
        refused this writer's with."""
        self.last_error = error
        if self.regain and refused_epoch >= epoch:
            return GiveWay(f"another writer took epoch {refused_epoch} meanwhile")
        pause = min(RECOVERY_PAUSE_MAX_S, RECOVERY_PAUSE_STEP_S * self.attempt)
        if now + pause > self.deadline:
            return self.give_up()
        return Pause(pause)

    def give_up(self) -> GiveUp:
        return GiveUp(f"could not open volume {self.volume_id} in {OPEN_DEADLINE_S:.0f} s: {self.last_error}")
