"""WritePagesStream: many MTRs in flight on one stream, for clients that pipeline (compute.v1.VolumeService).

A unary WritePages call costs the writer a whole gRPC call per MTR, more CPU than the rest of the commit
(`sixfold bench commit`'s `empty` mode measures it). On a stream, a client sends any number of MTRs per
message and gets their results batched. Rules:
1. The MTRs of a message are handed to the log in order, each as WritePages would (`Volume.submit`: the same
   validation, LAL wait and quorum checks); the stream reads its next message while they are in flight.
2. A result per MTR, echoing its request_id: OK with its CPL once durable, else the status WritePages would
   have failed with (code, sentence, reason: OUTCOME_UNKNOWN when it may still have committed). Durable
   MTRs complete in LSN order (the log releases them so), and each response carries every result known
   since the previous one: a boxcar on the way back.
3. At most WRITES_IN_FLIGHT_MAX MTRs of one stream are unresolved; the stream reads no further until one
   resolves (backpressure). A message that cannot be decoded ends the stream with INVALID_ARGUMENT; the
   results of the MTRs before it are still sent.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.volume_log import Patch
from sixfold.storage.errors import StorageError
from sixfold.storage.serving import Undecodable
from sixfold.storage.status import status_code

if TYPE_CHECKING:
    from sixfold.compute.volume import Volume

log = logging.getLogger(__name__)

WRITES_IN_FLIGHT_MAX = 4_096


def failed(request_id: int, error: BaseException) -> vpb.PageWriteResult:
    """Rule 2's result for an MTR that failed with `error`."""
    if isinstance(error, StorageError):
        code = status_code(error).value[0]
        return vpb.PageWriteResult(request_id=request_id, code=code, message=error.message, reason=error.reason)
    log.error("a streamed write failed: %s: %s", type(error).__name__, error)
    return vpb.PageWriteResult(
        request_id=request_id,
        code=grpc.StatusCode.INTERNAL.value[0],
        message=f"the writer failed: {type(error).__name__}: {error}",
    )


class WriteStreamRpcs:
    """`VolumeServicer`'s WritePagesStream; the servicer supplies `writable`."""

    async def writable(self, volume_id: str) -> Volume:
        raise NotImplementedError

    async def WritePagesStream(
        self, requests: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[vpb.WritePagesStreamResponse]:
        results: list[vpb.PageWriteResult] = []
        ready = asyncio.Event()
        room = asyncio.Semaphore(WRITES_IN_FLIGHT_MAX)
        unresolved = 0
        ended: list[str] = []  # why the request side ended early ('' when it simply ended)

        def resolve(result: vpb.PageWriteResult) -> None:
            nonlocal unresolved
            unresolved -= 1
            room.release()
            results.append(result)
            ready.set()

        def on_durable(request_id: int, future: asyncio.Future[int]) -> None:
            if future.cancelled():
                resolve(failed(request_id, StorageError("the writer stopped before the MTR was durable")))
            elif (error := future.exception()) is not None:
                resolve(failed(request_id, error))
            else:
                resolve(vpb.PageWriteResult(request_id=request_id, lsn=future.result()))

        async def read() -> None:
            nonlocal unresolved
            try:
                async for request in requests:
                    if isinstance(request, Undecodable):
                        ended.append(request.sentence())
                        return
                    volume: Volume | None = None
                    refusal: Exception | None = None
                    try:
                        volume = await self.writable(request.volume_id)  # once per message
                    except Exception as error:  # noqa: BLE001 - each MTR of the message gets it as its result
                        refusal = error
                    for write in request.writes:
                        await room.acquire()
                        unresolved += 1
                        try:
                            if volume is None:
                                raise refusal or StorageError("the volume could not be opened")
                            patches = [Patch(p.page_no, p.offset, p.data) for p in write.patches]
                            _, future = await volume.submit(patches)
                        except Exception as error:  # noqa: BLE001 - each MTR gets its own result
                            resolve(failed(write.request_id, error))
                            continue
                        future.add_done_callback(functools.partial(on_durable, write.request_id))
            finally:
                ended.append("")
                ready.set()

        reader = asyncio.create_task(read())
        try:
            while True:
                await ready.wait()
                ready.clear()
                if results:
                    batch, results[:] = list(results), []
                    yield vpb.WritePagesStreamResponse(results=batch)
                if ended and unresolved == 0 and not results:
                    break
            if ended[0]:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, ended[0])
        finally:
            reader.cancel()
