"""A volume's timelines, pure: which timeline an LSN or a time of the volume resolves to, what a timeline
shows below its branch, how far back a backtrack may go, how the per-PG answers of FindCommit combine into
the newest commit at or before a time, and where a backtrack's new timeline starts allocating.

The records these work on are storage/control_plane_history.py's (it turns volume records into
`Timeline` values); the adapter that asks the storage nodes is storage/control_plane_backtrack.py.

Rules (this module owns them)
1. A timeline T owns the LSNs (T.lsn_floor, T.end_lsn]: its own records (end: the VDL it was left at; the
   current timeline's VDL now). Below T.branch_lsn it shows its parent's view: the view of T at r is T's own
   records at or below r, then its parent's view at min(r, T.branch_lsn), and so on (`chain`).
2. A backtrack's new timeline starts above every LSN its volume ever allocated (`new_lsn_floor`), so the
   own ranges of one volume's timelines never overlap and an LSN lies in at most one: an LSN target
   resolves to that timeline (`resolve_lsn`). Refused: 0 or above LSN_MAX; above the current VDL (not
   durable); at or below the volume's first timeline's floor (a clone's source's history, before the volume
   branched); and between ranges (allocated but never durable, or on a timeline no longer kept).
3. A time resolves to the timeline the volume's name pointed at then (activated_at_ms <= time <
   abandoned_at_ms; the current one open-ended; `timeline_at`), then to the newest commit at or before it on
   that timeline's view (rule 1): its own commits up to its end, else its parent's up to the branch, and so
   on. Refused: a time before the volume was created, or when its timeline then is no longer kept.
4. Window: a backtrack reaches back at most `backtrack_window_s` from now. A time target is judged by the
   time asked, an LSN target by the commit time of its newest record (a commit without a time, written
   before commits carried one, is outside).
5. FindCommit answers (one per PG, the best of its segments: `pg_answer`) combine into the newest commit at
   or before the time among a timeline's own records (`newest_commit`). A PG whose own records at or below
   its GC floor may be gone (floor above the timeline's lsn_floor) and that found none above it makes the
   answer unknown unless a commit at or above that floor was found elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sixfold.storage.control_plane_limits import CommitNotFound
from sixfold.storage.errors import InvalidRequest, ReadPointOutOfRange
from sixfold.storage.records import LSN_MAX

CHAIN_DEPTH_MAX = 4096  # a timeline's ancestry is at most as long as the registry (VOLUME_COUNT_MAX)


@dataclass(frozen=True)
class Timeline:
    """One timeline (a volume record): as proto `Timeline`. `end_lsn` is the current one's VDL when it is
    resolved against, 0 when it is shown."""

    timeline_id: str
    parent_timeline_id: str
    branch_lsn: int
    lsn_floor: int
    end_lsn: int
    activated_at_ms: int
    abandoned_at_ms: int  # 0 while current

    def owns(self, lsn: int) -> bool:
        return self.lsn_floor < lsn <= self.end_lsn


@dataclass(frozen=True)
class BacktrackView:
    """One backtrack as `VolumeHistory` shows it (proto `BacktrackRecord`)."""

    at_ms: int
    from_timeline_id: str
    from_vdl: int
    to_timeline_id: str
    to_lsn: int
    to_commit_time_us: int


@dataclass(frozen=True)
class History:
    backtrack_window_s: int
    timelines: tuple[Timeline, ...]  # oldest first, the current one last
    backtracks: tuple[BacktrackView, ...]


@dataclass(frozen=True)
class CommitAnswer:
    """A segment's FindCommit answer, or a PG's best (rule 5): lsn 0 = none found."""

    lsn: int
    commit_time_us: int
    gc_floor_lsn: int
    oldest_commit_time_us: int


def when(time_us: int) -> str:
    """A wall-clock time (microseconds since the Unix epoch) as a sentence shows it."""
    moment = datetime.fromtimestamp(time_us / 1e6, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_phrase(window_s: int) -> str:
    if window_s % 86400 == 0:
        return f"{window_s // 86400} d"
    if window_s % 3600 == 0:
        return f"{window_s // 3600} h"
    return f"{window_s} s"


# -- rule 1: views --------------------------------------------------------------------------


def chain(by_id: Mapping[str, Timeline], start_id: str, cap: int) -> list[tuple[Timeline, int]]:
    """Rule 1: the timelines the view of `start_id` at `cap` reads, each with the highest LSN read there."""
    out: list[tuple[Timeline, int]] = []
    current = by_id.get(start_id)
    while current is not None:
        assert len(out) < CHAIN_DEPTH_MAX, start_id
        out.append((current, cap))
        if not current.parent_timeline_id:
            break
        cap = min(cap, current.branch_lsn)
        current = by_id.get(current.parent_timeline_id)
    return out


def owner_in(path: Sequence[tuple[Timeline, int]], lsn: int) -> Timeline | None:
    """The timeline of the view `path` whose own record `lsn` would be (None: the view does not show it)."""
    for timeline, cap in path:
        if lsn > timeline.lsn_floor:
            return timeline if lsn <= cap else None
    return None


# -- rule 2: LSN targets ----------------------------------------------------------------------


def resolve_lsn(own: Sequence[Timeline], lsn: int, name: str) -> Timeline:
    """Rule 2. `own`: the volume's timelines, oldest first, the current one last with end_lsn = its VDL."""
    assert own, name
    current = own[-1]
    if not 1 <= lsn <= LSN_MAX:
        raise InvalidRequest(f"LSN {lsn} is not valid: a backtrack goes to an LSN from 1 to {LSN_MAX}")
    if lsn > current.end_lsn and lsn > current.lsn_floor:  # in the current timeline's own LSNs, past its VDL
        raise ReadPointOutOfRange(
            f"LSN {lsn} is above volume {name}'s VDL {current.end_lsn}: nothing above VDL is durable; backtrack "
            "to an LSN at or below it"
        )
    owners = [t for t in own if t.owns(lsn)]
    assert len(owners) <= 1, (lsn, owners)  # rule 2: own ranges never overlap
    if owners:
        return owners[0]
    first = own[0]
    if lsn <= first.lsn_floor and first.parent_timeline_id:
        raise ReadPointOutOfRange(
            f"LSN {lsn} is not on a timeline of volume {name}: {name} branched from {first.parent_timeline_id} at "
            f"LSN {first.branch_lsn}, and a backtrack stays within the volume's own history (above LSN "
            f"{first.lsn_floor})"
        )
    raise ReadPointOutOfRange(
        f"LSN {lsn} is not on a timeline of volume {name}: none it showed holds it (it was allocated but never "
        f"became durable, or its timeline is no longer kept); `sixfold volume history {name}` shows the "
        "timelines and their LSN ranges"
    )


