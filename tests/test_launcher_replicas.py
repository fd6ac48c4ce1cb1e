"""Read replicas through the launcher and the CLI: `sixfold up --replicas 1`, the compute instances in
`sixfold status`, `sixfold replica add|remove`, endpoints (create, list, delete and their refusals),
a refused failover that changes nothing, and SQL and KV through the cluster and reader endpoints.

One real cluster (control plane, six nodes, the writer `compute` and `replica1`) for the module, in a
temp dir, stopped by PID afterwards even when a test fails (tests/sql_cluster.py's pattern).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from sixfold.compute.endpoint_client import Endpoint
from sixfold.compute.sql_client import SqlClient
from sixfold.tools.cluster import COMPUTE, Cluster
from tests.conftest import check_cluster_logs
from tests.polling import wait_until
from tests.sql_cluster import sixfold, sixfold_ok

pytestmark = pytest.mark.integration

SETTLE_S = 30.0  # until the control plane lists every instance alive with its role


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    local = Cluster(tmp_path_factory.mktemp("replicas") / "cluster")
    with local:  # __exit__ stops every process by PID, also when up() or a test fails
        out = sixfold_ok(local, "up", "--replicas", "1")
        assert "read replicas: replica1 " in out, out
        yield local
    check_cluster_logs(local, request)


def status(cluster: Cluster) -> dict[str, Any]:
    return dict(json.loads(sixfold_ok(cluster, "status", "--json")))


def instances(cluster: Cluster) -> dict[str, dict[str, Any]]:
    return {i["instance_id"]: i for i in status(cluster)["instances"]}


def settled(cluster: Cluster, names: set[str]) -> dict[str, dict[str, Any]]:
    """Wait until the control plane lists exactly `names`, each alive, with a writer among them."""

    def ready() -> dict[str, dict[str, Any]]:
        seen = instances(cluster)
        live = set(seen) == names and all(i["alive"] and i["role"] in ("writer", "reader") for i in seen.values())
        return seen if live and any(i["role"] == "writer" for i in seen.values()) else {}

    return wait_until(ready, SETTLE_S, f"the control plane to list {sorted(names)} alive")


def test_up_with_a_replica_starts_it_after_the_writer_and_status_lists_both(cluster: Cluster) -> None:
    records = {r.name: r for r in cluster.records()}
    assert list(records)[-2:] == [COMPUTE, "replica1"]
    assert "--reader" in records["replica1"].args and "--reader" not in records[COMPUTE].args
    assert records["replica1"].data_dir.endswith("/data/replica1") and records["replica1"].log_file.endswith(
        "/logs/replica1.log"
    )
    seen = settled(cluster, {COMPUTE, "replica1"})
    assert seen[COMPUTE]["role"] == "writer" and seen["replica1"]["role"] == "reader"
    assert seen["replica1"]["address"] == records["replica1"].address
    assert {v["volume_id"] for v in seen["replica1"]["volumes"]} >= {"vol0"}
    table = sixfold_ok(cluster, "status")
    section = table.split("compute instances", 1)[1]
    assert "WRITER" in section and "reader" in section and "lag=" in section, table
    assert "replica1" in section and "generation" in section, table


def test_sql_and_kv_reach_the_writer_by_default_and_read_on_the_reader_endpoint(cluster: Cluster) -> None:
    settled(cluster, {COMPUTE, "replica1"})
    sixfold_ok(cluster, "sql", "CREATE TABLE IF NOT EXISTS rep(id INTEGER PRIMARY KEY, v TEXT)")
    sixfold_ok(cluster, "kv", "put", "rep:k", "one")
    with SqlClient(Endpoint(cluster.control_plane_address()), timeout_s=10) as db:
        assert db.address == cluster.compute_address()  # the cluster endpoint: the writer
    # the reader endpoint: a read replica catches up on its own
    wait_until(
        lambda: sixfold(cluster, "kv", "get", "rep:k", "--endpoint", "reader").stdout.strip() == "one",
        SETTLE_S,
        "the replica to show the put",
    )
    out = sixfold_ok(cluster, "sql", "--endpoint", "reader", "SELECT count(*) FROM rep", "--json")
    assert json.loads(out)["rows"] == [[0]], out
    refused = sixfold(cluster, "sql", "--endpoint", "reader", "INSERT INTO rep(v) VALUES ('x')")
    assert refused.returncode == 1 and "read replica" in refused.stderr, refused.stderr
    both = sixfold(cluster, "sql", "--endpoint", "reader", "--address", "127.0.0.1:1", "SELECT 1")
    assert both.returncode == 1 and "--address or --endpoint" in both.stderr, both.stderr


def test_endpoints_create_list_delete_and_refusals(cluster: Cluster) -> None:
    settled(cluster, {COMPUTE, "replica1"})
    out = sixfold_ok(cluster, "endpoint", "create", "reporting", "--instances", "replica1")
    assert "created endpoint reporting over replica1" in out, out
    listed = {e["name"]: e for e in json.loads(sixfold_ok(cluster, "endpoint", "list", "--json"))}
    assert {"cluster", "reader", "reporting"} <= set(listed), listed
    assert listed["reporting"]["instance_ids"] == ["replica1"] and "replica1@" in listed["reporting"]["leads_to"]
    assert f"{COMPUTE}@{cluster.compute_address()}" in listed["cluster"]["leads_to"], listed
    table = sixfold_ok(cluster, "endpoint", "list")
    assert "reporting" in table and "custom" in table, table
    assert sixfold_ok(cluster, "kv", "get", "rep:k", "--endpoint", "reporting").strip() in ("one", "")

    for args, words in (
        (["create", "empty", "--instances", ""], "INVALID_ARGUMENT"),
        (["create", "ghosts", "--instances", "replica1,nosuch"], "nosuch"),
        (["create", "cluster", "--instances", "replica1"], "cluster"),
        (["create", "reader", "--instances", "replica1"], "reader"),
        (["delete", "cluster"], "cluster"),
        (["delete", "nosuch"], "nosuch"),
    ):
        result = sixfold(cluster, "endpoint", *args)
        assert result.returncode == 1 and result.stderr.startswith("error: "), (args, result.stderr)
        assert words in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    after = {e["name"] for e in json.loads(sixfold_ok(cluster, "endpoint", "list", "--json"))}
    assert after == set(listed), "a refused change changed the endpoints"

    assert "deleted endpoint reporting" in sixfold_ok(cluster, "endpoint", "delete", "reporting")
    assert "reporting" not in {e["name"] for e in json.loads(sixfold_ok(cluster, "endpoint", "list", "--json"))}
    gone = sixfold(cluster, "kv", "get", "rep:k", "--endpoint", "reporting")
    assert gone.returncode == 1 and "reporting" in gone.stderr, gone.stderr


def test_failover_to_an_unknown_instance_is_refused_and_changes_nothing(cluster: Cluster) -> None:
    before = settled(cluster, {COMPUTE, "replica1"})
    generation = status(cluster)["generation"]
    result = sixfold(cluster, "failover", "--to", "nosuch")
    assert result.returncode == 1 and result.stderr.startswith("error: ") and "nosuch" in result.stderr, result
    assert "Traceback" not in result.stderr
    after = status(cluster)
    assert after["writer_id"] == COMPUTE and after["generation"] == generation
    assert {i["instance_id"]: i["role"] for i in after["instances"]} == {n: i["role"] for n, i in before.items()}


def test_replica_add_and_remove(cluster: Cluster) -> None:
    settled(cluster, {COMPUTE, "replica1"})
    out = sixfold_ok(cluster, "replica", "add", "--priority", "2")
    assert "started read replica replica2 at 127.0.0.1:" in out and "failover tier 2" in out, out
    seen = settled(cluster, {COMPUTE, "replica1", "replica2"})
    assert seen["replica2"]["role"] == "reader" and seen["replica2"]["failover_priority"] == 2
    pid = cluster.pid("replica2")
    assert pid is not None and cluster.pause("replica2") == pid and cluster.resume("replica2") == pid

    refused = sixfold(cluster, "replica", "remove", "a1")
    assert refused.returncode == 1 and "not a read replica" in refused.stderr, refused.stderr
    unknown = sixfold(cluster, "replica", "remove", "replica9")
    assert unknown.returncode == 2 and "replica9" in unknown.stderr, unknown.stderr
    assert "stopped and removed read replica replica2" in sixfold_ok(cluster, "replica", "remove", "replica2")
    assert "replica2" not in cluster.names()
    settled(cluster, {COMPUTE, "replica1"})
    bad = sixfold(cluster, "replica", "add", "--priority", "16")
    assert bad.returncode == 2 and "0 to 15" in bad.stderr, bad.stderr
