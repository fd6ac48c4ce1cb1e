"""The reader's side of FollowRedo: one task per followed volume that dials the writer, applies every
message to its ReplicaVolume (compute/replica_volume.py) and reports back.

Rules:
1. The first request names the volume and the reader (and the reader's lowest read point and applied VDL,
   so the writer's retention horizon never passes a transaction the reader still holds); then a report
   every `REPORT_EVERY_S`.
2. Every response is applied in order. A message the replica refuses (compute/replica_state.py rule 2)
   ends the stream: the next one starts from a snapshot.
3. When the stream ends (the writer stopped, cut the reader off, or failed), the task dials again after a
   short backoff (`BACKOFF_MIN_S`, doubling to `BACKOFF_MAX_S`, back to the minimum once a message
   arrives). `set_writer(address)` switches to a new writer at once (the stream in progress is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from sixfold.compute.replica_state import RedoRefused
from sixfold.compute.replica_volume import ReplicaVolume
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import instance_service_pb2_grpc as ipb_grpc
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.tasks import cancel_and_wait

log = logging.getLogger("sixfold.compute.replica")

REPORT_EVERY_S = 0.05
BACKOFF_MIN_S = 0.02
BACKOFF_MAX_S = 0.2


def _channel(address: str) -> grpc.aio.Channel:
    return transport.aio_channel(address, CHANNEL_OPTIONS)


class RedoFollower:
    def __init__(
        self,
        replica: ReplicaVolume,
        reader_id: str,
        writer_address: str = "",
        *,
        channel_factory: Callable[[str], Any] = _channel,
    ) -> None:
        self.replica = replica
        self.reader_id = reader_id
        self.writer_address = writer_address
        self.streams_opened = 0
        self.refusals = 0
        self._channel_factory = channel_factory
        self._channel: Any = None
        self._channel_address = ""
        self._switched = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"follow-redo-{self.replica.volume_id}")

    def set_writer(self, address: str) -> None:
        """Rule 3: follow the writer at `address` from now on (at once)."""
        if address != self.writer_address:
            self.writer_address = address
            self._switched.set()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self.replica.following = False
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while True:
            self._switched.clear()
            if not self.writer_address:
                await self._switched.wait()
                continue
            heard = False
            try:
                heard = await self._follow_until_switched()
            except grpc.aio.AioRpcError as error:
                log.info(
                    "volume %s: the redo stream from %s ended: %s %s",
                    self.replica.volume_id,
                    self.writer_address,
                    error.code().name,
                    error.details(),
                )
            except RedoRefused as error:
                self.refusals += 1
                log.warning("volume %s: redo refused: %s; reconnecting", self.replica.volume_id, error.message)
            finally:
                self.replica.following = False
                self.replica.state.stream_lost()
            if self._switched.is_set():
                backoff = BACKOFF_MIN_S
                continue
            backoff = BACKOFF_MIN_S if heard else min(BACKOFF_MAX_S, backoff * 2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._switched.wait(), backoff)

    def _stub(self) -> ipb_grpc.InstanceServiceStub:
        if self._channel is None or self._channel_address != self.writer_address:
            old = self._channel
            if old is not None:
                asyncio.get_running_loop().create_task(old.close())
            self._channel = self._channel_factory(self.writer_address)
            self._channel_address = self.writer_address
        return ipb_grpc.InstanceServiceStub(self._channel)

    async def _follow_until_switched(self) -> bool:
        """One stream, until it ends or the writer changes; whether any message arrived."""
        call = self._stub().FollowRedo(self._requests())
        self.streams_opened += 1
        switched = asyncio.create_task(self._switched.wait())
        heard = False
        try:
            responses = aiter(call)
            while True:
                following = asyncio.ensure_future(anext(responses, None))
                done, _ = await asyncio.wait({following, switched}, return_when=asyncio.FIRST_COMPLETED)
                if following not in done:
                    following.cancel()
                    return heard
                msg = following.result()
                if msg is None:
                    return heard
                self.replica.apply(msg)
                self.replica.following = heard = True
        finally:
            switched.cancel()
            call.cancel()

    async def _requests(self) -> AsyncIterator[ipb.FollowRedoRequest]:
        replica = self.replica
        yield ipb.FollowRedoRequest(
            volume_id=replica.volume_id,
            reader_id=self.reader_id,
            lowest_read_point=replica.lowest_read_point(),
            applied_vdl=replica.vdl,
        )
        while True:
            await asyncio.sleep(REPORT_EVERY_S)
            yield ipb.FollowRedoRequest(lowest_read_point=replica.lowest_read_point(), applied_vdl=replica.vdl)
