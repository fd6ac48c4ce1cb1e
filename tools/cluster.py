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

Only `up` creates the state directory; any other command on a directory without
a cluster fails before leaving anything behind (no directory, no lock file).

Processes run `python -m sixfold.tools.cli control-plane|storage-node|compute ...` in
their own session. The first start binds port 0 and reads the chosen port from
the port file; every restart passes the recorded port, so addresses never change.

Start order: the control plane; then the storage nodes, until the control plane
lists each of them as healthy; then the compute node (the writer, process name
`compute`), which creates its default volume on first start and opens it
(recovery) on every start before it reports SERVING; then its read replicas
(`replica1..N`, tools/cluster_replicas.py). `down` stops the compute instances
first, so they never see their storage disappear under them.

This module is the adapter that carries the launcher's decisions out. The parts:
tools/cluster_layout.py (what the cluster is, and the rules deciding what to start,
stop, and on which port), tools/cluster_status.py (what `status` reports and the sentences
for what it cannot read), tools/cluster_processes.py (launching, signalling and waiting),
tools/cluster_os.py (/proc, signals, files), tools/cluster_probes.py (gRPC). Their public
names are importable from here as well.

    with Cluster(tmp_path / "cluster") as cluster:   # __exit__ always runs down()
        cluster.up()
        cluster.kill("a1")
        cluster.start("a1")                            # same address, same data
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from sixfold.storage.security import transport
from sixfold.tools.cluster_instances import fill_instances
from sixfold.tools.cluster_layout import (
    COMPUTE,
    CONTROL_PLANE,
    DEAD,
    DEFAULT_AZS,
    DEFAULT_NODES_PER_AZ,
    DEFAULT_VOLUME,
    HOST,
    LOCK_FILE,
    PAUSED,
    PROJECT_ROOT,
    RUNNING,
    STATE_FILE,
    STATE_VERSION,
    STOPPED,
    STORAGE_NODE,
    ClusterError,
    ClusterState,
    NoClusterError,
    ProcessRecord,
    UnknownProcessError,
    find,
    new_layout,
    no_cluster,
    port_for_start,
    start_plan,
    stop_groups,
)
from sixfold.tools.cluster_os import locked, wait_until, write_atomically
from sixfold.tools.cluster_probes import health_check, list_nodes, process_status
from sixfold.tools.cluster_processes import ProcessTable
from sixfold.tools.cluster_status import (
    ChangeInfo,
    ClusterStatus,
    NodeHealthInfo,
    ProcessStatus,
    SegmentInfo,
    UpResult,
    VolumeInfo,
)
from sixfold.tools.cluster_tls import act_as_client_of, secure_layout

__all__ = [  # the names importers use, wherever they now live
    "COMPUTE",
    "CONTROL_PLANE",
    "DEAD",
    "DEFAULT_AZS",
    "DEFAULT_NODES_PER_AZ",
    "DEFAULT_VOLUME",
    "HOST",
    "LOCK_FILE",
    "PAUSED",
    "PROJECT_ROOT",
    "RUNNING",
    "STATE_FILE",
    "STATE_VERSION",
    "STOPPED",
    "STORAGE_NODE",
    "ChangeInfo",
    "Cluster",
    "ClusterError",
    "ClusterState",
    "ClusterStatus",
    "NoClusterError",
    "NodeHealthInfo",
    "ProcessRecord",
    "ProcessStatus",
    "SegmentInfo",
    "UnknownProcessError",
    "UpResult",
    "VolumeInfo",
    "health_check",
]

