"""The local cluster launcher: `sixfold up/status/kill/start/pause/resume/stop/down` and `tools.cluster.Cluster`.

Every test that starts processes stops them in a fixture or `finally`, by the PIDs
recorded in its own tmp_path state dir.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sixfold.tools.cluster import (
    COMPUTE,
    CONTROL_PLANE,
    DEFAULT_VOLUME,
    PROJECT_ROOT,
    Cluster,
    ClusterError,
    UnknownProcessError,
    health_check,
)
from sixfold.tools.cluster_layout import KMS

pytestmark = pytest.mark.integration

NODES = ["a1", "a2", "b1", "b2", "c1", "c2"]
ALL = [KMS, CONTROL_PLANE, *NODES, COMPUTE]  # a secure cluster (the default) starts its key service first
CLI_TIMEOUT_S = 120.0
GONE_TIMEOUT_S = 10.0
POLL_S = 0.05


# --- helpers ---------------------------------------------------------------------------


def sixfold(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `sixfold ARGS --state-dir STATE_DIR` as a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *args, "--state-dir", str(state_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def sixfold_ok(state_dir: Path, *args: str) -> str:
    result = sixfold(state_dir, *args)
    assert result.returncode == 0, (
        f"sixfold {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def cli_status(state_dir: Path) -> dict[str, dict[str, Any]]:
    """`sixfold status --json`, by process name."""
    data = json.loads(sixfold_ok(state_dir, "status", "--json"))
    return {p["name"]: p for p in data["processes"]}


def proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def is_gone(pid: int) -> bool:
    """No such process, or only a zombie waiting for a parent to reap it."""
    return proc_state(pid) in (None, "Z", "X")


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + GONE_TIMEOUT_S
    while not all(is_gone(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still alive: {[p for p in pids if not is_gone(p)]}"
        time.sleep(POLL_S)


# --- the CLI ---------------------------------------------------------------------------


def test_cli_up_status_kill_start_pause_resume_stop_down(cluster_dir: Path) -> None:
    out = sixfold_ok(cluster_dir, "up")
    for name in ALL:
        assert name in out
    assert str(cluster_dir) in out
    assert (cluster_dir / "cluster.json").exists()

    status = cli_status(cluster_dir)
    assert list(status) == ALL
    for process in status.values():
        assert process["state"] == "running" and process["health"] == "SERVING", process
        assert Path(process["log_file"]).exists() and Path(process["data_dir"]).is_dir()
    assert {n["node_id"] for n in status[CONTROL_PLANE]["nodes"]} == set(NODES)
    assert status[CONTROL_PLANE]["volume_count"] == 1  # the compute node created its default volume
    assert [process["az"] for process in status.values()] == ["", "", "a", "a", "b", "b", "c", "c", ""]
    assert status[COMPUTE]["role"] == COMPUTE and status[COMPUTE]["data_dir"] == str(cluster_dir / "data" / COMPUTE)
    assert [(v["volume_id"], v["fenced"]) for v in status[COMPUTE]["volumes"]] == [(DEFAULT_VOLUME, False)]
    assert f"compute node:  {status[COMPUTE]['address']}" in out and DEFAULT_VOLUME in out
    table = sixfold_ok(cluster_dir, "status")
    assert "control-plane" in table and "SERVING" in table
    compute_row = next(line for line in table.splitlines() if line.startswith(COMPUTE))
    assert "SERVING" in compute_row and f"{DEFAULT_VOLUME} vdl=" in compute_row, table

    # kill the compute node, start it again: same address, the volume reopened by a new writer (epoch + 1)
    compute_pid, compute_address = status[COMPUTE]["pid"], status[COMPUTE]["address"]
    epoch = status[COMPUTE]["volumes"][0]["volume_epoch"]
    assert "killed compute" in sixfold_ok(cluster_dir, "kill", COMPUTE)
    wait_gone([compute_pid])
    after_kill = cli_status(cluster_dir)
    assert after_kill[COMPUTE]["state"] == "dead" and after_kill[COMPUTE]["volumes"] == []
    assert after_kill["a1"]["state"] == "running"
    assert f"started compute at {compute_address}" in sixfold_ok(cluster_dir, "start", COMPUTE)
    compute = cli_status(cluster_dir)[COMPUTE]
    assert compute["state"] == "running" and compute["health"] == "SERVING" and compute["pid"] != compute_pid
    assert [v["volume_id"] for v in compute["volumes"]] == [DEFAULT_VOLUME]
    assert compute["volumes"][0]["volume_epoch"] > epoch

    # kill a1: its PID is gone and status says so
    a1_pid, a1_address = status["a1"]["pid"], status["a1"]["address"]
    assert "killed a1" in sixfold_ok(cluster_dir, "kill", "a1")
    wait_gone([a1_pid])
    after_kill = cli_status(cluster_dir)
    assert after_kill["a1"]["state"] == "dead" and after_kill["a1"]["pid"] is None
    assert after_kill["a2"]["state"] == "running"

    # start a1: same address, healthy again, new PID
    sixfold_ok(cluster_dir, "start", "a1")
    restarted = cli_status(cluster_dir)["a1"]
    assert restarted["address"] == a1_address
    assert restarted["state"] == "running" and restarted["health"] == "SERVING"
    assert restarted["pid"] != a1_pid

    # pause b1: stopped by the kernel (T), shown as paused; resume: healthy again
    b1_pid = status["b1"]["pid"]
    sixfold_ok(cluster_dir, "pause", "b1")
    assert proc_state(b1_pid) == "T"
    assert cli_status(cluster_dir)["b1"]["state"] == "paused"
    sixfold_ok(cluster_dir, "resume", "b1")
    assert proc_state(b1_pid) != "T"
    resumed = cli_status(cluster_dir)["b1"]
    assert resumed["state"] == "running" and resumed["health"] == "SERVING" and resumed["pid"] == b1_pid

    # stop c1 gracefully, start it again on the same address
    c1_pid, c1_address = status["c1"]["pid"], status["c1"]["address"]
    assert "stopped c1" in sixfold_ok(cluster_dir, "stop", "c1")
    wait_gone([c1_pid])
    assert cli_status(cluster_dir)["c1"]["state"] == "stopped"
    sixfold_ok(cluster_dir, "start", "c1")
    c1 = cli_status(cluster_dir)["c1"]
    assert c1["address"] == c1_address and c1["health"] == "SERVING"

    # down: every PID gone, everything marked stopped
    pids = [p["pid"] for p in cli_status(cluster_dir).values()]
    assert all(pids)
    sixfold_ok(cluster_dir, "down")
    wait_gone(pids)
    assert {p["state"] for p in cli_status(cluster_dir).values()} == {"stopped"}


def test_cli_up_twice_does_nothing_and_up_after_down_restarts_with_the_same_addresses(cluster_dir: Path) -> None:
    sixfold_ok(cluster_dir, "up", "--spares", "1", "--default-volume", "data")
    first = cli_status(cluster_dir)
    assert list(first) == [KMS, CONTROL_PLANE, "a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3", COMPUTE]
    assert [v["volume_id"] for v in first[COMPUTE]["volumes"]] == ["data"]
    assert [first[n]["spare"] for n in ("a2", "a3")] == [False, True]

    assert "already running" in sixfold_ok(cluster_dir, "up")
    assert {n: p["pid"] for n, p in cli_status(cluster_dir).items()} == {n: p["pid"] for n, p in first.items()}

    sixfold_ok(cluster_dir, "down")
    wait_gone([p["pid"] for p in first.values()])
    assert "restarted" in sixfold_ok(cluster_dir, "up")
    again = cli_status(cluster_dir)
    assert {n: p["address"] for n, p in again.items()} == {n: p["address"] for n, p in first.items()}
    assert all(p["health"] == "SERVING" for p in again.values())
    assert [v["volume_id"] for v in again[COMPUTE]["volumes"]] == ["data"]  # reopened, not created again
    assert again[CONTROL_PLANE]["volume_count"] == 1


def test_cli_unknown_node_exits_2_and_lists_the_names(cluster_dir: Path) -> None:
    out = sixfold_ok(cluster_dir, "up", "--azs", "a,b,c", "--nodes-per-az", "2", "--no-compute")
    assert "no compute node" in out
    result = sixfold(cluster_dir, "kill", "z9")
    assert result.returncode == 2
    assert "z9" in result.stderr and "kms, control-plane, a1, a2, b1, b2, c1, c2" in result.stderr
    assert list(cli_status(cluster_dir)) == [KMS, CONTROL_PLANE, *NODES]  # --no-compute: no compute node
    result = sixfold(cluster_dir, "kill", COMPUTE)
    assert result.returncode == 2 and "compute" in result.stderr
    result = sixfold(cluster_dir, "volume", "list")
    assert result.returncode == 1 and "no compute node" in result.stderr, result.stderr


def test_cli_without_a_cluster_suggests_up(tmp_path: Path) -> None:
    for command in (["status"], ["down"], ["kill", "a1"]):
        result = sixfold(tmp_path / "nothing", *command)
        assert result.returncode == 1, command
        assert "sixfold up" in result.stderr, command


def test_cli_state_dir_defaults_to_the_environment(tmp_path: Path) -> None:
    env = dict(os.environ, SIXFOLD_STATE_DIR=str(tmp_path / "from-env"))
    result = subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "status"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
    )
    assert result.returncode == 1 and str(tmp_path / "from-env") in result.stderr


# --- the library ---------------------------------------------------------------------------


def test_cluster_fixture_is_running_and_registered(cluster: Cluster) -> None:
    assert cluster.names() == ALL
    assert cluster.node_names() == NODES
    status = cluster.status()
    for process in status.processes:
        assert process.state == "running" and process.health == "SERVING", process
        assert cluster.pid(process.name) == process.pid
        assert health_check(cluster.node_address(process.name)) == "SERVING"
    control_plane = status.by_name(CONTROL_PLANE)
    assert control_plane.address == cluster.control_plane_address()
    assert {(n.node_id, n.az, n.health) for n in control_plane.nodes} == {(n, n[0], "healthy") for n in NODES}
    # the compute node's volume vol0 has its segments on six nodes, two per AZ
    segments = [(name[0], s) for name in NODES for s in status.by_name(name).segments]
    per_az = [sum(1 for az, _ in segments if az == zone) for zone in "abc"]
    assert per_az[0] > 0 and per_az == [per_az[0]] * 3, per_az
    assert {s.volume_id for _, s in segments} == {DEFAULT_VOLUME}
    compute = status.by_name(COMPUTE)
    assert compute.address == cluster.compute_address() and compute.role == COMPUTE and compute.az == ""
    assert [(v.volume_id, v.fenced) for v in compute.volumes] == [(DEFAULT_VOLUME, False)]
    assert cluster.default_volume() == DEFAULT_VOLUME
    assert cluster.data_dir(COMPUTE) == cluster.state_dir / "data" / COMPUTE
    assert cluster.log_path("a1").read_text().strip() and cluster.log_path(COMPUTE).read_text().strip()


@pytest.mark.cluster_options(compute=False)
def test_cluster_kill_start_pause_resume_stop(cluster: Cluster) -> None:
    address = cluster.node_address("b2")
    pid = cluster.kill("b2")
    assert is_gone(pid) and cluster.pid("b2") is None
    assert cluster.status().by_name("b2").state == "dead"
    with pytest.raises(ClusterError, match="not running"):
        cluster.pause("b2")
    assert cluster.start("b2") is True
    assert cluster.start("b2") is False  # already running
    assert cluster.node_address("b2") == address and health_check(address) == "SERVING"

    paused = cluster.pause("c2")
    assert proc_state(paused) == "T" and cluster.status().by_name("c2").state == "paused"
    assert cluster.resume("c2") == paused
    assert cluster.status().by_name("c2").health == "SERVING"

    running = cluster.pid("a2")
    assert running is not None and cluster.stop("a2") is True and is_gone(running)
    assert cluster.stop("a2") is False
    assert cluster.status().by_name("a2").state == "stopped"
    with pytest.raises(UnknownProcessError) as raised:
        cluster.kill("nope")
    assert raised.value.valid == [KMS, CONTROL_PLANE, *NODES]


def test_cluster_down_stops_a_paused_process(cluster: Cluster) -> None:
    pid = cluster.pause("a1")
    compute_pid = cluster.pause(COMPUTE)
    pids = [cluster.pid(n) for n in cluster.names()]
    assert set(cluster.down()) == set(cluster.names())
    wait_gone([p for p in pids if p])
    assert is_gone(pid) and is_gone(compute_pid)


def test_cluster_kill_start_pause_resume_stop_the_compute_node(cluster: Cluster) -> None:
    """The compute node is a process like the others: same address and data after a restart, its volume reopened."""
    address = cluster.compute_address()
    epoch = cluster.status().by_name(COMPUTE).volumes[0].volume_epoch

    pid = cluster.kill(COMPUTE)
    assert is_gone(pid) and cluster.pid(COMPUTE) is None
    assert cluster.status().by_name(COMPUTE).state == "dead"
    assert all(cluster.status().by_name(n).state == "running" for n in NODES)
    assert cluster.start(COMPUTE) is True
    assert cluster.start(COMPUTE) is False  # already running
    assert cluster.compute_address() == address and health_check(address) == "SERVING"
    compute = cluster.status().by_name(COMPUTE)
    assert [(v.volume_id, v.fenced) for v in compute.volumes] == [(DEFAULT_VOLUME, False)]
    assert compute.volumes[0].volume_epoch > epoch  # a new writer opened (and fenced) the volume

    paused = cluster.pause(COMPUTE)
    assert proc_state(paused) == "T" and cluster.status().by_name(COMPUTE).state == "paused"
    assert cluster.resume(COMPUTE) == paused
    assert cluster.status().by_name(COMPUTE).health == "SERVING"

    running = cluster.pid(COMPUTE)
    assert running is not None and cluster.stop(COMPUTE) is True and is_gone(running)
    assert cluster.status().by_name(COMPUTE).state == "stopped"
    assert cluster.up().started == [COMPUTE]  # `up` restarts only what is not running
    assert health_check(cluster.compute_address()) == "SERVING"


@pytest.mark.cluster_options(compute=False)
def test_cluster_without_compute_has_no_compute_address(cluster: Cluster) -> None:
    assert cluster.names() == [KMS, CONTROL_PLANE, *NODES] and not cluster.has_compute()
    assert cluster.default_volume() is None
    with pytest.raises(ClusterError, match="no compute node"):
        cluster.compute_address()
    assert cluster.status().by_name(CONTROL_PLANE).volume_count == 0


@pytest.mark.cluster_options(spares=1, azs=("a", "b", "c"), nodes_per_az=2, compute=False)
def test_cluster_spares_continue_the_numbering(cluster: Cluster) -> None:
    assert cluster.node_names() == ["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"]
    assert [cluster.record(n).spare for n in ("a3", "b3", "c3", "c2")] == [True, True, True, False]


@pytest.mark.cluster_options(compute=False)
@pytest.mark.expected_log_errors("Traceback")  # the node cannot bind its port
def test_start_failure_names_the_process_and_its_log(cluster: Cluster) -> None:
    """a1's recorded port is taken while it is down: `start` fails, says where to look, leaves nothing running."""
    port = int(cluster.node_address("a1").rsplit(":", 1)[1])
    cluster.stop("a1")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(ClusterError) as raised:
            cluster.start("a1")
    message = str(raised.value)
    assert "a1" in message and str(cluster.log_path("a1")) in message and "last lines" in message
    assert cluster.status().by_name("a1").state == "stopped"
    assert cluster.start("a1") is True  # the port is free again


