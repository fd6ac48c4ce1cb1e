"""Time travel on the compute node: clone, snapshot, restore and delete (compute.v1.VolumeService).

The compute node is the volume's writer, so it is the one that knows a branch point: the VDL and, for
every PG, the chain tail at or below it (`VolumeLog.read_point`). The control plane then makes the
clone's metadata on the nodes (storage/control_plane_lineage.py); the nodes' clone segments read pages
they never wrote from their parent segment on the same node (storage/lineage.py). No page is copied.

Rules (this module owns them):
1. A branch point b is the source's VDL now (`at_lsn` 0) or an LSN at or below it. Above VDL it is
   refused: nothing above VDL is durable.
2. For b below VDL, PG i's chain tail at b is its read point when that is at or below b (no record of
   the PG lies in (read point, VDL]), else the tail a segment reports that holds the PG's chain past b
   (SCL >= b; it knows the chain there exactly).
3. The newest record at or below b (the largest tail) must end an MTR (a CPL): a branch inside a
   transaction would show half of it. Refused otherwise, with the sentence saying so.
4. Deleting a volume closes its writer (and SQL engine) first, so nothing writes to segments being
   dropped.
5. A time resolves, on the control plane, to the newest commit at or before it on what the volume showed
   then; a clone or snapshot at a time the volume has since backtracked away from is refused (backtrack
   first).
6. While a backtrack or a delete moves a volume's name, the volume is not opened (a request gets UNAVAILABLE,
   retry), and an open under way is cancelled: it may have read the geometry the name is leaving, and a writer
   recovering there would take acknowledged writes onto a timeline nobody reads again.
7. Backtrack closes the writer and the SQL engine (open transactions end with a clear status), hands the
   control plane the timeline's end (VDL, the PGs' tails there, the highest LSN allocated), and opens the
   volume again on the new timeline: a recovery, with a new volume epoch on new segments. It hands its
   writer's volume epoch too: the control plane refuses the backtrack when a segment holds a newer one (a
   newer writer, on another compute node, may have acknowledged writes above this one's VDL); the volume
   is then opened again (a recovery finds the true VDL) and the backtrack tried once more.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from sixfold.compute.errors import InvalidRequest
from sixfold.compute.segment_stream import refused_epoch_of
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.storage.errors import ReadPointOutOfRange, StorageError, Unavailable
from sixfold.storage.lineage import branch_tail, ends_an_mtr
from sixfold.storage.quorum import COPIES, WRITE_QUORUM
from sixfold.storage.records import LSN_MAX
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb

if TYPE_CHECKING:
    from sixfold.compute.volume import Volume

CLONE_TIMEOUT_S = 60.0
LIST_TIMEOUT_S = 10.0
SEGMENT_TIMEOUT_S = 5.0
# What a transaction open on a volume being backtracked is told (its read point is on the timeline left).
BACKTRACKED = (
    "is being backtracked: its open transactions read a timeline the volume is leaving; begin again to read "
    "the volume as it is after the backtrack"
)
BACKTRACK_ATTEMPTS = 2  # rule 7: once more after opening the volume again, when a newer writer's epoch refused it
# Control-plane refusals whose sentence is for the user as it is (the name, the LSN, the state).
_FORWARDED = {
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


# What gRPC says when the call never reached the control plane (as opposed to a refusal it sent).
_TRANSPORT = re.compile(r"connect|socket|DNS|Connection reset|Broken pipe|unreachable", re.IGNORECASE)


class NotNewestWriter(Exception):
    """Rule 7: the control plane refused a backtrack because a segment holds a newer volume epoch."""

    def __init__(self, refusal: StorageError) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class ControlPlaneRefused(StorageError):
    """The control plane refused a time-travel call; its code and sentence are passed on."""


def forwarded(error: grpc.aio.AioRpcError, doing: str) -> StorageError:
    """The control plane's refusal as the client's error: its own code and sentence where they are for the
    user, else a sentence that says the control plane failed while `doing`."""
    if error.code() in _FORWARDED:
        refused = ControlPlaneRefused(error.details() or f"the control plane refused {doing}")
        refused.status_code_name = error.code().name
        return refused
    details = error.details() or ""
    if error.code() == grpc.StatusCode.UNAVAILABLE and details and not _TRANSPORT.search(details):
        return Unavailable(details)  # the control plane answered: its own sentence (no quorum of nodes, ...)
    if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"the control plane did not answer while {doing}; is it running? (`sixfold status`)")
    return Unavailable(f"the control plane failed while {doing}: {error.code().name}: {error.details()}")


def lineage_of(geometry: Any) -> vpb.Lineage:
    return vpb.Lineage(
        volume_id=geometry.volume_id,
        parent_volume_id=geometry.parent_volume_id,
        branch_lsn=geometry.branch_lsn,
        pg_count=len(geometry.protection_groups),
        created_at_ms=geometry.created_at_ms,
        snapshot_name=geometry.snapshot_name,
        child_volume_ids=list(geometry.child_volume_ids),
    )


async def branch_point(volume: Volume, at_lsn: int) -> tuple[int, list[int]]:
    """(b, the chain tail of every PG at or below b), rules 1-3."""
    log = volume.log
    if log is None:
        raise Unavailable(f"volume {volume.volume_id!r} is not open yet; try again in a moment")
    vdl = log.vdl
    pg_indexes = sorted(volume.pgs)
    if at_lsn == 0 or at_lsn == vdl:
        return vdl, [log.read_point(i) for i in pg_indexes]  # one consistent pair, taken in one step
    if at_lsn > LSN_MAX:
        raise InvalidRequest(f"LSN {at_lsn} is above the highest LSN {LSN_MAX}")
    if at_lsn > vdl:
        raise ReadPointOutOfRange(
            f"LSN {at_lsn} is above volume {volume.volume_id!r}'s VDL {vdl}: nothing above VDL is durable yet; "
            "leave out --at to branch at VDL now"
        )
    tails = []
    for i in pg_indexes:
        read_point = log.read_point(i)
        tails.append(read_point if read_point <= at_lsn else await _tail_from_segments(volume, i, at_lsn))
    newest = max(tails, default=0)
    if newest:
        await _check_ends_an_mtr(volume, pg_indexes[tails.index(newest)], newest, at_lsn)
    return at_lsn, tails


async def _ask_all(
    volume: Volume, pg_index: int, make: Callable[[Any], Awaitable[Any]], refusals: list[str] | None = None
) -> list[Any]:
    """One call per segment of the PG at once; the answers of those that answered (`refusals` gets the
    details of those that refused with OUT_OF_RANGE: what they no longer keep)."""

    async def one(stream: Any) -> Any:
        try:
            return await make(stream)
        except grpc.aio.AioRpcError as error:
            if refusals is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE:
                refusals.append(error.details() or "")
            return None

    answers = await asyncio.gather(*(one(s) for s in volume.pgs[pg_index].streams.values()))
    return [a for a in answers if a is not None]


async def _tail_from_segments(volume: Volume, pg_index: int, lsn: int) -> int:
    def ask(stream: Any) -> Awaitable[Any]:
        request = pb.GetSegmentStateRequest(segment_id=stream.segment_id, tail_at_or_below_lsn=lsn)
        return stream.stub.GetSegmentState(request, timeout=SEGMENT_TIMEOUT_S)

    refusals: list[str] = []
    answers = await _ask_all(volume, pg_index, ask, refusals)
    tail = branch_tail(((a.state.whole, a.state.scl, a.tail_lsn) for a in answers), lsn)
    if tail is not None:
        return tail
    horizon = min((a.state.retention_horizon_lsn for a in answers), default=0)
    # Collected: the segments that answered say so, or more refuse than a write quorum leaves (one refusal among
    # silent peers may be a fresh copy with a higher floor: try again).
    if (answers and horizon > lsn) or (not answers and len(refusals) > COPIES - WRITE_QUORUM):
        said = f"PG {pg_index}'s retention horizon is {horizon}" if answers else f"PG {pg_index}: {refusals[0]}"
        raise ReadPointOutOfRange(
            f"LSN {lsn} is below what volume {volume.volume_id!r} still keeps ({said}); choose a later LSN"
        )
    raise Unavailable(
        f"no segment of PG {pg_index} that holds its chain past LSN {lsn} answered; try again in a moment"
    )


async def _check_ends_an_mtr(volume: Volume, pg_index: int, lsn: int, at_lsn: int) -> None:
    def ask(stream: Any) -> Awaitable[Any]:
        request = pb.ReadRecordsRequest(segment_id=stream.segment_id, from_lsn=lsn - 1, to_lsn=lsn, max_records=1)
        return stream.stub.ReadRecords(request, timeout=SEGMENT_TIMEOUT_S)

    for answer in await _ask_all(volume, pg_index, ask):
        if ends_an_mtr(answer.records, lsn, at_lsn) is not None:
            return
    # Every copy garbage-collected the record (it was folded into page versions): it cannot be checked.
    raise ReadPointOutOfRange(
        f"the records at LSN {at_lsn} of volume {volume.volume_id!r} are no longer kept, so it cannot be checked "
        "to be a commit; choose a later LSN"
    )


class TimeTravelRpcs:
    """The time-travel RPCs of VolumeServicer (compute/service.py), which provides these three."""

    control_plane: Any
    volumes: dict[str, Volume]
    on_volume_gone: list[Callable[[str, str], Awaitable[None]]]
    moving: set[str]

    async def volume(self, volume_id: str) -> Volume:
        raise NotImplementedError

    async def cancel_open(self, volume_id: str) -> None:
        raise NotImplementedError

    async def _commit_at_time(self, volume: Volume, at_time_us: int) -> int:
        """The newest commit at or before a wall-clock time on what the volume shows now (rule 5)."""
        try:
            request = cp_pb.FindVolumeCommitRequest(
                volume_id=volume.volume_id, at_time_us=at_time_us, current_vdl=volume.vdl
            )
            reply = await self.control_plane.FindVolumeCommit(request, timeout=CLONE_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise forwarded(error, f"finding the commit of volume {volume.volume_id!r} at that time") from None
        if reply.timeline_id != volume.volume_id:
            raise ReadPointOutOfRange(
                f"at that time volume {volume.volume_id!r} showed a timeline it has since backtracked away from "
                f"({reply.timeline_id}, LSN {reply.lsn}); backtrack to that time first "
                f"(`sixfold volume backtrack {volume.volume_id} --to-time ...`)"
            )
        return int(reply.lsn)

    async def _clone(
        self, source_id: str, at_lsn: int, request: cp_pb.CloneVolumeRequest, doing: str, at_time_us: int = 0
    ) -> Any:
        if not source_id:
            raise InvalidRequest("the request names no source volume")
        if at_lsn and at_time_us:
            raise InvalidRequest("give a branch LSN or a time, not both")
        source = await self.volume(source_id)
        if at_time_us:
            at_lsn = await self._commit_at_time(source, at_time_us)
        b, tails = await branch_point(source, at_lsn)
        request.source_volume_id = source_id
        request.branch_lsn = b
        request.parent_read_lsns.extend(tails)
        try:
            reply = await self.control_plane.CloneVolume(request, timeout=CLONE_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise forwarded(error, doing) from None
        return reply.geometry

    async def CloneVolume(self, request: vpb.CloneVolumeRequest, context: Any) -> vpb.CloneVolumeResponse:
        if not request.volume_id:
            raise InvalidRequest("the request names no name for the clone")
        started = time.perf_counter()
        geometry = await self._clone(
            request.source_volume_id,
            request.at_lsn,
            cp_pb.CloneVolumeRequest(volume_id=request.volume_id, kind=cp_pb.VOLUME_KIND_VOLUME),
            f"cloning volume {request.source_volume_id!r} as {request.volume_id!r}",
            request.at_time_us,
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        return vpb.CloneVolumeResponse(clone=lineage_of(geometry), elapsed_ms=elapsed_ms)

    async def CreateSnapshot(self, request: vpb.CreateSnapshotRequest, context: Any) -> vpb.CreateSnapshotResponse:
        if not request.snapshot_name:
            raise InvalidRequest("the request names no snapshot")
        geometry = await self._clone(
            request.volume_id,
            request.at_lsn,
            cp_pb.CloneVolumeRequest(kind=cp_pb.VOLUME_KIND_SNAPSHOT, snapshot_name=request.snapshot_name),
            f"taking snapshot {request.snapshot_name!r} of volume {request.volume_id!r}",
            request.at_time_us,
        )
        return vpb.CreateSnapshotResponse(snapshot=lineage_of(geometry))

    async def RestoreSnapshot(self, request: vpb.RestoreSnapshotRequest, context: Any) -> vpb.RestoreSnapshotResponse:
        if not request.snapshot_name or not request.volume_id:
            raise InvalidRequest("a restore names a snapshot and the new volume's name")
        doing = f"restoring snapshot {request.snapshot_name!r} as volume {request.volume_id!r}"
        try:
            reply = await self.control_plane.RestoreSnapshot(
                cp_pb.RestoreSnapshotRequest(snapshot_name=request.snapshot_name, volume_id=request.volume_id),
                timeout=CLONE_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            raise forwarded(error, doing) from None
        return vpb.RestoreSnapshotResponse(volume=lineage_of(reply.geometry))

    async def ListSnapshots(self, request: vpb.ListSnapshotsRequest, context: Any) -> vpb.ListSnapshotsResponse:
        try:
            reply = await self.control_plane.ListSnapshots(
                cp_pb.ListSnapshotsRequest(volume_id=request.volume_id), timeout=LIST_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise forwarded(error, "listing the snapshots") from None
        return vpb.ListSnapshotsResponse(snapshots=[lineage_of(g) for g in reply.snapshots])

    async def DeleteSnapshot(self, request: vpb.DeleteSnapshotRequest, context: Any) -> vpb.DeleteSnapshotResponse:
        if not request.snapshot_name:
            raise InvalidRequest("the request names no snapshot")
        try:
            await self.control_plane.DeleteSnapshot(
                cp_pb.DeleteSnapshotRequest(snapshot_name=request.snapshot_name), timeout=CLONE_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise forwarded(error, f"deleting snapshot {request.snapshot_name!r}") from None
        return vpb.DeleteSnapshotResponse()

    async def DeleteVolume(self, request: vpb.DeleteVolumeRequest, context: Any) -> vpb.DeleteVolumeResponse:
        if not request.volume_id:
            raise InvalidRequest("the request names no volume_id")
        self.moving.add(request.volume_id)
        try:
            await self._close_volume(request.volume_id, "is being deleted")  # rule 4
            try:
                reply = await self.control_plane.DeleteVolume(
                    cp_pb.DeleteVolumeRequest(volume_id=request.volume_id), timeout=CLONE_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                raise forwarded(error, f"deleting volume {request.volume_id!r}") from None
        finally:
            self.moving.discard(request.volume_id)
        return vpb.DeleteVolumeResponse(
            kept_for_clones=reply.kept_for_clones, volumes_dropped=list(reply.volumes_dropped)
        )

    async def Backtrack(self, request: vpb.BacktrackRequest, context: Any) -> vpb.BacktrackResponse:
        """Rules 6 and 7: close the writer (and SQL engine: open transactions are aborted), let the control plane move
        the name to a new timeline, open the volume again on it."""
        if not request.volume_id:
            raise InvalidRequest("the request names no volume_id")
        if bool(request.to_lsn) == bool(request.to_time_us):
            raise InvalidRequest("a backtrack goes to an LSN or to a time: give exactly one")
        started = time.perf_counter()
        for attempt in range(1, BACKTRACK_ATTEMPTS + 1):
            volume = await self.volume(request.volume_id)
            if request.volume_id in self.moving:
                raise Unavailable(f"volume {request.volume_id!r} is being backtracked or deleted already; retry later")
            self.moving.add(request.volume_id)
            try:
                return await self._backtrack(request, volume, started)
            except NotNewestWriter as error:
                # Closed already: the next round opens the volume again (a recovery at a newer epoch, VDL found
                # on the segments), so the timeline left ends where the newest writer's acknowledged writes do.
                if attempt == BACKTRACK_ATTEMPTS:
                    raise error.refusal from None
            finally:
                self.moving.discard(request.volume_id)
        raise AssertionError("unreachable")

    async def _backtrack(self, request: vpb.BacktrackRequest, volume: Volume, started: float) -> vpb.BacktrackResponse:
        await self._close_volume(request.volume_id, BACKTRACKED)
        log = volume.log
        assert log is not None  # an open volume has its log
        tails = [log.read_point(i) for i in sorted(volume.pgs)]
        try:
            reply = await self.control_plane.Backtrack(
                cp_pb.BacktrackRequest(
                    volume_id=request.volume_id,
                    to_lsn=request.to_lsn,
                    to_time_us=request.to_time_us,
                    current_vdl=log.vdl,
                    current_tails=tails,
                    lsn_allocated=log.lsn_allocated,
                    writer_epoch=volume.epoch,
                ),
                timeout=CLONE_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            refusal = forwarded(error, f"backtracking volume {request.volume_id!r}")
            if refused_epoch_of(error) is not None:
                raise NotNewestWriter(refusal) from None
            raise refusal from None
        await self._close_volume(request.volume_id, BACKTRACKED)  # nothing opened meanwhile (`moving`); to be sure
        self.moving.discard(request.volume_id)
        await self.volume(request.volume_id)  # recovery on the new timeline
        return vpb.BacktrackResponse(
            from_vdl=log.vdl,
            to_lsn=reply.to_lsn,
            to_commit_time_us=reply.to_commit_time_us,
            timeline_id=reply.timeline.timeline_id,
            elapsed_ms=(time.perf_counter() - started) * 1000,
        )

    async def VolumeHistory(self, request: vpb.VolumeHistoryRequest, context: Any) -> vpb.VolumeHistoryResponse:
        if not request.volume_id:
            raise InvalidRequest("the request names no volume_id")
        try:
            reply = await self.control_plane.VolumeHistory(
                cp_pb.VolumeHistoryRequest(volume_id=request.volume_id), timeout=LIST_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as error:
            raise forwarded(error, f"reading the history of volume {request.volume_id!r}") from None
        volume = self.volumes.get(request.volume_id)
        return vpb.VolumeHistoryResponse(
            backtrack_window_s=reply.backtrack_window_s,
            timelines=[vpb.TimelineInfo().FromString(t.SerializeToString()) for t in reply.timelines],
            backtracks=[vpb.BacktrackInfo().FromString(b.SerializeToString()) for b in reply.backtracks],
            vdl=volume.vdl if volume is not None else 0,
        )

    async def _close_volume(self, volume_id: str, why: str) -> None:
        await self.cancel_open(volume_id)
        for gone in self.on_volume_gone:
            await gone(volume_id, why)
        volume = self.volumes.pop(volume_id, None)
        if volume is not None:
            await volume.close()
