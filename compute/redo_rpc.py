"""FollowRedo (compute.v1.InstanceService), the writer's side: one volume's redo to one reader, over a
RedoSubscription of the volume's RedoPublisher (compute/redo_publisher.py).

The servicer supplies `publisher_of(volume_id)`, the explicit "am I the writer" hook: it returns the
publisher of the volume open on this writer, or raises a StorageError: UnknownVolume (NOT_FOUND) for a
volume the control plane does not know, FAILED_PRECONDITION when this instance is not the writer. Rules:
1. The first request names the volume and the reader (`volume_id`, `reader_id`); one without them, or one
   that cannot be decoded, ends the stream with INVALID_ARGUMENT and a sentence.
2. Then the stream sends the subscription's messages as they come, and reads the reader's reports
   (lowest read point, applied VDL) meanwhile.
3. The stream ends when the reader ends its side, when the subscription is closed (cut off for falling
   behind: RESOURCE_EXHAUSTED with the sentence; the writer closed the volume: UNAVAILABLE), or when the
   call is cancelled; the subscription is closed in every case, so its read point no longer counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from sixfold.compute.redo_publisher import RedoPublisher, RedoSubscription
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.storage.errors import StorageError
from sixfold.storage.serving import Undecodable
from sixfold.storage.status import abort_with


class RedoRpcs:
    async def publisher_of(self, volume_id: str) -> RedoPublisher:
        raise NotImplementedError

    async def FollowRedo(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[ipb.FollowRedoResponse]:
        first = await anext(request_iterator, None)
        if first is None:
            return
        if isinstance(first, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, first.sentence())
        if not first.volume_id or not first.reader_id:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the first FollowRedo message names the volume to follow and the reader (volume_id and reader_id)",
            )
        try:
            publisher = await self.publisher_of(first.volume_id)
        except StorageError as error:
            await abort_with(context, error)
            return
        subscription = publisher.subscribe(first.reader_id, first.lowest_read_point)
        if first.applied_vdl or first.lowest_read_point:
            subscription.report(first.lowest_read_point, first.applied_vdl)
        reports = asyncio.create_task(_read_reports(request_iterator, subscription))
        try:
            while True:
                msg = await subscription.next()
                if msg is None:
                    break
                yield msg
            if not reports.done():
                because = subscription.closed_because
                code = grpc.StatusCode.RESOURCE_EXHAUSTED if subscription.overflowed else grpc.StatusCode.UNAVAILABLE
                await context.abort(code, because)
        finally:
            subscription.close()
            reports.cancel()


async def _read_reports(requests: AsyncIterator[Any], subscription: RedoSubscription) -> None:
    """Rule 2; the reader ending its side ends the stream (rule 3)."""
    try:
        async for request in requests:
            if isinstance(request, Undecodable):
                break
            subscription.report(request.lowest_read_point, request.applied_vdl)
    finally:
        subscription.close("the reader ended the stream")
