"""The example scripts of tools/examples/, run as a user runs them (`python tools/examples/NAME.py`):
each as a subprocess against one real cluster started through the launcher for the module, checked by
what it prints. Each reaches the writer by the `cluster` endpoint of the cluster in `--state-dir` or
$SIXFOLD_STATE_DIR (resolved through its control plane), or at a fixed `--address` (with `--state-dir` for
the certificate of the cluster, which uses mutual TLS)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

from sixfold.compute.client import VolumeClient
from sixfold.compute.sql_client import SqlClient
from sixfold.tools.cluster import PROJECT_ROOT, Cluster
from tests.sql_cluster import module_cluster

EXAMPLES = PROJECT_ROOT / "tools" / "examples"
SCRIPT_TIMEOUT_S = 120.0
NODES = ("a1", "a2", "b1", "b2", "c1", "c2")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as local:
        yield local


def run_example(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """`python tools/examples/NAME ARGS` from outside the repository; its stdout (it must exit 0)."""
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=tempfile.gettempdir(),  # outside the repository: the installed package is what they import
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
    )
    assert result.returncode == 0, (
        f"{name} {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.mark.unit
def test_every_example_is_a_documented_runnable_script() -> None:
    scripts = sorted(EXAMPLES.glob("*.py"))
    assert {p.name for p in scripts} >= {"bank_transfer.py", "kv_session.py", "cluster_status.py", "raw_pages.py"}
    assert not (EXAMPLES / "__init__.py").exists()  # plain scripts, not a package
    for path in scripts:
        tree = ast.parse(path.read_text(), str(path))
        docstring = ast.get_docstring(tree) or ""
        assert f"python tools/examples/{path.name}" in docstring, f"{path.name}: its docstring says how to run it"
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), path.name
        assert 'if __name__ == "__main__":' in path.read_text(), path.name


@pytest.mark.integration
def test_bank_transfer_conserves_the_total(cluster: Cluster) -> None:
    out = run_example(
        "bank_transfer.py",
        "--address",
        cluster.compute_address(),
        "--state-dir",
        str(cluster.state_dir),
        "--transfers",
        "8",
    )
    assert out.startswith("5 accounts, total balance 500\n"), out
    assert sum(line.startswith("transfer ") for line in out.splitlines()) == 8, out
    assert "total balance: 500 (before: 500, read at VDL " in out and out.rstrip().endswith(": conserved"), out
    again = run_example("bank_transfer.py", "--state-dir", str(cluster.state_dir), "--transfers", "3")  # re-runnable
    assert "total balance: 500 (before: 500" in again and again.rstrip().endswith(": conserved"), again
    with SqlClient(cluster.compute_address()) as db:
        assert db.execute("SELECT sum(balance), count(*) FROM example_accounts").rows == [(500, 5)]
        (moved,) = db.execute("SELECT count(*) FROM example_transfers").rows[0]
    done = sum(line.endswith(": done") for line in (out + again).splitlines())
    assert moved == done, (moved, out, again)


@pytest.mark.integration
def test_kv_session_puts_scans_swaps_and_cleans_up(cluster: Cluster) -> None:
    env = {**os.environ, "SIXFOLD_STATE_DIR": str(cluster.state_dir)}  # the default: no --address, no --state-dir
    for _ in range(2):  # a second run finds nothing left by the first
        out = run_example("kv_session.py", env=env)
        assert out.startswith("cleared 0 keys left under 'example:'"), out
        for line in (
            "get example:user:1 -> b'ann'",
            "get example:user:9 -> None (absent)",
            "scan example:user: page 1: example:user:1=ann, example:user:2=bo, example:user:3=cy (more follow)",
            "scan example:user: page 2: example:user:4=di, example:user:5=ed",
            "cas example:counter: absent -> 1: swapped=True",
            "cas example:counter: 1 -> 2: swapped=True",
            "cas example:counter: 1 -> 3: swapped=False, current=b'2'",
            "delete example:user:2 again: existed=False",
            "cleaned up: deleted 5 keys",
        ):
            assert line in out, f"{line!r} not in:\n{out}"
    with SqlClient(cluster.compute_address()) as db:
        assert db.scan(prefix="example:").pairs == []


@pytest.mark.integration
def test_cluster_status_lists_nodes_volumes_and_the_writers_view(cluster: Cluster) -> None:
    out = run_example("cluster_status.py", "--state-dir", str(cluster.state_dir))
    assert f"control plane {cluster.control_plane_address()}: 6 of 6 storage nodes healthy" in out, out
    for node in NODES:
        assert f"  node {node:4} AZ {node[0]}  {cluster.node_address(node)}" in out, out
    assert "  volume vol0: page size " in out and "segments on a1 a2 b1 b2 c1 c2" in out, out
    assert f"compute node {cluster.compute_address()}:" in out and "  volume vol0: VDL " in out, out
    assert "compute instances: writer compute, generation " in out, out
    assert f"  compute   writer  {cluster.compute_address()}" in out, out
    assert "  endpoint cluster (cluster): leads to compute" in out, out
    assert "    pg 0: PGCL " in out, out
    explicit = run_example(
        "cluster_status.py",
        "--control-plane",
        cluster.control_plane_address(),
        "--address",
        cluster.compute_address(),
        "--state-dir",  # its certificate: the cluster uses mutual TLS
        str(cluster.state_dir),
    )
    assert f"control plane {cluster.control_plane_address()}" in explicit, explicit


@pytest.mark.integration
def test_raw_pages_write_and_read_a_volume_of_their_own(cluster: Cluster) -> None:
    out = run_example("raw_pages.py", "--address", cluster.compute_address(), "--state-dir", str(cluster.state_dir))
    assert "created volume examples-raw" in out and out.rstrip().endswith("read back what was written"), out
    again = run_example("raw_pages.py", "--state-dir", str(cluster.state_dir))
    assert "volume examples-raw exists already" in again and again.rstrip().endswith("read back what was written")
    with VolumeClient(cluster.compute_address()) as client:
        assert client.read_page("examples-raw", 3).startswith(b"hello at ")
    with SqlClient(cluster.compute_address()) as db:  # vol0's database is untouched
        assert db.execute("PRAGMA integrity_check").rows == [("ok",)]
