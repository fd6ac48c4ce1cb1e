"""Failover on a real cluster through the launcher: the writer SIGKILLed, a read replica promoted by the
control plane's failure detector, the cluster endpoint following it with nothing acknowledged lost, the old
writer rejoining as a reader when it is started again, and a manual failover back to it. Writes sent to a
reader are refused with a sentence and change nothing.

One cluster (control plane, six nodes, `compute` and `replica1`) in a temp dir, stopped by PID afterwards
even when the test fails.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from sixfold.compute.endpoint_client import Endpoint
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import instance_service_pb2_grpc as ipb_grpc
from sixfold.storage.security import pki
from sixfold.tools.cluster import COMPUTE, Cluster
from sixfold.tools.cluster_tls import harness_channel
from tests.conftest import check_cluster_logs
from tests.polling import wait_until
from tests.sql_cluster import sixfold, sixfold_ok

pytestmark = [
    pytest.mark.integration,
    # the killed writer's streams and the readers' redo streams end abruptly: warnings, not errors, are
    # expected; these are the lines a failover may log at ERROR
    pytest.mark.expected_log_errors("redo stream", "promotion failed", "could not open volume"),
]

FAILOVER_WAIT_S = 30.0


@pytest.fixture
def cluster(tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    local = Cluster(tmp_path / "cluster")
    with local:  # __exit__ stops every process by PID, also when up() or the test fails
        sixfold_ok(local, "up", "--replicas", "1")
        yield local
    check_cluster_logs(local, request)


def instances(cluster: Cluster) -> tuple[str, int, dict[str, dict[str, Any]]]:
    seen = json.loads(sixfold_ok(cluster, "status", "--json"))
    return seen["writer_id"], seen["generation"], {i["instance_id"]: i for i in seen["instances"]}


def writer_is(cluster: Cluster, name: str) -> bool:
    writer, _, seen = instances(cluster)
    return writer == name and seen[name]["alive"] and seen[name]["role"] == "writer"


def insert_until_acknowledged(db: SqlClient, value: int, timeout_s: float) -> float:
    """Insert `value` through the cluster endpoint, retrying retryable failures; return when it was acked.
    A retried insert whose first try may have committed is harmless: the table's key makes it idempotent."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            db.execute("INSERT OR IGNORE INTO acked(id) VALUES (?)", [value])
            return time.monotonic()
        except SqlError as error:
            if time.monotonic() > deadline:
                raise
            assert error.code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.ABORTED,
                grpc.StatusCode.FAILED_PRECONDITION,
            ), error
            time.sleep(0.05)


def test_writer_killed_a_reader_takes_over_and_the_old_writer_rejoins_as_reader(cluster: Cluster) -> None:
    wait_until(lambda: writer_is(cluster, COMPUTE), FAILOVER_WAIT_S, "compute to be the writer")
    _, generation, _ = instances(cluster)
    endpoint = Endpoint(cluster.control_plane_address())
    with SqlClient(endpoint, timeout_s=10) as db:
        db.execute("CREATE TABLE acked(id INTEGER PRIMARY KEY)")
        for value in range(50):
            insert_until_acknowledged(db, value, FAILOVER_WAIT_S)

        # a write sent to the reader: refused, with a sentence, and nothing changes
        refused = sixfold(cluster, "sql", "--endpoint", "reader", "INSERT INTO acked(id) VALUES (1000)")
        assert refused.returncode == 1 and "read replica" in refused.stderr, refused.stderr
        assert instances(cluster)[:2] == (COMPUTE, generation)

        # a stray or hostile Promote / StepDown that the control plane does not back changes nothing, even
        # with the control plane's role (a stolen certificate: harness_channel); the roles are checked first
        for address, call, request, code in (
            (cluster.record("replica1").address, "Promote", ipb.PromoteRequest(generation=generation + 5), "FAILED_"),
            (cluster.record(COMPUTE).address, "StepDown", ipb.StepDownRequest(generation=1 << 63), "FAILED_"),
            (cluster.record("replica1").address, "Promote", ipb.PromoteRequest(generation=0), "INVALID_"),
        ):
            with (
                harness_channel(cluster.state_dir, pki.ROLE_CONTROL_PLANE, address) as channel,
                pytest.raises(grpc.RpcError) as refused_call,
            ):
                getattr(ipb_grpc.InstanceServiceStub(channel), call)(request, timeout=10)
            assert refused_call.value.code().name.startswith(code), refused_call.value
            assert "nothing was changed" in str(refused_call.value.details()) or code == "INVALID_"
        assert instances(cluster)[:2] == (COMPUTE, generation)
        insert_until_acknowledged(db, 1001, FAILOVER_WAIT_S)
        db.execute("DELETE FROM acked WHERE id = 1001")

        killed_at = time.monotonic()
        cluster.kill(COMPUTE)
        acked_at = insert_until_acknowledged(db, 50, FAILOVER_WAIT_S)
        print(f"failover: first acknowledged commit {acked_at - killed_at:.2f} s after the SIGKILL")
        assert db.address == cluster.record("replica1").address
        writer, new_generation, _ = instances(cluster)
        assert writer == "replica1" and new_generation > generation
        rows = db.execute("SELECT id FROM acked ORDER BY id").rows
        assert [row[0] for row in rows] == list(range(51)), "an acknowledged insert was lost"
        assert sixfold(cluster, "sql", "--address", cluster.record("replica1").address, "SELECT 1").returncode == 0

        # the old writer comes back: the control plane tells it READER and it follows the new writer
        assert cluster.start(COMPUTE)
        wait_until(
            lambda: (
                instances(cluster)[2].get(COMPUTE, {}).get("role") == "reader"
                and instances(cluster)[2][COMPUTE]["alive"]
            ),
            FAILOVER_WAIT_S,
            "the old writer to rejoin as a reader",
        )
        for value in range(51, 60):
            insert_until_acknowledged(db, value, FAILOVER_WAIT_S)

        def old_writer_reads_all() -> bool:
            out = sixfold(cluster, "sql", "--address", cluster.record(COMPUTE).address, "SELECT count(*) FROM acked")
            return out.returncode == 0 and "60" in out.stdout

        wait_until(old_writer_reads_all, FAILOVER_WAIT_S, "the old writer, now a reader, to show every row")

        # by hand, back to the old writer (once it has caught up)
        def failed_over() -> bool:
            return sixfold(cluster, "failover", "--to", COMPUTE).returncode == 0

        wait_until(failed_over, FAILOVER_WAIT_S, "a manual failover back to compute")
        assert writer_is(cluster, COMPUTE)
        insert_until_acknowledged(db, 60, FAILOVER_WAIT_S)
        assert db.address == cluster.record(COMPUTE).address
        assert [row[0] for row in db.execute("SELECT id FROM acked ORDER BY id").rows] == list(range(61))
