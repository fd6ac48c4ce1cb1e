"""What a local cluster is, and the launcher's decisions about it: the processes and their records in
`cluster.json`, the layout a first `up` creates, the order processes start and stop in, which port a
start uses, and how a recorded process's state is read.

Pure: values in, values out; `tools.cluster.Cluster` carries the decisions out (processes, signals,
files, gRPC). The rules:
1. Layout. The control plane (`control-plane`), then per AZ `nodes_per_az` storage nodes and
   `spares` spares named AZ + index (a1 a2 [a3 ...]), then, unless `--no-compute`, the compute
   instances: `compute` (started first, it registers as the writer) and `replicas` read replicas
   `replica1..N` (started with `--reader`: never the writer at start; at most REPLICAS_MAX). Every
   compute instance is a `sixfold compute` process with `--instance-id NAME --failover-priority N`.
   Each process has `<state-dir>/data/<name>/`, `logs/<name>.log` and `run/<name>.port`. An existing
   cluster keeps its recorded layout; `sixfold replica add|remove` adds or removes replicas.
2. Start order: the control plane, then every storage node at once, each waited for until it
   serves; then, before a compute instance starts (or when asked), until the control plane lists
   every running node as healthy; then `compute`, waited for until it serves; then the replicas.
3. Stop order: the compute instances first (they never run without their storage), then all the
   others at once.
4. Ports. The first start binds port 0 and the process writes the port it bound to its port file;
   every later start passes the recorded port, so addresses never change, unless the caller asks
   for a new one (port 0 again).
5. State of a recorded process: `stopped` when the launcher stopped it (no PID recorded), `dead`
   when its PID is gone or runs something else, `paused` when /proc shows it stopped (SIGSTOP),
   else `running`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sixfold.storage.quorum import AZ_COUNT, NODES_PER_AZ

STATE_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"
STATE_VERSION = 1
HOST = "127.0.0.1"
# Processes run from here, so `python -m sixfold.tools.cli` is this same code wherever the launcher is called from.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

CONTROL_PLANE = "control-plane"  # name and role of the control plane process
STORAGE_NODE = "storage-node"  # role of a storage node
KMS = "kms"  # name and role of the key service (a secure cluster's only: tools/cluster_tls.py)
COMPUTE = "compute"  # role of every compute instance, and name of the first one (the writer at start)
REPLICA_PREFIX = "replica"  # read replicas are replica1, replica2, ...
REPLICAS_MAX = 15  # as Aurora: one writer and up to 15 readers
FAILOVER_PRIORITY_MAX = 15  # failover tiers 0..15: the lowest tier is promoted first
DEFAULT_FAILOVER_PRIORITY = 1  # Aurora's default tier
DEFAULT_VOLUME = "vol0"  # the volume the compute node creates (if needed) and opens at start
# The smallest cluster that can place a PG: two nodes in each of three AZs (storage/quorum.py).
DEFAULT_AZS: tuple[str, ...] = ("a", "b", "c")
DEFAULT_NODES_PER_AZ = NODES_PER_AZ
assert len(DEFAULT_AZS) == AZ_COUNT, DEFAULT_AZS

# Process states (rule 5).
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"  # stopped by the launcher (down/stop), or never started
DEAD = "dead"  # has a recorded PID that is gone: killed, or crashed


class ClusterError(Exception):
    """A launcher operation failed; the message says what and where to look."""


class NoClusterError(ClusterError):
    """The state directory holds no cluster."""


class UnknownProcessError(ClusterError):
    """A process name that is not part of this cluster."""

    def __init__(self, name: str, valid: Sequence[str]) -> None:
        self.name = name
        self.valid = list(valid)
        super().__init__(f"unknown node {name!r}; valid names: {', '.join(self.valid)}")


def no_cluster(state_dir: Path) -> NoClusterError:
    return NoClusterError(f"no cluster in {state_dir} (no {STATE_FILE}); start one with `sixfold up`")


@dataclass
class ProcessRecord:
    """One process of the cluster as recorded in cluster.json."""

    name: str
    role: str  # CONTROL_PLANE, STORAGE_NODE or COMPUTE (the writer and the read replicas)
    az: str  # "" for the control plane and the compute instances
    spare: bool
    port: int  # 0 until the first start has bound one
    pid: int | None  # None when stopped by the launcher
    log_file: str
    data_dir: str
    port_file: str
    args: list[str]  # the subcommand and its arguments, without --port/--port-file/--control-plane
    command: list[str] = field(default_factory=list)  # the full command line last used

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}" if self.port else ""

    def command_for(self, control_plane_address: str) -> list[str]:
        """The full command line: the recorded port (0 before the first start) and, for storage and
        compute nodes, the control plane's address."""
        command = [sys.executable, "-m", "sixfold.tools.cli", *self.args]
        command += ["--port", str(self.port), "--port-file", self.port_file]
        if self.role in (STORAGE_NODE, COMPUTE):
            command += ["--control-plane", control_plane_address]
        return command


