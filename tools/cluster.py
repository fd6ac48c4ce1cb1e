"""The local cluster: a control plane, storage nodes and a compute node as real processes on this machine.

A `Cluster` is bound to a state directory. Everything about the cluster lives
under it and is recorded in `<state-dir>/cluster.json` (written atomically), so
any later process -- the `sixfold` CLI, a test, a chaos script -- can find every
process again by name:

    <state-dir>/cluster.json        names, roles, AZs, ports, PIDs, command lines
    <state-dir>/cluster.lock        serializes launcher commands on this directory
    <state-dir>/logs/<name>.log     stdout+stderr of the process (appended across restarts)
    <state-dir>/data/<name>/        the process's data directory
    <state-dir>/run/<name>.port     the port the process bound (written by the process)

Processes run `python -m sixfold.tools.cli control-plane|storage-node|compute ...` in
their own session. The first start binds port 0 and reads the chosen port from
the port file; every restart passes the recorded port, so addresses never change.

Start order: the control plane; then the storage nodes, until the control plane
lists each of them as healthy; then the compute node (the writer, process name
`compute`), which creates its default volume on first start and opens it
(recovery) on every start before it reports SERVING. `down` stops the compute
node first, so it never sees its storage disappear under it.

Before a PID is signalled, its `/proc/PID/cmdline` is compared with the recorded
command line, so a PID reused by an unrelated process is never touched.

    with Cluster(tmp_path / "cluster") as cluster:   # __exit__ always runs down()
        cluster.up()
        cluster.kill("a1")
        cluster.start("a1")                            # same address, same data
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold.compute.v1 import volume_service_pb2, volume_service_pb2_grpc
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import (
    control_plane_service_pb2,
    control_plane_service_pb2_grpc,
    storage_service_pb2,
    storage_service_pb2_grpc,
)

# --- named constants -------------------------------------------------------------

STATE_FILE = "cluster.json"
LOCK_FILE = "cluster.lock"
STATE_VERSION = 1
HOST = "127.0.0.1"
# Processes run from here, so `python -m sixfold.tools.cli` is this same code wherever the launcher is called from.
PROJECT_ROOT = Path(__file__).resolve().parents[1]

CONTROL_PLANE = "control-plane"  # name and role of the control plane process
STORAGE_NODE = "storage-node"  # role of a storage node
COMPUTE = "compute"  # name and role of the compute node (the writer)
DEFAULT_VOLUME = "vol0"  # the volume the compute node creates (if needed) and opens at start
DEFAULT_AZS: tuple[str, ...] = ("a", "b", "c")
DEFAULT_NODES_PER_AZ = 2

STARTUP_TIMEOUT_S = 30.0  # from launch until the process answers its health check
COMPUTE_STARTUP_TIMEOUT_S = 60.0  # the compute node's start-up includes creating/opening (recovering) its volume
REGISTRATION_TIMEOUT_S = 30.0  # until the control plane lists every node as healthy
STOP_TIMEOUT_S = 10.0  # SIGTERM -> exit, before SIGKILL
KILL_TIMEOUT_S = 5.0  # SIGKILL -> gone
SIGNAL_STATE_TIMEOUT_S = 5.0  # SIGSTOP/SIGCONT -> /proc shows the new state
HEALTH_RPC_TIMEOUT_S = 1.0
STATUS_RPC_TIMEOUT_S = 1.0
COMPUTE_STATUS_RPC_TIMEOUT_S = 2.0  # ListVolumes on the compute node
POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 25

# Log lines that count as errors for `Cluster.log_errors`.
LOG_ERROR_MARKERS: tuple[str, ...] = (" ERROR ", "Traceback")

# Process states reported by `status()`.
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


# --- records and status ------------------------------------------------------------


@dataclass
class ProcessRecord:
    """One process of the cluster as recorded in cluster.json."""

    name: str
    role: str  # CONTROL_PLANE, STORAGE_NODE or COMPUTE
    az: str  # "" for the control plane and the compute node
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
    processes: list[ProcessRecord]  # in start order: the control plane, the storage nodes, the compute node
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


@dataclass
class SegmentInfo:
    segment_id: str
    volume_id: str
    pg_index: int
    scl: int
    highest_lsn: int
    record_count: int
    records_repaired: int = 0  # pulled from peers by gossip since the node started
    records_quarantined: int = 0  # found bad by scrubbing since the node started
    versions_quarantined: int = 0
    scrub_passes: int = 0
    retention_horizon_lsn: int = 0  # GC floor: reads below it are refused
    versions_coalesced: int = 0
    records_collected: int = 0  # removed by GC
    versions_collected: int = 0
    pages_hydrated: int = 0  # copied from a peer's page versions
    bytes_hydrated: int = 0
    whole: bool = True  # holds every record it may have acknowledged (storage/segment.py)
    rebuilding: bool = False  # created again to replace a lost copy
    chain_gaps: int = 0
    metadata_repaired: int = 0

    @property
    def label(self) -> str:
        return f"{self.volume_id}/pg-{self.pg_index:05d}"


@dataclass
class NodeHealthInfo:
    """One node as the control plane sees it."""

    node_id: str
    az: str
    address: str
    health: str  # "healthy" / "degraded" / "unhealthy" / "unspecified"
    last_heartbeat_age_ms: int
    segment_count: int
    condition: str = "ok"  # the node's disk: ok / full / io_error / failed
    condition_detail: str = ""
    segments_missing: list[str] = field(default_factory=list)  # lost copies (created again by the control plane)
    segments_rebuilding: list[str] = field(default_factory=list)  # held, not whole yet


@dataclass
class ChangeInfo:
    """A segment replacement in flight, as the control plane reports it."""

    volume_id: str
    pg_index: int
    membership_epoch: int
    old_node_id: str
    new_node_id: str
    target_lsn: int | None  # None until measured
    new_segment_scl: int  # hydration progress

    def describe(self) -> str:
        where = f"{self.volume_id}/pg-{self.pg_index:05d} {self.old_node_id}->{self.new_node_id}"
        if self.target_lsn is None:
            return f"{where} (epoch {self.membership_epoch}, measuring target)"
        percent = min(100.0, 100.0 * self.new_segment_scl / self.target_lsn) if self.target_lsn else 100.0
        return f"{where} hydrated {self.new_segment_scl}/{self.target_lsn} ({percent:.0f}%)"


@dataclass
class VolumeInfo:
    """One volume as the compute node reports it."""

    volume_id: str
    vdl: int
    vcl: int
    volume_epoch: int
    fenced: bool


@dataclass
class ProcessStatus:
    name: str
    role: str
    az: str
    spare: bool
    address: str
    pid: int | None
    state: str  # RUNNING / PAUSED / STOPPED / DEAD
    health: str  # "SERVING", "NOT_SERVING", "unreachable", or "-" when not asked
    log_file: str
    data_dir: str
    error: str = ""  # why an RPC failed, if one did
    segments: list[SegmentInfo] = field(default_factory=list)  # storage nodes
    disk: str = ""  # storage nodes: ok / full / io_error / failed
    disk_detail: str = ""
    lost_segments: list[str] = field(default_factory=list)  # storage nodes: metadata not trusted at start
    nodes: list[NodeHealthInfo] = field(default_factory=list)  # control plane
    volume_count: int | None = None  # control plane
    changes: list[ChangeInfo] = field(default_factory=list)  # control plane: replacements in flight
    volumes: list[VolumeInfo] = field(default_factory=list)  # compute node


@dataclass
class ClusterStatus:
    state_dir: str
    processes: list[ProcessStatus]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def by_name(self, name: str) -> ProcessStatus:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(name)


@dataclass
class UpResult:
    started: list[str]  # names started by this call, in order
    already_running: bool  # True when every process was already running; nothing was done


# --- /proc and signals ---------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) S ..." -- comm may contain spaces and parentheses; the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def _is_ours(pid: int, command: Sequence[str]) -> bool:
    """True if PID is alive (not a zombie) and runs exactly the recorded command."""
    state = _proc_state(pid)
    if state is None or state in ("Z", "X", "x"):
        return False
    return _proc_cmdline(pid) == list(command)


def _send(pid: int, sig: signal.Signals) -> None:
    """Signal the process's group (it leads its own session), or the PID alone otherwise."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def _label(record: ProcessRecord) -> str:
    if record.role == STORAGE_NODE:
        return f"storage node {record.name}"
    if record.role == COMPUTE:
        return "compute node" if record.name == COMPUTE else f"compute node {record.name}"
    return record.name


def _tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


# --- gRPC probes ---------------------------------------------------------------------


def health_check(address: str, timeout_s: float = HEALTH_RPC_TIMEOUT_S) -> str:
    """The standard health check (service ""): 'SERVING', 'NOT_SERVING', ... or 'unreachable'."""
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout_s
            )
        except grpc.RpcError:
            return "unreachable"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def _disk_name(value: int) -> str:
    return storage_service_pb2.DiskCondition.Name(value).removeprefix("DISK_CONDITION_").lower()


def _list_segments(address: str) -> tuple[list[SegmentInfo], str, str, list[str]]:
    """(segments, disk condition, its sentence, segments lost at start) of one storage node."""
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        reply = stub.ListSegments(storage_service_pb2.ListSegmentsRequest(), timeout=STATUS_RPC_TIMEOUT_S)
    segments = [
        SegmentInfo(
            s.segment_id,
            s.volume_id,
            s.pg_index,
            s.scl,
            s.highest_lsn,
            s.record_count,
            s.records_repaired,
            s.records_quarantined,
            s.versions_quarantined,
            s.scrub_passes,
            s.retention_horizon_lsn,
            s.versions_coalesced,
            s.records_collected,
            s.versions_collected,
            s.pages_hydrated,
            s.bytes_hydrated,
            s.whole,
            s.rebuilding,
            s.chain_gaps,
            s.metadata_repaired,
        )
        for s in reply.segments
    ]
    return segments, _disk_name(reply.disk_condition), reply.disk_detail, list(reply.lost_segments)