STARTUP_TIMEOUT_S = 30.0  # from launch until the process answers its health check
COMPUTE_STARTUP_TIMEOUT_S = 60.0  # the compute node's start-up includes creating/opening (recovering) its volume
REGISTRATION_TIMEOUT_S = 30.0  # until the control plane lists every node as healthy
STOP_TIMEOUT_S = 10.0  # SIGTERM -> exit, before SIGKILL
# Log lines that count as errors for `Cluster.log_errors`.
LOG_ERROR_MARKERS: tuple[str, ...] = (" ERROR ", "Traceback")


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
        self._processes = ProcessTable()

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
            raise no_cluster(self.state_dir) from None
        state = ClusterState.from_json(text)
        if state.layout.get("tls"):
            act_as_client_of(self.state_dir)
        elif transport.current() is not None:
            transport.use(None)
        return state

    def _save(self, state: ClusterState) -> None:
        write_atomically(self.state_file, state.to_json())

    @contextlib.contextmanager
    def _locked(self, *, create: bool = False) -> Iterator[None]:
        """Hold the state dir's lock. Only `create` (for `up`) makes the directory; without a cluster
        there, any other command fails here, leaving nothing behind."""
        if create:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        elif not self.exists():
            raise no_cluster(self.state_dir)
        with locked(self.state_dir):
            yield

    def records(self) -> list[ProcessRecord]:
        """Every process in start order: the control plane, the storage nodes, the compute node (if any)."""
        return self._load().processes

    def names(self) -> list[str]:
        return [p.name for p in self.records()]

    def node_names(self) -> list[str]:
        return [p.name for p in self.records() if p.role == STORAGE_NODE]

    def record(self, name: str) -> ProcessRecord:
        return find(self.records(), name)

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

    def insecure(self) -> bool:
        """The cluster runs plaintext, without certificates (`sixfold up --insecure`)."""
        return not self._load().layout.get("tls")

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
        return self._processes.alive(record)

    def _state_of(self, record: ProcessRecord) -> str:
        """tools/cluster_layout.py rule 5: running, paused, stopped or dead."""
        return self._processes.state_of(record)

    # up

    def up(
        self,
        azs: Sequence[str] = DEFAULT_AZS,
        nodes_per_az: int = DEFAULT_NODES_PER_AZ,
        spares: int = 0,
        *,
        lmdb_map_mib: int | None = None,
        node_flags: Sequence[str] = (),
        compute_flags: Sequence[str] = (),
        heartbeat_timeout_ms: int | None = None,
        failure_timeout_ms: int | None = None,
        wait_registered: bool = True,
        compute: bool = True,
        default_volume: str = DEFAULT_VOLUME,
        replicas: int = 0,
        tls: bool = True,
        insecure: bool = False,
    ) -> UpResult:
        """Start the cluster: the control plane, then every node, each waited for until healthy,
        then (with `compute`) the compute node, which creates `default_volume` if needed and opens it,
        then `replicas` read replicas (replica1..N) of it.

        A new cluster uses mutual TLS (tools/cluster_tls.py) unless `insecure` (or `tls=False`): plaintext,
        no certificates, for a throwaway local cluster only (`sixfold up --insecure` says so loudly).

        On a state dir that already holds a cluster, the recorded layout is kept (the
        arguments are ignored): processes that are not running are restarted with their
        data and ports; if all are running nothing is done (`already_running`).
        If any process fails to come up, the ones this call started are stopped again.
        """
        with self._locked(create=True):
            if not self.exists():
                state = new_layout(
                    self.state_dir,
                    azs,
                    nodes_per_az,
                    spares,
                    lmdb_map_mib,
                    heartbeat_timeout_ms,
                    default_volume if compute else None,
                    failure_timeout_ms,
                    node_flags,
                    replicas,
                    compute_flags,
                )
                if tls and not insecure:
                    secure_layout(state, self.state_dir)  # mutual TLS: tools/cluster_tls.py
                for sub in ("logs", "data", "run"):
                    (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
                for record in state.processes:
                    Path(record.data_dir).mkdir(parents=True, exist_ok=True)
                self._save(state)
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

    def _start_in_order(
        self, state: ClusterState, to_start: list[ProcessRecord], started: list[str], *, wait_registered: bool = False
    ) -> None:
        """Start the processes in the order of tools/cluster_layout.py rule 2."""
        plan = start_plan(to_start, wait_registered)
        self._start_batch(state, plan.control_plane, started, self.startup_timeout_s)
        self._start_batch(state, plan.storage_nodes, started, self.startup_timeout_s)
        if plan.wait_registered:
            self._wait_registered(state.processes)
        self._start_batch(state, plan.compute, started, self.compute_startup_timeout_s)
        self._start_batch(state, plan.replicas, started, self.compute_startup_timeout_s)

    def _start_batch(
        self, state: ClusterState, batch: list[ProcessRecord], started: list[str], timeout_s: float
    ) -> None:
        """Launch every process of `batch` at once, then wait until each serves (one deadline for all)."""
        if not batch:
            return
        control_plane_address = find(state.processes, CONTROL_PLANE).address
        children = {r.name: self._processes.launch(r, control_plane_address) for r in batch}
        started.extend(children)
        self._save(state)
        deadline = time.monotonic() + timeout_s
        for record in batch:
            record.port = self._processes.wait_serving(record, children[record.name], deadline, timeout_s)
            self._save(state)

    def _wait_registered(self, records: list[ProcessRecord]) -> None:
        """Wait until the control plane lists every running node as healthy."""
        expected = {r.name for r in records if r.role == STORAGE_NODE and self._state_of(r) == RUNNING}
        control_plane = find(records, CONTROL_PLANE)
        seen: set[str] = set()

        def all_registered() -> bool:
            nonlocal seen
            with contextlib.suppress(grpc.RpcError):
                nodes, _, _ = list_nodes(control_plane.address)
                seen = {n.node_id for n in nodes if n.health == "healthy"}
            return expected <= seen

        if not wait_until(all_registered, REGISTRATION_TIMEOUT_S):
            missing = ", ".join(sorted(expected - seen))
            raise ClusterError(
                f"the control plane at {control_plane.address} does not list node(s) {missing} as healthy after "
                f"{REGISTRATION_TIMEOUT_S:g} s; see {control_plane.log_file} and the nodes' logs under "
                f"{self.state_dir / 'logs'}"
            )

    # down / stop / kill / pause / resume / start

    def down(self, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop every recorded process (SIGTERM, then SIGKILL after `timeout_s`); return the names stopped."""
        if not self.exists():
            self._processes.kill_own_children()
            return []
        with self._locked():
            state = self._load()
            names = [r.name for r in state.processes]
            stopped = self._stop_names(state, names, timeout_s)
        self._processes.kill_own_children()
        return stopped

    def _stop_names(self, state: ClusterState, names: list[str], timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
        """Stop `names` in the order of tools/cluster_layout.py rule 3 and mark them stopped; each group gets
        SIGTERM, `timeout_s`, then SIGKILL."""
        targets = [r for r in state.processes if r.name in names]
        live = [r for r in targets if self._alive(r)]
        for group in stop_groups(live):
            self._processes.terminate(group, timeout_s)
        for record in targets:
            record.pid = None
        self._save(state)
        return [r.name for r in live]

    def stop(self, node: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop one process gracefully (SIGTERM, wait, SIGKILL after `timeout_s`). False if it was not running."""
        with self._locked():
            state = self._load()
            find(state.processes, node)
            return bool(self._stop_names(state, [node], timeout_s))

    def kill(self, node: str) -> int:
        """SIGKILL one process and wait until it is gone; return its PID. Its PID stays recorded (state 'dead')."""
        with self._locked():
            pid = self._running_record(node).pid
            assert pid is not None
            self._processes.kill(node, pid)
            return pid

    def pause(self, node: str) -> int:
        """SIGSTOP one process and wait until /proc shows it stopped; return its PID."""
        return self._signal_and_wait(node, signal.SIGSTOP, want_paused=True)

    def resume(self, node: str) -> int:
        """SIGCONT one process and wait until /proc shows it running again; return its PID."""
        return self._signal_and_wait(node, signal.SIGCONT, want_paused=False)

    def _signal_and_wait(self, node: str, sig: signal.Signals, want_paused: bool) -> int:
        with self._locked():
            pid = self._running_record(node).pid
            assert pid is not None
            self._processes.signal_and_wait(node, pid, sig, want_paused)
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
            record = find(state.processes, node)
            if self._alive(record):
                return False
            record.port = port_for_start(record, new_port)
            started: list[str] = []
            try:
                self._start_in_order(state, [record], started)
            except BaseException:
                self._stop_names(state, started)
                raise
            return True

    # status

    def status(self) -> ClusterStatus:
        """Every process: state from /proc, health and segments / node list / volumes over gRPC (short timeouts);
        what cannot be read is a sentence (tools/cluster_status.py)."""
        records = self.records()
        statuses: dict[str, ProcessStatus] = {}
        control_plane: tuple[ProcessRecord, ProcessStatus] | None = None
        for record in records:  # in start order: the control plane first, whose status the others may need
            statuses[record.name] = process_status(record, self._state_of(record), control_plane)
            if record.role == CONTROL_PLANE:
                control_plane = (record, statuses[record.name])
        status = ClusterStatus(str(self.state_dir), [statuses[r.name] for r in records])
        status.insecure = self.insecure()
        fill_instances(status, records, control_plane[0] if control_plane else None)  # the writer and readers
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
