"""`StreamingWriter`: many coroutines' MTRs over one WritePagesStream (compute/write_stream.py), for asyncio
clients that keep many commits in flight (the bench's `stream` mode, an application's request handlers).

Each `await writer.write(patches)` returns the MTR's CPL once durable, or raises `VolumeError` with the
status WritePages would have failed with. Whatever MTRs are queued when the stream may send go in one
message (at most MTRS_PER_MESSAGE_MAX): a boxcar on the client's side, as the writer's own toward the
segments. A broken stream fails every MTR in flight with UNAVAILABLE and reason OUTCOME_UNKNOWN (each may
still have committed); the next write opens a new stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

import grpc

from sixfold.compute.client import Patch, VolumeError, page_patches, status_of
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.errors import REASON_OUTCOME_UNKNOWN

MTRS_PER_MESSAGE_MAX = 512


class StreamingWriter:
    """One volume's MTRs over one WritePagesStream on `channel` (a grpc.aio channel the caller owns)."""

    def __init__(self, channel: grpc.aio.Channel, volume_id: str) -> None:
        self.stub = vgrpc.VolumeServiceStub(channel)
        self.volume_id = volume_id
        self.messages_sent = 0
        self._next_id = 1
        self._queue: list[vpb.PageWrite] = []
        self._pending: dict[int, asyncio.Future[int]] = {}
        self._wake = asyncio.Event()
        self._session: asyncio.Task[None] | None = None

    async def write(self, patches: Iterable[Patch]) -> int:
        """One MTR; its CPL once durable."""
        write = vpb.PageWrite(request_id=self._next_id, patches=page_patches(patches))  # refused here: nothing queued
        self._next_id += 1
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending[write.request_id] = future
        self._queue.append(write)
        if self._session is None or self._session.done():
            self._session = asyncio.create_task(self._run())
        self._wake.set()
        return await future

    async def close(self) -> None:
        if self._session is not None:
            self._session.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._session
        self._fail_all(VolumeError(grpc.StatusCode.CANCELLED, "the streaming writer was closed"))

    async def _run(self) -> None:
        call = self.stub.WritePagesStream()
        receiver = asyncio.create_task(self._receive(call))
        try:
            while not receiver.done():
                if not self._queue:
                    self._wake.clear()
                    waiter = asyncio.create_task(self._wake.wait())
                    await asyncio.wait({waiter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                batch, self._queue = self._queue[:MTRS_PER_MESSAGE_MAX], self._queue[MTRS_PER_MESSAGE_MAX:]
                await call.write(vpb.WritePagesStreamRequest(volume_id=self.volume_id, writes=batch))
                self.messages_sent += 1
            receiver.result()
        except grpc.aio.AioRpcError as error:
            self._fail_all(
                VolumeError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the write stream broke ({error.code().name}: {error.details()}); the MTRs in flight may "
                    "still have committed",
                    error,
                    REASON_OUTCOME_UNKNOWN,
                )
            )
        finally:
            receiver.cancel()
            call.cancel()

    async def _receive(self, call: Any) -> None:
        async for response in call:
            for result in response.results:
                future = self._pending.pop(result.request_id, None)
                if future is None or future.done():
                    continue
                if result.code == 0:
                    future.set_result(result.lsn)
                else:
                    future.set_exception(VolumeError(status_of(result.code), result.message, None, result.reason))

    def _fail_all(self, error: VolumeError) -> None:
        self._queue.clear()
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)
