"""Read replicas on a running local cluster: `sixfold replica add [--priority N]` starts the next
`replicaN` (a compute instance with `--reader`, on the default volume, with its own data dir, log
and port file), `sixfold replica remove NAME` stops it by its PID and has the control plane forget it
(ClusterService.RemoveCompute).

Carries out tools/cluster_layout.py's rules with a `tools.cluster.Cluster` (under its lock, so it
runs between two launcher commands, never during one).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from sixfold.tools.cluster import Cluster
from sixfold.tools.cluster_instances import InstanceCallError, list_instances, remove_compute
from sixfold.tools.cluster_layout import (
    COMPUTE,
    CONTROL_PLANE,
    DEFAULT_FAILOVER_PRIORITY,
    ClusterError,
    ProcessRecord,
    compute_record,
    find,
    is_replica,
    next_replica_name,
)
from sixfold.tools.cluster_tls import secure_record


def add_replica(cluster: Cluster, priority: int = DEFAULT_FAILOVER_PRIORITY) -> ProcessRecord:
    """Start the next read replica and wait until it serves; its record. ClusterError if the cluster has no
    compute node or its writer `compute` is not running, or REPLICAS_MAX replicas already."""
    with cluster._locked():
        state = cluster._load()
        volume = state.layout.get("default_volume")
        if not state.layout.get("compute", True) or not volume:
            raise ClusterError(f"the cluster in {cluster.state_dir} has no compute node (--no-compute): no replicas")
        record = compute_record(cluster.state_dir, next_replica_name(state.processes), volume, priority, reader=True)
        Path(record.data_dir).mkdir(parents=True, exist_ok=True)
        if state.layout.get("tls"):
            secure_record(record, cluster.state_dir)
        state.processes.append(record)
        state.layout["replicas"] = sum(1 for r in state.processes if is_replica(r))
        started: list[str] = []
        try:
            cluster._start_in_order(state, [record], started)
        except BaseException:
            cluster._stop_names(state, started)
            state.processes.remove(record)
            state.layout["replicas"] -= 1
            cluster._save(state)
            raise
        return record


def remove_replica(cluster: Cluster, name: str) -> tuple[bool, str]:
    """Stop replica `name` (by its PID) and remove it from cluster.json and from the control plane's
    instances: (whether it was running, "" or the sentence why the control plane did not forget it).
    Refused (ClusterError, nothing changed) for a process that is not a replica, or one the control
    plane names as the writer now (after a failover): fail over first."""
    with cluster._locked():
        state = cluster._load()
        record = find(state.processes, name)
        if not is_replica(record):
            raise ClusterError(
                f"{name} is not a read replica; `sixfold replica remove` takes one of: "
                + (", ".join(r.name for r in state.processes if is_replica(r)) or "(none: `sixfold replica add`)")
            )
        control_plane = find(state.processes, CONTROL_PLANE).address
        try:
            writer = list_instances(control_plane).writer_id
        except InstanceCallError:
            writer = ""  # the control plane does not answer: it cannot promote anything either
        if writer == name:
            raise ClusterError(
                f"{name} is the writer now (after a failover); move the writer first: "
                f"`sixfold failover --to {COMPUTE}` (or another instance), then remove {name}"
            )
        was_running = bool(cluster._stop_names(state, [name]))
        state.processes.remove(record)
        state.layout["replicas"] = sum(1 for r in state.processes if is_replica(r))
        cluster._save(state)
    try:
        remove_compute(control_plane, name)
    except InstanceCallError as error:
        if error.code == grpc.StatusCode.NOT_FOUND:  # it never registered: nothing to forget
            return was_running, ""
        return was_running, error.details
    return was_running, ""
