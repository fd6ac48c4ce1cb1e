"""compute/endpoint_client.py with the real clients: endpoints resolved through a small real gRPC
ClusterService, calls to small real KvService servers on free ports, and the re-resolve after the
instance is gone, a read replica, fenced, or dies mid-call."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.endpoint_client import Channels, Endpoint, asks_to_re_resolve, retry_safe
from sixfold.compute.errors import Fenced, Regaining
from sixfold.compute.instance import NotWriter, ReadReplica
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.compute.v1 import kv_service_pb2_grpc as kgrpc
from sixfold.storage.errors import (
    REASON_FENCED,
    REASON_NOT_WRITER,
    REASON_READ_REPLICA,
    InvalidRequest,
    StorageError,
    Unavailable,
)
from sixfold.storage.status import status_code, trailing_metadata_of
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
from sixfold.storage.v1 import cluster_service_pb2_grpc as cl_grpc

pytestmark = pytest.mark.unit

TIMEOUT_S = 5.0


class FakeCluster(cl_grpc.ClusterServiceServicer):
    """ResolveEndpoint answers what the test says an endpoint means now."""

    def __init__(self) -> None:
        self.members: dict[str, list[str]] = {}
        self.resolves = 0

    def ResolveEndpoint(self, request: Any, context: Any) -> Any:
        self.resolves += 1
        if request.name not in self.members:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no endpoint {request.name!r}; `sixfold endpoint list`")
        if not self.members[request.name]:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"endpoint {request.name!r} has no live instance")
        return cl_pb.ResolveEndpointResponse(addresses=self.members[request.name])


class FakeKv(kgrpc.KvServiceServicer):
    """Put answers with its name as the commit LSN, or fails as the test says; `hold` blocks it."""

    def __init__(self, lsn: int) -> None:
        self.lsn = lsn
        self.refusal: StorageError | None = None  # sent with its code, sentence and ErrorInfo reason
        self.hold = threading.Event()
        self.held = threading.Event()
        self.calls = 0

    def Put(self, request: Any, context: Any) -> Any:
        self.calls += 1
        if self.hold.is_set():
            self.held.set()
            while self.hold.is_set() and context.is_active():
                threading.Event().wait(0.01)
        if self.refusal is not None:
            context.set_trailing_metadata(trailing_metadata_of(self.refusal))
            context.abort(status_code(self.refusal), self.refusal.message)
        return kpb.PutResponse(commit_lsn=self.lsn)


def serve(add: Any, servicer: Any) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    add(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")  # a free port, chosen by the kernel
    server.start()
    return server, f"127.0.0.1:{port}"


@pytest.fixture
def world() -> Iterator[tuple[FakeCluster, str, list[tuple[grpc.Server, FakeKv, str]]]]:
    cluster = FakeCluster()
    servers: list[grpc.Server] = []
    cp_server, cp_address = serve(cl_grpc.add_ClusterServiceServicer_to_server, cluster)
    servers.append(cp_server)
    instances = []
    for lsn in (1, 2):
        kv = FakeKv(lsn)
        server, address = serve(kgrpc.add_KvServiceServicer_to_server, kv)
        servers.append(server)
        instances.append((server, kv, address))
    try:
        yield cluster, cp_address, instances
    finally:
        for kv_server in servers:
            kv_server.stop(None)


def test_the_endpoint_is_resolved_once_and_cached(world: Any) -> None:
    cluster, cp, [(_, a, a_address), _] = world
    cluster.members["cluster"] = [a_address]
    with SqlClient(Endpoint(cp), timeout_s=TIMEOUT_S) as db:
        assert [db.put("k", "v") for _ in range(3)] == [1, 1, 1]
        assert db.address == a_address
    assert cluster.resolves == 1 and a.calls == 3


def test_a_dead_instance_is_replaced_by_what_the_endpoint_means_now(world: Any) -> None:
    cluster, cp, [(a_server, _, a_address), (_, b, b_address)] = world
    cluster.members["cluster"] = [a_address]
    with SqlClient(Endpoint(cp), timeout_s=TIMEOUT_S) as db:
        assert db.put("k", "v") == 1
        a_server.stop(None)  # the writer dies; the control plane has not noticed yet
        with pytest.raises(SqlError) as raised:
            db.put("k", "v")
        assert raised.value.code == grpc.StatusCode.UNAVAILABLE
        cluster.members["cluster"] = [b_address]  # failover: the endpoint now means b
        assert db.put("k", "v") == 2 and db.address == b_address
    assert b.calls == 1


def test_a_call_that_could_not_connect_is_sent_again_to_the_new_address(world: Any) -> None:
    cluster, cp, [(a_server, _, a_address), (_, _, b_address)] = world
    cluster.members["cluster"] = [a_address]
    with SqlClient(Endpoint(cp), timeout_s=TIMEOUT_S) as db:
        assert db.put("k", "v") == 1
        a_server.stop(None)
        cluster.members["cluster"] = [b_address]
        assert db.put("k", "v") == 2  # never reached a: sent once more, to b


def test_a_read_replica_refusing_a_write_sends_it_to_the_writer(world: Any) -> None:
    cluster, cp, [(_, a, a_address), (_, b, b_address)] = world
    a.refusal = ReadReplica(
        "compute instance compute is a read replica: it runs read-only SQL and key-value reads; "
        "send writes and page reads to the cluster endpoint (the writer, now replica1)"
    )
    cluster.members["cluster"] = [a_address]
    with SqlClient(Endpoint(cp), timeout_s=TIMEOUT_S) as db:
        with pytest.raises(SqlError) as raised:  # the endpoint still means a: its refusal is the answer
            db.put("k", "v")
        assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION and "read replica" in raised.value.details
        cluster.members["cluster"] = [b_address]
        assert db.put("k", "v") == 2  # resolved again: b
    cluster.members["cluster"] = [a_address]
    with SqlClient(Endpoint(cp), timeout_s=TIMEOUT_S) as db:
        assert db.address == a_address
        cluster.members["cluster"] = [b_address]
        calls = a.calls
        assert db.put("k", "v") == 2  # a refused it (nothing done) and the endpoint means b now: sent to b
        assert a.calls == calls + 1 and b.calls == 2


def test_a_call_in_flight_when_the_writer_dies_fails_retryable_and_the_next_reaches_the_new_one(world: Any) -> None:
    cluster, cp, [(_, a, a_address), (_, b, b_address)] = world
    cluster.members["cluster"] = [a_address]
    a.hold.set()
    a.refusal = Unavailable("compute instance compute is changing role (a failover); retry")
    with SqlClient(Endpoint(cp), timeout_s=TIMEOUT_S) as db:
        failure: list[BaseException] = []

        def put() -> None:
            try:
                db.put("k", "v")
            except SqlError as error:
                failure.append(error)

        caller = threading.Thread(target=put)
        caller.start()
        assert a.held.wait(TIMEOUT_S)
        cluster.members["cluster"] = [b_address]
        a.hold.clear()  # the call in flight ends with UNAVAILABLE: not sent again (it reached a)
        caller.join(TIMEOUT_S)
        assert len(failure) == 1 and isinstance(failure[0], SqlError)
        assert failure[0].code == grpc.StatusCode.UNAVAILABLE and b.calls == 0
        assert db.put("k", "v") == 2  # the next call reaches the new writer


def test_resolve_failures_are_the_clients_errors(world: Any) -> None:
    cluster, cp, _ = world
    with SqlClient(Endpoint(cp, "nosuch"), timeout_s=TIMEOUT_S) as db, pytest.raises(SqlError) as raised:
        db.put("k", "v")
    assert raised.value.code == grpc.StatusCode.NOT_FOUND and "resolving endpoint 'nosuch'" in raised.value.details
    cluster.members["empty"] = []
    with VolumeClient(Endpoint(cp, "empty"), timeout_s=TIMEOUT_S) as client, pytest.raises(VolumeError) as failed:
        client.list_volumes()
    assert failed.value.code == grpc.StatusCode.UNAVAILABLE and "no live instance" in failed.value.details


def test_a_fixed_address_is_never_resolved(world: Any) -> None:
    cluster, _, [(a_server, _, a_address), _] = world
    with SqlClient(a_address, timeout_s=TIMEOUT_S) as db:
        assert db.put("k", "v") == 1
        a_server.stop(None)
        with pytest.raises(SqlError):
            db.put("k", "v")
        assert db.address == a_address
    assert cluster.resolves == 0


def test_which_failures_re_resolve_and_which_may_be_sent_again() -> None:
    code = grpc.StatusCode
    assert asks_to_re_resolve(code.UNAVAILABLE) and asks_to_re_resolve(code.DEADLINE_EXCEEDED)
    assert asks_to_re_resolve(code.FAILED_PRECONDITION, REASON_READ_REPLICA)
    assert asks_to_re_resolve(code.FAILED_PRECONDITION, REASON_NOT_WRITER)
    assert asks_to_re_resolve(code.FAILED_PRECONDITION, REASON_FENCED)
    assert asks_to_re_resolve(code.ABORTED, REASON_FENCED)  # a SQL transaction the fencing rolled back
    # Words are never the reason: a constraint message that mentions a read replica is the client's own.
    assert not asks_to_re_resolve(code.FAILED_PRECONDITION)
    assert not asks_to_re_resolve(code.ABORTED, "BUSY")
    channels = Channels("127.0.0.1:1")
    assert channels.endpoint is None and not channels.failed_with("127.0.0.1:1", code.UNAVAILABLE)


def test_retry_safe_is_only_for_calls_that_never_reached_a_writer() -> None:
    class Failed(grpc.RpcError):
        def __init__(self, error: StorageError) -> None:
            self._error = error

        def code(self) -> grpc.StatusCode:
            return status_code(self._error)

        def details(self) -> str:
            return self._error.message

        def trailing_metadata(self) -> Any:
            return trailing_metadata_of(self._error)

    assert retry_safe(Failed(Unavailable("failed to connect to all addresses; ...")))
    assert retry_safe(Failed(ReadReplica("instance r1 is a read replica")))
    assert retry_safe(Failed(NotWriter("instance r1 is not the writer")))
    assert not retry_safe(Failed(InvalidRequest("instance r1 is a read replica")))  # words alone: no
    assert not retry_safe(Failed(Fenced("a newer writer opened the volume")))  # it may have acted
    assert not retry_safe(Failed(Unavailable("Socket closed")))  # may have reached it
    assert not retry_safe(Failed(Regaining("the writer is reopening; failed to connect")))  # its own reason
