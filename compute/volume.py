"""One open volume on the writer: geometry, recovery, the write path and the read path.

The pure pieces decide (compute.volume_log, compute.recovery, compute.cache,
compute.routing, compute.quorum); this module does the I/O. Everything runs on
one asyncio loop, so the pure state is only ever touched from one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from sixfold.compute.cache import BufferCache
from sixfold.compute.errors import (
    CommitTimeout,
    Fenced,
    FencedInFlight,
    InvalidRequest,
    NotCommitted,
    PageOutOfRange,
    QuorumNotMet,
    Regaining,
    VolumeFull,
)
from sixfold.compute.quorum import READ_QUORUM, WRITE_QUORUM, Membership
from sixfold.compute.read_points import ReadPoints
from sixfold.compute.recovery import NewerRecovery, PgRecovered, SegmentReport, floor_of, next_epoch, plan_recovery
from sixfold.compute.routing import ReadRouter
from sixfold.compute.segment_stream import SegmentStream
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.volume_log import LAL_DEFAULT, MTR_BYTES_MAX, MTR_RECORDS_MAX, LalExceeded, Patch, VolumeLog
from sixfold.storage.errors import REASON_STALE_MEMBERSHIP_EPOCH, REASON_STALE_VOLUME_EPOCH, StorageError
from sixfold.storage.segment import TruncationRange
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.status import detail_of
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.wire import record_from_proto, record_to_proto, truncation_to_proto

log = logging.getLogger(__name__)


def _now() -> float:
    """The event loop's clock: real time in the process, virtual time in the simulator."""
    return asyncio.get_running_loop().time()


T = TypeVar("T")

VOLUME_BYTES_MAX = 128 * 2**40
GROW_PGS_PER_WRITE_MAX = 8
COMMIT_TIMEOUT_S = 5.0
RPC_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0  # a whole read, across segments
READ_ATTEMPT_TIMEOUT_S = 1.0  # one segment's answer; then the next segments are tried
# An open (or a regain) tries recovery again, with a growing pause, until it succeeds or this long has
# passed; within the fault budget it succeeds well before (the simulator checks every writer opens).
OPEN_DEADLINE_S = 40.0
RECOVERY_ATTEMPTS_MAX = 60
RECOVERY_PAUSE_MAX_S = 2.0
RECOVERY_REPLICATION_TIMEOUT_S = 30.0
# After a segment refuses this writer's epoch, the writer waits this long (a newer writer may be mid-open)
# and then judges: fenced for good if a newer writer finished its recovery, else it regains the volume.
FENCE_GRACE_S = 1.0
FENCE_JUDGE_PAUSE_S = 0.5  # between two looks when too few segments answered to judge
# A newer epoch on a write quorum of some PG is a writer opening: it gets this long to finish before this
# writer takes the volume back (an open's steps each retry lost messages for up to QUORUM_STEP_TIMEOUT_S).
OPENER_GRACE_S = 10.0
FENCED, OPENING, NOT_FENCED, UNKNOWN = "fenced", "opening", "not fenced", "unknown"  # _newer_writer_opened


class _Superseded(Exception):
    """A regain gives way: another writer raised a newer epoch or finished a recovery meanwhile."""


# Writes and reads that arrive while the writer regains the volume wait this long before UNAVAILABLE.
REGAIN_WAIT_S = 5.0
READ_RECORDS_BATCH = 5_000
CONNECT_WAIT_S = 1.0
GATHER_GRACE_S = 0.2
QUORUM_STEP_TIMEOUT_S = 5.0  # a recovery step asks the segments that did not answer again, this long
QUORUM_RETRY_PAUSE_S = 0.2
RECOVERY_CALL_TRIES = 3  # a single recovery call (records, chain tail) is asked this many times
# A segment deletes what the range voids (at most LAL's worth of records) before it answers; a lost
# request is asked again within the step's QUORUM_STEP_TIMEOUT_S (applying a range twice is harmless).
TRUNCATE_TIMEOUT_S = 2.0
# How often the writer asks the control plane for membership changes (sooner when a segment says its
# membership epoch is newer than the writer's).
MEMBERSHIP_POLL_S = 0.5


@dataclass
class PgInfo:
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    membership: Membership
    streams: dict[str, SegmentStream]  # node_id -> stream (a node holds one segment of a PG)