def _health_name(value: int) -> str:
    name = control_plane_service_pb2.NodeHealth.Name(value)
    return name.removeprefix("NODE_HEALTH_").lower()


def _list_nodes(address: str) -> tuple[list[NodeHealthInfo], int, list[ChangeInfo]]:
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)
        nodes = stub.ListNodes(control_plane_service_pb2.ListNodesRequest(), timeout=STATUS_RPC_TIMEOUT_S)
        volumes = stub.ListVolumes(control_plane_service_pb2.ListVolumesRequest(), timeout=STATUS_RPC_TIMEOUT_S)
    infos = [
        NodeHealthInfo(
            n.node_id,
            n.az,
            n.address,
            _health_name(n.health),
            n.last_heartbeat_age_ms,
            n.segment_count,
            _disk_name(n.condition) if n.condition else "ok",
            n.condition_detail,
            list(n.segments_missing),
            list(n.segments_rebuilding),
        )
        for n in nodes.nodes
    ]
    changes = [
        ChangeInfo(
            v.volume_id,
            pg.pg_index,
            pg.membership_epoch,
            c.old_node_id,
            c.new_node_id,
            c.target_lsn if c.target_measured else None,
            c.new_segment_scl,
        )
        for v in volumes.volumes
        for pg in v.protection_groups
        for c in pg.changes
    ]
    return infos, len(volumes.volumes), changes


def _list_volumes(address: str) -> list[VolumeInfo]:
    """The compute node's volumes (VolumeService.ListVolumes)."""
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = volume_service_pb2_grpc.VolumeServiceStub(channel)
        reply = stub.ListVolumes(volume_service_pb2.ListVolumesRequest(), timeout=COMPUTE_STATUS_RPC_TIMEOUT_S)
    return [VolumeInfo(v.volume_id, v.vdl, v.vcl, v.volume_epoch, v.fenced) for v in reply.volumes]


