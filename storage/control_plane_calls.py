"""How the control plane reaches the storage nodes (`StorageService` calls), and how it words their failures.

`SegmentClient` is the narrow interface the servicer and its healing rounds use; `TimelineSegmentClient`
adds the calls a backtrack and a time resolution make (storage/control_plane_backtrack.py).
`GrpcSegmentClient` carries both out over gRPC; the simulator (tools/sim/replacement.py) supplies its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import grpc

from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2
from sixfold.storage.v1 import storage_service_pb2_grpc

# One CreateSegment/DropSegment call to a storage node.
SEGMENT_CALL_TIMEOUT_S = 5.0
CACHED_CHANNELS_MAX = 256  # node addresses with a channel kept


class SegmentClient(Protocol):
    """How the control plane reaches storage nodes (a fake can stand in for tests)."""

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None: ...

    async def drop_segment(self, address: str, segment_id: str) -> None: ...

    async def update_membership(self, address: str, request: ss_pb2.UpdateMembershipRequest) -> ss_pb2.SegmentState: ...

    async def segment_state(self, address: str, segment_id: str) -> ss_pb2.SegmentState: ...


@runtime_checkable
class TimelineSegmentClient(SegmentClient, Protocol):
    """The calls of a backtrack and of a time resolution, on top of `SegmentClient`'s."""

    async def segment_state_at(
        self, address: str, segment_id: str, tail_at_or_below_lsn: int
    ) -> ss_pb2.GetSegmentStateResponse: ...

    async def raise_volume_epoch(
        self, address: str, request: ss_pb2.RaiseVolumeEpochRequest
    ) -> ss_pb2.RaiseVolumeEpochResponse: ...

    async def find_commit(self, address: str, request: ss_pb2.FindCommitRequest) -> ss_pb2.FindCommitResponse: ...

    async def read_records(self, address: str, request: ss_pb2.ReadRecordsRequest) -> ss_pb2.ReadRecordsResponse: ...


class WindowedSegmentClient:
    """A `SegmentClient` whose CreateSegment calls carry the volume's backtrack window, so the node keeps that
    much history of every segment of it (storage/retention.py rule 2): a new PG, a clone's, a replacement, a
    copy made again. A request that names its window already (a new volume's, a clone's) keeps it."""

    def __init__(self, inner: SegmentClient, window_of: Callable[[str], int]) -> None:
        self.inner = inner
        self.window_of = window_of

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None:
        if not request.backtrack_window_s:
            window_s = self.window_of(request.volume_id)
            if window_s:
                stamped = ss_pb2.CreateSegmentRequest()
                stamped.CopyFrom(request)
                stamped.backtrack_window_s = window_s
                request = stamped
        await self.inner.create_segment(address, request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def innermost(client: Any) -> Any:
    """The client inside the wrappers (`WindowedSegmentClient`, the keyed one in control_plane_keys.py), each of
    which keeps the client it wraps as `inner` and passes on every call it does not change."""
    while "inner" in getattr(client, "__dict__", {}):
        client = client.inner
    return client


class GrpcSegmentClient:
    """Calls `StorageService` over one grpc.aio channel per node address, kept for later calls: a clone or a
    backtrack makes several rounds of calls to every segment of a volume, and a new channel per call paid a
    TLS handshake each time (a cached channel reconnects by itself within a second when its node returns)."""

    def __init__(self, timeout_s: float = SEGMENT_CALL_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def _stub(self, address: str) -> storage_service_pb2_grpc.StorageServiceStub:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a channel serves only the event loop it was made in
            self._loop, self._channels = loop, {}
        channel = self._channels.pop(address, None)  # put back last: the dict is kept least recently used first
        if channel is None:
            if len(self._channels) >= CACHED_CHANNELS_MAX:  # addresses of nodes that moved: drop the oldest,
                stale = self._channels.pop(next(iter(self._channels)))  # closed once no call can still use it

                def close() -> None:
                    self._closing.add(task := loop.create_task(stale.close()))
                    task.add_done_callback(self._closing.discard)

                loop.call_later(2 * self.timeout_s, close)
            channel = transport.aio_channel(address, CHANNEL_OPTIONS)
        self._channels[address] = channel
        return storage_service_pb2_grpc.StorageServiceStub(channel)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def create_segment(self, address: str, request: ss_pb2.CreateSegmentRequest) -> None:
        await self._stub(address).CreateSegment(request, timeout=self.timeout_s)

    async def drop_segment(self, address: str, segment_id: str) -> None:
        request = ss_pb2.DropSegmentRequest(segment_id=segment_id)
        await self._stub(address).DropSegment(request, timeout=self.timeout_s)

    async def update_membership(self, address: str, request: ss_pb2.UpdateMembershipRequest) -> ss_pb2.SegmentState:
        return (await self._stub(address).UpdateMembership(request, timeout=self.timeout_s)).state

    async def segment_state(self, address: str, segment_id: str) -> ss_pb2.SegmentState:
        request = ss_pb2.GetSegmentStateRequest(segment_id=segment_id)
        return (await self._stub(address).GetSegmentState(request, timeout=self.timeout_s)).state

    async def _call(self, address: str, method: str, request: Any) -> Any:
        return await getattr(self._stub(address), method)(request, timeout=self.timeout_s)

    async def segment_state_at(
        self, address: str, segment_id: str, tail_at_or_below_lsn: int
    ) -> ss_pb2.GetSegmentStateResponse:
        request = ss_pb2.GetSegmentStateRequest(segment_id=segment_id, tail_at_or_below_lsn=tail_at_or_below_lsn)
        reply: ss_pb2.GetSegmentStateResponse = await self._call(address, "GetSegmentState", request)
        return reply

    async def raise_volume_epoch(
        self, address: str, request: ss_pb2.RaiseVolumeEpochRequest
    ) -> ss_pb2.RaiseVolumeEpochResponse:
        reply: ss_pb2.RaiseVolumeEpochResponse = await self._call(address, "RaiseVolumeEpoch", request)
        return reply

    async def find_commit(self, address: str, request: ss_pb2.FindCommitRequest) -> ss_pb2.FindCommitResponse:
        reply: ss_pb2.FindCommitResponse = await self._call(address, "FindCommit", request)
        return reply

    async def read_records(self, address: str, request: ss_pb2.ReadRecordsRequest) -> ss_pb2.ReadRecordsResponse:
        reply: ss_pb2.ReadRecordsResponse = await self._call(address, "ReadRecords", request)
        return reply


def is_gone(drop_result: object) -> bool:
    """Whether a DropSegment's result (None, or the exception it raised) means the segment is no longer on
    the node: it was dropped, or the node does not hold it (NOT_FOUND)."""
    if not isinstance(drop_result, BaseException):
        return True
    return isinstance(drop_result, grpc.aio.AioRpcError) and drop_result.code() == grpc.StatusCode.NOT_FOUND


def describe_failure(error: BaseException) -> str:
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return "timed out"
    return str(error) or type(error).__name__
