"""The launcher's contact with the operating system: /proc, signals, waiting, the state and lock files,
and launching a process in its own session with its log.

Before a PID is signalled, `is_ours` compares `/proc/PID/cmdline` with the recorded command line,
so a PID reused by an unrelated process is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from sixfold.tools.cluster_layout import LOCK_FILE, PROJECT_ROOT, ProcessRecord, port_from_file

POLL_INTERVAL_S = 0.05
LOG_TAIL_LINES = 25


def proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) S ..." -- comm may contain spaces and parentheses; the state follows the last ')'.
    return stat[stat.rfind(")") + 2 :].split(" ", 1)[0]


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]]


def is_ours(pid: int, command: Sequence[str]) -> bool:
    """True if PID is alive (not a zombie) and runs exactly the recorded command."""
    state = proc_state(pid)
    if state is None or state in ("Z", "X", "x"):
        return False
    return proc_cmdline(pid) == list(command)


def is_gone(pid: int) -> bool:
    """True once PID has fully exited (an exiting process loses its cmdline before it is gone)."""
    return proc_state(pid) in (None, "Z", "X", "x")


def send(pid: int, sig: signal.Signals) -> None:
    """Signal the process's group (it leads its own session), or the PID alone otherwise."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_INTERVAL_S)


def tail(path: str | Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return "(no log file)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def read_port(port_file: str) -> int:
    try:
        return port_from_file(Path(port_file).read_text())
    except FileNotFoundError:
        return 0


def write_atomically(path: Path, text: str) -> None:
    """A reader sees the old or the new file, never half of one."""
    tmp = path.with_suffix(f".tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(state_dir: Path) -> Iterator[None]:
    """Serialize launcher commands on `state_dir` (which must exist: the lock file is created in it)."""
    with open(state_dir / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def launch(record: ProcessRecord) -> subprocess.Popen[bytes]:
    """Start `record.command` in its own session, stdout and stderr appended to its log (after a line
    that says when and what), from the project root; its old port file removed first."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(record.port_file)
    Path(record.data_dir).mkdir(parents=True, exist_ok=True)
    Path(record.log_file).parent.mkdir(parents=True, exist_ok=True)
    with open(record.log_file, "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"--- sixfold launcher {stamp}: starting {record.name}: {' '.join(record.command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            record.command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )
