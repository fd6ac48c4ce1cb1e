"""ClusterService on a real gRPC server (storage/cluster_server.py, storage/cluster_failover.py), with small
real InstanceService servers standing in for compute instances: they heartbeat like compute instances
and record the Promote and StepDown calls the control plane makes. Detection and promotion end to end,
Failover and its refusals, endpoints, persistence across a control plane restart, and the wiring of
`sixfold control-plane`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.storage.cluster_limits import RESTART_GRACE_MS, WRITER_TIMEOUT_MS
from sixfold.storage.cluster_server import CLUSTER_STATE_FILE_NAME, ClusterServicer, start_cluster_control_plane
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb2
from sixfold.storage.v1 import cluster_service_pb2_grpc
from tests.test_control_plane_process import REPO_ROOT, stop_process, wait_for_port_file

WRITER = cl_pb2.COMPUTE_ROLE_WRITER
READER = cl_pb2.COMPUTE_ROLE_READER
GRACE_S = RESTART_GRACE_MS / 1000


class FakeCompute:
    """An InstanceService server that heartbeats the control plane every 100 ms as a compute instance."""

    def __init__(self, instance_id: str, priority: int = 0, vdl: int = 0, fail_promote: bool = False) -> None:
        self.instance_id, self.priority, self.vdl, self.fail_promote = instance_id, priority, vdl, fail_promote
        self.role, self.generation = READER, 0
        self.calls: list[tuple[str, Any]] = []
        self.server: grpc.aio.Server | None = None
        self.address = ""
        self._beating: asyncio.Task[None] | None = None

    async def Promote(self, request: ipb.PromoteRequest, context: Any) -> ipb.PromoteResponse:
        self.calls.append(("Promote", request))
        if self.fail_promote:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "recovery failed: no write quorum")
        self.role, self.generation = WRITER, request.generation
        return ipb.PromoteResponse(role=ipb.INSTANCE_ROLE_WRITER, volume_epochs=dict.fromkeys(request.volume_ids, 9))

    async def StepDown(self, request: ipb.StepDownRequest, context: Any) -> ipb.StepDownResponse:
        self.calls.append(("StepDown", request))
        self.role, self.generation = READER, request.generation
        return ipb.StepDownResponse(role=ipb.INSTANCE_ROLE_READER)

    async def GetInstanceStatus(self, request: Any, context: Any) -> ipb.GetInstanceStatusResponse:
        return ipb.GetInstanceStatusResponse(instance_id=self.instance_id)

    async def FollowRedo(self, requests: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in the fake")
        yield  # pragma: no cover

    async def start(self, stub: Any, reader_only: bool = True) -> None:
        descriptor = ipb.DESCRIPTOR.services_by_name["InstanceService"]
        self.server, port, _ = await start_server("127.0.0.1", 0, [(descriptor, self, ipb)])
        self.address = f"127.0.0.1:{port}"
        reply = await stub.RegisterCompute(
            cl_pb2.RegisterComputeRequest(
                instance_id=self.instance_id,
                address=self.address,
                failover_priority=self.priority,
                reader_only=reader_only,
            )
        )
        self.role, self.generation = reply.role, reply.generation
        self._beating = asyncio.create_task(self._beat(stub))

    async def _beat(self, stub: Any) -> None:
        while True:
            request = cl_pb2.ComputeHeartbeatRequest(
                instance_id=self.instance_id,
                address=self.address,
                role=self.role,
                generation=self.generation,
                volumes=[cl_pb2.ComputeVolumeLag(volume_id="vol0", applied_vdl=self.vdl)] if self.vdl else [],
                open_volume_ids=["vol0"] if self.role == WRITER else [],
            )
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.ComputeHeartbeat(request, timeout=1)
                if self.role == WRITER and reply.role == READER:
                    self.calls.append(("told READER", reply.generation))
                    self.role = READER
                self.generation = max(self.generation, reply.generation)
            await asyncio.sleep(0.1)

    async def kill(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.gather(self._beating, return_exceptions=True)
            self._beating = None
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    def promotes(self) -> list[ipb.PromoteRequest]:
        return [r for name, r in self.calls if name == "Promote"]


@contextlib.asynccontextmanager
async def control_plane(data_dir: Path) -> AsyncIterator[tuple[Any, ClusterServicer]]:
    server, port, _servicer, cluster = await start_cluster_control_plane("127.0.0.1", 0, data_dir, heal_interval_s=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as channel:
            yield cluster_service_pb2_grpc.ClusterServiceStub(channel), cluster
    finally:
        await cluster.stop_detector()
        await server.stop(None)


async def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting until {what}"
        await asyncio.sleep(0.02)


async def fail(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


@pytest.mark.unit
def test_writer_killed_a_reader_is_promoted_within_a_second_and_the_old_writer_rejoins_as_reader(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as (stub, cluster):
            compute, r1, r2 = FakeCompute("compute"), FakeCompute("replica1", 1, vdl=50), FakeCompute("replica2", 1, 80)
            await compute.start(stub, reader_only=False)
            await r1.start(stub)
            await r2.start(stub)
            assert (compute.role, r1.role, r2.role) == (WRITER, READER, READER)
            resolved = await stub.ResolveEndpoint(cl_pb2.ResolveEndpointRequest(name="cluster"))
            assert list(resolved.instance_ids) == ["compute"] and resolved.generation == 1
            await asyncio.sleep(GRACE_S)  # past the restart grace: detection is on
            assert r1.promotes() == r2.promotes() == []
            killed = time.monotonic()
            await compute.kill()

            async def writer() -> str:
                listed = await stub.ListComputeInstances(cl_pb2.ListComputeInstancesRequest())
                return "" if listed.writer_id == "compute" else listed.writer_id

            assert await wait_for(writer, 5, "a reader is the writer") == "replica2"  # the most caught up
            took = time.monotonic() - killed
            # never before the writer timeout (the last beat came up to 0.1 s before the kill); how fast after it
            # is `sixfold bench failover`'s to measure, not a test's (a loaded machine delays the detector)
            assert took >= WRITER_TIMEOUT_MS / 1000 - 0.15, took
            [promote] = r2.promotes()
            assert (promote.generation, list(promote.volume_ids)) == (2, ["vol0"])
            assert r1.promotes() == []
            resolved = await stub.ResolveEndpoint(cl_pb2.ResolveEndpointRequest(name="cluster"))
            assert (list(resolved.addresses), resolved.generation) == ([r2.address], 2)
            # the detector records the failover just after the promotion is persisted (and listed)

            async def recorded() -> list[dict[str, object]]:
                return list(cluster.failovers)

            assert (await wait_for(recorded, 5, "the failover is recorded"))[-1]["new_writer_id"] == "replica2"
            # The old writer comes back claiming generation 1: it is told READER.
            compute.role, compute.generation = WRITER, 1
            await compute.start(stub)
            assert compute.role == READER
            reply = await stub.ComputeHeartbeat(
                cl_pb2.ComputeHeartbeatRequest(
                    instance_id="compute", address=compute.address, role=WRITER, generation=1
                )
            )
            assert (reply.role, reply.writer_id, reply.writer_address) == (READER, "replica2", r2.address)
            for fake in (compute, r1, r2):
                await fake.kill()

    asyncio.run(scenario())


@pytest.mark.unit
def test_a_failing_promotion_moves_on_to_the_next_reader(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as (stub, _cluster):
            compute = FakeCompute("compute")
            r1, r2 = FakeCompute("replica1", 0, 90, fail_promote=True), FakeCompute("replica2", 1, 10)
            await compute.start(stub, reader_only=False)
            await r1.start(stub)
            await r2.start(stub)
            await asyncio.sleep(GRACE_S)
            await compute.kill()

            async def writer() -> str:
                listed = await stub.ListComputeInstances(cl_pb2.ListComputeInstancesRequest())
                return "" if listed.writer_id == "compute" else listed.writer_id

            assert await wait_for(writer, 5, "replica2 is the writer") == "replica2"
            assert [p.generation for p in r1.promotes()] == [2]
            assert [p.generation for p in r2.promotes()] == [3]
            for fake in (r1, r2):
                await fake.kill()

    asyncio.run(scenario())


@pytest.mark.unit
def test_failover_by_request_steps_down_then_promotes_and_refuses_with_clear_statuses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with control_plane(tmp_path) as (stub, _cluster):
            compute, r1, r2 = FakeCompute("compute"), FakeCompute("replica1", 1, 5), FakeCompute("replica2", 1, 5)
            error = await fail(stub.Failover(cl_pb2.FailoverRequest()))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert (
                error.details() == "the cluster has no live reader to fail over to; add one with `sixfold replica add`"
            )
            await compute.start(stub, reader_only=False)
            await r1.start(stub)
            await r2.start(stub)
            await asyncio.sleep(0.3)
            refusals = [
                ("ghost", grpc.StatusCode.NOT_FOUND, "no compute instance ghost in the cluster"),
                ("compute", grpc.StatusCode.FAILED_PRECONDITION, "compute is already the writer"),
                ("Bad id!", grpc.StatusCode.INVALID_ARGUMENT, "instance id 'Bad id!' is not valid"),
            ]
            for to, code, sentence in refusals:
                error = await fail(stub.Failover(cl_pb2.FailoverRequest(to_instance_id=to)))
                assert (error.code(), sentence in (error.details() or "")) == (code, True), error.details()
            await r2.kill()
            await asyncio.sleep(WRITER_TIMEOUT_MS / 1000 + 0.1)
            error = await fail(stub.Failover(cl_pb2.FailoverRequest(to_instance_id="replica2")))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "replica2 is not a live reader (silent for" in (error.details() or "")
            listed = await stub.ListComputeInstances(cl_pb2.ListComputeInstancesRequest())
            assert (listed.writer_id, listed.generation, listed.promoting_id) == ("compute", 1, "")

            reply = await stub.Failover(cl_pb2.FailoverRequest(to_instance_id="replica1"))
            assert (reply.old_writer_id, reply.new_writer_id, reply.generation) == ("compute", "replica1", 2)
            assert reply.took_ms < 1000
            [(name, step_down)] = compute.calls
            assert (name, step_down.generation, step_down.new_writer_id) == ("StepDown", 2, "replica1")
            assert [(p.generation, list(p.volume_ids)) for p in r1.promotes()] == [(2, ["vol0"])]
            resolved = await stub.ResolveEndpoint(cl_pb2.ResolveEndpointRequest(name="cluster"))
            assert list(resolved.instance_ids) == ["replica1"]
            await asyncio.sleep(0.3)  # the old writer heartbeats as a reader now: no failover follows
            listed = await stub.ListComputeInstances(cl_pb2.ListComputeInstancesRequest())
            assert (listed.writer_id, listed.generation) == ("replica1", 2)
            for fake in (compute, r1):
                await fake.kill()

    asyncio.run(scenario())


@pytest.mark.unit
def test_endpoints_and_instances_survive_a_control_plane_restart_without_a_false_failover(tmp_path: Path) -> None:
    async def scenario() -> None:
        compute, r1, r2 = FakeCompute("compute"), FakeCompute("replica1", 3), FakeCompute("replica2", 7)
        async with control_plane(tmp_path) as (stub, _cluster):
            await compute.start(stub, reader_only=False)
            await r1.start(stub)
            await r2.start(stub)
            created = await stub.CreateEndpoint(
                cl_pb2.CreateEndpointRequest(name="analytics", instance_ids=["replica2"])
            )
            assert (created.endpoint.kind, list(created.endpoint.instance_ids)) == ("custom", ["replica2"])
            for request, code in [
                (cl_pb2.CreateEndpointRequest(name="empty"), grpc.StatusCode.INVALID_ARGUMENT),
                (cl_pb2.CreateEndpointRequest(name="x", instance_ids=["ghost"]), grpc.StatusCode.INVALID_ARGUMENT),
                (
                    cl_pb2.CreateEndpointRequest(name="cluster", instance_ids=["replica1"]),
                    grpc.StatusCode.INVALID_ARGUMENT,
                ),
            ]:
                assert (await fail(stub.CreateEndpoint(request))).code() == code
            error = await fail(stub.DeleteEndpoint(cl_pb2.DeleteEndpointRequest(name="nope")))
            assert error.code() == grpc.StatusCode.NOT_FOUND
            error = await fail(stub.ResolveEndpoint(cl_pb2.ResolveEndpointRequest(name="nope")))
            assert error.code() == grpc.StatusCode.NOT_FOUND
            resolved = await stub.ResolveEndpoint(cl_pb2.ResolveEndpointRequest(name="analytics"))
            assert list(resolved.addresses) == [r2.address]
            readers = set()
            for _ in range(4):
                readers.add((await stub.ResolveEndpoint(cl_pb2.ResolveEndpointRequest(name="reader"))).instance_ids[0])
            assert readers == {"replica1", "replica2"}
            bad = cl_pb2.RegisterComputeRequest(instance_id="replica9", address="127.0.0.1:1", failover_priority=99)
            assert (await fail(stub.RegisterCompute(bad))).code() == grpc.StatusCode.INVALID_ARGUMENT
        saved = json.loads((tmp_path / CLUSTER_STATE_FILE_NAME).read_text())
        assert (saved["writer_id"], saved["generation"], saved["writer_volume_ids"]) == ("compute", 1, ["vol0"])
        # The compute instances go on heartbeating while the control plane is down and back.
        async with control_plane(tmp_path) as (stub, _cluster):
            compute._beating, r1._beating, r2._beating = (asyncio.create_task(f._beat(stub)) for f in (compute, r1, r2))
            endpoints = (await stub.ListEndpoints(cl_pb2.ListEndpointsRequest())).endpoints
            assert [(e.name, e.kind) for e in endpoints] == [
                ("cluster", "cluster"),
                ("reader", "reader"),
                ("analytics", "custom"),
            ]
            await asyncio.sleep(GRACE_S + 0.5)
            listed = await stub.ListComputeInstances(cl_pb2.ListComputeInstancesRequest())
            assert (listed.writer_id, listed.generation) == ("compute", 1)
            assert {i.instance_id: (i.failover_priority, i.alive) for i in listed.instances} == {
                "compute": (0, True),
                "replica1": (3, True),
                "replica2": (7, True),
            }
            assert r1.promotes() == r2.promotes() == [] and compute.role == WRITER
        # A control plane that lost its file: the writer's claim is accepted, readers come back as readers.
        (tmp_path / CLUSTER_STATE_FILE_NAME).unlink()
        async with control_plane(tmp_path) as (stub, _cluster):
            for f in (compute, r1, r2):
                f._beating = asyncio.create_task(f._beat(stub))
            await asyncio.sleep(GRACE_S + 0.5)
            listed = await stub.ListComputeInstances(cl_pb2.ListComputeInstancesRequest())
            assert (listed.writer_id, listed.generation, len(listed.instances)) == ("compute", 1, 3)
            assert r1.promotes() == r2.promotes() == []
            for fake in (compute, r1, r2):
                await fake.kill()

    asyncio.run(scenario())


@pytest.mark.integration
def test_the_control_plane_process_serves_the_cluster_service(tmp_path: Path) -> None:
    port_file = tmp_path / "cp.port"
    log_path = tmp_path / "control_plane.log"
    command = [sys.executable, "-m", "sixfold.tools.cli", "control-plane", "--data-dir", str(tmp_path / "cp")]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command, "--port-file", str(port_file), "--no-failover"], cwd=REPO_ROOT, stderr=log, stdout=log
        )
    try:
        port = wait_for_port_file(port_file, proc, "the control plane")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service="storage.v1.ClusterService"), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            stub = cluster_service_pb2_grpc.ClusterServiceStub(channel)
            register = cl_pb2.RegisterComputeRequest(instance_id="compute", address="127.0.0.1:1")
            assert stub.RegisterCompute(register, timeout=5).heartbeat_interval_ms == 100
            stub.CreateEndpoint(cl_pb2.CreateEndpointRequest(name="e1", instance_ids=["compute"]), timeout=5)
    finally:
        returncode = stop_process(proc)
    output = log_path.read_text()
    assert returncode == 0, output
    assert "ERROR" not in output and "Traceback" not in output, output
    saved = json.loads((tmp_path / "cp" / CLUSTER_STATE_FILE_NAME).read_text())
    assert saved["endpoints"] == [{"name": "e1", "instance_ids": ["compute"]}]
    bad = subprocess.run([*command, "--writer-timeout-ms", "50"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "--writer-timeout-ms (50) must be above" in bad.stderr
