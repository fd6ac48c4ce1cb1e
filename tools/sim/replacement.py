"""Segment replacement inside the simulation: the real `ControlPlaneServicer` on the fake network.

Real: the control plane's state machine and `ControlPlaneServicer.heal_once` (rollbacks, orphan drops,
begins, target measurement, completion), the storage nodes' CreateSegment / UpdateMembership /
GetSegmentState / DropSegment, the writer following DescribeVolume. Fake:
- `SimSegmentClient` calls the storage nodes through the sim network from the endpoint
  `CONTROL_PLANE`, so drops, delays, crashes and partitions reach the control plane too (every call
  of storage/control_plane_calls.py's `TimelineSegmentClient`, so backtracks and times work);
- `SimControlPlane` keeps its persisted state in memory (every `_persist` round-trips it through
  JSON and `ControlPlane.from_dict` and checks nothing is lost), on the sim's virtual clocks (its
  wall clock too: the writers' commit times are virtual, tools/sim/workload.py);
- heartbeats are real `Heartbeat` RPCs each live node sends over the sim network every
  `HEARTBEAT_INTERVAL_S` (a node partitioned from the control plane looks dead to it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import grpc

from sixfold.storage import control_plane as cp
from sixfold.storage.control_plane_server import ControlPlaneServicer
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.sim.network import rpc_error

CONTROL_PLANE = "control-plane"
SPARES = (("a3", "a"), ("b3", "b"), ("c3", "c"))  # one spare node per AZ
HEARTBEAT_INTERVAL_S = 0.3
HEARTBEAT_TIMEOUT_MS = 1000
FAILURE_TIMEOUT_MS = 2000
HEAL_INTERVAL_S = 0.5
SEGMENT_CALL_TIMEOUT_S = 1.0
HEARTBEAT_RPC_TIMEOUT_S = 0.25
SIM_PORT = 1  # the control plane wants HOST:PORT; the sim network reaches node NAME at NAME:SIM_PORT
PERSIST_DELAY_S = 0.001  # a virtual fsync: other tasks run while the state is written


class SimSegmentClient:
    """`storage.control_plane_server.SegmentClient` over the sim network."""

    def __init__(self, channel_factory: Callable[[str], Any], timeout_s: float = SEGMENT_CALL_TIMEOUT_S) -> None:
        self.channel_factory = channel_factory
        self.timeout_s = timeout_s
        self.crashed = False  # its control plane crashed: a handler still running there sends nothing more

    def _stub(self, address: str) -> pb_grpc.StorageServiceStub:
        if self.crashed:
            # A crashed process's handlers die with it; in the run they are coroutines that would go on, and
            # once the next incarnation serves the same endpoint their calls would reach the nodes again.
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the control plane process that made this call crashed")
        return pb_grpc.StorageServiceStub(self.channel_factory(address))

    async def create_segment(self, address: str, request: pb.CreateSegmentRequest) -> None:
        await self._stub(address).CreateSegment(request, timeout=self.timeout_s)

    async def drop_segment(self, address: str, segment_id: str) -> None:
        await self._stub(address).DropSegment(pb.DropSegmentRequest(segment_id=segment_id), timeout=self.timeout_s)

    async def update_membership(self, address: str, request: pb.UpdateMembershipRequest) -> pb.SegmentState:
        return (await self._stub(address).UpdateMembership(request, timeout=self.timeout_s)).state

    async def segment_state(self, address: str, segment_id: str) -> pb.SegmentState:
        reply = await self._stub(address).GetSegmentState(
            pb.GetSegmentStateRequest(segment_id=segment_id), timeout=self.timeout_s
        )
        return reply.state

    # -- storage/control_plane_calls.py `TimelineSegmentClient`: a backtrack's and a time resolution's calls --

    async def segment_state_at(
        self, address: str, segment_id: str, tail_at_or_below_lsn: int
    ) -> pb.GetSegmentStateResponse:
        request = pb.GetSegmentStateRequest(segment_id=segment_id, tail_at_or_below_lsn=tail_at_or_below_lsn)
        reply: pb.GetSegmentStateResponse = await self._stub(address).GetSegmentState(request, timeout=self.timeout_s)
        return reply

    async def raise_volume_epoch(
        self, address: str, request: pb.RaiseVolumeEpochRequest
    ) -> pb.RaiseVolumeEpochResponse:
        reply: pb.RaiseVolumeEpochResponse = await self._stub(address).RaiseVolumeEpoch(request, timeout=self.timeout_s)
        return reply

    async def find_commit(self, address: str, request: pb.FindCommitRequest) -> pb.FindCommitResponse:
        reply: pb.FindCommitResponse = await self._stub(address).FindCommit(request, timeout=self.timeout_s)
        return reply

    async def read_records(self, address: str, request: pb.ReadRecordsRequest) -> pb.ReadRecordsResponse:
        reply: pb.ReadRecordsResponse = await self._stub(address).ReadRecords(request, timeout=self.timeout_s)
        return reply


class SimControlPlane(ControlPlaneServicer):
    """The real servicer with its state kept in memory, on virtual time."""

    def __init__(
        self,
        state: cp.ControlPlane,
        segment_client: SimSegmentClient,
        clock_ms: Callable[[], float],
        wall_clock_ms: Callable[[], float],
    ) -> None:
        self._initial = state
        self.saved: dict[str, Any] = {}
        self.persists = 0
        super().__init__(
            "/nonexistent-sim-control-plane",
            HEARTBEAT_TIMEOUT_MS,
            int(HEARTBEAT_INTERVAL_S * 1000),
            segment_client,
            clock_ms=clock_ms,
            failure_timeout_ms=FAILURE_TIMEOUT_MS,
            wall_clock_ms=wall_clock_ms,  # virtual too: creation times, backtrack windows and times replay
        )

    def _load_state(self, heartbeat_timeout_ms: int, failure_timeout_ms: int, started_ms: float) -> cp.ControlPlane:
        assert (self._initial.heartbeat_timeout_ms, self._initial.failure_timeout_ms) == (
            heartbeat_timeout_ms,
            failure_timeout_ms,
        )
        self.saved = self._initial.to_dict()
        return self._initial

    async def _persist(self) -> None:
        assert self._lock.locked()
        data = json.loads(json.dumps(self.state.to_dict(), sort_keys=True))
        reloaded = cp.ControlPlane.from_dict(data, self.state.heartbeat_timeout_ms, self.state.failure_timeout_ms)
        assert reloaded.to_dict() == data, "the control plane's state does not survive a restart unchanged"
        self.saved = data
        self.persists += 1
        await asyncio.sleep(PERSIST_DELAY_S)
        self._publish()


def address_of(node_id: str) -> str:
    return f"{node_id}:{SIM_PORT}"


def initial_state(
    volume_id: str,
    page_size: int,
    pages_per_pg: int,
    pgs: int,
    nodes: tuple[tuple[str, str], ...],
    spares: tuple[tuple[str, str], ...],
    now_ms: float,
    backtrack_window_s: int = 0,
) -> cp.ControlPlane:
    """A control plane that placed `pgs` PGs on `nodes` (two per AZ: placement has no other choice),
    then learned of the spares."""
    state = cp.ControlPlane(HEARTBEAT_TIMEOUT_MS, FAILURE_TIMEOUT_MS, now_ms)
    for name, az in nodes:
        state.register_node(name, az, address_of(name), now_ms)
    state.commit_pg_plan(
        state.plan_create_volume(
            volume_id, page_size, pages_per_pg * page_size, now_ms, backtrack_window_s=backtrack_window_s
        )
    )
    for _ in range(pgs - 1):
        plan = state.plan_grow_volume(volume_id, 0, now_ms)
        assert plan is not None
        state.commit_pg_plan(plan)
    for name, az in spares:
        state.register_node(name, az, address_of(name), now_ms)
    return state


async def heartbeat_loop(node_id: str, channel_factory: Callable[[str], Any], report: Callable[[], Any]) -> None:
    """What storage/node_main.py's heartbeat loop does, over the sim network. `report()` is the servicer's
    `heartbeat_report` (segments held, disk condition)."""
    stub = cp_grpc.ControlPlaneServiceStub(channel_factory(CONTROL_PLANE))
    while True:
        try:
            held, condition, detail = report()
            await stub.Heartbeat(
                cp_pb.HeartbeatRequest(
                    node_id=node_id,
                    address=address_of(node_id),
                    segment_count=len(held),
                    segments=held,
                    condition=condition,
                    condition_detail=detail,
                    segments_reported=True,
                ),
                timeout=HEARTBEAT_RPC_TIMEOUT_S,
            )
        except Exception:  # noqa: BLE001 - an unreachable control plane is retried, as on a real node
            pass
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)
