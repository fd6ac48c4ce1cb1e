"""A simulated run's processes: storage nodes (real servicer and store on the fake disk) and the writer's
view of the control plane.

`SimNode` starts a real `StorageServicer` over a `SegmentStore` on the run's `MemDisk`, serves it on the
sim network and crashes it (the disk keeps exactly what was committed); with the control plane in the run
(segment replacement or time travel on) it sends heartbeats to it. A writer asks `FakeControlPlane` (a
fixed geometry) or, with the control plane in the run, `FollowedControlPlane` (the run's real control
plane, which may restart). What they need of the run is `NodeHost` and `ControlPlaneHost`.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Protocol

import grpc

from sixfold.storage.errors import StorageError
from sixfold.storage.node import StorageServicer
from sixfold.storage.serving import generic_handler
from sixfold.storage.store import SegmentStore
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.tools.sim import replacement as repl
from sixfold.tools.sim.config import COALESCE_CHAIN_MIN_SIM, GOSSIP_INTERVAL_S, SimConfig
from sixfold.tools.sim.keys import SimKeys
from sixfold.tools.sim.loop import InlineExecutor
from sixfold.tools.sim.memlmdb import MemDisk
from sixfold.tools.sim.network import SimNetwork, SimServer, rpc_error


class NodeHost(Protocol):
    """What a node needs of its run: the seeded randomness, the disk, the network and the settings."""

    rng: random.Random
    disk: MemDisk
    network: SimNetwork
    config: SimConfig
    keys: SimKeys | None  # encryption at rest (tools/sim/keys.py); None: in clear


class ControlPlaneHost(Protocol):
    """What a writer's control plane view needs of the run: its control plane now (it may restart)."""

    control_plane: repl.SimControlPlane | None


class _DiskExecutor(InlineExecutor):
    """Runs an LMDB write at once (it is durable when it returns); its result arrives after a seeded fsync delay."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        import concurrent.futures

        done = super().submit(fn, *args, **kwargs)
        later: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop = asyncio.get_running_loop()

        def finish() -> None:
            if done.exception() is not None:
                later.set_exception(done.exception())
            else:
                later.set_result(done.result())

        loop.call_later(self.rng.uniform(0.0002, 0.003), finish)
        return later


class SimNode:
    """One storage node: started (a fresh servicer over the disk's committed state) or crashed."""

    def __init__(self, name: str, az: str, sim: NodeHost) -> None:
        self.name, self.az, self.sim = name, az, sim
        self.up = False
        self.store: SegmentStore | None = None
        self.servicer: StorageServicer | None = None
        self.heartbeats: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.store = SegmentStore(
            self.name, open_env=self.sim.disk.open, discard_env=self.sim.disk.wipe, keys=self.sim.keys
        )
        self.servicer = StorageServicer(
            self.store,
            self.name,
            self.az,
            writer=_DiskExecutor(self.sim.rng),
            peer_channel=self.sim.network.channel_factory(self.name),
            gossip_interval_s=GOSSIP_INTERVAL_S,
            history_window_s=self.sim.config.history_window_s,
        )
        if self.servicer.coalescer is not None:
            self.servicer.coalescer.chain_min = COALESCE_CHAIN_MIN_SIM
        self.servicer.start()
        handler = generic_handler(pb.DESCRIPTOR.services_by_name["StorageService"], self.servicer, pb)
        self.sim.network.serve(SimServer(self.name, [handler]))
        self.up = True
        if self.sim.config.control_plane:
            self.heartbeats = asyncio.get_running_loop().create_task(
                repl.heartbeat_loop(
                    self.name, self.sim.network.channel_factory(self.name), self.servicer.heartbeat_report
                )
            )

    async def crash(self) -> None:
        self.sim.network.crash(self.name)
        if self.heartbeats is not None:
            self.heartbeats.cancel()
            self.heartbeats = None
        if self.servicer is not None:
            await self.servicer.stop()  # its background work (group commit, gossip, scrub) dies with it
        self.sim.disk.crash(self.name)  # whatever was not committed is gone
        self.store = self.servicer = None
        self.up = False


class FakeControlPlane:
    """DescribeVolume from a fixed geometry; the simulated volume does not grow."""

    def __init__(self, geometry: cp_pb.VolumeGeometry) -> None:
        self.geometry = geometry

    async def DescribeVolume(self, request: Any, timeout: float | None = None) -> Any:
        return cp_pb.DescribeVolumeResponse(geometry=self.geometry)

    async def GrowVolume(self, request: Any, timeout: float | None = None) -> Any:
        raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the simulated volume does not grow")


class FollowedControlPlane:
    """DescribeVolume and GrowVolume answered by the simulated control plane (segment replacement on)."""

    def __init__(self, sim: ControlPlaneHost) -> None:
        self.sim = sim  # its control plane may restart

    async def DescribeVolume(self, request: Any, timeout: float | None = None) -> Any:
        assert self.sim.control_plane is not None
        try:
            return await self.sim.control_plane.DescribeVolume(request, None)
        except StorageError as error:
            raise rpc_error(getattr(grpc.StatusCode, error.status_code_name), error.message) from None

    async def GrowVolume(self, request: Any, timeout: float | None = None) -> Any:
        raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the simulated volume does not grow")
