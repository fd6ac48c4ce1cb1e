"""Where a volume's segments are: each PG's segments, streams and quorum sets, built from the control
plane's geometry, and one gRPC channel per storage node address."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from sixfold.compute.quorum import Membership
from sixfold.compute.segment_stream import SegmentStream
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS


@dataclass
class PgInfo:
    pg_index: int
    first_page: int
    page_count: int
    membership_epoch: int
    membership: Membership
    streams: dict[str, SegmentStream]  # node_id -> stream (a node holds one segment of a PG)


def membership_of(pg: Any) -> Membership:
    """A PG's quorum sets from its geometry: the base set (every segment that is not a change's new one)
    with every subset of its changes applied."""
    new_nodes = {c.new_node_id for c in pg.changes}
    base = [s.node_id for s in pg.segments if s.node_id not in new_nodes]
    return Membership.with_changes(base, [(c.old_node_id, c.new_node_id) for c in pg.changes])


def _channel(address: str) -> grpc.aio.Channel:
    return transport.aio_channel(address, CHANNEL_OPTIONS)


class Channels:
    """One gRPC channel per storage node address, shared by every stream and read to it.
    The simulator passes a factory of fake channels that route over its seeded network."""

    def __init__(self, factory: Callable[[str], Any] = _channel) -> None:
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