# -- rule 3: times ----------------------------------------------------------------------------


def timeline_at(own: Sequence[Timeline], at_time_us: int, name: str, created_at_ms: int) -> Timeline:
    """Rule 3: the timeline the name pointed at, at `at_time_us`."""
    assert own, name
    if at_time_us < created_at_ms * 1000:
        raise ReadPointOutOfRange(
            f"{when(at_time_us)} is before volume {name} existed (it was created at {when(created_at_ms * 1000)})"
        )
    for timeline in own:
        ended = timeline.abandoned_at_ms == 0 or at_time_us < timeline.abandoned_at_ms * 1000
        if timeline.activated_at_ms * 1000 <= at_time_us and ended:
            return timeline
    raise ReadPointOutOfRange(
        f"at {when(at_time_us)} volume {name} showed a timeline that is no longer kept (left more than its "
        f"backtrack window ago); `sixfold volume history {name}` shows the timelines kept"
    )


def shown_now(by_id: Mapping[str, Timeline], current: Timeline, owner: Timeline, lsn: int) -> bool:
    """Whether the current timeline's view shows record `lsn` of `owner` (then it shows the same state at
    `lsn`: below it the two views share their ancestry)."""
    seen = owner_in(chain(by_id, current.timeline_id, current.end_lsn), lsn)
    return seen is not None and seen.timeline_id == owner.timeline_id


