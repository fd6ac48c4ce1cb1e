"""The launcher's calls about compute instances: the control plane's storage.v1.ClusterService
(ListComputeInstances, RemoveCompute, Failover, the endpoints) and each instance's own
compute.v1.InstanceService (GetInstanceStatus), which `sixfold status` asks while the control plane
does not answer (tools/cluster_status.py rule 5).

A gRPC adapter; a failed call raises `InstanceCallError` with the status code and the server's sentence
(or, when nobody answers, a sentence naming the address), never a raw gRPC error.
"""

from __future__ import annotations

import grpc

from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import instance_service_pb2_grpc as igrpc
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
from sixfold.storage.v1 import cluster_service_pb2_grpc as cl_grpc
from sixfold.tools.cluster_layout import COMPUTE, RUNNING, ProcessRecord
from sixfold.tools.cluster_status import (
    ClusterStatus,
    InstanceInfo,
    VolumeLagInfo,
    control_plane_answers,
    not_answering_sentence,
)

LIST_TIMEOUT_S = 1.0  # status: never wait long
INSTANCE_STATUS_TIMEOUT_S = 1.0
CHANGE_TIMEOUT_S = 10.0  # endpoint changes, RemoveCompute
FAILOVER_TIMEOUT_S = 60.0  # a promotion recovers every volume
NOT_ANSWERING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class InstanceCallError(Exception):
    """A ClusterService or InstanceService call failed: `.code` (grpc.StatusCode) and `.details`."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details
        super().__init__(f"{code.name}: {details}")


def _role(name: str) -> str:
    return name.rsplit("_", 1)[-1].lower() if not name.endswith("UNSPECIFIED") else "unknown"


def _call(address: str, stub_class: type, method: str, request: object, timeout_s: float, who: str) -> object:
    with transport.channel(address, CHANNEL_OPTIONS) as channel:
        try:
            return getattr(stub_class(channel), method)(request, timeout=timeout_s)
        except grpc.RpcError as error:
            code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
            details = (error.details() if hasattr(error, "details") else "") or ""
            if code in NOT_ANSWERING and (code == grpc.StatusCode.DEADLINE_EXCEEDED or "connect" in details.lower()):
                details = f"the {who} at {address} is not answering ({details or code.name})"
            elif code == grpc.StatusCode.UNIMPLEMENTED:
                details = f"the {who} at {address} does not serve {method} (a version without read replicas?)"
            raise InstanceCallError(code or grpc.StatusCode.UNKNOWN, details or code.name) from None


def _cluster(address: str, method: str, request: object, timeout_s: float) -> object:
    return _call(address, cl_grpc.ClusterServiceStub, method, request, timeout_s, "control plane")


# --- the control plane's view ---------------------------------------------------------------------


def list_instances(control_plane: str, timeout_s: float = LIST_TIMEOUT_S) -> cl_pb.ListComputeInstancesResponse:
    reply = _cluster(control_plane, "ListComputeInstances", cl_pb.ListComputeInstancesRequest(), timeout_s)
    assert isinstance(reply, cl_pb.ListComputeInstancesResponse)
    return reply


def instance_infos(reply: cl_pb.ListComputeInstancesResponse) -> list[InstanceInfo]:
    return [
        InstanceInfo(
            instance_id=i.instance_id,
            address=i.address,
            role=_role(cl_pb.ComputeRole.Name(i.role)),
            alive=i.alive,
            generation=i.generation,
            failover_priority=i.failover_priority,
            last_heartbeat_age_ms=i.last_heartbeat_age_ms,
            volumes=[
                VolumeLagInfo(v.volume_id, v.applied_vdl, v.lag_lsns, v.lag_ms_p50, v.lag_ms_p99) for v in i.volumes
            ],
        )
        for i in reply.instances
    ]


def remove_compute(control_plane: str, instance_id: str) -> None:
    _cluster(control_plane, "RemoveCompute", cl_pb.RemoveComputeRequest(instance_id=instance_id), CHANGE_TIMEOUT_S)


def failover(control_plane: str, to_instance_id: str = "") -> cl_pb.FailoverResponse:
    reply = _cluster(
        control_plane, "Failover", cl_pb.FailoverRequest(to_instance_id=to_instance_id), FAILOVER_TIMEOUT_S
    )
    assert isinstance(reply, cl_pb.FailoverResponse)
    return reply


def create_endpoint(control_plane: str, name: str, instance_ids: list[str]) -> cl_pb.Endpoint:
    request = cl_pb.CreateEndpointRequest(name=name, instance_ids=instance_ids)
    reply = _cluster(control_plane, "CreateEndpoint", request, CHANGE_TIMEOUT_S)
    assert isinstance(reply, cl_pb.CreateEndpointResponse)
    return reply.endpoint


def list_endpoints(control_plane: str) -> list[cl_pb.Endpoint]:
    reply = _cluster(control_plane, "ListEndpoints", cl_pb.ListEndpointsRequest(), CHANGE_TIMEOUT_S)
    assert isinstance(reply, cl_pb.ListEndpointsResponse)
    return list(reply.endpoints)


def delete_endpoint(control_plane: str, name: str) -> None:
    _cluster(control_plane, "DeleteEndpoint", cl_pb.DeleteEndpointRequest(name=name), CHANGE_TIMEOUT_S)


def resolve_endpoint(control_plane: str, name: str) -> cl_pb.ResolveEndpointResponse:
    reply = _cluster(control_plane, "ResolveEndpoint", cl_pb.ResolveEndpointRequest(name=name), CHANGE_TIMEOUT_S)
    assert isinstance(reply, cl_pb.ResolveEndpointResponse)
    return reply


# --- each instance's own view (while the control plane does not answer) -----------------------------


def own_view(record: ProcessRecord, running: bool) -> InstanceInfo:
    """What the compute instance of `record` says of itself (GetInstanceStatus); role "unknown" when it is
    not running or does not answer."""
    info = InstanceInfo(record.name, record.address, "unknown", False, 0, 0, None, source="instance")
    if not running or not record.address:
        return info
    try:
        reply = _call(
            record.address,
            igrpc.InstanceServiceStub,
            "GetInstanceStatus",
            ipb.GetInstanceStatusRequest(),
            INSTANCE_STATUS_TIMEOUT_S,
            "compute instance",
        )
    except InstanceCallError:
        return info
    assert isinstance(reply, ipb.GetInstanceStatusResponse)
    info.alive = True
    info.role = _role(ipb.InstanceRole.Name(reply.role))
    info.generation = reply.generation
    info.failover_priority = reply.failover_priority
    info.volumes = [
        VolumeLagInfo(v.volume_id, v.applied_vdl, v.lag_lsns, v.lag_ms_p50, v.lag_ms_p99) for v in reply.volumes
    ]
    return info


def fill_instances(status: ClusterStatus, records: list[ProcessRecord], control_plane: ProcessRecord | None) -> None:
    """tools/cluster_status.py rule 5: the compute instances of `status`, from the control plane or, while it
    does not answer, from each running instance."""
    compute = [r for r in records if r.role == COMPUTE]
    if not compute or control_plane is None:
        return
    if control_plane_answers(status.by_name(control_plane.name)):
        try:
            reply = list_instances(control_plane.address)
        except InstanceCallError as error:
            said = error.details if control_plane.address in error.details else f"control plane: {error.details}"
            note = f"{said} — roles as each instance reports them"
        else:
            status.instances = instance_infos(reply)
            status.writer_id, status.generation, status.promoting_id = (
                reply.writer_id,
                reply.generation,
                reply.promoting_id,
            )
            return
    else:
        note = not_answering_sentence(control_plane, "its view of the compute instances")
        note += "; roles as each instance reports them"
    status.instances_note = note
    status.instances = [own_view(r, status.by_name(r.name).state == RUNNING) for r in compute]
