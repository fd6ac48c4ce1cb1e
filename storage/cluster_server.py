"""gRPC adapter of the compute cluster: `storage.v1.ClusterService` over storage/cluster_state.py, served
by the control plane process beside `ControlPlaneService` (same server, same port).

1. Every state change runs under one `asyncio.Lock`; the state is persisted to `<data-dir>/cluster.json`
   (atomically, as the control plane's own file) whenever what it persists changed: instances with their
   addresses and failover priorities, the writer, the generation, the writer's open volumes and the
   custom endpoints. Heard-times are not persisted: after a restart the instances come back by
   heartbeating (an unknown instance's heartbeat records it again), and the writer is not declared gone
   within RESTART_GRACE_MS of the start.
2. The failure detector and the Failover RPC: storage/cluster_failover.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from sixfold.storage import control_plane as cp
from sixfold.storage.cluster_failover import FailoverRpcs, GrpcInstanceClient, InstanceClient
from sixfold.storage.cluster_limits import HEARTBEAT_INTERVAL_MS, RESTART_GRACE_MS, WRITER_TIMEOUT_MS, VolumeLag
from sixfold.storage.cluster_state import ClusterState, Promotion, Role
from sixfold.storage.cluster_state_file import cluster_from_dict, cluster_to_dict
from sixfold.storage.control_plane_keys import GrpcKeyMaker
from sixfold.storage.control_plane_persistence import write_json_atomically
from sixfold.storage.control_plane_server import (
    HEAL_INTERVAL_S,
    HEARTBEAT_INTERVAL_MS_DEFAULT,
    SERVICE_DESCRIPTOR,
    ControlPlaneServicer,
    SegmentClient,
)
from sixfold.storage.serving import start_server
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb2
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2

log = logging.getLogger("sixfold.control_plane.cluster")

CLUSTER_STATE_FILE_NAME = "cluster.json"
CLUSTER_SERVICE_DESCRIPTOR = cl_pb2.DESCRIPTOR.services_by_name["ClusterService"]
ROLE_TO_PROTO = {Role.WRITER: cl_pb2.COMPUTE_ROLE_WRITER, Role.READER: cl_pb2.COMPUTE_ROLE_READER}
ROLE_FROM_PROTO = {cl_pb2.COMPUTE_ROLE_WRITER: Role.WRITER, cl_pb2.COMPUTE_ROLE_READER: Role.READER}


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


def lag_from_proto(v: cl_pb2.ComputeVolumeLag) -> VolumeLag:
    return VolumeLag(v.volume_id, v.applied_vdl, v.lag_lsns, v.lag_ms_p50, v.lag_ms_p99, v.last_heard_ms)


def behind_writer(v: VolumeLag, writer_vdl: dict[str, int]) -> VolumeLag:
    """A reader's LSN lag as the control plane sees it: the writer's last reported VDL minus the reader's
    applied VDL (the reader itself only knows the VDLs the writer sent it, which it applies at once)."""
    behind = writer_vdl.get(v.volume_id, 0) - v.applied_vdl
    return replace(v, lag_lsns=behind) if behind > v.lag_lsns else v


def lag_to_proto(v: VolumeLag) -> cl_pb2.ComputeVolumeLag:
    return cl_pb2.ComputeVolumeLag(
        volume_id=v.volume_id,
        applied_vdl=v.applied_vdl,
        lag_lsns=v.lag_lsns,
        lag_ms_p50=v.lag_ms_p50,
        lag_ms_p99=v.lag_ms_p99,
        last_heard_ms=v.last_heard_ms,
    )


def load_cluster_state(
    path: Path, started_ms: float, writer_timeout_ms: float = WRITER_TIMEOUT_MS, restart_grace_ms: float | None = None
) -> ClusterState:
    grace = RESTART_GRACE_MS * writer_timeout_ms / WRITER_TIMEOUT_MS if restart_grace_ms is None else restart_grace_ms
    if not path.exists():
        return ClusterState(started_ms, writer_timeout_ms, grace)
    with open(path) as f:
        return cluster_from_dict(json.load(f), started_ms, writer_timeout_ms, grace)


class ClusterServicer(FailoverRpcs):
    """Implements every RPC of `storage.v1.ClusterService`."""

    # Hears every failover carried out, the failure detector's too (the control plane's audit log).
    on_failover: Callable[[dict[str, Any]], None] | None = None

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        instance_client: InstanceClient | None = None,
        clock_ms: Callable[[], float] = monotonic_ms,
        writer_timeout_ms: float = WRITER_TIMEOUT_MS,
        heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS,
        restart_grace_ms: float | None = None,
    ) -> None:
        assert 0 < heartbeat_interval_ms < writer_timeout_ms, (heartbeat_interval_ms, writer_timeout_ms)
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.data_dir / CLUSTER_STATE_FILE_NAME
        self.clock_ms = clock_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.state = load_cluster_state(self.state_path, clock_ms(), writer_timeout_ms, restart_grace_ms)
        self.instance_client: InstanceClient = instance_client or GrpcInstanceClient()
        self._lock = asyncio.Lock()
        self._persisted = cluster_to_dict(self.state)
        self._init_failover()

    async def _persist(self) -> None:
        """Write the state if what it persists changed. Caller holds the lock."""
        assert self._lock.locked()
        data = cluster_to_dict(self.state)
        if data != self._persisted:
            await asyncio.to_thread(write_json_atomically, self.state_path, data)
            self._persisted = data

    def _record(self, old: str, promotion: Promotion, silence: float | None, took_ms: float, by: str) -> None:
        super()._record(old, promotion, silence, took_ms, by)
        if self.on_failover is not None:
            self.on_failover(self.failovers[-1])

    # -- instances --------------------------------------------------------------------

    async def RegisterCompute(
        self, request: cl_pb2.RegisterComputeRequest, context: Any
    ) -> cl_pb2.RegisterComputeResponse:
        async with self._lock:
            a = self.state.register(
                request.instance_id, request.address, request.failover_priority, request.reader_only, self.clock_ms()
            )
            await self._persist()
        log.info(
            "compute instance %s registered at %s (tier %d): %s at generation %d",
            request.instance_id,
            request.address,
            request.failover_priority,
            a.role.name,
            a.generation,
        )
        return cl_pb2.RegisterComputeResponse(
            role=ROLE_TO_PROTO[a.role],
            generation=a.generation,
            writer_id=a.writer_id,
            writer_address=a.writer_address,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )

    async def ComputeHeartbeat(
        self, request: cl_pb2.ComputeHeartbeatRequest, context: Any
    ) -> cl_pb2.ComputeHeartbeatResponse:
        claimed = ROLE_FROM_PROTO.get(request.role)
        async with self._lock:
            known = request.instance_id in self.state.instances
            was_writer = self.state.writer_id
            a = self.state.heartbeat(
                request.instance_id,
                request.address,
                claimed,
                request.generation,
                [lag_from_proto(v) for v in request.volumes],
                list(request.open_volume_ids),
                self.clock_ms(),
            )
            await self._persist()
        if not known:
            log.info("compute instance %s at %s heard from again (recorded anew)", request.instance_id, request.address)
        if was_writer != self.state.writer_id and self.state.writer_id == request.instance_id:
            log.info(
                "compute instance %s is the writer at generation %d (its heartbeat says so)", a.writer_id, a.generation
            )
        if claimed == Role.WRITER and a.role == Role.READER:
            log.warning(
                "compute instance %s claims to be the writer at generation %d; told to step down (the writer is %s "
                "at generation %d)",
                request.instance_id,
                request.generation,
                a.writer_id or "being chosen",
                a.generation,
            )
        return cl_pb2.ComputeHeartbeatResponse(
            role=ROLE_TO_PROTO[a.role],
            generation=a.generation,
            writer_id=a.writer_id,
            writer_address=a.writer_address,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
        )

    async def ListComputeInstances(
        self, request: cl_pb2.ListComputeInstancesRequest, context: Any
    ) -> cl_pb2.ListComputeInstancesResponse:
        now = self.clock_ms()
        state = self.state
        writer = state.instances.get(state.writer_id or "")
        writer_vdl = {v.volume_id: v.applied_vdl for v in writer.volumes} if writer is not None else {}
        instances = []
        for instance_id in sorted(state.instances):
            i = state.instances[instance_id]
            age = i.age_ms(now)
            instances.append(
                cl_pb2.ComputeInstance(
                    instance_id=i.instance_id,
                    address=i.address,
                    role=cl_pb2.COMPUTE_ROLE_WRITER if instance_id == state.writer_id else cl_pb2.COMPUTE_ROLE_READER,
                    failover_priority=i.failover_priority,
                    alive=state.alive(instance_id, now),
                    last_heartbeat_age_ms=round(now - state.started_ms if age is None else age),
                    volumes=[lag_to_proto(behind_writer(v, writer_vdl)) for v in i.volumes],
                    generation=i.generation,
                )
            )
        return cl_pb2.ListComputeInstancesResponse(
            instances=instances,
            writer_id=state.writer_id or "",
            generation=state.generation,
            promoting_id=state.promoting_id or "",
        )

    async def RemoveCompute(self, request: cl_pb2.RemoveComputeRequest, context: Any) -> cl_pb2.RemoveComputeResponse:
        async with self._lock:
            self.state.remove(request.instance_id, self.clock_ms())
            await self._persist()
        log.info("compute instance %s removed", request.instance_id)
        return cl_pb2.RemoveComputeResponse()

    # -- endpoints --------------------------------------------------------------------

    async def CreateEndpoint(
        self, request: cl_pb2.CreateEndpointRequest, context: Any
    ) -> cl_pb2.CreateEndpointResponse:
        async with self._lock:
            members = self.state.create_endpoint(request.name, list(request.instance_ids))
            await self._persist()
        log.info("endpoint %s over %s", request.name, ", ".join(members))
        return cl_pb2.CreateEndpointResponse(
            endpoint=cl_pb2.Endpoint(name=request.name, kind="custom", instance_ids=members)
        )

    async def ListEndpoints(self, request: cl_pb2.ListEndpointsRequest, context: Any) -> cl_pb2.ListEndpointsResponse:
        return cl_pb2.ListEndpointsResponse(
            endpoints=[
                cl_pb2.Endpoint(name=name, kind=kind, instance_ids=members)
                for name, kind, members in self.state.list_endpoints()
            ]
        )

    async def DeleteEndpoint(
        self, request: cl_pb2.DeleteEndpointRequest, context: Any
    ) -> cl_pb2.DeleteEndpointResponse:
        async with self._lock:
            self.state.delete_endpoint(request.name)
            await self._persist()
        log.info("endpoint %s deleted", request.name)
        return cl_pb2.DeleteEndpointResponse()

    async def ResolveEndpoint(
        self, request: cl_pb2.ResolveEndpointRequest, context: Any
    ) -> cl_pb2.ResolveEndpointResponse:
        r = self.state.resolve(request.name, self.clock_ms())
        return cl_pb2.ResolveEndpointResponse(
            addresses=r.addresses, instance_ids=r.instance_ids, generation=r.generation
        )


async def start_cluster_control_plane(
    host: str,
    port: int,
    data_dir: str | os.PathLike[str],
    heartbeat_timeout_ms: int = cp.HEARTBEAT_TIMEOUT_MS_DEFAULT,
    heartbeat_interval_ms: int = HEARTBEAT_INTERVAL_MS_DEFAULT,
    *,
    segment_client: SegmentClient | None = None,
    failure_timeout_ms: int = cp.FAILURE_TIMEOUT_MS_DEFAULT,
    heal_interval_s: float = HEAL_INTERVAL_S,
    instance_client: InstanceClient | None = None,
    writer_timeout_ms: float = WRITER_TIMEOUT_MS,
    failure_detection: bool = True,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    kms_address: str | None = None,
    services: Sequence[tuple[Any, Any, Any]] = (),
) -> tuple[grpc.aio.Server, int, ControlPlaneServicer, ClusterServicer]:
    """The control plane process's server: ControlPlaneService and ClusterService on one port (plus health,
    with a status for each, and reflection). `heal_interval_s` 0 leaves healing off; `failure_detection`
    False leaves the detector off (Failover by request still works). `interceptors`: the role check and
    audit of storage/security/audit_rpc.py and the token check (control_plane_main.py); `services`: more to serve
    on the port, (descriptor, servicer, pb2 module) as serving.start_server takes (UserService under TLS)."""
    servicer = ControlPlaneServicer(
        data_dir, heartbeat_timeout_ms, heartbeat_interval_ms, segment_client, failure_timeout_ms=failure_timeout_ms
    )
    if kms_address:  # encryption at rest: every segment gets its volume's wrapped key (control_plane_keys.py)
        servicer.encrypt_at_rest(data_dir, GrpcKeyMaker(kms_address), servicer.state.parent_volume_id)
    cluster = ClusterServicer(data_dir, instance_client, writer_timeout_ms=writer_timeout_ms)
    server, bound, _health = await start_server(
        host,
        port,
        [(SERVICE_DESCRIPTOR, servicer, cp_pb2), (CLUSTER_SERVICE_DESCRIPTOR, cluster, cl_pb2), *services],
        interceptors=interceptors,
    )
    if heal_interval_s > 0:
        servicer.start_healing(heal_interval_s)
    if failure_detection:
        cluster.start_detector()
    return server, bound, servicer, cluster
