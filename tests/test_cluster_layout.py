"""The launcher's decisions without processes: the layout of a new cluster, start and stop order, ports,
process states (tools/cluster_layout.py), the status sentences (tools/cluster_status.py), and that a
command on a directory without a cluster leaves nothing behind (tools/cluster.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sixfold.tools.cluster import Cluster, NoClusterError
from sixfold.tools.cluster_layout import (
    COMPUTE,
    CONTROL_PLANE,
    DEAD,
    DEFAULT_FAILOVER_PRIORITY,
    LOCK_FILE,
    PAUSED,
    REPLICAS_MAX,
    RUNNING,
    STOPPED,
    STORAGE_NODE,
    ClusterError,
    ClusterState,
    compute_record,
    is_replica,
    label,
    new_layout,
    next_replica_name,
    port_for_start,
    port_from_file,
    process_state,
    start_plan,
    stop_groups,
)
from sixfold.tools.cluster_status import (
    ProcessStatus,
    control_plane_answers,
    not_answering_sentence,
    not_asked,
    refused_sentence,
)

pytestmark = pytest.mark.unit

STATE_DIR = Path("/state")


def layout(
    *,
    azs: tuple[str, ...] = ("a", "b", "c"),
    nodes_per_az: int = 2,
    spares: int = 0,
    lmdb_map_mib: int | None = None,
    heartbeat_timeout_ms: int | None = None,
    failure_timeout_ms: int | None = None,
    default_volume: str | None = "vol0",
    node_flags: tuple[str, ...] = (),
) -> ClusterState:
    return new_layout(
        STATE_DIR,
        azs,
        nodes_per_az,
        spares,
        lmdb_map_mib,
        heartbeat_timeout_ms,
        default_volume,
        failure_timeout_ms,
        node_flags,
    )


def test_the_layout_names_roles_and_paths() -> None:
    state = layout(spares=1, lmdb_map_mib=64, node_flags=("--history-window-s", "1"))
    names = [r.name for r in state.processes]
    assert names == [CONTROL_PLANE, "a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3", COMPUTE]
    a3 = state.processes[3]
    assert (a3.role, a3.az, a3.spare, a3.port, a3.pid) == (STORAGE_NODE, "a", True, 0, None)
    assert a3.data_dir == "/state/data/a3" and a3.log_file == "/state/logs/a3.log"
    assert a3.port_file == "/state/run/a3.port"
    assert a3.args[-4:] == ["--lmdb-map-mib", "64", "--history-window-s", "1"]
    assert state.processes[-1].args == [
        "compute",
        "--data-dir",
        "/state/data/compute",
        "--default-volume",
        "vol0",
        "--instance-id",
        "compute",
        "--failover-priority",
        str(DEFAULT_FAILOVER_PRIORITY),
    ]
    assert ClusterState.from_json(state.to_json()) == state


def test_read_replicas_are_compute_instances_started_as_readers_after_the_writer() -> None:
    state = new_layout(STATE_DIR, ("a", "b", "c"), 2, 0, None, None, "vol0", replicas=2)
    names = [r.name for r in state.processes]
    assert names[-3:] == [COMPUTE, "replica1", "replica2"] and state.layout["replicas"] == 2
    replica = state.processes[-1]
    assert (replica.role, replica.az, replica.data_dir, replica.port_file) == (
        COMPUTE,
        "",
        "/state/data/replica2",
        "/state/run/replica2.port",
    )
    assert replica.args[-5:] == ["--instance-id", "replica2", "--failover-priority", "1", "--reader"]
    assert is_replica(replica) and not is_replica(state.processes[-3])
    assert label(replica) == "compute node replica2"
    plan = start_plan(list(reversed(state.processes)))
    assert [r.name for r in plan.compute] == [COMPUTE] and [r.name for r in plan.replicas] == ["replica2", "replica1"]
    assert [r.name for r in start_plan([replica]).replicas] == ["replica2"]  # a replica alone: no storage wait
    first, _ = stop_groups(state.processes)
    assert [r.name for r in first] == [COMPUTE, "replica1", "replica2"]  # the compute instances first


def test_replica_names_bounds_and_priorities() -> None:
    state = new_layout(STATE_DIR, ("a", "b", "c"), 2, 0, None, None, "vol0", replicas=2)
    assert next_replica_name(state.processes) == "replica3"
    del state.processes[-2]  # replica1 removed: its name is free again
    assert next_replica_name(state.processes) == "replica1"
    full = new_layout(STATE_DIR, ("a", "b", "c"), 2, 0, None, None, "vol0", replicas=REPLICAS_MAX)
    with pytest.raises(ClusterError, match=f"{REPLICAS_MAX} read replicas already"):
        next_replica_name(full.processes)
    with pytest.raises(ClusterError, match="0 to 15 read replicas"):
        new_layout(STATE_DIR, ("a", "b", "c"), 2, 0, None, None, "vol0", replicas=REPLICAS_MAX + 1)
    with pytest.raises(ClusterError, match="need a compute node"):
        new_layout(STATE_DIR, ("a", "b", "c"), 2, 0, None, None, None, replicas=1)
    assert compute_record(STATE_DIR, "replica9", "vol0", 0, reader=True).args[-3:] == [
        "--failover-priority",
        "0",
        "--reader",
    ]
    with pytest.raises(ClusterError, match="failover priority is 0 to 15"):
        compute_record(STATE_DIR, "replica9", "vol0", 16)


def test_the_layout_without_compute_and_with_control_plane_timeouts() -> None:
    state = layout(default_volume=None, heartbeat_timeout_ms=1000, failure_timeout_ms=2000)
    assert COMPUTE not in [r.name for r in state.processes]
    assert state.processes[0].args[-4:] == ["--heartbeat-timeout-ms", "1000", "--failure-timeout-ms", "2000"]
    assert state.layout["compute"] is False


@pytest.mark.parametrize("kwargs", [{"azs": ()}, {"nodes_per_az": 0}, {"spares": -1}, {"default_volume": " "}], ids=str)
def test_a_bad_layout_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ClusterError):
        layout(**kwargs)


def test_start_and_stop_order() -> None:
    records = layout().processes
    plan = start_plan(list(reversed(records)))
    assert [r.name for r in plan.control_plane] == [CONTROL_PLANE]
    assert {r.name for r in plan.storage_nodes} == {"a1", "a2", "b1", "b2", "c1", "c2"}
    assert [r.name for r in plan.compute] == [COMPUTE] and plan.wait_registered
    assert not start_plan([records[1]]).wait_registered  # one storage node alone: no wait
    assert start_plan([records[1]], wait_registered=True).wait_registered
    assert not start_plan([records[-1]]).wait_registered  # the compute node alone: its storage already runs
    first, rest = stop_groups(records)
    assert [r.name for r in first] == [COMPUTE] and COMPUTE not in [r.name for r in rest] and len(rest) == 7


def test_ports_and_states() -> None:
    record = layout().processes[1]
    record.port = 4321
    assert port_for_start(record, new_port=False) == 4321 and port_for_start(record, new_port=True) == 0
    assert [port_from_file(t) for t in ("4321\n", "", "43a", " 7 ")] == [4321, 0, 0, 7]
    assert process_state(record, alive=False, stopped_by_signal=False) == STOPPED  # no PID recorded
    record.pid = 99
    assert process_state(record, alive=False, stopped_by_signal=False) == DEAD
    assert process_state(record, alive=True, stopped_by_signal=True) == PAUSED
    assert process_state(record, alive=True, stopped_by_signal=False) == RUNNING


def test_status_sentences() -> None:
    control_plane, a1, *_, compute = layout().processes
    control_plane.port, a1.port, compute.port = 5000, 5001, 5002
    assert not_answering_sentence(control_plane, "volumes") == (
        "control plane not answering at 127.0.0.1:5000 — volumes unknown"
    )
    assert not_answering_sentence(a1) == "storage node a1 not answering at 127.0.0.1:5001 — segments unknown"
    assert refused_sentence(compute, "UNAVAILABLE", "the control plane did not answer") == (
        "compute node at 127.0.0.1:5002: the control plane did not answer — volumes unknown"
    )
    assert not_asked(control_plane, PAUSED) == (
        "nodes and volumes unknown while paused (`sixfold resume control-plane`)"
    )
    assert not_asked(a1, STOPPED) == "" and not_asked(a1, DEAD) == ""
    answering = ProcessStatus(CONTROL_PLANE, CONTROL_PLANE, "", False, "", 1, RUNNING, "SERVING", "", "")
    assert control_plane_answers(answering)
    for state, health, error in ((PAUSED, "-", ""), (RUNNING, "unreachable", ""), (RUNNING, "SERVING", "x")):
        other = ProcessStatus(CONTROL_PLANE, CONTROL_PLANE, "", False, "", 1, state, health, "", "", error)
        assert not control_plane_answers(other), (state, health, error)


@pytest.mark.parametrize("existing", [False, True], ids=["new dir", "empty dir"])
def test_commands_without_a_cluster_leave_nothing_behind(tmp_path: Path, existing: bool) -> None:
    state_dir = tmp_path / "nothing"
    if existing:
        state_dir.mkdir()
    cluster = Cluster(state_dir)
    for command in (
        cluster.status,
        cluster.records,
        lambda: cluster.kill("a1"),
        lambda: cluster.stop("a1"),
        lambda: cluster.start("a1"),
        lambda: cluster.pause("a1"),
        lambda: cluster.resume("a1"),
    ):
        with pytest.raises(NoClusterError, match="sixfold up"):
            command()
    assert cluster.down() == []
    assert state_dir.exists() == existing
    assert not (state_dir / LOCK_FILE).exists()
    if existing:
        assert list(state_dir.iterdir()) == []
