"""The writer's redo, streamed to read replicas: `RedoPublisher` over one open writer `Volume`.

The volume tells its release listeners (compute/volume_base.py `release_listeners`) of every MTR that VDL
passed, in LSN order, with its records. The publisher encodes them once and queues them on every
subscription (`subscribe(reader_id)`: one per FollowRedo stream, compute/redo_rpc.py). Rules:
1. A subscription's first message is a snapshot: the VDL, every PG's read point and SCLs, the page count,
   the geometry and volume epochs, the writer's id. So is the next message whenever the subscriber may have
   missed records: an MTR released without records this writer allocated (a recovery found it durable), or
   a new volume epoch or log (a regain). Nothing is sent while a regain runs: the epoch is new before the
   log is, and the old log's state must not go out as the new epoch's. A snapshot drops the backlog it covers.
2. Then batches: `next()` returns everything released since the previous message (up to `MESSAGE_BYTES_MAX`
   of records, whole MTRs), so a subscriber whose send was slow gets one message for all that accumulated,
   not one per MTR. A batch's VDL is its last MTR's CPL, its PG read points those its records moved, its
   `released_at_us` the writer's wall clock when that MTR was released. Only released (durable) MTRs travel.
3. A backlog over `BACKLOG_BYTES_MAX` closes the subscription (`next()` returns None; the stream ends): the
   reader reconnects and starts again from a snapshot.
4. With nothing released for `SCL_EVERY_S`, a message with the current VDL and every PG's SCLs goes anyway
   (the reader routes its reads by them, and hears the writer is alive).
5. Each subscription's reader reports its lowest read point (`report`); until it does, the VDL of the
   snapshot it was sent (or the lowest read point its first message named). The writer's `min_read_point`
   (the retention horizon it sends to segments) stays at or below the lowest of the live subscriptions';
   a closed subscription no longer counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.volume_base import Released, loop_time

if TYPE_CHECKING:
    from sixfold.compute.volume_base import VolumeBase

log = logging.getLogger("sixfold.compute.redo")

BACKLOG_BYTES_MAX = 32 << 20
MESSAGE_BYTES_MAX = 4 << 20
SCL_EVERY_S = 0.1


@dataclass(frozen=True)
class ReleasedMtr:
    cpl: int
    records: list[bytes]
    pg_read_points: dict[int, int]
    released_at_us: int
    size: int


class RedoSubscription:
    def __init__(self, publisher: RedoPublisher, reader_id: str, lowest_read_point: int = 0) -> None:
        self.publisher = publisher
        self.reader_id = reader_id
        self.floor = lowest_read_point  # rule 5 (0 until the snapshot or a report)
        self.applied_vdl = 0
        self.closed_because = ""
        self.overflowed = False  # closed for falling behind (rule 3)
        self.messages_sent = 0
        self._mtrs: deque[ReleasedMtr] = deque()
        self._bytes = 0
        self._need_snapshot = True
        self._wake = asyncio.Event()
        self._last_sent = 0.0

    # -- the publisher's side --------------------------------------------------------------------------

    def _push(self, mtr: ReleasedMtr) -> None:
        if self._need_snapshot or self.closed_because:
            return  # the snapshot to come covers it
        self._mtrs.append(mtr)
        self._bytes += mtr.size
        if self._bytes > BACKLOG_BYTES_MAX:
            self.overflowed = True
            self.close(
                f"the reader fell {self._bytes >> 20} MiB of redo behind (at most {BACKLOG_BYTES_MAX >> 20} MiB are "
                "kept per reader); it reconnects and starts again from a snapshot"
            )
        self._wake.set()

    def _resync(self) -> None:
        self._need_snapshot = True
        self._mtrs.clear()
        self._bytes = 0
        self._wake.set()

    # -- the stream's side --------------------------------------------------------------------------------

    async def next(self) -> ipb.FollowRedoResponse | None:
        """The next message to send (rules 1, 2 and 4); None once the subscription is closed."""
        volume = self.publisher.volume
        while True:
            if self.closed_because:
                return None
            if volume.log is not None and not volume.fenced and not volume.regaining:
                if self.publisher.log_changed():
                    self.publisher._new_epoch()
                if self._need_snapshot:
                    return self._sent(self._snapshot())
                if self._mtrs:
                    return self._sent(self._batch())
                if loop_time() - self._last_sent >= SCL_EVERY_S:
                    return self._sent(self._scl_update())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, self._last_sent + SCL_EVERY_S - loop_time()))

    def report(self, lowest_read_point: int, applied_vdl: int) -> None:
        """The reader's report (rule 5)."""
        self.applied_vdl = applied_vdl
        floor = lowest_read_point or applied_vdl
        if floor:
            self.floor = floor

    def close(self, because: str = "the subscription was closed") -> None:
        if not self.closed_because:
            self.closed_because = because
            if because != "the subscription was closed":
                log.warning(
                    "volume %s: redo to %s cut off: %s", self.publisher.volume.volume_id, self.reader_id, because
                )
        self._mtrs.clear()
        self.publisher._subscriptions.discard(self)
        self._wake.set()

    # -- messages ----------------------------------------------------------------------------------------------

    def _sent(self, msg: ipb.FollowRedoResponse) -> ipb.FollowRedoResponse:
        self._last_sent = loop_time()
        self.messages_sent += 1
        return msg

    def _message(self, vdl: int, released_at_us: int, snapshot: bool = False) -> ipb.FollowRedoResponse:
        volume = self.publisher.volume
        return ipb.FollowRedoResponse(
            volume_epoch=volume.epoch,
            vdl=vdl,
            page_count=volume.page_count,
            geometry_epoch=volume.geometry_epoch,
            released_at_us=released_at_us,
            snapshot=snapshot,
            writer_id=self.publisher.writer_id,
        )

    def _all_pgs(self, msg: ipb.FollowRedoResponse) -> ipb.FollowRedoResponse:
        log_ = self.publisher.volume.log
        assert log_ is not None
        for index, tracker in sorted(log_.pgs.items()):
            msg.pgs.add(pg_index=index, read_point=log_.read_point(index), scl_of=tracker.scl_of)
        return msg

    def _snapshot(self) -> ipb.FollowRedoResponse:
        volume = self.publisher.volume
        self._need_snapshot = False
        self._mtrs.clear()
        self._bytes = 0
        if not self.floor:
            self.floor = volume.vdl
        return self._all_pgs(self._message(volume.vdl, volume.wall_clock_us(), snapshot=True))

    def _scl_update(self) -> ipb.FollowRedoResponse:
        volume = self.publisher.volume
        return self._all_pgs(self._message(volume.vdl, 0))

    def _batch(self) -> ipb.FollowRedoResponse:
        taken: list[ReleasedMtr] = []
        size = 0
        while self._mtrs and (not taken or size + self._mtrs[0].size <= MESSAGE_BYTES_MAX):
            mtr = self._mtrs.popleft()
            taken.append(mtr)
            size += mtr.size
        self._bytes -= size
        last = taken[-1]
        msg = self._message(last.cpl, last.released_at_us)
        moved: dict[int, int] = {}
        for mtr in taken:
            msg.records.extend(mtr.records)
            moved.update(mtr.pg_read_points)
        log_ = self.publisher.volume.log
        assert log_ is not None
        for index, read_point in sorted(moved.items()):
            tracker = log_.pgs.get(index)
            msg.pgs.add(pg_index=index, read_point=read_point, scl_of=tracker.scl_of if tracker else {})
        return msg


