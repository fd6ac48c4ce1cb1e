"""The launcher's own children and the recorded processes it signals: launching and waiting until a
process serves, SIGTERM-then-SIGKILL, SIGSTOP/SIGCONT with a wait for /proc to show it, and the state
of a recorded process (tools/cluster_layout.py rule 5).

An adapter (processes, signals, the health check); the decisions are tools/cluster_layout.py's.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time

from sixfold.tools.cluster_layout import HOST, ClusterError, ProcessRecord, label, process_state
from sixfold.tools.cluster_os import (
    POLL_INTERVAL_S,
    is_gone,
    is_ours,
    launch,
    proc_state,
    read_port,
    send,
    tail,
    wait_until,
)
from sixfold.tools.cluster_probes import HEALTH_RPC_TIMEOUT_S, health_check

KILL_TIMEOUT_S = 5.0  # SIGKILL -> gone
SIGNAL_STATE_TIMEOUT_S = 5.0  # SIGSTOP/SIGCONT -> /proc shows the new state


class ProcessTable:
    """The processes of one launcher object: its own children (reaped so none lingers as a zombie) and the
    recorded PIDs, signalled only while they still run the recorded command."""

    def __init__(self) -> None:
        self._popen: dict[int, subprocess.Popen[bytes]] = {}  # children of this Python process, by PID

    def alive(self, record: ProcessRecord) -> bool:
        """True if the recorded PID still runs the recorded command (safe to signal)."""
        if record.pid is None:
            return False
        self._reap(record.pid)
        return is_ours(record.pid, record.command)

    def gone(self, pid: int) -> bool:
        """True once PID has fully exited."""
        self._reap(pid)
        return is_gone(pid)

    def _reap(self, pid: int) -> None:
        """Collect the exit status of our own child so it does not linger as a zombie."""
        child = self._popen.get(pid)
        if child is not None and child.poll() is not None:
            del self._popen[pid]

    def state_of(self, record: ProcessRecord) -> str:
        alive = self.alive(record)
        return process_state(record, alive, alive and record.pid is not None and proc_state(record.pid) == "T")

    # starting

    def launch(self, record: ProcessRecord, control_plane_address: str) -> subprocess.Popen[bytes]:
        """Launch the record's process once its previous one (if any) is gone; record its command and PID."""
        previous = record.pid
        if previous is not None and not wait_until(lambda: self.gone(previous), KILL_TIMEOUT_S):
            raise ClusterError(f"{record.name}: its previous process (pid {previous}) is still exiting")
        record.command = record.command_for(control_plane_address)
        child = launch(record)
        self._popen[child.pid] = child
        record.pid = child.pid
        return child

    def wait_serving(
        self, record: ProcessRecord, child: subprocess.Popen[bytes], deadline: float, timeout_s: float
    ) -> int:
        """Wait for the port file and a SERVING health check; return the bound port."""
        port = 0
        while time.monotonic() < deadline:
            if child.poll() is not None:
                self._popen.pop(child.pid, None)
                raise startup_error(record, f"exited with code {child.returncode} during start-up")
            port = port or read_port(record.port_file)
            if port and health_check(f"{HOST}:{port}", _probe_timeout(deadline)) == "SERVING":
                return port
            time.sleep(POLL_INTERVAL_S)
        what = "did not write its port file" if not port else f"did not answer the health check on {HOST}:{port}"
        raise startup_error(record, f"{what} within {timeout_s:g} s")

    # stopping and signalling

    def terminate(self, live: list[ProcessRecord], timeout_s: float) -> None:
        """SIGTERM (+SIGCONT) every process of `live` at once, wait up to `timeout_s`, SIGKILL the rest."""
        if not live:
            return
        for record in live:
            assert record.pid is not None
            send(record.pid, signal.SIGTERM)
            send(record.pid, signal.SIGCONT)  # a paused process must run to handle SIGTERM
        pids = [r.pid for r in live if r.pid is not None]
        if not wait_until(lambda: all(self.gone(pid) for pid in pids), timeout_s):
            for record in live:
                if self.alive(record):
                    assert record.pid is not None
                    send(record.pid, signal.SIGKILL)
            wait_until(lambda: all(self.gone(pid) for pid in pids), KILL_TIMEOUT_S)

    def kill(self, name: str, pid: int) -> None:
        """SIGKILL and wait until the process is gone."""
        send(pid, signal.SIGKILL)
        if not wait_until(lambda: self.gone(pid), KILL_TIMEOUT_S):
            raise ClusterError(f"{name} (pid {pid}) is still alive {KILL_TIMEOUT_S:g} s after SIGKILL")

    def signal_and_wait(self, name: str, pid: int, sig: signal.Signals, want_paused: bool) -> None:
        """SIGSTOP or SIGCONT, and wait until /proc shows the process stopped (or running again)."""
        send(pid, sig)
        if not wait_until(lambda: (proc_state(pid) == "T") == want_paused, SIGNAL_STATE_TIMEOUT_S):
            raise ClusterError(f"{name} (pid {pid}) did not change state after {sig.name}")

    def kill_own_children(self) -> None:
        """Last resort: SIGKILL any child this object started that is somehow still running."""
        for pid, child in list(self._popen.items()):
            if child.poll() is None:
                send(pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(KILL_TIMEOUT_S)
            self._popen.pop(pid, None)


def _probe_timeout(deadline: float) -> float:
    return max(POLL_INTERVAL_S, min(HEALTH_RPC_TIMEOUT_S, deadline - time.monotonic()))


def startup_error(record: ProcessRecord, what: str) -> ClusterError:
    return ClusterError(
        f"{label(record)} (pid {record.pid}) {what}; log: {record.log_file}\n"
        f"--- last lines of {record.log_file} ---\n{tail(record.log_file)}"
    )