@pytest.mark.expected_log_errors("Traceback", " ERROR ")  # the compute node cannot bind its port
def test_compute_start_failure_names_the_compute_node_and_its_log(cluster: Cluster) -> None:
    port = int(cluster.compute_address().rsplit(":", 1)[1])
    cluster.stop(COMPUTE)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(ClusterError) as raised:
            cluster.start(COMPUTE)
    message = str(raised.value)
    assert message.startswith("compute node (pid ") and str(cluster.log_path(COMPUTE)) in message, message
    assert cluster.status().by_name(COMPUTE).state == "stopped"
    assert cluster.start(COMPUTE) is True and health_check(cluster.compute_address()) == "SERVING"


def test_context_manager_stops_everything_when_the_body_fails(tmp_path: Path) -> None:
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="test body failed"), Cluster(tmp_path / "cluster") as cluster:
        cluster.up(azs=("a", "b", "c"), nodes_per_az=2, compute=False)
        pids = [p for p in (cluster.pid(n) for n in cluster.names()) if p]
        raise RuntimeError("test body failed")
    assert len(pids) == 8  # the key service, the control plane, six nodes
    wait_gone(pids)


def test_down_never_signals_a_reused_pid(tmp_path: Path) -> None:
    """A recorded PID now running something else (PID reuse) is left alone and marked stopped."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        cluster_dir = tmp_path / "cluster"
        cluster_dir.mkdir()
        record = {
            "name": "a1",
            "role": "storage-node",
            "az": "a",
            "spare": False,
            "port": 1,
            "pid": stranger.pid,
            "log_file": str(cluster_dir / "a1.log"),
            "data_dir": str(cluster_dir),
            "port_file": str(cluster_dir / "a1.port"),
            "args": ["storage-node"],
            "command": [sys.executable, "-m", "sixfold.tools.cli", "storage-node"],
        }
        (cluster_dir / "cluster.json").write_text(json.dumps({"version": 1, "layout": {}, "processes": [record]}))
        cluster = Cluster(cluster_dir)
        assert cluster.status().by_name("a1").state == "dead"
        assert cluster.down() == []
        assert stranger.poll() is None
        assert cluster.status().by_name("a1").state == "stopped"
    finally:
        stranger.kill()
        stranger.wait()