def _insecure_channel(address: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


class Channels:
    """One gRPC channel per storage node address, shared by every stream and read to it.
    The simulator passes a factory of fake channels that route over its seeded network."""

    def __init__(self, factory: Callable[[str], Any] = _insecure_channel) -> None:
        self._factory = factory
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._factory(address)
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class Volume:
    def __init__(
        self,
        volume_id: str,
        control_plane: Any,
        channels: Channels,
        *,
        lal: int = LAL_DEFAULT,
        commit_timeout_s: float = COMMIT_TIMEOUT_S,
        writer_id: str | None = None,
    ) -> None:
        self.volume_id = volume_id
        # Names this writer to the segments when it raises an epoch (a lost reply is then rescued by asking again).
        self.writer_id = writer_id or uuid.uuid4().hex
        self.control_plane = control_plane  # ControlPlaneServiceStub (aio)
        self.channels = channels
        self.lal = lal
        self.commit_timeout_s = commit_timeout_s
        self.page_size = 0
        self.segment_size_bytes = 0
        self.pages_per_pg = 0
        self.geometry_epoch = 0
        self.pgs: dict[int, PgInfo] = {}
        self.epoch = 0
        self.fenced = False
        self.fenced_reason = ""
        self.log: VolumeLog | None = None
        self.cache: BufferCache | None = None
        self.router = ReadRouter()
        self.read_points = ReadPoints()  # reads in flight, reported to storage (compute/read_points.py)
        self.truncations: list[TruncationRange] = []
        self._sent_truncations: set[TruncationRange] = set()  # every range any attempt of this writer sent
        self.truncation_protos: list[pb.TruncationRange] = []
        self.commits = 0
        self.storage_page_reads = 0  # pages read from a segment (not the buffer cache)
        self.hedged_reads = 0  # storage reads that also asked a second segment
        self._waiters: dict[int, asyncio.Future[int]] = {}
        self._mtr_records: dict[int, list[Any]] = {}
        self._vdl_advanced = asyncio.Event()
        self._grow_lock = asyncio.Lock()
        self._refresh_wanted = asyncio.Event()
        self._follow_task: asyncio.Task[None] | None = None
        # Epoch refusals (storage/epochs.py): the highest epoch a segment said it holds; the task judging them.
        self.refused_epoch = 0
        self.regains = 0  # new recoveries this writer made after refusals that no newer writer stood behind
        self.regaining = False
        self.running_epoch = 0  # the epoch of the last open or regain that completed
        self.gave_up = False  # fenced because a regain could not finish, not because a newer writer recovered
        self._regained = asyncio.Event()
        self._regained.set()
        self._fence_task: asyncio.Task[None] | None = None
        self._closed = False
        # Told of every MTR as it is allocated, and of the truncation ranges each recovery is about to send (the
        # simulator keeps its oracle of the volume this way).
        self.on_allocate: Callable[[Any], None] | None = None
        self.on_truncating: Callable[[list[TruncationRange]], None] | None = None

    # -- small accessors used by the streams ---------------------------------------

    @property
    def vdl(self) -> int:
        return self.log.vdl if self.log else 0

    def min_read_point(self, pg_index: int) -> int:
        """The lowest read point this writer may still read the PG at (0 before it is open)."""
        if self.log is None or pg_index not in self.log.pgs:
            return 0
        return self.read_points.lowest(self.log.read_point(pg_index))

    def membership_epoch(self, pg_index: int) -> int:
        return self.pgs[pg_index].membership_epoch

    @staticmethod
    def refused_epoch_of(error: grpc.aio.AioRpcError) -> int | None:
        """The epoch a segment holds when it refused this writer's as stale (None: not such a refusal)."""
        detail = detail_of(error)
        return detail.int_of("volume_epoch") if detail.reason == REASON_STALE_VOLUME_EPOCH else None

    @staticmethod
    def is_membership_refusal(error: grpc.aio.AioRpcError) -> bool:
        return detail_of(error).reason == REASON_STALE_MEMBERSHIP_EPOCH

    def on_epoch_refusal(self, where: str, epoch: int, details: str) -> None:
        """A segment refused this writer's epoch: it holds `epoch`. One segment, or a few, are failing ones
        (a stray raise, an opener that failed midway); the writer is fenced only if a newer writer finished
        its recovery, which `_judge_fence` finds out. Otherwise it regains the volume."""
        if self.fenced or self._closed or self.log is None:
            return
        self.refused_epoch = max(self.refused_epoch, epoch)
        if self.regaining or (self._fence_task is not None and not self._fence_task.done()):
            return
        log.warning(
            "volume %s: %s holds epoch %d, newer than this writer's %d (%s); checking in %.1f s whether a "
            "newer writer opened the volume",
            self.volume_id,
            where,
            epoch,
            self.epoch,
            details,
            FENCE_GRACE_S,
        )
        self._fence_task = asyncio.create_task(self._judge_fence(), name=f"fence-{self.volume_id}")

    def _end_regain(self) -> None:
        self.regaining = False
        self._regained.set()

    def on_fenced(self, stream: SegmentStream | None, details: str, gave_up: bool = False) -> None:
        """Fenced for good: a newer writer recovered the volume, or (`gave_up`) a regain could not finish."""
        if self.fenced:
            return
        self.fenced = True
        self.gave_up = gave_up
        self._end_regain()
        where = f" (segment {stream.segment_id} on {stream.node_id})" if stream else ""
        self.fenced_reason = f"a newer writer has opened volume {self.volume_id}{where}: {details}"
        log.warning("fenced: %s", self.fenced_reason)
        # Their records are already on segments: the new writer's recovery may make them durable.
        # Their outcome is unknown, never a definite "not written".
        for cpl, future in self._waiters.items():
            if not future.done():
                future.set_exception(
                    FencedInFlight(
                        f"this writer (epoch {self.epoch}) was fenced while MTR {cpl} was in flight: "
                        f"{self.fenced_reason}; the MTR may still have become durable through the new writer"
                    )
                )
        self._waiters.clear()
        self._vdl_advanced.set()

    def _fenced_sentence(self) -> str:
        return (
            f"this writer (epoch {self.epoch}) was fenced: {self.fenced_reason}; "
            "it may no longer change the volume, send writes to the new writer"
        )

    def state_counts(self, where: str, state: Any) -> bool:
        """Whether a segment's state (GetSegmentState) may count towards this writer's quorums. Its SCL runs
        along its PG's chain as the segment knows it: once it holds a newer epoch, that chain may go through a
        newer writer's records, past LSNs of this writer that a newer recovery truncated, so its SCL says
        nothing about this writer's records. (An append's ack is different: a segment that accepted this
        writer's batch holds no newer epoch, so its chain has no newer writer's records.)"""
        if state.volume_epoch <= self.epoch:
            return True
        self.on_epoch_refusal(where, state.volume_epoch, "its state shows the newer epoch")
        return False

    def on_session_scl(self, stream: SegmentStream, scl: int) -> None:
        """A stream (re)connected and the segment said its SCL, which may be below what it said before."""
        if self.log is None:
            return
        if stream.pg_index in self.log.pgs:
            released = self.log.reset_scl(stream.pg_index, stream.node_id, scl)
            if released:
                self._release(released)

    def on_ack(self, stream: SegmentStream, scl: int) -> None:
        if self.log is None:
            return
        released = self.log.on_ack(stream.pg_index, stream.node_id, scl)
        if released:
            self._release(released)

    def _release(self, cpls: list[int]) -> None:
        assert self.cache is not None
        for cpl in cpls:
            records = self._mtr_records.pop(cpl, None)
            if records:
                self.cache.on_durable(records)
            future = self._waiters.pop(cpl, None)
            if future is not None and not future.done():
                future.set_result(cpl)
            self.commits += 1
        self._vdl_advanced.set()

    # -- geometry --------------------------------------------------------------------

    def _apply_geometry(self, geometry: Any) -> list[PgInfo]:
        """Add PGs this writer does not know yet; return them."""
        self.page_size = geometry.page_size
        self.segment_size_bytes = geometry.segment_size_bytes
        self.pages_per_pg = geometry.segment_size_bytes // geometry.page_size
        self.geometry_epoch = geometry.geometry_epoch
        added = []
        for pg in geometry.protection_groups:
            if pg.pg_index in self.pgs:
                continue
            streams = self._new_streams(pg.pg_index, pg.segments)
            info = PgInfo(pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch, _membership_of(pg), streams)
            self.pgs[pg.pg_index] = info
            added.append(info)
        return added

    def _new_streams(self, pg_index: int, segments: Any) -> dict[str, SegmentStream]:
        return {
            s.node_id: SegmentStream(
                self, pg_index, s.segment_id, s.node_id, s.az, s.address, self.channels.get(s.address)
            )
            for s in segments
        }

    # -- membership changes: the writer follows the control plane -----------------------

    def request_geometry_refresh(self) -> None:
        """A segment refused a batch for a stale membership epoch: ask the control plane now."""
        self._refresh_wanted.set()

    async def _follow_membership(self) -> None:
        while not self.fenced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_wanted.wait(), MEMBERSHIP_POLL_S)
            self._refresh_wanted.clear()
            try:
                reply = await self.control_plane.DescribeVolume(
                    cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                log.debug("membership poll of %s failed: %s", self.volume_id, error.details())
                continue
            try:
                for pg in reply.geometry.protection_groups:
                    known = self.pgs.get(pg.pg_index)
                    if known is not None and pg.membership_epoch > known.membership_epoch:
                        await self._change_membership(known, pg)
                    if known is not None:
                        self._follow_addresses(known, pg)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "volume %s: applying a membership change failed; trying again at the next poll", self.volume_id
                )

    def _follow_addresses(self, info: PgInfo, pg: Any) -> None:
        """A node that restarted on a new port registered its new address: its stream dials that from now on
        (what it had not acknowledged is sent there)."""
        for placement in pg.segments:
            stream = info.streams.get(placement.node_id)
            if stream is not None and placement.address and stream.address != placement.address:
                log.info(
                    "volume %s PG %d: node %s moved from %s to %s",
                    self.volume_id,
                    pg.pg_index,
                    placement.node_id,
                    stream.address,
                    placement.address,
                )
                stream.redirect(placement.address, self.channels.get(placement.address))

    async def _change_membership(self, info: PgInfo, pg: Any) -> None:
        """Take the PG's new quorum sets: streams to new segments start, streams to segments no set
        holds any more stop, and the quorum tracking switches (which may release commits)."""
        membership = _membership_of(pg)
        added = [s for s in pg.segments if s.node_id in membership.segments and s.node_id not in info.streams]
        new_streams = self._new_streams(pg.pg_index, added)
        info.streams.update(new_streams)
        removed = [info.streams.pop(node) for node in list(info.streams) if node not in membership.segments]
        before = info.membership_epoch
        # Switch the quorum tracking before any await, so no ack is counted under the old sets once
        # batches go out at the new epoch.
        info.membership_epoch = pg.membership_epoch
        info.membership = membership
        if self.log is not None:
            self._release(self.log.set_membership(pg.pg_index, membership))
        for stream in new_streams.values():
            stream.start()
        log.info(
            "volume %s PG %d: membership epoch %d -> %d, quorum sets %s",
            self.volume_id,
            pg.pg_index,
            before,
            pg.membership_epoch,
            " & ".join("{" + ",".join(sorted(q.members)) + "}" for q in membership.sets),
        )
        for stream in removed:
            await stream.close()

    def pg_of_page(self, page_no: int) -> int:
        return page_no // self.pages_per_pg

    @property
    def page_count(self) -> int:
        return len(self.pgs) * self.pages_per_pg

    # -- opening: recovery and fencing -------------------------------------------------

    async def open(self) -> None:
        reply = await self.control_plane.DescribeVolume(
            cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S * 5
        )
        self._apply_geometry(reply.geometry)
        self.cache = BufferCache(self.page_size)
        target_vdl = await self._recover_until_open()
        # The streams run from here on: no second attempt, which would fence them.
        self._follow_task = asyncio.create_task(self._follow_membership(), name=f"follow-{self.volume_id}")
        await self._wait_replicated(target_vdl)
        assert self.log is not None
        self.running_epoch = self.epoch
        log.info(
            "volume %s open: epoch %d, VDL %d, next LSN %d, %d PGs",
            self.volume_id,
            self.epoch,
            self.log.vdl,
            self.log.next_lsn,
            len(self.pgs),
        )

    async def _recover_until_open(self, regain: bool = False) -> int:
        """Recovery attempts, each with a newer epoch, until one succeeds or OPEN_DEADLINE_S passed. A regain
        (`regain`) gives way instead (`_Superseded`) when another writer raised an epoch at least as new as
        its attempt's or finished a recovery since this writer's last open: two writers must not take the
        volume from each other in turn."""
        deadline = _now() + OPEN_DEADLINE_S
        last_error: StorageError | None = None
        for attempt in range(1, RECOVERY_ATTEMPTS_MAX + 1):
            try:
                return await self._recover(regain)
            except QuorumNotMet as error:
                last_error = error
                log.warning("recovery of %s, attempt %d: %s", self.volume_id, attempt, error.message)
                if regain and self.refused_epoch >= self.epoch:
                    raise _Superseded(f"another writer took epoch {self.refused_epoch} meanwhile") from None
            pause = min(RECOVERY_PAUSE_MAX_S, 0.2 * attempt)
            if _now() + pause > deadline:
                break
            await asyncio.sleep(pause)
        raise QuorumNotMet(f"could not open volume {self.volume_id} in {OPEN_DEADLINE_S:.0f} s: {last_error}")

    # -- a segment refused this writer's epoch: fenced for good, or regain the volume -------------------

    async def _judge_fence(self) -> None:
        await asyncio.sleep(FENCE_GRACE_S)
        waited = FENCE_GRACE_S
        while not self.fenced and not self._closed:
            verdict, why = await self._newer_writer_opened()
            if verdict == FENCED:
                self.on_fenced(None, why)
                return
            if verdict == NOT_FENCED or (verdict == OPENING and waited >= OPENER_GRACE_S):
                log.warning("volume %s: %s", self.volume_id, why)
                if await self._regain():
                    return
                waited = 0.0  # another writer raised an epoch meanwhile: judge again, giving it time
            await asyncio.sleep(FENCE_JUDGE_PAUSE_S)  # an opener at work, or too few answers to tell
            waited += FENCE_JUDGE_PAUSE_S

    async def _newer_writer_opened(self) -> tuple[str, str]:
        """(verdict, why). FENCED: a newer writer finished its recovery: in every PG a segment holds a
        truncation range stamped with a newer epoch (a recovery truncates a write quorum of every PG before it
        serves, so a read quorum sees it). OPENING: not that, but some PG has a newer epoch on a write quorum:
        a writer is opening (it gets OPENER_GRACE_S). NOT_FENCED: neither (a stray raise, an opener that gave
        up). UNKNOWN: too few segments answered to tell."""
        found: list[str] = []
        opening = False
        lacking = ""
        for pg in self.pgs.values():
            got = await self._gather(self._state_calls(pg))
            raised = {
                n
                for n, r in got.items()
                if r.state.volume_epoch > self.running_epoch and r.state.volume_epoch_owner != self.writer_id
            }
            if pg.membership.write_quorum_met(raised):
                opening = True
            newer = [
                (node, r)
                for node, reply in got.items()
                for r in reply.state.truncation_ranges
                if r.epoch > self.running_epoch and _range_of(r) not in self._sent_truncations
            ]
            if newer:
                node, r = newer[0]
                found.append(
                    f"PG {pg.pg_index}: segment on {node} holds truncation range [{r.start_lsn}, "
                    f"{r.end_lsn}] of epoch {r.epoch}"
                )
                continue
            whole = {node for node, reply in got.items() if reply.state.whole}
            if not pg.membership.read_quorum_met(whole):
                return UNKNOWN, f"PG {pg.pg_index}: too few whole segments answered"
            lacking = lacking or f"PG {pg.pg_index}: no whole segment of a read quorum holds a newer truncation"
        if not lacking:
            return FENCED, f"a newer writer recovered the volume ({'; '.join(found)})"
        if opening:
            return OPENING, f"a newer epoch is on a write quorum, but its writer has not finished ({lacking})"
        return NOT_FENCED, (
            f"no newer writer stands behind the epoch {self.refused_epoch} some segments hold "
            f"({lacking}); regaining the volume"
        )

    async def _regain(self) -> bool:
        """No newer writer stands behind the refusal: open the volume again in place, with a new recovery at
        a newer epoch (which every segment takes again). MTRs in flight become durable if the recovery finds
        them below its VDL, else they are truncated (NotCommitted). Returns False when another writer raised
        an epoch or finished a recovery meanwhile (the caller judges again), True when done (regained, or
        fenced because it could not)."""
        assert self.log is not None
        self.regaining = True
        self._regained.clear()
        self.regains += 1
        log.warning(
            "volume %s: regaining it with a new recovery (segments hold epoch %d, this writer %d)",
            self.volume_id,
            self.refused_epoch,
            self.running_epoch,
        )
        try:
            await cancel_and_wait(self._follow_task)
            for pg in self.pgs.values():
                for stream in pg.streams.values():
                    await stream.close()
            reply = await self.control_plane.DescribeVolume(
                cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S * 5
            )
            self.pgs = {}
            self._apply_geometry(reply.geometry)
            self.cache = BufferCache(self.page_size)
            target_vdl = await self._recover_until_open(regain=True)
            self._follow_task = asyncio.create_task(self._follow_membership(), name=f"follow-{self.volume_id}")
            await self._wait_replicated(target_vdl)
        except _Superseded as why:
            log.warning("volume %s: stopped regaining: %s", self.volume_id, why)
            return False
        except (StorageError, grpc.aio.AioRpcError) as error:
            text = error.message if isinstance(error, StorageError) else f"{error.code().name}: {error.details()}"
            self.on_fenced(
                None, f"it could not regain the volume after a segment refused its epoch: {text}", gave_up=True
            )
            return True
        self.running_epoch = self.epoch
        self._end_regain()
        vdl = self.log.vdl
        self._release(sorted(c for c in self._waiters if c <= vdl))  # the recovery found them durable
        for cpl in [c for c in self._waiters if c > vdl]:
            future = self._waiters.pop(cpl)
            self._mtr_records.pop(cpl, None)
            if not future.done():
                future.set_exception(
                    NotCommitted(
                        f"MTR {cpl} was not committed: the writer regained volume {self.volume_id} with a new recovery "
                        f"(epoch {self.epoch}), which truncated every LSN above VDL {vdl}; retry it"
                    )
                )
        log.warning("volume %s regained: epoch %d, VDL %d", self.volume_id, self.epoch, vdl)
        return True

    async def _ready(self) -> None:
        """Before a write or read: wait (bounded) for a regain in progress, then check the writer is open."""
        if self.regaining:
            try:
                await asyncio.wait_for(self._regained.wait(), REGAIN_WAIT_S)
            except TimeoutError:
                raise Regaining(
                    f"the writer is regaining volume {self.volume_id} (a new recovery after a segment "
                    "refused its epoch); retry in a moment"
                ) from None
        self._check_open()

    async def _gather(
        self, calls: dict[str, Callable[[], Awaitable[T]]], enough: Callable[[set[str]], bool] | None = None
    ) -> dict[str, T]:
        """Run calls concurrently; return the ones that succeeded. With `enough`, stop waiting
        `GATHER_GRACE_S` after the successes satisfy it (a quorum), so one hung node does not hold
        recovery up for a whole RPC deadline; the calls still running are cancelled."""
        results: dict[str, T] = {}

        async def one(key: str, fn: Callable[[], Awaitable[T]]) -> None:
            try:
                results[key] = await fn()
            except grpc.aio.AioRpcError as error:
                refused = self.refused_epoch_of(error)
                if refused is not None:  # it did not take the step; the next attempt picks a newer epoch
                    self.refused_epoch = max(self.refused_epoch, refused)
                log.warning("volume %s: %s: %s %s", self.volume_id, key, error.code().name, error.details())

        tasks = [asyncio.ensure_future(one(k, fn)) for k, fn in calls.items()]
        pending = set(tasks)
        while pending:
            if enough is not None and enough(set(results)):
                await asyncio.wait(pending, timeout=GATHER_GRACE_S)
                break
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        return {k: results[k] for k in calls if k in results}

    async def _gather_quorum(
        self, calls: dict[str, Callable[[], Awaitable[T]]], enough: Callable[[set[str]], bool]
    ) -> dict[str, T]:
        """`_gather` for a recovery step, asking again the segments that did not answer (a lost message, a
        call that timed out) until `enough` of them did or `QUORUM_STEP_TIMEOUT_S` passed. Every step this
        serves is idempotent: raising the epoch, reading state, applying a truncation range."""
        deadline = _now() + QUORUM_STEP_TIMEOUT_S
        results: dict[str, T] = {}
        while True:
            missing = {key: fn for key, fn in calls.items() if key not in results}
            results.update(await self._gather(missing, enough=lambda got: enough(set(results) | got)))
            if enough(set(results)) or self.fenced or _now() >= deadline:
                return {key: results[key] for key in calls if key in results}
            await asyncio.sleep(QUORUM_RETRY_PAUSE_S)

    @staticmethod
    def _state_calls(pg: PgInfo) -> dict[str, Callable[[], Awaitable[Any]]]:
        """One GetSegmentState call per segment of the PG, keyed by node."""
        return {
            node: (
                lambda s=s: s.stub.GetSegmentState(
                    pb.GetSegmentStateRequest(segment_id=s.segment_id), timeout=RPC_TIMEOUT_S
                )
            )
            for node, s in pg.streams.items()
        }

    async def _states(self, pg: PgInfo) -> dict[str, Any]:
        return await self._gather(self._state_calls(pg), enough=pg.membership.read_quorum_met)

    async def _read_quorum_states(self) -> tuple[dict[int, dict[str, Any]], list[SegmentReport]]:
        """Per PG, the states of a read quorum of whole segments (storage/segment.py `whole`: a segment that
        lost a copy it may have acknowledged does not count), and the reports of the others that answered."""
        states: dict[int, dict[str, Any]] = {}
        others: list[SegmentReport] = []
        for pg in self.pgs.values():
            whole: set[str] = set()

            def noting_whole(
                node: str, call: Callable[[], Awaitable[Any]], whole: set[str]
            ) -> Callable[[], Awaitable[Any]]:
                async def run() -> Any:
                    reply = await call()
                    if reply.state.whole:
                        whole.add(node)
                    return reply

                return run

            calls = {node: noting_whole(node, call, whole) for node, call in self._state_calls(pg).items()}
            got = await self._gather_quorum(
                calls, lambda answered, m=pg.membership, seen=whole: m.read_quorum_met(answered & seen)
            )
            if not pg.membership.read_quorum_met(whole & set(got)):
                not_whole = sorted(n for n in got if n not in whole)
                raise QuorumNotMet(
                    f"PG {pg.pg_index} of volume {self.volume_id}: only {len(whole & set(got))} whole segments "
                    f"of 6 answered ({sorted(whole & set(got))}"
                    + (f"; not whole, so not counted: {not_whole}" if not_whole else "")
                    + f"); recovery needs {READ_QUORUM}"
                )
            states[pg.pg_index] = {n: r for n, r in got.items() if n in whole}
            others += [_report(r.state) for n, r in got.items() if n not in whole]
        return states, others

    def _check_not_superseded(self, reports: list[SegmentReport]) -> None:
        """A regain gives way to a writer that finished a recovery since this one last opened (ranges this
        writer's own earlier attempts sent do not count)."""
        newest = max(
            (r.epoch for report in reports for r in report.truncation_ranges if r not in self._sent_truncations),
            default=0,
        )
        if newest > self.running_epoch:
            raise _Superseded(f"a writer with epoch {newest} recovered the volume meanwhile")

    async def _recover(self, regain: bool = False) -> int:
        """Fence older writers, find VCL and VDL, truncate above VDL, start the streams.
        Returns the VDL that re-replicated records must reach before the volume serves."""
        states, others = await self._read_quorum_states()
        reports = [_report(r.state) for got in states.values() for r in got.values()]
        if regain:
            self._check_not_superseded(reports + others)
        self.epoch = next_epoch(reports + others, self.refused_epoch)
        for pg in self.pgs.values():
            raised = await self._gather_quorum(
                {
                    node: (
                        lambda s=s: s.stub.RaiseVolumeEpoch(
                            pb.RaiseVolumeEpochRequest(
                                segment_id=s.segment_id, volume_epoch=self.epoch, writer_id=self.writer_id
                            ),
                            timeout=RPC_TIMEOUT_S,
                        )
                    )
                    for node, s in pg.streams.items()
                },
                pg.membership.write_quorum_met,
            )
            if not pg.membership.write_quorum_met(raised):
                raise QuorumNotMet(
                    f"PG {pg.pg_index}: epoch {self.epoch} was taken by only {len(raised)} segments "
                    f"({sorted(raised)}); fencing needs {WRITE_QUORUM}"
                )
        # With the epoch raised on a write quorum everywhere, no older writer can complete a write.
        states, others = await self._read_quorum_states()
        reports = [_report(r.state) for got in states.values() for r in got.values()]
        if regain:
            self._check_not_superseded(reports + others)
        floor = floor_of(reports)
        recovered: dict[int, PgRecovered] = {}
        for pg_index, got in states.items():
            best_node = max(got, key=lambda n: (got[n].state.scl, n))
            best_scl = got[best_node].state.scl
            try:
                records = await self._fetch_records(self.pgs[pg_index].streams[best_node], floor, best_scl)
            except grpc.aio.AioRpcError as error:
                raise QuorumNotMet(
                    f"PG {pg_index}: reading records {floor}..{best_scl} from {best_node} failed: "
                    f"{error.code().name} {error.details()}"
                ) from None
            recovered[pg_index] = PgRecovered(best_node, best_scl, records)
        try:
            plan = plan_recovery(
                reports,
                recovered,
                self.epoch,
                self.lal,
                others,
                sorted(self._sent_truncations, key=lambda r: (r.start_lsn, r.end_lsn, r.epoch)),
            )
        except NewerRecovery as newer:
            self.refused_epoch = max(self.refused_epoch, newer.epoch)
            raise QuorumNotMet(f"epoch {self.epoch} is stale: {newer}; trying again with a newer one") from None
        log.info(
            "recovery of %s: floor %d, VCL %d, VDL %d, truncating [%d, %d] with epoch %d, %d records to re-replicate",
            self.volume_id,
            plan.floor,
            plan.vcl,
            plan.vdl,
            plan.truncation.start_lsn,
            plan.truncation.end_lsn,
            self.epoch,
            len(plan.readopt),
        )
        self.truncations = plan.known_truncations
        self.truncation_protos = [truncation_to_proto(r) for r in self.truncations]
        self._sent_truncations.update(self.truncations)
        if self.on_truncating is not None:
            self.on_truncating(self.truncations)
        scl_after: dict[int, dict[str, int]] = {}
        for pg in self.pgs.values():
            truncated = await self._gather_quorum(
                {
                    node: (
                        lambda s=s: s.stub.TruncateSegment(
                            pb.TruncateSegmentRequest(
                                segment_id=s.segment_id,
                                volume_epoch=self.epoch,
                                range=truncation_to_proto(plan.truncation),
                            ),
                            timeout=TRUNCATE_TIMEOUT_S,
                        )
                    )
                    for node, s in pg.streams.items()
                },
                pg.membership.write_quorum_met,
            )
            if not pg.membership.write_quorum_met(truncated):
                raise QuorumNotMet(f"PG {pg.pg_index}: the truncation reached only {len(truncated)} segments")
            scl_after[pg.pg_index] = {node: reply.state.scl for node, reply in truncated.items()}
        tails = {}
        for pg_index, rec in recovered.items():
            stream = self.pgs[pg_index].streams[rec.best_segment_id]
            try:
                tail_request = pb.GetSegmentStateRequest(
                    segment_id=stream.segment_id, tail_at_or_below_lsn=max(1, min(plan.vdl, rec.best_scl))
                )
                reply = await self._call_again(
                    functools.partial(stream.stub.GetSegmentState, tail_request, timeout=RPC_TIMEOUT_S)
                )
            except grpc.aio.AioRpcError as error:
                raise QuorumNotMet(
                    f"PG {pg_index}: the chain tail on {rec.best_segment_id} could not be read: "
                    f"{error.code().name} {error.details()}"
                ) from None
            needed = min(plan.vdl, rec.best_scl)
            if not reply.state.whole or reply.state.scl < needed:
                # Its copy changed since the read (it lost a record, or its disk failed and it is rebuilding):
                # its chain tail is no longer the PG's.
                raise QuorumNotMet(
                    f"PG {pg_index}: segment on {rec.best_segment_id} no longer holds the chain to "
                    f"LSN {needed} (SCL {reply.state.scl}, whole {reply.state.whole})"
                )
            tails[pg_index] = reply.tail_lsn if needed > 0 else 0
        volume_log = VolumeLog(
            pg_of_page=self.pg_of_page,
            epoch=self.epoch,
            lal=self.lal,
            vdl=plan.floor,
            next_lsn=plan.next_lsn,
            prev_volume_lsn=plan.vdl,
        )
        for pg in self.pgs.values():
            volume_log.add_pg(pg.pg_index, pg.membership, last_lsn=tails[pg.pg_index])
        volume_log.adopt(plan.readopt, plan.vdl)
        self.log = volume_log
        for pg_index, scls in scl_after.items():
            for node, scl in scls.items():
                volume_log.on_ack(pg_index, node, scl)
        by_pg: dict[int, list[tuple[int, pb.LogRecord]]] = {}
        for record, pg_index in plan.readopt:
            by_pg.setdefault(pg_index, []).append((record.lsn, record_to_proto(record)))
        for pg in self.pgs.values():
            for stream in pg.streams.values():
                stream.enqueue(by_pg.get(pg.pg_index, []))
                stream.start()
        self._release(volume_log.advance())
        return plan.vdl

    async def _wait_replicated(self, target_vdl: int) -> None:
        assert self.log is not None
        deadline = _now() + RECOVERY_REPLICATION_TIMEOUT_S
        while self.log.vdl < target_vdl:
            if _now() > deadline:
                raise QuorumNotMet(
                    f"records up to VDL {target_vdl} did not reach write quorum again in "
                    f"{RECOVERY_REPLICATION_TIMEOUT_S:.0f} s"
                )
            self._vdl_advanced.clear()
            try:
                await asyncio.wait_for(self._vdl_advanced.wait(), 0.5)
            except TimeoutError:
                await self._refresh_scls()

    async def _refresh_scls(self) -> None:
        """Ask every segment for its SCL, as a stream does when it connects. A segment that caught up
        through gossip acknowledges nothing new (the records it lacked were never sent to it again), so
        without asking, recovery would not count it towards the write quorum it waits for."""
        for pg in list(self.pgs.values()):
            for node, reply in (await self._gather(self._state_calls(pg))).items():
                stream = pg.streams.get(node)  # a membership change may have closed it meanwhile
                if stream is not None and self.state_counts(f"segment {stream.segment_id} on {node}", reply.state):
                    stream.on_scl(reply.state.scl)

    @staticmethod
    async def _call_again(call: Callable[[], Awaitable[T]]) -> T:
        """One recovery call, asked again (up to RECOVERY_CALL_TRIES times) when it timed out or its node was
        unreachable: a lost message must not hold recovery up for a long deadline."""
        for attempt in range(1, RECOVERY_CALL_TRIES + 1):
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                if attempt == RECOVERY_CALL_TRIES or error.code() not in (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.UNAVAILABLE,
                ):
                    raise
            await asyncio.sleep(QUORUM_RETRY_PAUSE_S)
        raise AssertionError("unreachable")

    async def _fetch_records(self, stream: SegmentStream, floor: int, to_lsn: int) -> list[Any]:
        records = []
        cursor = floor
        while cursor < to_lsn:
            request = pb.ReadRecordsRequest(
                segment_id=stream.segment_id, from_lsn=cursor, to_lsn=to_lsn, max_records=READ_RECORDS_BATCH
            )
            reply = await self._call_again(functools.partial(stream.stub.ReadRecords, request, timeout=RPC_TIMEOUT_S))
            if reply.scl < to_lsn:
                # The copy changed since its state was read (it lost records, or its disk failed and it is being
                # rebuilt): what it returns may stop short of records that met quorum. Never plan on that.
                raise QuorumNotMet(
                    f"segment on {stream.node_id} no longer holds the chain to LSN {to_lsn} "
                    f"(its SCL is {reply.scl}); reading again"
                )
            batch = [record_from_proto(r) for r in reply.records]
            for record, crc in batch:
                if record.crc() != crc:
                    raise QuorumNotMet(f"record LSN {record.lsn} from {stream.node_id} failed its CRC-32C check")
            records.extend(r for r, _ in batch)
            if not reply.more or not batch:
                break
            cursor = batch[-1][0].lsn
        return records

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._fence_task)
        await cancel_and_wait(self._follow_task)
        for pg in self.pgs.values():
            for stream in pg.streams.values():
                await stream.close()

    # -- writes -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.fenced:
            raise Fenced(self._fenced_sentence())
        assert self.log is not None and self.cache is not None

    def _validate(self, patches: list[Patch]) -> None:
        if not patches:
            raise InvalidRequest("the MTR is empty; send at least one patch")
        if len(patches) > MTR_RECORDS_MAX:
            raise InvalidRequest(f"the MTR has {len(patches)} patches; at most {MTR_RECORDS_MAX} fit in one MTR")
        total = sum(len(p.data) for p in patches)
        if total > MTR_BYTES_MAX:
            raise InvalidRequest(f"the MTR carries {total} bytes; at most {MTR_BYTES_MAX} fit in one MTR")
        for p in patches:
            if not p.data:
                raise InvalidRequest(f"the patch to page {p.page_no} is empty")
            if p.offset + len(p.data) > self.page_size:
                raise InvalidRequest(
                    f"the patch to page {p.page_no} covers bytes {p.offset}..{p.offset + len(p.data)}, "
                    f"past the end of a {self.page_size}-byte page"
                )
            if (p.page_no + 1) * self.page_size > VOLUME_BYTES_MAX:
                raise VolumeFull(f"volume {self.volume_id} is full: page {p.page_no} lies beyond 128 TiB")

    async def _ensure_pages(self, page_no: int) -> None:
        needed_pg = self.pg_of_page(page_no)
        if needed_pg < len(self.pgs):
            return
        if needed_pg - len(self.pgs) >= GROW_PGS_PER_WRITE_MAX:
            raise PageOutOfRange(
                f"page {page_no} is {needed_pg - len(self.pgs) + 1} PGs past the end of volume {self.volume_id} "
                f"({self.page_count} pages); a write grows it by at most {GROW_PGS_PER_WRITE_MAX} PGs "
                f"of {self.pages_per_pg} pages"
            )
        async with self._grow_lock:
            while needed_pg >= len(self.pgs):
                try:
                    reply = await self.control_plane.GrowVolume(
                        cp_pb.GrowVolumeRequest(volume_id=self.volume_id, geometry_epoch=self.geometry_epoch),
                        timeout=RPC_TIMEOUT_S * 10,
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise VolumeFull(error.details() or f"volume {self.volume_id} is full") from None
                    raise QuorumNotMet(f"could not grow volume {self.volume_id}: {error.details()}") from None
                for pg in self._apply_geometry(reply.geometry):
                    assert self.log is not None
                    self.log.add_pg(pg.pg_index, pg.membership)
                    for stream in pg.streams.values():
                        stream.start()
                    log.info(
                        "volume %s grew: PG %d (pages %d..%d)",
                        self.volume_id,
                        pg.pg_index,
                        pg.first_page,
                        pg.first_page + pg.page_count - 1,
                    )

    async def _wait_write_quorum_reachable(self, pg_indexes: set[int]) -> None:
        """Fail fast, before allocating anything, when a PG cannot reach a write quorum. Streams that are
        (re)connecting get `CONNECT_WAIT_S` to do so."""
        deadline = _now() + CONNECT_WAIT_S
        for pg_index in sorted(pg_indexes):
            pg = self.pgs[pg_index]
            connected = [n for n, s in pg.streams.items() if s.connected]
            while not pg.membership.write_quorum_met(connected) and _now() < deadline:
                await asyncio.sleep(0.02)
                connected = [n for n, s in pg.streams.items() if s.connected]
            if not pg.membership.write_quorum_met(connected):
                down = sorted(set(pg.streams) - set(connected))
                raise QuorumNotMet(
                    f"PG {pg_index} of volume {self.volume_id} reaches only {len(connected)} of 6 segments "
                    f"(unreachable: {', '.join(down)}); a write needs {WRITE_QUORUM}. Nothing was written."
                )

    async def write(self, patches: list[Patch]) -> int:
        await self._ready()
        self._validate(patches)
        await self._ensure_pages(max(p.page_no for p in patches))
        await self._ready()
        await self._wait_write_quorum_reachable({self.pg_of_page(p.page_no) for p in patches})
        deadline = _now() + self.commit_timeout_s
        while True:
            # Allocating and enqueueing take no await: the MTR goes to this log and these streams as one step
            # (a regain that begins later finds it among the waiters).
            await self._ready()
            assert self.log is not None
            try:
                mtr = self.log.allocate_mtr(patches)
                if self.on_allocate is not None:
                    self.on_allocate(mtr)
                break
            except LalExceeded as error:
                remaining = deadline - _now()
                if remaining <= 0:
                    raise QuorumNotMet(f"{error}; VDL is not advancing (is a write quorum reachable?)") from None
                self._vdl_advanced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._vdl_advanced.wait(), remaining)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[mtr.cpl] = future
        self._mtr_records[mtr.cpl] = mtr.records
        by_pg: dict[int, list[tuple[int, pb.LogRecord]]] = {}
        for record, pg_index in zip(mtr.records, mtr.pg_of_record):
            by_pg.setdefault(pg_index, []).append((record.lsn, record_to_proto(record)))
        for pg_index, items in by_pg.items():
            for stream in self.pgs[pg_index].streams.values():
                stream.enqueue(items)

        def time_out() -> None:
            if not future.done():  # the MTR stays in flight: it may still become durable later
                self._waiters.pop(mtr.cpl, None)
                future.set_exception(
                    CommitTimeout(
                        f"MTR with CPL {mtr.cpl} was sent but did not reach write quorum within "
                        f"{self.commit_timeout_s:.0f} s ({self._quorum_picture(by_pg)}); "
                        "it may still become durable later"
                    )
                )

        timer = asyncio.get_running_loop().call_later(max(0.0, deadline - _now()), time_out)
        try:
            return await future
        finally:
            timer.cancel()

    def _quorum_picture(self, by_pg: dict[int, Any]) -> str:
        parts = []
        for pg_index in by_pg:
            pg = self.pgs[pg_index]
            up = sum(1 for s in pg.streams.values() if s.connected)
            parts.append(f"PG {pg_index}: {up} of 6 segments connected")
        return "; ".join(parts)

    # -- reads --------------------------------------------------------------------------

    async def read(
        self, page_nos: list[int], *, from_storage: bool = False
    ) -> tuple[int, list[tuple[int, bytes, int]]]:
        """The pages at the current VDL. `from_storage`: every page from a segment, not the buffer cache."""
        await self._ready()
        assert self.log is not None and self.cache is not None
        for page_no in page_nos:
            if page_no >= self.page_count:
                raise PageOutOfRange(
                    f"page {page_no} is beyond the end of volume {self.volume_id} "
                    f"({self.page_count} pages); write to it first to grow the volume"
                )
        read_point = self.log.vdl
        results = await asyncio.gather(*(self._read_page(p, read_point, from_storage) for p in page_nos))
        return read_point, [(p, data, lsn) for p, (data, lsn) in zip(page_nos, results)]

    async def _read_page(self, page_no: int, read_point: int, from_storage: bool = False) -> tuple[bytes, int]:
        # The cache this read may fill: a regain meanwhile starts a new one, which must not take an image read
        # before it (the new one has not seen the records that became durable between).
        cache = self.cache
        assert cache is not None
        if not from_storage:
            cached = cache.get(page_no)
            if cached is not None:
                return cached
        pg = self.pgs[self.pg_of_page(page_no)]
        assert self.log is not None
        pg_read_point = self.read_points.acquire(self.log.read_point(pg.pg_index))
        try:
            data, page_lsn = await self._read_from_segments(pg, page_no, pg_read_point)
        finally:
            self.read_points.release(pg_read_point)
        self.storage_page_reads += 1
        if not from_storage:
            cache.put(page_no, data, page_lsn, read_point)
        return data, page_lsn

    async def _read_from_segments(self, pg: PgInfo, page_no: int, read_point: int) -> tuple[bytes, int]:
        assert self.log is not None
        tried: set[str] = set()
        deadline = _now() + READ_TIMEOUT_S
        quorum_refreshed = False
        while _now() < deadline:
            scl_of = {n: scl for n, scl in self.log.pgs[pg.pg_index].scl_of.items() if n in pg.streams}
            candidates = self.router.candidates(scl_of, read_point, frozenset(tried))
            if not candidates:
                if quorum_refreshed:
                    break
                # No segment known complete to the read point: ask a read quorum for their SCLs.
                got = await self._states(pg)
                for node, reply in got.items():
                    if self.state_counts(f"segment {reply.state.segment_id} on {node}", reply.state):
                        self.log.pgs[pg.pg_index].on_scl(node, reply.state.scl)
                quorum_refreshed = True
                tried.clear()
                continue
            result = await self._hedged_read(pg, candidates, page_no, read_point, tried)
            if result is not None:
                return result
        self._check_open()  # segments refused this writer's epoch: say fenced, or regaining, not "no segment"
        if self.regaining or (self._fence_task is not None and not self._fence_task.done()):
            raise Regaining(
                f"segments of volume {self.volume_id} refuse this writer's epoch {self.epoch}; the writer "
                "is finding out whether a newer writer opened it, or regaining it; retry in a moment"
            )
        raise QuorumNotMet(f"no segment of PG {pg.pg_index} could serve page {page_no} at read point {read_point}")

    async def _hedged_read(
        self, pg: PgInfo, candidates: list[str], page_no: int, read_point: int, tried: set[str]
    ) -> tuple[bytes, int] | None:
        first = candidates[0]
        tried.add(first)
        tasks = {asyncio.create_task(self._read_one(pg.streams[first], page_no, read_point)): first}
        done, _ = await asyncio.wait(tasks, timeout=self.router.hedge_delay_ms(first) / 1000)
        if not done and len(candidates) > 1:
            self.hedged_reads += 1
            second = candidates[1]
            tried.add(second)
            tasks[asyncio.create_task(self._read_one(pg.streams[second], page_no, read_point))] = second
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=READ_ATTEMPT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    return None
                for task in done:
                    result = task.result()
                    if result is not None:
                        return result
            return None
        finally:
            for task in pending:
                task.cancel()

    async def _read_one(self, stream: SegmentStream, page_no: int, read_point: int) -> tuple[bytes, int] | None:
        started = _now()
        try:
            reply = await stream.stub.ReadPage(
                pb.ReadPageRequest(
                    segment_id=stream.segment_id, page_no=page_no, read_point=read_point, volume_epoch=self.epoch
                ),
                timeout=READ_ATTEMPT_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            refused = self.refused_epoch_of(error)
            if refused is not None:  # one segment holds a newer epoch: judged apart, read elsewhere meanwhile
                self.on_epoch_refusal(
                    f"segment {stream.segment_id} on {stream.node_id}", refused, error.details() or ""
                )
            self.router.penalize(stream.node_id)
            if error.code() == grpc.StatusCode.DATA_LOSS:
                log.warning("segment %s on %s: %s", stream.segment_id, stream.node_id, error.details())
            return None
        self.router.observe(stream.node_id, (_now() - started) * 1000)
        return reply.data, reply.page_lsn

    # -- status -------------------------------------------------------------------------

    def status(self) -> vpb.VolumeStatus:
        now = _now()
        pgs = []
        for pg in sorted(self.pgs.values(), key=lambda p: p.pg_index):
            tracker = self.log.pgs.get(pg.pg_index) if self.log else None
            segments = [
                vpb.SegmentStatus(
                    segment_id=s.segment_id,
                    node_id=node,
                    az=s.az,
                    address=s.address,
                    scl=tracker.scl_of.get(node, 0) if tracker else 0,
                    last_ack_age_ms=int((now - s.last_ack_monotonic) * 1000) if s.last_ack_monotonic else 0,
                    connected=s.connected,
                    records_in_flight=s.records_in_flight,
                    bytes_sent=s.bytes_sent,
                    batches_sent=s.batches_sent,
                )
                for node, s in sorted(pg.streams.items())
            ]
            pgs.append(
                vpb.PgStatus(
                    pg_index=pg.pg_index,
                    first_page=pg.first_page,
                    page_count=pg.page_count,
                    membership_epoch=pg.membership_epoch,
                    pgcl=tracker.pgcl if tracker else 0,
                    segments=segments,
                )
            )
        return vpb.VolumeStatus(
            volume_id=self.volume_id,
            page_size=self.page_size,
            segment_size_bytes=self.segment_size_bytes,
            geometry_epoch=self.geometry_epoch,
            volume_epoch=self.epoch,
            vcl=self.log.vcl if self.log else 0,
            vdl=self.vdl,
            lsn_allocated=self.log.lsn_allocated if self.log else 0,
            lal=self.lal,
            protection_groups=pgs,
            fenced=self.fenced,
            commits=self.commits,
            network_bytes_sent=sum(s.bytes_sent for pg in self.pgs.values() for s in pg.streams.values()),
            cache_hits=self.cache.hits if self.cache else 0,
            storage_page_reads=self.storage_page_reads,
            hedged_reads=self.hedged_reads,
            fenced_reason=self.fenced_reason,
            regains=self.regains,
            regaining=self.regaining,
        )


def _range_of(r: pb.TruncationRange) -> TruncationRange:
    return TruncationRange(r.start_lsn, r.end_lsn, r.epoch)


def _membership_of(pg: Any) -> Membership:
    """A PG's quorum sets from its geometry: the base set (every segment that is not a change's new one)
    with every subset of its changes applied."""
    new_nodes = {c.new_node_id for c in pg.changes}
    base = [s.node_id for s in pg.segments if s.node_id not in new_nodes]
    return Membership.with_changes(base, [(c.old_node_id, c.new_node_id) for c in pg.changes])


def _report(state: pb.SegmentState) -> SegmentReport:
    return SegmentReport(
        segment_id=state.segment_id,
        scl=state.scl,
        highest_lsn=state.highest_lsn,
        volume_epoch=state.volume_epoch,
        vdl_hint=state.vdl_hint,
        truncation_ranges=tuple(TruncationRange(r.start_lsn, r.end_lsn, r.epoch) for r in state.truncation_ranges),
    )