# --- the cluster -----------------------------------------------------------------------


class Cluster:
    """A local cluster bound to a state directory (see the module docstring)."""

    def __init__(
        self,
        state_dir: str | Path,
        *,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        compute_startup_timeout_s: float = COMPUTE_STARTUP_TIMEOUT_S,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.startup_timeout_s = startup_timeout_s
        self.compute_startup_timeout_s = compute_startup_timeout_s
        self._popen: dict[int, subprocess.Popen[bytes]] = {}  # children of this Python process, by PID

    # context manager: always stop everything, even when the body failed

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # paths and state

    @property
    def state_file(self) -> Path:
        return self.state_dir / STATE_FILE

    def exists(self) -> bool:
        return self.state_file.exists()

    def _load(self) -> ClusterState:
        try:
            text = self.state_file.read_text()
        except FileNotFoundError:
            raise NoClusterError(
                f"no cluster in {self.state_dir} (no {STATE_FILE}); start one with `sixfold up`"
            ) from None
        return ClusterState.from_json(text)

    def _save(self, state: ClusterState) -> None:
        """Write cluster.json atomically: a reader sees the old or the new file, never half of one."""
        tmp = self.state_file.with_suffix(f".tmp.{os.getpid()}")
        with open(tmp, "w") as f:
            f.write(state.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def records(self) -> list[ProcessRecord]:
        """Every process in start order: the control plane, the storage nodes, the compute node (if any)."""
        return self._load().processes

    def names(self) -> list[str]:
        return [p.name for p in self.records()]

    def node_names(self) -> list[str]:
        return [p.name for p in self.records() if p.role == STORAGE_NODE]

    def record(self, name: str) -> ProcessRecord:
        return self._find(self.records(), name)

    @staticmethod
    def _find(records: list[ProcessRecord], name: str) -> ProcessRecord:
        for record in records:
            if record.name == name:
                return record
        raise UnknownProcessError(name, [r.name for r in records])

    # lookups

    def node_address(self, node: str) -> str:
        return self.record(node).address

    def control_plane_address(self) -> str:
        return self.record(CONTROL_PLANE).address

    def has_compute(self) -> bool:
        return any(r.role == COMPUTE for r in self.records())

    def compute_address(self) -> str:
        """The compute node's address (VolumeService); ClusterError if the cluster was started without one."""
        for record in self.records():
            if record.role == COMPUTE:
                return record.address
        raise ClusterError(
            f"the cluster in {self.state_dir} has no compute node (it was started with --no-compute); "
            f"`sixfold down` and `sixfold up` with a new --state-dir for one"
        )

    def default_volume(self) -> str | None:
        """The volume the compute node opens at start (None without a compute node)."""
        return self._load().layout.get("default_volume") if self.has_compute() else None

    def pid(self, node: str) -> int | None:
        """The PID of the process if it is running (or paused), else None."""
        record = self.record(node)
        return record.pid if self._alive(record) else None

    def log_path(self, node: str) -> Path:
        return Path(self.record(node).log_file)

    def data_dir(self, node: str) -> Path:
        return Path(self.record(node).data_dir)

    def _alive(self, record: ProcessRecord) -> bool:
        """True if the recorded PID still runs the recorded command (safe to signal)."""
        if record.pid is None:
            return False
        self._reap(record.pid)
        return _is_ours(record.pid, record.command)

    def _gone(self, pid: int) -> bool:
        """True once PID has fully exited (an exiting process loses its cmdline before it is gone)."""
        self._reap(pid)
        return _proc_state(pid) in (None, "Z", "X", "x")

    def _reap(self, pid: int) -> None:
        """Collect the exit status of our own child so it does not linger as a zombie."""
        child = self._popen.get(pid)
        if child is not None and child.poll() is not None:
            del self._popen[pid]

    # up

    def up(
        self,
        azs: Sequence[str] = DEFAULT_AZS,
        nodes_per_az: int = DEFAULT_NODES_PER_AZ,
        spares: int = 0,
        *,
        lmdb_map_mib: int | None = None,
        node_flags: Sequence[str] = (),
        heartbeat_timeout_ms: int | None = None,
        failure_timeout_ms: int | None = None,
        wait_registered: bool = True,
        compute: bool = True,
        default_volume: str = DEFAULT_VOLUME,
    ) -> UpResult:
        """Start the cluster: the control plane, then every node, each waited for until healthy,
        then (with `compute`) the compute node, which creates `default_volume` if needed and opens it.

        On a state dir that already holds a cluster, the recorded layout is kept (the
        arguments are ignored): processes that are not running are restarted with their
        data and ports; if all are running nothing is done (`already_running`).
        If any process fails to come up, the ones this call started are stopped again.
        """
        with self._locked():
            if not self.exists():
                self._create(
                    azs,
                    nodes_per_az,
                    spares,
                    lmdb_map_mib,
                    heartbeat_timeout_ms,
                    default_volume if compute else None,
                    failure_timeout_ms,
                    node_flags,
                )
            state = self._load()
            to_start = [r for r in state.processes if not self._alive(r)]
            if not to_start:
                return UpResult(started=[], already_running=True)
            started: list[str] = []
            try:
                self._start_in_order(state, to_start, started, wait_registered=wait_registered)
            except BaseException:
                self._stop_names(state, started)
                raise
            return UpResult(started=started, already_running=False)

    def _create(
        self,
        azs: Sequence[str],
        nodes_per_az: int,
        spares: int,
        lmdb_map_mib: int | None,
        heartbeat_timeout_ms: int | None,
        default_volume: str | None,
        failure_timeout_ms: int | None = None,
        node_flags: Sequence[str] = (),
    ) -> None:
        if not azs or nodes_per_az < 1 or spares < 0:
            raise ClusterError("need at least one AZ, at least one node per AZ, and spares >= 0")
        if default_volume is not None and not default_volume.strip():
            raise ClusterError("the default volume needs a name")
        for sub in ("logs", "data", "run"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        cp_args = self._control_plane_args(heartbeat_timeout_ms, failure_timeout_ms)
        processes = [self._new_record(CONTROL_PLANE, CONTROL_PLANE, "", False, cp_args)]
        for az in azs:
            for index in range(1, nodes_per_az + spares + 1):
                name = f"{az}{index}"
                node_args = ["--node-id", name, "--az", az]
                if lmdb_map_mib is not None:
                    node_args += ["--lmdb-map-mib", str(lmdb_map_mib)]
                node_args += list(node_flags)  # e.g. ["--history-window-s", "1"]: passed to every storage node
                processes.append(self._new_record(name, STORAGE_NODE, az, index > nodes_per_az, node_args))
        if default_volume is not None:
            processes.append(self._new_record(COMPUTE, COMPUTE, "", False, ["--default-volume", default_volume]))
        layout = {
            "azs": list(azs),
            "nodes_per_az": nodes_per_az,
            "spares": spares,
            "lmdb_map_mib": lmdb_map_mib,
            "heartbeat_timeout_ms": heartbeat_timeout_ms,
            "failure_timeout_ms": failure_timeout_ms,
            "compute": default_volume is not None,
            "default_volume": default_volume,
        }
        self._save(ClusterState(layout=layout, processes=processes))

    @staticmethod
    def _control_plane_args(heartbeat_timeout_ms: int | None, failure_timeout_ms: int | None) -> list[str]:
        args = ["--heartbeat-timeout-ms", str(heartbeat_timeout_ms)] if heartbeat_timeout_ms is not None else []
        if failure_timeout_ms is not None:
            args += ["--failure-timeout-ms", str(failure_timeout_ms)]
        return args

    def _new_record(self, name: str, role: str, az: str, spare: bool, extra: list[str]) -> ProcessRecord:
        data_dir = self.state_dir / "data" / name
        data_dir.mkdir(parents=True, exist_ok=True)
        return ProcessRecord(
            name=name,
            role=role,
            az=az,
            spare=spare,
            port=0,
            pid=None,
            log_file=str(self.state_dir / "logs" / f"{name}.log"),
            data_dir=str(data_dir),
            port_file=str(self.state_dir / "run" / f"{name}.port"),
            args=[role, "--data-dir", str(data_dir), *extra],
        )

    def _start_in_order(
        self, state: ClusterState, to_start: list[ProcessRecord], started: list[str], *, wait_registered: bool = False
    ) -> None:
        """Start the control plane (if needed) and wait for it, then launch all storage nodes and wait for
        each; then, if a compute node is to start (or `wait_registered`), wait until the control plane
        lists every running node as healthy; then start the compute node and wait for it."""
        records = state.processes
        control_plane = [r for r in to_start if r.role == CONTROL_PLANE]
        nodes = [r for r in to_start if r.role == STORAGE_NODE]
        compute = [r for r in to_start if r.role == COMPUTE]
        for batch, timeout_s in ((control_plane, self.startup_timeout_s), (nodes, self.startup_timeout_s)):
            self._start_batch(state, batch, started, timeout_s)
        if wait_registered or (compute and nodes):
            self._wait_registered(records)
        self._start_batch(state, compute, started, self.compute_startup_timeout_s)

    def _start_batch(
        self, state: ClusterState, batch: list[ProcessRecord], started: list[str], timeout_s: float
    ) -> None:
        """Launch every process of `batch` at once, then wait until each serves (one deadline for all)."""
        if not batch:
            return
        children = {r.name: self._launch(r, state.processes) for r in batch}
        started.extend(children)
        self._save(state)
        deadline = time.monotonic() + timeout_s
        for record in batch:
            record.port = self._wait_serving(record, children[record.name], deadline, timeout_s)
            self._save(state)

    def _launch(self, record: ProcessRecord, records: list[ProcessRecord]) -> subprocess.Popen[bytes]:
        previous = record.pid
        if previous is not None and not _wait_until(lambda: self._gone(previous), KILL_TIMEOUT_S):
            raise ClusterError(f"{record.name}: its previous process (pid {previous}) is still exiting")
        record.command = record.command_for(self._find(records, CONTROL_PLANE).address)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(record.port_file)
        Path(record.data_dir).mkdir(parents=True, exist_ok=True)
        Path(record.log_file).parent.mkdir(parents=True, exist_ok=True)
        with open(record.log_file, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- sixfold launcher {stamp}: starting {record.name}: {' '.join(record.command)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                record.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        self._popen[child.pid] = child
        record.pid = child.pid
        return child

    def _wait_serving(
        self, record: ProcessRecord, child: subprocess.Popen[bytes], deadline: float, timeout_s: float
    ) -> int:
        """Wait for the port file and a SERVING health check; return the bound port."""
        port = 0
        while time.monotonic() < deadline:
            if child.poll() is not None:
                self._popen.pop(child.pid, None)
                raise self._startup_error(record, f"exited with code {child.returncode} during start-up")
            port = port or self._read_port(record.port_file)
            if port and health_check(f"{HOST}:{port}", self._probe_timeout(deadline)) == "SERVING":
                return port
            time.sleep(POLL_INTERVAL_S)
        what = "did not write its port file" if not port else f"did not answer the health check on {HOST}:{port}"
        raise self._startup_error(record, f"{what} within {timeout_s:g} s")

    @staticmethod
    def _probe_timeout(deadline: float) -> float:
        return max(POLL_INTERVAL_S, min(HEALTH_RPC_TIMEOUT_S, deadline - time.monotonic()))

    @staticmethod
    def _read_port(port_file: str) -> int:
        try:
            text = Path(port_file).read_text().strip()
        except FileNotFoundError:
            return 0
        return int(text) if text.isdigit() else 0

    @staticmethod
    def _startup_error(record: ProcessRecord, what: str) -> ClusterError:
        return ClusterError(
            f"{_label(record)} (pid {record.pid}) {what}; log: {record.log_file}\n"
            f"--- last lines of {record.log_file} ---\n{_tail(record.log_file)}"
        )

    def _wait_registered(self, records: list[ProcessRecord]) -> None:
        """Wait until the control plane lists every running node as healthy."""
        expected = {r.name for r in records if r.role == STORAGE_NODE and self._state_of(r) == RUNNING}
        address = self._find(records, CONTROL_PLANE).address
        seen: set[str] = set()

        def all_registered() -> bool:
            nonlocal seen
            with contextlib.suppress(grpc.RpcError):
                nodes, _, _ = _list_nodes(address)
                seen = {n.node_id for n in nodes if n.health == "healthy"}
            return expected <= seen

        if not _wait_until(all_registered, REGISTRATION_TIMEOUT_S):
            missing = ", ".join(sorted(expected - seen))
            cp = self._find(records, CONTROL_PLANE)
            raise ClusterError(
                f"the control plane at {address} does not list node(s) {missing} as healthy after "
                f"{REGISTRATION_TIMEOUT_S:g} s; see {cp.log_file} and the nodes' logs under {self.state_dir / 'logs'}"
            )

    # down / stop / kill / pause / resume / start

    def down(self, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop every recorded process (SIGTERM, then SIGKILL after `timeout_s`); return the names stopped."""
        if not self.exists():
            self._kill_own_children()
            return []
        with self._locked():
            state = self._load()
            names = [r.name for r in state.processes]
            stopped = self._stop_names(state, names, timeout_s)
        self._kill_own_children()
        return stopped

    def _stop_names(self, state: ClusterState, names: list[str], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop `names`: the compute node first, then all the others at once; mark them stopped.

        The compute node goes first so that it never runs without its storage (and has nothing to
        complain about in its log); each group gets SIGTERM, `timeout_s`, then SIGKILL.
        """
        targets = [r for r in state.processes if r.name in names]
        live = [r for r in targets if self._alive(r)]
        for group in ([r for r in live if r.role == COMPUTE], [r for r in live if r.role != COMPUTE]):
            self._terminate(group, timeout_s)
        for record in targets:
            record.pid = None
        self._save(state)
        return [r.name for r in live]

    def _terminate(self, live: list[ProcessRecord], timeout_s: float) -> None:
        """SIGTERM (+SIGCONT) every process of `live` at once, wait up to `timeout_s`, SIGKILL the rest."""
        if not live:
            return
        for record in live:
            assert record.pid is not None
            _send(record.pid, signal.SIGTERM)
            _send(record.pid, signal.SIGCONT)  # a paused process must run to handle SIGTERM
        pids = [r.pid for r in live if r.pid is not None]
        if not _wait_until(lambda: all(self._gone(pid) for pid in pids), timeout_s):
            for record in live:
                if self._alive(record):
                    assert record.pid is not None
                    _send(record.pid, signal.SIGKILL)
            _wait_until(lambda: all(self._gone(pid) for pid in pids), KILL_TIMEOUT_S)

    def _kill_own_children(self) -> None:
        """Last resort: SIGKILL any child this object started that is somehow still running."""
        for pid, child in list(self._popen.items()):
            if child.poll() is None:
                _send(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(KILL_TIMEOUT_S)
            self._popen.pop(pid, None)

    def stop(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop one process gracefully (SIGTERM, wait, SIGKILL after `timeout_s`). False if it was not running."""
        with self._locked():
            state = self._load()
            self._find(state.processes, node)
            return bool(self._stop_names(state, [node], timeout_s))

    def kill(self, node: str) -> int:
        """SIGKILL one process and wait until it is gone; return its PID. Its PID stays recorded (state 'dead')."""
        with self._locked():
            pid = self._running_record(node).pid
            assert pid is not None
            _send(pid, signal.SIGKILL)
            if not _wait_until(lambda: self._gone(pid), KILL_TIMEOUT_S):
                raise ClusterError(f"{node} (pid {pid}) is still alive {KILL_TIMEOUT_S:g} s after SIGKILL")
            return pid

    def pause(self, node: str) -> int:
        """SIGSTOP one process and wait until /proc shows it stopped; return its PID."""
        return self._signal_and_wait(node, signal.SIGSTOP, want_paused=True)

    def resume(self, node: str) -> int:
        """SIGCONT one process and wait until /proc shows it running again; return its PID."""
        return self._signal_and_wait(node, signal.SIGCONT, want_paused=False)

    def _signal_and_wait(self, node: str, sig: signal.Signals, want_paused: bool) -> int:
        with self._locked():
            record = self._running_record(node)
            pid = record.pid
            assert pid is not None
            _send(pid, sig)
            if not _wait_until(lambda: (_proc_state(pid) == "T") == want_paused, SIGNAL_STATE_TIMEOUT_S):
                raise ClusterError(f"{node} (pid {pid}) did not change state after {sig.name}")
            return pid

    def _running_record(self, node: str) -> ProcessRecord:
        record = self.record(node)
        if not self._alive(record):
            state = self._state_of(record)
            raise ClusterError(f"{node} is not running (state: {state}); start it with `sixfold start {node}`")
        return record

    def start(self, node: str, *, new_port: bool = False) -> bool:
        """Start one stopped or dead process again: same arguments and data, and the same port unless
        `new_port` (any free one: a storage node registers its new address, and writers and peers follow).
        False if already running."""
        with self._locked():
            state = self._load()
            record = self._find(state.processes, node)
            if self._alive(record):
                return False
            if new_port:
                record.port = 0
            started: list[str] = []
            try:
                self._start_in_order(state, [record], started)
            except BaseException:
                self._stop_names(state, started)
                raise
            return True

    # status

    def _state_of(self, record: ProcessRecord) -> str:
        if record.pid is None:
            return STOPPED
        if not self._alive(record):
            return DEAD
        return PAUSED if _proc_state(record.pid) == "T" else RUNNING

    def status(self) -> ClusterStatus:
        """Every process: state from /proc, health and segments / node list / volumes over gRPC (short timeouts)."""
        return ClusterStatus(str(self.state_dir), [self._process_status(r) for r in self.records()])

    def _process_status(self, record: ProcessRecord) -> ProcessStatus:
        state = self._state_of(record)
        status = ProcessStatus(
            name=record.name,
            role=record.role,
            az=record.az,
            spare=record.spare,
            address=record.address,
            pid=record.pid if state in (RUNNING, PAUSED) else None,
            state=state,
            health="-",
            log_file=record.log_file,
            data_dir=record.data_dir,
        )
        if state != RUNNING:  # a paused process would only time out
            return status
        status.health = health_check(record.address, STATUS_RPC_TIMEOUT_S)
        try:
            if record.role == STORAGE_NODE:
                status.segments, status.disk, status.disk_detail, status.lost_segments = _list_segments(record.address)
            elif record.role == COMPUTE:
                status.volumes = _list_volumes(record.address)
            else:
                status.nodes, status.volume_count, status.changes = _list_nodes(record.address)
        except grpc.RpcError as exc:
            status.error = f"{exc.code().name}: {exc.details()}"
        return status

    # logs

    def log_files(self) -> dict[str, Path]:
        return {r.name: Path(r.log_file) for r in self.records()}

    def log_errors(self, allowed: Sequence[str] = ()) -> list[str]:
        """Log lines with ' ERROR ' or 'Traceback', as 'name:line: text'.

        Lines containing one of the `allowed` substrings are left out.
        """
        found: list[str] = []
        for name, path in self.log_files().items():
            if not path.exists():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if any(m in line for m in LOG_ERROR_MARKERS) and not any(a in line for a in allowed):
                    found.append(f"{name}:{number}: {line}")
        return found