@dataclass
class ClusterState:
    """The contents of cluster.json."""

    layout: dict[str, Any]  # the arguments of the first `up`
    processes: list[ProcessRecord]  # in start order: the control plane, the storage nodes, the compute instances
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        raw = json.loads(text)
        return cls(
            layout=raw.get("layout", {}),
            processes=[ProcessRecord(**p) for p in raw["processes"]],
            version=raw.get("version", STATE_VERSION),
        )


def find(records: Sequence[ProcessRecord], name: str) -> ProcessRecord:
    for record in records:
        if record.name == name:
            return record
    raise UnknownProcessError(name, [r.name for r in records])


def label(record: ProcessRecord) -> str:
    """How a sentence names the process: `storage node a1`, `compute node`, `control-plane`."""
    if record.role == STORAGE_NODE:
        return f"storage node {record.name}"
    if record.role == COMPUTE:
        return "compute node" if record.name == COMPUTE else f"compute node {record.name}"
    return record.name


# --- rule 1: the layout ----------------------------------------------------------------


def new_layout(
    state_dir: Path,
    azs: Sequence[str],
    nodes_per_az: int,
    spares: int,
    lmdb_map_mib: int | None,
    heartbeat_timeout_ms: int | None,
    default_volume: str | None,
    failure_timeout_ms: int | None = None,
    node_flags: Sequence[str] = (),
    replicas: int = 0,
    compute_flags: Sequence[str] = (),
) -> ClusterState:
    """The records of a new cluster (rule 1); `default_volume` None: no compute instance."""
    if not azs or nodes_per_az < 1 or spares < 0:
        raise ClusterError("need at least one AZ, at least one node per AZ, and spares >= 0")
    if not 0 <= replicas <= REPLICAS_MAX:
        raise ClusterError(f"a cluster has 0 to {REPLICAS_MAX} read replicas, not {replicas}")
    if replicas and default_volume is None:
        raise ClusterError("read replicas need a compute node (drop --no-compute)")
    if default_volume is not None and not default_volume.strip():
        raise ClusterError("the default volume needs a name")
    cp_args = control_plane_args(heartbeat_timeout_ms, failure_timeout_ms)
    processes = [new_record(state_dir, CONTROL_PLANE, CONTROL_PLANE, "", False, cp_args)]
    for az in azs:
        for index in range(1, nodes_per_az + spares + 1):
            name = f"{az}{index}"
            node_args = ["--node-id", name, "--az", az]
            if lmdb_map_mib is not None:
                node_args += ["--lmdb-map-mib", str(lmdb_map_mib)]
            node_args += list(node_flags)  # e.g. ["--history-window-s", "1"]: passed to every storage node
            processes.append(new_record(state_dir, name, STORAGE_NODE, az, index > nodes_per_az, node_args))
    if default_volume is not None:
        # compute_flags, e.g. ["--default-volume-backtrack-window-s", "1"]: passed to every compute instance
        processes.append(compute_record(state_dir, COMPUTE, default_volume, extra=compute_flags))
        for index in range(1, replicas + 1):
            name = f"{REPLICA_PREFIX}{index}"
            processes.append(compute_record(state_dir, name, default_volume, reader=True, extra=compute_flags))
    layout = {
        "azs": list(azs),
        "nodes_per_az": nodes_per_az,
        "spares": spares,
        "lmdb_map_mib": lmdb_map_mib,
        "heartbeat_timeout_ms": heartbeat_timeout_ms,
        "failure_timeout_ms": failure_timeout_ms,
        "compute": default_volume is not None,
        "default_volume": default_volume,
        "replicas": replicas,
    }
    return ClusterState(layout=layout, processes=processes)


