"""A read replica over a real cluster: a writer Volume and its SQL engine in this process, its RedoPublisher
behind a real FollowRedo server, and a ReplicaVolume (through ReplicaVolumes, as a reader instance has) that
follows it over gRPC and reads the segments itself; a read-only SQL engine on the replica reads the rows the
writer committed, refuses writes, and its lag is reported."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.compute.errors import UnknownVolume
from sixfold.compute.placement import Channels
from sixfold.compute.redo_publisher import RedoPublisher
from sixfold.compute.redo_rpc import RedoRpcs
from sixfold.compute.replica_state import ReadReplicaWrite
from sixfold.compute.replicas import ReplicaVolumes
from sixfold.compute.service import VolumeServicer
from sixfold.compute.sql import SqlEngine
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import instance_service_pb2_grpc as ipb_grpc
from sixfold.storage.errors import StorageError
from sixfold.storage.security import pki, transport
from sixfold.storage.serving import CHANNEL_OPTIONS, start_server
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.tools.cluster import Cluster
from sixfold.tools.cluster_tls import harness_identity
from tests.conftest import check_cluster_logs

pytestmark = pytest.mark.integration

VOLUME = "rv"


class Unsupported(StorageError):
    status_code_name = "UNIMPLEMENTED"


class RedoOnly(RedoRpcs):
    """InstanceService with only FollowRedo: the writer here is this test's Volume."""

    def __init__(self, publisher: RedoPublisher) -> None:
        self.publisher = publisher

    async def publisher_of(self, volume_id: str) -> RedoPublisher:
        if volume_id != VOLUME:
            raise UnknownVolume(f"volume {volume_id!r} does not exist")
        return self.publisher

    async def Promote(self, request: Any, context: Any) -> Any:
        raise Unsupported("not here")

    async def StepDown(self, request: Any, context: Any) -> Any:
        raise Unsupported("not here")

    async def GetInstanceStatus(self, request: Any, context: Any) -> Any:
        raise Unsupported("not here")


async def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def first_status(stub: Any, *requests: ipb.FollowRedoRequest) -> grpc.StatusCode:
    async def sent() -> Any:
        for request in requests:
            yield request

    try:
        async for _ in stub.FollowRedo(sent()):
            pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def scenario(cluster: Cluster) -> None:
    # This process is the cluster's writer (and its replica): a writer certificate from the cluster's CA.
    transport.use(harness_identity(cluster.state_dir, pki.ROLE_WRITER))
    cp_channel = transport.aio_channel(cluster.control_plane_address(), CHANNEL_OPTIONS)
    control_plane = cp_grpc.ControlPlaneServiceStub(cp_channel)
    await control_plane.CreateVolume(
        cp_pb.CreateVolumeRequest(volume_id=VOLUME, segment_size_bytes=4 << 20), timeout=30
    )
    channels = Channels()
    volumes = VolumeServicer(control_plane, channels)
    volume = await volumes.volume(VOLUME)
    writer = SqlEngine(volume)
    await writer.start()
    publisher = RedoPublisher(volume, writer_id="writer-a")
    server, port, _ = await start_server(
        "127.0.0.1", 0, [(ipb.DESCRIPTOR.services_by_name["InstanceService"], RedoOnly(publisher), ipb)]
    )
    replicas = ReplicaVolumes(control_plane, Channels(), "replica1", f"127.0.0.1:{port}")
    reader: SqlEngine | None = None
    try:
        replica = await replicas.volume(VOLUME)
        reader = SqlEngine(replica, read_only=True)
        await reader.start()
        await writer.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        lsn = 0
        for k in range(50):
            _, lsn = await writer.execute("INSERT INTO t VALUES (?, ?)", (k, f"value {k}"))
        await wait_for(lambda: replica.vdl >= lsn, "the replica to apply the last commit")
        assert replica.vdl <= volume.vdl
        result, _ = await reader.execute("SELECT count(*), sum(k) FROM t")
        assert result.rows == [(50, sum(range(50)))]
        assert replica.storage_page_reads > 0  # pages it did not hold came from the segments

        # A newer commit is seen by the next read transaction, never by one already open.
        txn = await reader.begin(read_only=True)
        _, lsn = await writer.execute("UPDATE t SET v = 'changed' WHERE k = 7")
        await wait_for(lambda: replica.vdl >= lsn, "the replica to apply the update")
        assert (await txn.execute("SELECT v FROM t WHERE k = 7")).rows == [("value 7",)]
        await txn.commit()
        assert (await reader.execute("SELECT v FROM t WHERE k = 7"))[0].rows == [("changed",)]

        with pytest.raises(ReadReplicaWrite, match=r"replica1 is a read replica.*now writer-a"):
            await reader.execute("INSERT INTO t VALUES (100, 'no')")
        with pytest.raises(ReadReplicaWrite):
            await reader.begin()

        # The writer keeps every segment's horizon at or below what the replica reads at.
        held = await replica.pin_read_point()
        _, lsn = await writer.execute("UPDATE t SET v = 'again' WHERE k = 8")
        await wait_for(lambda: publisher.read_point_floor() == held, "the replica's report")
        assert all(volume.min_read_point(pg) <= held for pg in volume.pgs)
        replica.unpin_read_point(held)

        [lag] = replicas.lags()
        assert lag.volume_id == VOLUME and lag.applied_vdl == replica.vdl and lag.following
        assert 0 < lag.lag_ms_p50 <= lag.lag_ms_p99 < 5000 and lag.last_heard_ms < 1000

        stub = ipb_grpc.InstanceServiceStub(transport.aio_channel(f"127.0.0.1:{port}", CHANNEL_OPTIONS))
        assert await first_status(stub, ipb.FollowRedoRequest(volume_id="nope", reader_id="x")) == (
            grpc.StatusCode.NOT_FOUND
        )
        assert await first_status(stub, ipb.FollowRedoRequest(volume_id=VOLUME)) == grpc.StatusCode.INVALID_ARGUMENT

        # The stream breaks (the writer's publisher closes): the replica reconnects and catches up from a snapshot.
        snapshots = replica.state.snapshots
        for subscription in publisher.subscriptions:
            subscription.close("the test cut it off")
        _, lsn = await writer.execute("UPDATE t SET v = 'after' WHERE k = 9")
        await wait_for(lambda: replica.vdl >= lsn and replica.state.snapshots > snapshots, "a new snapshot")
        assert (await reader.execute("SELECT v FROM t WHERE k = 9"))[0].rows == [("after",)]
    finally:
        if reader is not None:
            await reader.close()
        await replicas.close()
        await server.stop(0)
        publisher.close()
        await writer.close()
        await volumes.close()
        await channels.close()
        await cp_channel.close()


def test_a_replica_follows_the_writer_over_grpc_and_serves_read_only_sql(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    local = Cluster(tmp_path / "cluster")
    with local:
        local.up(compute=False)
        asyncio.run(asyncio.wait_for(scenario(local), 120))
    check_cluster_logs(local, request)