# -- rule 4: the window -----------------------------------------------------------------------


def window_start_us(now_ms: float, window_s: int) -> int:
    return int(now_ms * 1000) - window_s * 1_000_000


def check_time_in_window(at_time_us: int, now_ms: float, window_s: int, name: str) -> None:
    start = window_start_us(now_ms, window_s)
    if at_time_us < start:
        raise ReadPointOutOfRange(
            f"{when(at_time_us)} is outside volume {name}'s backtrack window of {window_phrase(window_s)}: the "
            f"oldest point a backtrack can reach now is {when(start)}"
        )


def check_commit_in_window(lsn: int, commit_time_us: int, now_ms: float, window_s: int, name: str) -> None:
    start = window_start_us(now_ms, window_s)
    if commit_time_us == 0:
        raise ReadPointOutOfRange(
            f"the commit at LSN {lsn} of volume {name} carries no commit time (it was written before commits "
            f"recorded one), so it cannot be placed inside the backtrack window of {window_phrase(window_s)}; "
            "choose a later point"
        )
    if commit_time_us < start:
        raise ReadPointOutOfRange(
            f"LSN {lsn} was committed at {when(commit_time_us)}, outside volume {name}'s backtrack window of "
            f"{window_phrase(window_s)} (the oldest point a backtrack can reach now is {when(start)}); choose a "
            "later point"
        )


# -- rule 5: commits at a time ----------------------------------------------------------------


def pg_answer(answers: Iterable[CommitAnswer]) -> CommitAnswer | None:
    """A PG's answer from its segments': the newest commit any holds, the lowest GC floor (None: none answered)."""
    answers = list(answers)
    if not answers:
        return None
    best = max(answers, key=lambda a: (a.lsn, a.commit_time_us))
    oldest = [a.oldest_commit_time_us for a in answers if a.oldest_commit_time_us]
    return CommitAnswer(best.lsn, best.commit_time_us, min(a.gc_floor_lsn for a in answers), min(oldest, default=0))


def newest_commit(pgs: Sequence[CommitAnswer], lsn_floor: int, cap: int) -> tuple[CommitAnswer | None, bool]:
    """Rule 5, over a timeline's own LSNs (lsn_floor, cap]: (the newest commit found, or None; whether a
    commit no longer kept could be newer than it)."""
    found = [a for a in pgs if a.lsn]
    best = max(found, key=lambda a: a.lsn, default=None)
    newest = 0 if best is None else best.lsn
    unknown = any(a.lsn <= a.gc_floor_lsn and min(a.gc_floor_lsn, cap) > max(lsn_floor, newest) for a in pgs)
    return best, unknown


def commit_not_found(name: str, at_time_us: int, oldest_commit_time_us: int) -> CommitNotFound:
    """No commit at or before the time, and none collected that could be (rule 5)."""
    first = f" (its oldest commit is from {when(oldest_commit_time_us)})" if oldest_commit_time_us else ""
    return CommitNotFound(f"volume {name} has no commit at or before {when(at_time_us)}{first}")


def commits_collected(name: str, at_time_us: int, oldest_commit_time_us: int) -> ReadPointOutOfRange:
    kept = f" (the oldest it keeps is from {when(oldest_commit_time_us)})" if oldest_commit_time_us else ""
    return ReadPointOutOfRange(
        f"the commits of volume {name} at or before {when(at_time_us)} are no longer kept{kept}: older records "
        "were garbage-collected; choose a later time"
    )


# -- rule 2: the next timeline's floor ---------------------------------------------------------


def new_lsn_floor(lsn_allocated: int, seen: Iterable[int], own: Iterable[Timeline], name: str) -> int:
    """Rule 2: one above the writer's highest allocated LSN, every LSN the left timeline's segments reported
    (highest stored, truncation range ends) and every timeline floor of the volume."""
    highest = max([lsn_allocated, *seen, *(t.lsn_floor for t in own)])
    if highest >= LSN_MAX:
        raise InvalidRequest(f"volume {name} has used up its LSNs (up to {highest}); it cannot backtrack")
    return highest + 1
