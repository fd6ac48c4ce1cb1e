"""The control plane's backtrack and time RPCs: Backtrack, VolumeHistory and FindVolumeCommit, carried out against
the storage nodes, and the expiry of left timelines in the healing rounds.

The adapter half of storage/control_plane_history.py (the records) and storage/control_plane_timelines.py
(the resolution); their rules are cited here. A backtrack, under the servicer's lock, in this order (the
compute node has closed its writer on the volume and opens it again afterwards):
1. Validate what the writer reports (history rule 2). Resolve the target: a time to the newest commit at or
   before it on what the volume showed then (timelines rule 3; FindCommit on the segments of each timeline
   of that view in turn), an LSN to the timeline that owns it (timelines rule 2).
2. The per-PG chain tails at the target t on its timeline X: X's tail (the current tails the writer gave,
   or those X ended at) when at or below t, else the tail a whole segment of X's PG with SCL >= t reports.
   A PG none of whose segments can still be read at its tail (retention horizon above it) is refused.
3. An LSN target's newest record at or below it (the largest tail) must end an MTR: read it (ReadRecords)
   from its owner's segments; its commit time must lie inside the window (timelines rule 4).
4. Fence the current timeline: GetSegmentState on its segments, then RaiseVolumeEpoch with an epoch one
   above every epoch they report (writer `backtrack:SERIAL`, SERIAL the new timeline's) on every healthy
   segment; each PG needs `WRITE_QUORUM` of them, else UNAVAILABLE (nothing else changed). A segment that
   reports an epoch newer than the caller's writer (`writer_epoch`) refuses the backtrack first (a newer
   writer may have acknowledged writes above the VDL the caller gave; FAILED_PRECONDITION). What they
   report (highest LSN stored, truncation range ends) and the writer's highest allocated LSN set the new
   timeline's LSN floor.
5. Create the new timeline as a clone is made (storage/control_plane_clones.py rule 1: reserved and
   persisted first, all or nothing), with the LSN floor on every CreateSegment; then swap (history rule 3)
   and persist.
Nothing before the swap changes the records: a refusal or a failure leaves the volume on its timeline
(fenced at a newer epoch at most, which the writer's next recovery passes).
FindCommit resolves a time as step 1 does, the state read under the lock, the nodes asked outside it.
`ControlPlaneServicer` mixes this in; it supplies the state, the lock, the clocks and persistence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import grpc

from sixfold.storage.control_plane_calls import TimelineSegmentClient, describe_failure, innermost
from sixfold.storage.control_plane_clones import CloneRpcs
from sixfold.storage.control_plane_limits import timeline_name
from sixfold.storage.control_plane_timelines import (
    CommitAnswer,
    Timeline,
    chain,
    check_commit_in_window,
    check_time_in_window,
    commit_not_found,
    commits_collected,
    new_lsn_floor,
    newest_commit,
    owner_in,
    pg_answer,
    resolve_lsn,
    shown_now,
    timeline_at,
)
from sixfold.storage.control_plane_values import SegmentPlacement, VolumeGeometry
from sixfold.storage.control_plane_wire import commit_answer, geometry_to_proto, history_to_proto, timeline_to_proto
from sixfold.storage.errors import InvalidRequest, ReadPointOutOfRange, StaleVolumeEpoch, StorageError, Unavailable
from sixfold.storage.lineage import branch_tail, ends_an_mtr
from sixfold.storage.quorum import COPIES, WRITE_QUORUM
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

log = logging.getLogger("sixfold.control_plane")

UNHEALTHY = "unhealthy (no recent heartbeat), not asked"


@dataclass(frozen=True)
class TimeView:
    """What resolving a time needs of the records, read at one instant (timelines rules 1-3)."""

    name: str
    own: tuple[Timeline, ...]  # oldest first, the current one last (end: its VDL)
    by_id: dict[str, Timeline]  # the own timelines and every record they read through
    geometries: dict[str, VolumeGeometry]  # of each of those
    created_at_ms: int

    @property
    def current(self) -> Timeline:
        return self.own[-1]

    def with_vdl(self, vdl: int) -> TimeView:
        current = replace(self.current, end_lsn=vdl)
        by_id = {**self.by_id, current.timeline_id: current}
        return replace(self, own=(*self.own[:-1], current), by_id=by_id)


@dataclass(frozen=True)
class FoundCommit:
    answer: CommitAnswer
    shown_now: bool  # the current timeline shows it (FindCommit then names the volume itself)
    timeline_id: str  # the timeline the volume showed at the time


class BacktrackRpcs(CloneRpcs):
    """The backtrack and time RPCs of `ControlPlaneServicer` (see the module docstring); a new timeline is
    made as `CloneRpcs` makes a clone."""

    def _timeline_client(self) -> TimelineSegmentClient:
        client = self.segment_client
        # The protocol check on the innermost client: since Python 3.12 it does not go through __getattr__.
        if not isinstance(innermost(client), TimelineSegmentClient):
            raise Unavailable(
                "this control plane's segment client cannot ask the storage nodes for commits, epochs and "
                "records, so it cannot backtrack nor resolve a time"
            )
        return cast(TimelineSegmentClient, client)  # a wrapper passes these calls on (above)

    # -- the RPCs ---------------------------------------------------------------------------

    async def Backtrack(self, request: cp_pb2.BacktrackRequest, context: Any) -> cp_pb2.BacktrackResponse:
        if bool(request.to_lsn) == bool(request.to_time_us):
            raise InvalidRequest("a backtrack goes to an LSN or to a time: give exactly one of to_lsn and to_time_us")
        if request.writer_epoch == 0:
            raise InvalidRequest(
                "the request names no writer_epoch: give the volume epoch of the writer whose VDL it reports"
            )
        client = self._timeline_client()
        name, vdl, given = request.volume_id, request.current_vdl, list(request.current_tails)
        async with self._lock:
            now_ms = self.wall_clock_ms()
            current = self.state.check_backtrack(name, vdl, given)
            window_s = current.backtrack_window_s
            if request.to_time_us:  # step 1
                check_time_in_window(request.to_time_us, now_ms, window_s, name)
                found = await self._commit_at(client, self._time_view(name, vdl), request.to_time_us)
                to_lsn, commit_time_us = found.answer.lsn, found.answer.commit_time_us
            else:
                to_lsn, commit_time_us = request.to_lsn, 0
            own = self.state.own_timelines(name, vdl)
            target = resolve_lsn(own, to_lsn, name)
            ended = given if target.timeline_id == name else list(self.state.end_tails(target.timeline_id))
            tails = await self._tails_at(client, target.timeline_id, to_lsn, ended)  # step 2
            if not request.to_time_us:  # step 3
                commit_time_us = await self._commit_time(client, name, vdl, target, to_lsn, tails)
                check_commit_in_window(to_lsn, commit_time_us, now_ms, window_s, name)
            serial = self.state.upcoming_serial()
            seen = await self._fence(client, name, serial, request.writer_epoch)  # step 4
            floor = new_lsn_floor(request.lsn_allocated, seen, own, name)
            plan = self.state.plan_backtrack(name, target.timeline_id, to_lsn, tails, floor)
            assert plan.serial == serial, (plan.serial, serial)
            created, failures = await self._create_clone_segments(plan)  # step 5
            left_id = self.state.left_id(name)
            geometry = self.state.commit_backtrack(
                plan, created, (vdl, given, max([request.lsn_allocated, *seen])), int(now_ms), commit_time_us
            )
            self._install_pending = {
                (left_id if volume_id == name else volume_id, i) for volume_id, i in self._install_pending
            }
            await self._persist()
            timeline = self.state.own_timelines(name, 0)[-1]
        log.warning(
            "backtracked volume %s from VDL %d to LSN %d of %s (committed at %d us): new timeline with segment id "
            "serial %d, new LSNs above %d; the timeline left is kept as %s",
            name,
            vdl,
            to_lsn,
            target.timeline_id,
            commit_time_us,
            serial,
            floor,
            left_id,
        )
        for (pg_index, node_id), why in sorted(failures.items()):
            log.warning("volume %s PG %d: node %s did not create its new segment (%s)", name, pg_index, node_id, why)
        return cp_pb2.BacktrackResponse(
            geometry=geometry_to_proto(geometry),
            timeline=timeline_to_proto(timeline),
            to_lsn=to_lsn,
            to_commit_time_us=commit_time_us,
            from_timeline_id=left_id,
        )

    async def VolumeHistory(self, request: cp_pb2.VolumeHistoryRequest, context: Any) -> cp_pb2.VolumeHistoryResponse:
        async with self._lock:
            history = self.state.history(request.volume_id)
        return history_to_proto(history)

    async def FindVolumeCommit(
        self, request: cp_pb2.FindVolumeCommitRequest, context: Any
    ) -> cp_pb2.FindVolumeCommitResponse:
        if not request.at_time_us:
            raise InvalidRequest("give the time (at_time_us) whose newest commit at or before it to find")
        client = self._timeline_client()
        async with self._lock:
            view = self._time_view(request.volume_id, request.current_vdl)
        if not request.current_vdl:
            view = view.with_vdl(await self._vdl_hint(client, view.geometries[view.name]))
        found = await self._commit_at(client, view, request.at_time_us)
        return cp_pb2.FindVolumeCommitResponse(
            lsn=found.answer.lsn,
            commit_time_us=found.answer.commit_time_us,
            timeline_id=view.name if found.shown_now else found.timeline_id,
        )

    async def _expire_timelines(self) -> None:
        """History rule 4, in each healing round (the lock is held)."""
        deletion = self.state.expire_timelines(self.wall_clock_ms())
        if not deletion.volumes_dropped:
            return
        for volume_id in deletion.volumes_dropped:
            log.info("timeline %s is past its backtrack window and nothing reads through it; dropping it", volume_id)
        await self._carry_out_deletion(deletion)

    # -- step 1: times ----------------------------------------------------------------------

    def _time_view(self, name: str, current_vdl: int) -> TimeView:
        current = self.state.current_timeline(name)
        by_id = self.state.timeline_map(name, current_vdl)
        own = tuple(self.state.own_timelines(name, current_vdl))
        geometries = {record_id: self.state.describe_volume(record_id) for record_id in by_id}
        return TimeView(name, own, by_id, geometries, current.created_at_ms)

    async def _commit_at(self, client: TimelineSegmentClient, view: TimeView, at_time_us: int) -> FoundCommit:
        """Timelines rule 3: the newest commit at or before the time on what the volume showed then."""
        at = timeline_at(view.own, at_time_us, view.name, view.created_at_ms)
        oldest: list[int] = []
        for timeline, cap in chain(view.by_id, at.timeline_id, at.end_lsn):
            if cap <= timeline.lsn_floor:
                continue
            pgs = await self._find_commits(client, view.geometries[timeline.timeline_id], at_time_us, cap)
            oldest += [a.oldest_commit_time_us for a in pgs if a.oldest_commit_time_us]
            best, unknown = newest_commit(pgs, timeline.lsn_floor, cap)
            if unknown:
                raise commits_collected(view.name, at_time_us, min(oldest, default=0))
            if best is not None:
                return FoundCommit(best, shown_now(view.by_id, view.current, timeline, best.lsn), at.timeline_id)
        raise commit_not_found(view.name, at_time_us, min(oldest, default=0))

    async def _find_commits(
        self, client: TimelineSegmentClient, geometry: VolumeGeometry, at_time_us: int, cap: int
    ) -> list[CommitAnswer]:
        """Each PG's answer (timelines rule 5) from every healthy segment of it."""

        def ask(_: int, s: SegmentPlacement) -> Awaitable[Any]:
            request = ss_pb2.FindCommitRequest(segment_id=s.segment_id, at_time_us=at_time_us, at_or_below_lsn=cap)
            return client.find_commit(s.address, request)

        out = []
        for pg, results in zip(geometry.protection_groups, await self._ask_pgs(geometry, ask)):
            best = pg_answer(commit_answer(a) for _, a in answered(results))
            if best is None:
                raise Unavailable(
                    f"no segment of PG {pg.pg_index} of {geometry.volume_id} answered FindCommit "
                    f"({failures(results)}); try again in a moment"
                )
            out.append(best)
        return out

    async def _vdl_hint(self, client: TimelineSegmentClient, geometry: VolumeGeometry) -> int:
        """FindCommit without a VDL: the highest VDL a writer reported to the current timeline's segments."""

        def ask(_: int, s: SegmentPlacement) -> Awaitable[Any]:
            return client.segment_state_at(s.address, s.segment_id, 0)

        results = await self._ask_pgs(geometry, ask)
        return max((a.state.vdl_hint for pg in results for _, a in answered(pg)), default=0)

    async def _ask_pgs(
        self, geometry: VolumeGeometry, ask: Callable[[int, SegmentPlacement], Awaitable[Any]]
    ) -> list[list[tuple[SegmentPlacement, Any]]]:
        """One call per healthy segment of every PG, all at once; per PG, each segment with its answer or
        why it has none (a sentence: not asked, refused, failed)."""
        now = self.clock_ms()
        out: list[list[tuple[SegmentPlacement, Any]]] = [[] for _ in geometry.protection_groups]
        calls = []
        for position, pg in enumerate(geometry.protection_groups):
            for s in pg.segments:
                if self.state.is_healthy(s.node_id, now):
                    calls.append((position, pg.pg_index, s))
                else:
                    out[position].append((s, NotAsked(UNHEALTHY)))
        results = await asyncio.gather(*(ask(i, s) for _, i, s in calls), return_exceptions=True)
        for (position, _, s), result in zip(calls, results):
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # a cancellation, not an answer
            out[position].append((s, result))
        return out

    # -- steps 2-3: the target's tails and its commit ---------------------------------------

    async def _tails_at(
        self, client: TimelineSegmentClient, record_id: str, lsn: int, ended: Sequence[int]
    ) -> list[int]:
        """Step 2: each PG's chain tail at or below `lsn` on the timeline `record_id`."""
        geometry = self.state.describe_volume(record_id)
        if len(ended) != len(geometry.protection_groups):
            ended = [lsn + 1] * len(geometry.protection_groups)  # not known: ask every PG
        needs = {pg.pg_index for pg in geometry.protection_groups if ended[pg.pg_index] > lsn}

        def ask(pg_index: int, s: SegmentPlacement) -> Awaitable[Any]:
            return client.segment_state_at(s.address, s.segment_id, lsn if pg_index in needs else 0)

        tails = []
        for pg, results in zip(geometry.protection_groups, await self._ask_pgs(geometry, ask)):
            states = [(a.state, a.tail_lsn) for _, a in answered(results)]
            if pg.pg_index in needs:
                known = branch_tail(((state.whole, state.scl, tail) for state, tail in states), lsn)
                if known is None and any(is_out_of_range(a) for _, a in results):
                    raise ReadPointOutOfRange(
                        f"LSN {lsn} is below what volume {timeline_name(record_id)} still keeps (PG {pg.pg_index}'s "
                        f"segments no longer know its chain there: {failures(results)}); choose a later point"
                    )
                if known is None:
                    raise Unavailable(
                        f"no segment of PG {pg.pg_index} that holds its chain past LSN {lsn} answered "
                        f"({failures(results) or 'none is whole that far'}); try again in a moment"
                    )
                tail = known
            else:
                tail = ended[pg.pg_index]
            horizons = [state.retention_horizon_lsn for state, _ in states]
            if not horizons:
                raise Unavailable(
                    f"no segment of PG {pg.pg_index} of {record_id} answered ({failures(results)}); try again in a "
                    "moment"
                )
            if min(horizons) > tail:
                raise ReadPointOutOfRange(
                    f"LSN {lsn} is below what volume {timeline_name(record_id)} still keeps (PG {pg.pg_index}'s "
                    f"retention horizon is {min(horizons)}, above its chain tail {tail} there); choose a later point"
                )
            tails.append(tail)
        return tails

    async def _commit_time(
        self, client: TimelineSegmentClient, name: str, vdl: int, target: Timeline, lsn: int, tails: Sequence[int]
    ) -> int:
        """Step 3: the commit time of the newest record at or below `lsn`, which must end an MTR."""
        newest = max(tails, default=0)
        if newest == 0:
            raise ReadPointOutOfRange(f"volume {name} holds no commit at or below LSN {lsn}; choose a later point")
        pg_index = list(tails).index(newest)
        owner = owner_in(chain(self.state.timeline_map(name, vdl), target.timeline_id, lsn), newest)
        assert owner is not None, (target, newest)
        geometry = self.state.describe_volume(owner.timeline_id)
        one_pg = replace(geometry, protection_groups=geometry.protection_groups[pg_index : pg_index + 1])

        def ask(_: int, s: SegmentPlacement) -> Awaitable[Any]:
            request = ss_pb2.ReadRecordsRequest(
                segment_id=s.segment_id, from_lsn=newest - 1, to_lsn=newest, max_records=1
            )
            return client.read_records(s.address, request)

        results = [r for pg in await self._ask_pgs(one_pg, ask) for r in pg]
        for _, answer in answered(results):
            record = ends_an_mtr(answer.records, newest, lsn, f" of volume {name}")
            if record is not None:
                return int(record.commit_time_us)
        if not answered(results) and not any(is_out_of_range(a) for _, a in results):
            raise Unavailable(
                f"no segment of PG {pg_index} of {owner.timeline_id} answered ReadRecords ({failures(results)}); "
                "try again in a moment"
            )
        raise ReadPointOutOfRange(
            f"the records at LSN {lsn} of volume {name} are no longer kept, so it cannot be checked to be a commit; "
            "choose a later LSN or a time"
        )

    # -- step 4: the fence ------------------------------------------------------------------

    async def _fence(self, client: TimelineSegmentClient, name: str, serial: int, writer_epoch: int) -> list[int]:
        """Step 4: raise the current timeline's volume epoch on a write quorum of each PG. Returns the LSNs its
        segments reported (highest stored, truncation range ends). Refused when a segment holds an epoch newer
        than the caller's writer: a newer writer may have acknowledged writes above the VDL the caller gave
        (every writer that recovered raised a write quorum of each PG, which a write quorum of answers meets)."""
        geometry = self.state.describe_volume(name)
        states = [
            answered(pg)
            for pg in await self._ask_pgs(geometry, lambda _, s: client.segment_state_at(s.address, s.segment_id, 0))
        ]
        newer = [(s, a.state) for pg in states for s, a in pg if a.state.volume_epoch > writer_epoch]
        if newer:
            s, state = max(newer, key=lambda n: n[1].volume_epoch)
            raise StaleVolumeEpoch(
                f"the writer that asked (volume epoch {writer_epoch}) is not volume {name}'s newest: segment "
                f"{s.segment_id} on node {s.node_id} holds epoch {state.volume_epoch} "
                f"({state.volume_epoch_owner or 'no owner'}), and a newer writer may have acknowledged writes above "
                "the VDL given; nothing was changed; open the volume again (a recovery) and retry",
                {"volume_epoch": str(state.volume_epoch), "segment_id": s.segment_id},
            )
        epoch = 1 + max((a.state.volume_epoch for pg in states for _, a in pg), default=0)
        writer_id = f"backtrack:{serial}"

        def ask(_: int, s: SegmentPlacement) -> Awaitable[Any]:
            request = ss_pb2.RaiseVolumeEpochRequest(segment_id=s.segment_id, volume_epoch=epoch, writer_id=writer_id)
            return client.raise_volume_epoch(s.address, request)

        raised = await self._ask_pgs(geometry, ask)
        short = [(pg, r) for pg, r in zip(geometry.protection_groups, raised) if len(answered(r)) < WRITE_QUORUM]
        if short:
            parts = [
                f"PG {pg.pg_index} took it on {len(answered(r))} of {COPIES} nodes, fewer than the write quorum of "
                f"{WRITE_QUORUM} ({failures(r)})"
                for pg, r in short
            ]
            raise Unavailable(
                f"could not fence volume {name}'s current timeline with volume epoch {epoch}: {'; '.join(parts)}; "
                "nothing was changed; retry once the nodes are back"
            )
        seen = []
        for pg in [*states, *(answered(r) for r in raised)]:
            for _, answer in pg:
                state = answer.state
                seen.append(state.highest_lsn)
                seen.extend(r.end_lsn for r in state.truncation_ranges)
        log.info("fenced volume %s's current timeline at volume epoch %d (%s)", name, epoch, writer_id)
        return seen


class NotAsked(Exception):
    """A segment on an unhealthy node: not asked."""


def answered(results: Sequence[tuple[SegmentPlacement, Any]]) -> list[tuple[SegmentPlacement, Any]]:
    return [(s, a) for s, a in results if not isinstance(a, Exception)]


def is_out_of_range(error: object) -> bool:
    """A node's refusal because what was asked lies below what it still keeps (OUT_OF_RANGE)."""
    if isinstance(error, StorageError):
        return error.status_code_name == "OUT_OF_RANGE"
    return isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.OUT_OF_RANGE


def failures(results: Sequence[tuple[SegmentPlacement, Any]]) -> str:
    return "; ".join(f"node {s.node_id}: {describe_failure(a)}" for s, a in results if isinstance(a, Exception))
