"""A read replica of one volume: `ReplicaVolume`, the page source of a read-only SQL engine on a reader.

It implements compute/sql/volume_source.py `SqlVolume` read-only. Its state advances only through
`apply(FollowRedoResponse)` (compute/replica_follow.py feeds it the writer's redo stream); the rules of that
state are compute/replica_state.py's. Pages come from its cache or from a segment, read the way the writer
reads (compute/segment_reads.py) with the writer's volume epoch, at the replica's read point. The segments'
addresses come from the control plane (DescribeVolume, as compute/following.py): loaded on first use,
again when a message says the volume grew or its geometry changed, when no segment could serve, and every
`GEOMETRY_POLL_S` while started. Writes are refused (FAILED_PRECONDITION, ReadReplicaWrite).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from sixfold.compute.errors import InvalidRequest, PageOutOfRange
from sixfold.compute.placement import Channels, membership_of
from sixfold.compute.quorum import Membership
from sixfold.compute.read_points import ReadPoints
from sixfold.compute.replica_state import ReadReplicaWrite, ReplicaState, read_replica_sentence
from sixfold.compute.routing import ReadRouter
from sixfold.compute.segment_reads import RPC_TIMEOUT_S, SegmentGroup, SegmentReads
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.volume_log import Patch
from sixfold.storage.errors import Unavailable
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.truncation import TruncationRange
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

log = logging.getLogger("sixfold.compute.replica")

GEOMETRY_POLL_S = 0.5
FIRST_SNAPSHOT_WAIT_S = 5.0  # a read waits this long for the replica's first snapshot


@dataclass
class SegmentAt:
    segment_id: str
    node_id: str
    address: str
    stub: Any


@dataclass
class ReplicaPg:
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    membership: Membership
    streams: dict[str, SegmentAt] = field(default_factory=dict)


class ReplicaVolume(SegmentReads):
    def __init__(
        self,
        volume_id: str,
        control_plane: Any,
        channels: Channels,
        *,
        reader_id: str = "",
        cache_pages_max: int | None = None,
        wall_clock_us: Callable[[], int] | None = None,
    ) -> None:
        self.volume_id = volume_id
        self.reader_id = reader_id or "this instance"
        self.control_plane = control_plane
        self.channels = channels
        self.state = ReplicaState() if cache_pages_max is None else ReplicaState(cache_pages_max=cache_pages_max)
        self.router = ReadRouter()
        self.read_points = ReadPoints()
        self.hedged_reads = 0
        self.refused_epoch = 0
        self.storage_page_reads = 0
        self.page_size = 0  # known with the geometry
        self.holds_database = False  # an SqlVolume attribute; a replica takes no raw page writes anyway
        self.epoch = 0  # the volume epoch of the writer it follows (its reads carry it)
        self.fenced = False  # a replica is never fenced: it never writes
        self.fenced_reason = ""
        self.truncations: list[TruncationRange] = []
        self.pgs: dict[int, ReplicaPg] = {}
        self.segment_size_bytes = 0
        self.geometry_epoch = 0
        self.following = False  # a stream from the writer is open (compute/replica_follow.py sets it)
        self.wall_clock_us = wall_clock_us or (lambda: time.time_ns() // 1000)
        self._geometry_lock = asyncio.Lock()
        self._geometry_wanted = asyncio.Event()
        self._applied = asyncio.Event()
        self._poll_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- what SqlVolume asks -----------------------------------------------------------------------

    @property
    def vdl(self) -> int:
        return self.state.vdl

    @property
    def page_count(self) -> int:
        geometry = sum(pg.page_count for pg in self.pgs.values())
        return max(self.state.page_count, geometry)

    @property
    def pages_per_pg(self) -> int:
        return self.segment_size_bytes // self.state.page_size if self.state.page_size else 0

    def writes_refused(self) -> ReadReplicaWrite:
        return ReadReplicaWrite(read_replica_sentence(self.reader_id, self.state.writer_id))

    async def submit(
        self, patches: list[Patch], *, base_cpl: int = 0, base_epoch: int = 0
    ) -> tuple[int, asyncio.Future[int]]:
        raise self.writes_refused()

    # -- the stream ------------------------------------------------------------------------------------

    def apply(self, msg: ipb.FollowRedoResponse) -> None:
        """One message of the writer's redo stream (compute/replica_state.py rules); RedoRefused changes nothing."""
        self.state.apply(msg, self.wall_clock_us())
        self.epoch = self.state.epoch
        if msg.page_count > self.page_count or msg.geometry_epoch > self.geometry_epoch:
            self._geometry_wanted.set()
        self._applied.set()

    def lag(self) -> ipb.VolumeLag:
        now = self.wall_clock_us()
        p50, p99 = self.state.lag_ms(now)
        heard = self.state.last_applied_us
        return ipb.VolumeLag(
            volume_id=self.volume_id,
            applied_vdl=self.state.vdl,
            writer_vdl=self.state.writer_vdl,
            lag_lsns=max(0, self.state.writer_vdl - self.state.vdl),
            lag_ms_p50=p50,
            lag_ms_p99=p99,
            last_heard_ms=max(0, (now - heard) // 1000) if heard else 0,
            following=self.following,
        )

    def lowest_read_point(self) -> int:
        """What the writer must keep readable for this replica: its lowest pinned read point, else its VDL."""
        return self.read_points.lowest(self.state.vdl)

    # -- life --------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the geometry and follow it (membership changes, moved nodes, growth)."""
        await self._refresh_geometry()
        if self._poll_task is None:
            self._poll_task = asyncio.create_task(self._poll_geometry(), name=f"replica-geometry-{self.volume_id}")

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(self._poll_task)

    async def _poll_geometry(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._geometry_wanted.wait(), GEOMETRY_POLL_S)
            try:
                await self._refresh_geometry()
            except Unavailable as error:
                log.debug("volume %s: %s", self.volume_id, error.message)

    async def _refresh_geometry(self) -> None:
        async with self._geometry_lock:
            self._geometry_wanted.clear()
            try:
                reply = await self.control_plane.DescribeVolume(
                    cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                raise Unavailable(
                    f"the control plane did not describe volume {self.volume_id} for the read replica: "
                    f"{error.code().name}: {error.details()}"
                ) from None
            self._take_geometry(reply.geometry)

    def _take_geometry(self, geometry: Any) -> None:
        self.state.set_page_size(geometry.page_size)
        self.page_size = geometry.page_size
        self.segment_size_bytes = geometry.segment_size_bytes
        self.geometry_epoch = max(self.geometry_epoch, geometry.geometry_epoch)
        for pg in geometry.protection_groups:
            known = self.pgs.get(pg.pg_index)
            addresses = {s.node_id: s.address for s in pg.segments}
            if (
                known is not None
                and known.membership_epoch >= pg.membership_epoch
                and {n: s.address for n, s in known.streams.items()} == addresses
            ):
                continue
            membership = membership_of(pg)
            streams = {
                s.node_id: SegmentAt(
                    s.segment_id, s.node_id, s.address, pb_grpc.StorageServiceStub(self.channels.get(s.address))
                )
                for s in pg.segments
                if s.node_id in membership.segments
            }
            self.pgs[pg.pg_index] = ReplicaPg(
                pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch, membership, streams
            )

    async def _pg_of(self, page_no: int) -> ReplicaPg:
        if not self.pgs or (self.pages_per_pg and page_no // self.pages_per_pg not in self.pgs):
            await self._refresh_geometry()
        pg = self.pgs.get(page_no // self.pages_per_pg) if self.pages_per_pg else None
        if pg is None:
            raise PageOutOfRange(
                f"page {page_no} is beyond the end of volume {self.volume_id} ({self.page_count} pages)"
            )
        return pg

    # -- reads -------------------------------------------------------------------------------------------

    async def _ready(self) -> None:
        """Reads wait (bounded) for the first snapshot: before it the replica knows no durable point."""
        if self.state.snapshots:
            return
        try:
            await asyncio.wait_for(self._applied.wait(), FIRST_SNAPSHOT_WAIT_S)
        except TimeoutError:
            raise Unavailable(
                f"the read replica {self.reader_id} has not heard from the writer of volume {self.volume_id} yet; "
                "retry in a moment"
            ) from None
        if not self.pgs:
            await self._refresh_geometry()

    async def pin_read_point(self) -> int:
        await self._ready()
        return self.read_points.acquire(self.state.vdl)

    def unpin_read_point(self, read_point: int) -> None:
        self.read_points.release(read_point)

    async def read(
        self, page_nos: list[int], *, from_storage: bool = False
    ) -> tuple[int, list[tuple[int, bytes, int]]]:
        """The pages at the applied VDL, with their page LSNs."""
        read_point = await self.pin_read_point()
        try:
            results = await asyncio.gather(*(self._read_page(p, read_point, from_storage) for p in page_nos))
        finally:
            self.unpin_read_point(read_point)
        return read_point, [(p, data, lsn) for p, (data, lsn) in zip(page_nos, results)]

    async def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]:
        """The pages exactly as of `read_point`, a VDL this replica applied (pinned with `pin_read_point`)."""
        await self._ready()
        if read_point > self.state.vdl:
            raise InvalidRequest(f"read point {read_point} is above the replica's VDL {self.state.vdl}")
        results = await asyncio.gather(*(self._read_page(p, read_point) for p in page_nos))
        return [data for data, _ in results]

    async def _read_page(self, page_no: int, read_point: int, from_storage: bool = False) -> tuple[bytes, int]:
        cache = self.state.cache  # the cache this read may fill (rule 4 of compute/replica_state.py)
        if not from_storage and cache is not None:
            cached = cache.get(page_no)
            if cached is not None and cached[1] <= read_point:
                return cached
        pg = await self._pg_of(page_no)
        data, page_lsn = await self._read_held(pg, page_no, self.state.pg_read_point(pg.pg_index, read_point))
        if not from_storage:
            self.state.put(cache, page_no, data, page_lsn, read_point)
        return data, page_lsn

    # -- the hooks of compute/segment_reads.py -------------------------------------------------------------

    def _known_scls(self, pg_index: int) -> dict[str, int]:
        return self.state.scl_of.setdefault(pg_index, {})

    def _learn_scl(self, pg_index: int, node: str, scl: int) -> None:
        known = self._known_scls(pg_index)
        known[node] = max(known.get(node, 0), scl)

    def on_epoch_refusal(self, where: str, epoch: int, details: str) -> None:
        """A segment holds a newer epoch than the writer this replica follows: a newer writer opened the volume;
        its redo stream (a snapshot at the new epoch) will come. Nothing to judge here: a replica never writes."""
        self.refused_epoch = max(self.refused_epoch, epoch)

    def state_counts(self, where: str, state: Any) -> bool:
        if state.volume_epoch <= self.state.epoch:
            return True
        self.on_epoch_refusal(where, state.volume_epoch, "its state shows the newer epoch")
        return False

    def _no_segment_served(self, pg: SegmentGroup, page_no: int, read_point: int) -> NoReturn:
        self._geometry_wanted.set()  # a segment may have moved or been replaced
        if self.refused_epoch > self.state.epoch:
            raise Unavailable(
                f"a newer writer opened volume {self.volume_id} (epoch {self.refused_epoch}); the read replica "
                f"{self.reader_id} waits for its redo; retry in a moment"
            )
        raise Unavailable(
            f"no segment of PG {pg.pg_index} could serve page {page_no} at read point {read_point} to the read "
            f"replica {self.reader_id}; retry in a moment"
        )
