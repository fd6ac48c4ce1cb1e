"""Who may call what on the compute instances and the control plane, and the audit log, on a real cluster
(`sixfold up`: mutual TLS by default; issue 16 items 2 and 5).

Through the launcher: a writer certificate calling Promote or StepDown on a compute instance, or RegisterNode
on the control plane, gets PERMISSION_DENIED naming the role needed; the CLI's client-admin certificate cannot
follow the redo (FollowRedo) nor Promote; SQL, the read replica and a failover after SIGKILL still work under
the checks; `sixfold audit` shows the refusals, the admin operations (who, what, outcome, also a failed one),
the storage nodes' segment placement and fencing, and the failover (the detector's decision and the Promote
the new writer carried out); every audit file is mode 0600.

One cluster (control plane, six nodes, `compute`, `replica1`) for the module, in file order (the failover
test, which kills the writer, is last); stopped by PID afterwards even when a test fails, and this process's
TLS identity is reset at the end.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import instance_service_pb2_grpc as ipb_grpc
from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.storage.security import audit_rpc, pki, tls, transport
from sixfold.storage.security.audit_rpc import AUDIT_FILE
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as spb
from sixfold.tools.cluster import COMPUTE, Cluster
from tests.conftest import check_cluster_logs
from tests.polling import wait_until
from tests.sql_cluster import sixfold, sixfold_ok

WAIT_S = 30.0
CALL_S = 10.0
REPLICA = "replica1"


# -- the tables, without a cluster -------------------------------------------------------------------


def _methods(module: Any, service: str) -> set[str]:
    return {m.name for m in module.DESCRIPTOR.services_by_name[service].methods}


@pytest.mark.unit
def test_the_tables_decide_every_rpc_of_the_instance_and_control_plane_services() -> None:
    assert set(tls.INSTANCE_RPC_ROLES) == _methods(ipb, "InstanceService")
    assert set(tls.CONTROL_PLANE_SERVICE_RPC_ROLES) == _methods(cp_pb, "ControlPlaneService")
    assert set(tls.CLUSTER_SERVICE_RPC_ROLES) == _methods(cl_pb, "ClusterService")
    assert len(tls.CONTROL_PLANE_RPC_ROLES) == len(tls.CONTROL_PLANE_SERVICE_RPC_ROLES) + len(
        tls.CLUSTER_SERVICE_RPC_ROLES
    )
    for table in (tls.INSTANCE_RPC_ROLES, tls.CONTROL_PLANE_RPC_ROLES):
        assert all(roles and roles <= pki.ROLES for roles in table.values())
    tls.check_role("/storage.v1.ClusterService/Failover", "client-admin", table=tls.CONTROL_PLANE_RPC_ROLES)
    with pytest.raises(tls.PermissionDenied, match=r"^ClusterService.Failover needs the client-admin role; this"):
        rpc = "/storage.v1.ClusterService/Failover"
        tls.check_role(rpc, "writer", "compute", table=tls.CONTROL_PLANE_RPC_ROLES, shown=tls.shown_name(rpc))
    for audited in (audit_rpc.STORAGE_AUDITED, audit_rpc.CONTROL_PLANE_AUDITED, audit_rpc.COMPUTE_AUDITED):
        assert all(method.count("/") == 2 and method.startswith("/") for method in audited)


@pytest.mark.unit
def test_an_audit_record_names_the_request_never_its_bytes() -> None:
    request = spb.CreateSegmentRequest(segment_id="v/pg-00000", volume_id="v", peers=[spb.SegmentPeer()] * 3)
    assert audit_rpc.request_details(request) == {"segment_id": "v/pg-00000", "volume_id": "v", "peers_count": 3}
    clone = cp_pb.CloneVolumeRequest(kind=cp_pb.VOLUME_KIND_SNAPSHOT, snapshot_name="s", parent_read_lsns=[1, 2])
    assert audit_rpc.request_details(clone) == {
        "parent_read_lsns": "1,2",
        "kind": "VOLUME_KIND_SNAPSHOT",
        "snapshot_name": "s",
    }
    put = kpb.PutRequest(volume_id="v", key=b"secret key", value=b"secret value")
    assert audit_rpc.request_details(put) == {"volume_id": "v"}


# -- on a cluster ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    local = Cluster(tmp_path_factory.mktemp("tls-roles") / "cluster")
    try:
        with local:  # __exit__ stops every process by PID, also when up() or a test fails
            sixfold_ok(local, "up", "--replicas", "1")
            yield local
        check_cluster_logs(local, request)
    finally:
        transport.use(None)


def credentials(cluster: Cluster, name: str) -> grpc.ChannelCredentials:
    return tls.channel_credentials(pki.load_identity(transport.cluster_tls_dir(cluster.state_dir), name))


def refused(call: object) -> str:
    """The details of a call that must fail with PERMISSION_DENIED (`call` makes it)."""
    assert callable(call)
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error
    return str(error.details())


def audit_entries(cluster: Cluster, *args: str) -> list[dict[str, Any]]:
    out = sixfold_ok(cluster, "audit", "--json", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def find(entries: list[dict[str, Any]], **want: str) -> list[dict[str, Any]]:
    """Entries whose fields equal `want` (outcome: starts with it)."""
    outcome = want.pop("outcome", "")
    return [
        e
        for e in entries
        if all(e[key] == value for key, value in want.items()) and str(e["outcome"]).startswith(outcome)
    ]


@pytest.mark.integration
def test_compute_instances_and_the_control_plane_check_the_callers_role(cluster: Cluster) -> None:
    writer = credentials(cluster, COMPUTE)
    admin = credentials(cluster, transport.CLIENT_NAME)
    compute = cluster.record(COMPUTE).address
    control_plane = cluster.control_plane_address()

    with grpc.secure_channel(compute, writer) as channel:
        stub = ipb_grpc.InstanceServiceStub(channel)
        details = refused(lambda: stub.Promote(ipb.PromoteRequest(generation=99), timeout=CALL_S))
        assert details == f"Promote needs the control-plane role; this caller is writer {COMPUTE}", details
        details = refused(lambda: stub.StepDown(ipb.StepDownRequest(generation=99), timeout=CALL_S))
        assert "StepDown needs the control-plane role" in details, details
        assert stub.GetInstanceStatus(ipb.GetInstanceStatusRequest(), timeout=CALL_S).role == ipb.INSTANCE_ROLE_WRITER
    with grpc.secure_channel(control_plane, writer) as channel:
        stub_cp = cp_grpc.ControlPlaneServiceStub(channel)
        request = cp_pb.RegisterNodeRequest(node_id="intruder", az="a", address="127.0.0.1:1")
        details = refused(lambda: stub_cp.RegisterNode(request, timeout=CALL_S))
        assert "RegisterNode needs the storage-node role" in details, details
        assert f"this caller is writer {COMPUTE}" in details, details
    with grpc.secure_channel(compute, admin) as channel:
        stub = ipb_grpc.InstanceServiceStub(channel)

        def follow() -> None:
            for _ in stub.FollowRedo(iter([ipb.FollowRedoRequest(volume_id="vol0", reader_id="cli")]), timeout=CALL_S):
                pass

        details = refused(follow)
        assert "FollowRedo needs one of the roles reader, writer; this caller is client-admin cli" in details, details
        details = refused(lambda: stub.Promote(ipb.PromoteRequest(generation=99), timeout=CALL_S))
        assert "needs the control-plane role; this caller is client-admin cli" in details, details
        assert stub.GetInstanceStatus(ipb.GetInstanceStatusRequest(), timeout=CALL_S).role == ipb.INSTANCE_ROLE_WRITER

    status = sixfold_ok(cluster, "status")  # the refusals changed nothing: still the writer, no stray node
    assert "intruder" not in status, status
    assert "writer compute" in status, status


@pytest.mark.integration
def test_sixfold_audit_shows_refusals_and_admin_operations_with_who_and_outcome(cluster: Cluster) -> None:
    with grpc.secure_channel(cluster.record(COMPUTE).address, credentials(cluster, COMPUTE)) as channel:
        refused(lambda: ipb_grpc.InstanceServiceStub(channel).StepDown(ipb.StepDownRequest(), timeout=CALL_S))
    sixfold_ok(cluster, "endpoint", "create", "reporting", "--instances", REPLICA)
    failed = sixfold(cluster, "endpoint", "delete", "no-such-endpoint")
    assert failed.returncode == 1, failed
    sixfold_ok(cluster, "volume", "create", "audited")

    entries = audit_entries(cluster)
    assert entries == sorted(entries, key=lambda e: str(e["time"])), "not in time order"
    cli = "cert:client-admin/cli"
    writer = f"cert:writer/{COMPUTE}"
    # The refusal, where it happened, with who and the role that was needed.
    step_down = find(entries, process=COMPUTE, who=writer, what="InstanceService.StepDown", outcome="refused: ")[-1]
    assert step_down["details"] == {"needed_roles": "control-plane"}, step_down
    # The operator's endpoint, and a failed operation with its code.
    (created,) = find(entries, process="control-plane", who=cli, what="ClusterService.CreateEndpoint", outcome="ok")
    assert created["details"] == {"name": "reporting", "instance_ids": REPLICA}, created
    (gone,) = find(entries, process="control-plane", who=cli, what="ClusterService.DeleteEndpoint")
    assert str(gone["outcome"]).startswith("failed: NOT_FOUND: "), gone
    # A volume created by the operator on the writer, which orders it on the control plane, which places its
    # segments on the storage nodes; the writer then fences them at its epoch.
    # On compute the token names the operator's user (the admin token the CLI sends), beside the certificate.
    assert find(entries, process=COMPUTE, who=f"user:admin {cli}", what="VolumeService.CreateVolume", outcome="ok")
    placed = find(entries, process="control-plane", who=writer, what="ControlPlaneService.CreateVolume")
    assert [e["outcome"] for e in placed if e["details"]["volume_id"] == "audited"] == ["ok"], placed
    segments = find(entries, who="cert:control-plane/control-plane", what="StorageService.CreateSegment", outcome="ok")
    assert {e["details"]["volume_id"] for e in segments} >= {"vol0", "audited"}, segments
    assert find(entries, who=writer, what="StorageService.RaiseVolumeEpoch", outcome="ok")

    # The text view, one process, a time filter, an unknown process.
    text = sixfold_ok(cluster, "audit")
    assert "CreateEndpoint" in text and cli in text and "refused: StepDown needs the control-plane role" in text, text
    only = audit_entries(cluster, "--process", "control-plane")
    assert only and {e["process"] for e in only} == {"control-plane"}, only
    assert audit_entries(cluster, "--since", "2999-01-01T00:00:00Z") == []
    later = audit_entries(cluster, "--since", str(created["time"]))
    assert created in later and step_down not in later, later
    unknown = sixfold(cluster, "audit", "--process", "nobody")
    assert unknown.returncode == 2 and "no process 'nobody'" in unknown.stderr, unknown

    # Every process keeps its file, readable by its owner alone.
    for record in cluster.records():
        path = Path(record.data_dir) / AUDIT_FILE
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, (record.name, oct(os.stat(path).st_mode))


@pytest.mark.integration
def test_sql_the_replica_and_a_failover_work_under_the_role_checks_and_are_audited(cluster: Cluster) -> None:
    sixfold_ok(cluster, "sql", "CREATE TABLE t(v TEXT)")
    sixfold_ok(cluster, "sql", "INSERT INTO t VALUES ('checked')")
    wait_until(
        lambda: "checked" in sixfold(cluster, "sql", "--endpoint", "reader", "SELECT v FROM t").stdout,
        WAIT_S,
        "the read replica to show the row",
    )
    cluster.kill(COMPUTE)

    def committed() -> bool:
        return sixfold(cluster, "sql", "INSERT INTO t VALUES ('after failover')").returncode == 0

    wait_until(committed, WAIT_S, "a commit through the cluster endpoint after the writer was killed")
    assert "2" in sixfold_ok(cluster, "sql", "SELECT count(*) FROM t")

    entries = audit_entries(cluster)
    (decided,) = find(entries, process="control-plane", what="ClusterService.Failover", outcome="ok")
    assert decided["who"] == "control-plane (failure detector)", decided
    assert decided["details"]["old_writer_id"] == COMPUTE, decided
    assert decided["details"]["new_writer_id"] == REPLICA, decided
    promoted = find(entries, process=REPLICA, what="InstanceService.Promote", outcome="ok")
    assert promoted and promoted[-1]["who"] == "cert:control-plane/control-plane", promoted
