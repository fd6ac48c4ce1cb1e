"""Mutual TLS on a real cluster (`sixfold up`, TLS by default; issue 16 items 1 and 2): every server refuses a
plaintext client and a certificate from another CA; a storage node refuses DropSegment from a writer's
certificate with PERMISSION_DENIED naming the role needed; keys are mode 0600. (SQL, the read replica and a
failover after SIGKILL over TLS: tests/test_tls_roles_audit.py, with the role checks and the audit log on.)

One cluster (control plane, six nodes, `compute`, `replica1`) in a temp dir, stopped by PID afterwards even
when the test fails; this process's TLS identity is reset at the end.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold.storage.security import pki, tls, transport
from sixfold.storage.v1 import storage_service_pb2 as spb
from sixfold.storage.v1 import storage_service_pb2_grpc as spb_grpc
from sixfold.tools.cluster import COMPUTE, Cluster
from tests.conftest import check_cluster_logs
from tests.sql_cluster import sixfold_ok

pytestmark = pytest.mark.integration

WAIT_S = 30.0


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    local = Cluster(tmp_path / "cluster")
    try:
        with local:  # __exit__ stops every process by PID, also when up() or the test fails
            sixfold_ok(local, "up", "--replicas", "1")
            yield local
        check_cluster_logs(local, request)
    finally:
        transport.use(None)


def health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def test_every_server_refuses_plaintext_and_foreign_certificates_and_roles_are_checked(
    cluster: Cluster, tmp_path: Path
) -> None:
    tls_dir = transport.cluster_tls_dir(cluster.state_dir)
    keys = sorted(tls_dir.glob("*.key"))
    assert len(keys) == 1 + 1 + 1 + 1 + 6 + 2  # the CA, the CLI, the key service, the control plane, 6 nodes, 2 compute
    assert all(stat.S_IMODE(os.stat(key).st_mode) == 0o600 for key in keys), [oct(os.stat(k).st_mode) for k in keys]

    foreign_dir = tmp_path / "foreign"
    pki.create_ca(foreign_dir)
    pki.issue(foreign_dir, "intruder", pki.ROLE_CONTROL_PLANE)
    foreign = tls.channel_credentials(pki.load_identity(foreign_dir, "intruder"))
    ours = tls.channel_credentials(pki.load_identity(tls_dir, transport.CLIENT_NAME))
    for record in cluster.records():
        assert health(record.address, None) == grpc.StatusCode.UNAVAILABLE, f"{record.name} accepted plaintext"
        assert health(record.address, foreign) == grpc.StatusCode.UNAVAILABLE, f"{record.name} took another CA"
        assert health(record.address, ours) == grpc.StatusCode.OK, record.name

    node = next(r for r in cluster.records() if r.role == "storage-node")
    writer = tls.channel_credentials(pki.load_identity(tls_dir, COMPUTE))
    with grpc.secure_channel(node.address, writer) as channel, pytest.raises(grpc.RpcError) as refused:
        spb_grpc.StorageServiceStub(channel).DropSegment(spb.DropSegmentRequest(segment_id="vol0/pg-00000"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value
    assert "control-plane" in str(refused.value.details()), refused.value.details()
    listed = sixfold_ok(cluster, "status")
    assert "vol0/pg-00000" in listed, listed  # the segment is still there, and status works over TLS