class RedoPublisher:
    def __init__(self, volume: VolumeBase, *, writer_id: str | None = None) -> None:
        self.volume = volume
        self.writer_id = writer_id or volume.writer_id
        self.epoch = volume.epoch
        self.log = volume.log  # a regain builds a new log (at a new epoch): subscribers then get a new snapshot
        self._subscriptions: set[RedoSubscription] = set()
        self._closed = False
        volume.release_listeners.append(self.on_release)
        volume.remote_read_point_floor = self.read_point_floor

    def subscribe(self, reader_id: str, lowest_read_point: int = 0) -> RedoSubscription:
        subscription = RedoSubscription(self, reader_id, lowest_read_point)
        if self._closed:
            subscription.close("the writer's redo publisher closed (the volume was closed)")
        else:
            self._subscriptions.add(subscription)
        return subscription

    @property
    def subscriptions(self) -> list[RedoSubscription]:
        return list(self._subscriptions)

    def read_point_floor(self) -> int:
        """Rule 5: the lowest read point a live subscription's reader may read at (0: no reader)."""
        floors = [s.floor for s in self._subscriptions if s.floor]
        return min(floors, default=0)

    def close(self) -> None:
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close("the writer closed the volume (it stops, steps down, or the volume moved)")
        with contextlib.suppress(ValueError):
            self.volume.release_listeners.remove(self.on_release)
        if self.volume.remote_read_point_floor == self.read_point_floor:
            self.volume.remote_read_point_floor = lambda: 0

    def log_changed(self) -> bool:
        return self.volume.epoch != self.epoch or self.volume.log is not self.log

    def _new_epoch(self) -> None:
        self.epoch, self.log = self.volume.epoch, self.volume.log
        for subscription in self._subscriptions:
            subscription._resync()

    def on_release(self, released: Released) -> None:
        """The volume's release listener (rules 1 and 2)."""
        if not self._subscriptions:
            self.epoch, self.log = self.volume.epoch, self.volume.log
            return
        if self.log_changed() or self.volume.regaining:
            self._new_epoch()  # a snapshot once the regain is over covers what is released meanwhile
            return
        now_us = self.volume.wall_clock_us()
        for cpl, records in released:
            if records is None:
                for subscription in self._subscriptions:
                    subscription._resync()
                continue
            encoded = [record.encode() for record in records]
            pg_read_points: dict[int, int] = {}
            for record in records:
                pg_read_points[self.volume.pg_of_page(record.page_no)] = record.lsn
            mtr = ReleasedMtr(cpl, encoded, pg_read_points, now_us, sum(map(len, encoded)))
            for subscription in list(self._subscriptions):
                subscription._push(mtr)