def compute_record(
    state_dir: Path,
    name: str,
    default_volume: str,
    priority: int = DEFAULT_FAILOVER_PRIORITY,
    reader: bool = False,
    extra: Sequence[str] = (),
) -> ProcessRecord:
    """A compute instance: `compute` (the writer at start) or a read replica (`reader`: `--reader`)."""
    if not 0 <= priority <= FAILOVER_PRIORITY_MAX:
        raise ClusterError(f"a failover priority is 0 to {FAILOVER_PRIORITY_MAX}, not {priority}")
    args = ["--default-volume", default_volume, "--instance-id", name, "--failover-priority", str(priority)]
    return new_record(state_dir, name, COMPUTE, "", False, args + (["--reader"] if reader else []) + list(extra))


def is_replica(record: ProcessRecord) -> bool:
    """A compute instance started as a read replica (replica1, ...), as opposed to `compute`."""
    return record.role == COMPUTE and record.name != COMPUTE


def next_replica_name(records: Sequence[ProcessRecord]) -> str:
    """replicaN for the lowest N not in use; ClusterError when there are REPLICAS_MAX already."""
    taken = {r.name for r in records}
    if sum(1 for r in records if is_replica(r)) >= REPLICAS_MAX:
        raise ClusterError(f"the cluster has {REPLICAS_MAX} read replicas already, the most it may have")
    return next(f"{REPLICA_PREFIX}{i}" for i in range(1, len(taken) + 2) if f"{REPLICA_PREFIX}{i}" not in taken)


def control_plane_args(heartbeat_timeout_ms: int | None, failure_timeout_ms: int | None) -> list[str]:
    args = ["--heartbeat-timeout-ms", str(heartbeat_timeout_ms)] if heartbeat_timeout_ms is not None else []
    if failure_timeout_ms is not None:
        args += ["--failure-timeout-ms", str(failure_timeout_ms)]
    return args


def new_record(state_dir: Path, name: str, role: str, az: str, spare: bool, extra: list[str]) -> ProcessRecord:
    data_dir = state_dir / "data" / name
    return ProcessRecord(
        name=name,
        role=role,
        az=az,
        spare=spare,
        port=0,
        pid=None,
        log_file=str(state_dir / "logs" / f"{name}.log"),
        data_dir=str(data_dir),
        port_file=str(state_dir / "run" / f"{name}.port"),
        args=[role, "--data-dir", str(data_dir), *extra],
    )


# --- rules 2-5: start, stop, ports, states ------------------------------------------------


@dataclass(frozen=True)
class StartPlan:
    """Rule 2: the batches to launch in order, and whether to wait for the nodes' registration before
    the compute batches (`compute`, then the replicas)."""

    control_plane: list[ProcessRecord]
    storage_nodes: list[ProcessRecord]
    compute: list[ProcessRecord]
    wait_registered: bool
    replicas: list[ProcessRecord] = field(default_factory=list)


def start_plan(to_start: Sequence[ProcessRecord], wait_registered: bool = False) -> StartPlan:
    nodes = [r for r in to_start if r.role == STORAGE_NODE]
    compute = [r for r in to_start if r.role == COMPUTE]
    return StartPlan(
        control_plane=[r for r in to_start if r.role in (KMS, CONTROL_PLANE)],
        storage_nodes=nodes,
        compute=[r for r in compute if not is_replica(r)],
        wait_registered=wait_registered or bool(compute and nodes),
        replicas=[r for r in compute if is_replica(r)],
    )


def stop_groups(live: Sequence[ProcessRecord]) -> list[list[ProcessRecord]]:
    """Rule 3: the compute instances first, then all the others."""
    return [[r for r in live if r.role == COMPUTE], [r for r in live if r.role != COMPUTE]]


def port_for_start(record: ProcessRecord, new_port: bool) -> int:
    """Rule 4: the recorded port, or 0 (any free one) before the first start or when asked."""
    return 0 if new_port else record.port


def port_from_file(text: str) -> int:
    """Rule 4: the port a process wrote, or 0 while it has written none (or only part of one)."""
    text = text.strip()
    return int(text) if text.isdigit() else 0


def process_state(record: ProcessRecord, alive: bool, stopped_by_signal: bool) -> str:
    """Rule 5. `alive`: the recorded PID runs the recorded command; `stopped_by_signal`: /proc says 'T'."""
    if record.pid is None:
        return STOPPED
    if not alive:
        return DEAD
    return PAUSED if stopped_by_signal else RUNNING
