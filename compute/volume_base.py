"""The state of one open volume on the writer, and what every part of the volume shares.

`Volume` (compute/volume.py) is this base with one mixin per concern: following membership changes
(compute/following.py), opening by recovery (compute/opening.py), fencing and regaining
(compute/fencing.py), reads (compute/reads.py) and writes (compute/writes.py). The base holds the state
they share, answers the streams (it is the `StreamOwner` compute/segment_stream.py asks for), releases
commits as VDL advances, and fans calls out to a PG's segments (`_gather`).

The pure pieces decide (compute.volume_log, compute.recovery, compute.recovery_steps, compute.cache,
compute.routing, compute.quorum); the mixins do the I/O. Everything runs on one asyncio loop, so the pure
state is only ever touched from one thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from sixfold.compute.cache import BufferCache
from sixfold.compute.errors import Fenced, FencedInFlight, Regaining
from sixfold.compute.placement import Channels, PgInfo, membership_of
from sixfold.compute.read_points import ReadPoints
from sixfold.compute.routing import ReadRouter
from sixfold.compute.segment_reads import GATHER_GRACE_S, RPC_TIMEOUT_S, SegmentReads, loop_time
from sixfold.compute.segment_stream import SegmentStream
from sixfold.compute.volume_log import LAL_DEFAULT, VolumeLog
from sixfold.storage.records import LogRecord
from sixfold.storage.truncation import TruncationRange
from sixfold.storage.v1 import storage_service_pb2 as pb

__all__ = ["GATHER_GRACE_S", "RPC_TIMEOUT_S", "Released", "VolumeBase", "loop_time"]

log = logging.getLogger("sixfold.compute.volume")

T = TypeVar("T")

COMMIT_TIMEOUT_S = 5.0
# Writes and reads that arrive while the writer regains the volume wait this long before UNAVAILABLE.
REGAIN_WAIT_S = 5.0

# What a release tells its listeners: each MTR VDL passed, in LSN order, as (CPL, its records); the records
# are None for an MTR this writer did not allocate (a recovery found it durable).
Released = list[tuple[int, list[LogRecord] | None]]


class VolumeBase(SegmentReads):
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
        self.parent_volume_id = ""  # what the volume branched from, and where (a clone or a backtrack)
        self.branch_lsn = 0
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
        # The volume holds a SQLite database (compute/sql): raw page writes (WritePages) would corrupt it.
        self.holds_database = False
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
        # The commit time each MTR's CPL carries (storage/records.py), in microseconds since the Unix epoch; the
        # simulator replaces it with its virtual clock.
        self.wall_clock_us: Callable[[], int] = lambda: time.time_ns() // 1000
        self.on_truncating: Callable[[list[TruncationRange]], None] | None = None
        # Told of every release, after the cache took it (compute/redo_publisher.py streams it to read replicas).
        self.release_listeners: list[Callable[[Released], None]] = []
        # The lowest read point a read replica still reads at (0: none), kept out of every segment's horizon.
        self.remote_read_point_floor: Callable[[], int] = lambda: 0

    # -- small accessors used by the streams ---------------------------------------

    @property
    def vdl(self) -> int:
        return self.log.vdl if self.log else 0

    def min_read_point(self, pg_index: int) -> int:
        """The lowest read point this writer may still read the PG at (0 before it is open)."""
        if self.log is None or pg_index not in self.log.pgs:
            return 0
        lowest = self.read_points.lowest(self.log.read_point(pg_index))
        remote = self.remote_read_point_floor()
        return min(lowest, remote) if remote else lowest

    def membership_epoch(self, pg_index: int) -> int:
        return self.pgs[pg_index].membership_epoch

    def pg_of_page(self, page_no: int) -> int:
        return page_no // self.pages_per_pg

    @property
    def page_count(self) -> int:
        return len(self.pgs) * self.pages_per_pg

    def on_epoch_refusal(self, where: str, epoch: int, details: str) -> None:
        """A segment refused this writer's epoch: it holds `epoch` (judged in compute/fencing.py)."""
        raise NotImplementedError

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

    def request_geometry_refresh(self) -> None:
        """A segment refused a batch for a stale membership epoch: ask the control plane now."""
        self._refresh_wanted.set()

    # -- commits: VDL advanced past them ----------------------------------------------

    def _release(self, cpls: list[int]) -> None:
        assert self.cache is not None
        released: Released = []
        for cpl in cpls:
            records = self._mtr_records.pop(cpl, None)
            if records:
                self.cache.on_durable(records)
            released.append((cpl, records))
            future = self._waiters.pop(cpl, None)
            if future is not None and not future.done():
                future.set_result(cpl)
            self.commits += 1
        for listener in self.release_listeners:
            listener(released)
        self._vdl_advanced.set()

    def _answer_in_flight(self, sentence: Callable[[int], str]) -> None:
        """Every MTR still in flight fails now with FencedInFlight (`sentence(cpl)`): its records were sent, so it
        may have become durable; its outcome is unknown, never a definite "not written"."""
        waiters, self._waiters = self._waiters, {}
        for cpl, future in waiters.items():
            if not future.done():
                future.set_exception(FencedInFlight(sentence(cpl)))
        self._vdl_advanced.set()

    # -- may the writer serve? ---------------------------------------------------------

    def _judging(self) -> bool:
        """Whether a refusal of this writer's epoch is being judged (compute/fencing.py)."""
        return self._fence_task is not None and not self._fence_task.done()

    def _fenced_sentence(self) -> str:
        return (
            f"this writer (epoch {self.epoch}) was fenced: {self.fenced_reason}; "
            "it may no longer change the volume, send writes to the new writer"
        )

    def _check_open(self) -> None:
        if self.fenced:
            raise Fenced(self._fenced_sentence())
        assert self.log is not None and self.cache is not None

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

    # -- geometry --------------------------------------------------------------------

    def _apply_geometry(self, geometry: Any) -> list[PgInfo]:
        """Add PGs this writer does not know yet; return them."""
        self.page_size = geometry.page_size
        self.segment_size_bytes = geometry.segment_size_bytes
        self.pages_per_pg = geometry.segment_size_bytes // geometry.page_size
        self.geometry_epoch = geometry.geometry_epoch
        self.parent_volume_id, self.branch_lsn = geometry.parent_volume_id, geometry.branch_lsn
        added = []
        for pg in geometry.protection_groups:
            if pg.pg_index in self.pgs:
                continue
            streams = self._new_streams(pg.pg_index, pg.segments)
            info = PgInfo(pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch, membership_of(pg), streams)
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
