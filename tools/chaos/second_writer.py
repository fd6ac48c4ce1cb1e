"""A second writer for a chaos run: another `sixfold compute` process opening the same volume,
which fences the cluster's writer. Started and stopped here by PID (its own session). On a TLS cluster it
presents the writer's certificate (`compute`, from the cluster's tls dir) and checks tokens with the cluster's
key, as a second writer would (`security_args`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sixfold.tools.cluster import COMPUTE, PROJECT_ROOT, Cluster, health_check

SECOND_WRITER_OPEN_TIMEOUT_S = 60.0
SECOND_WRITER_STOP_TIMEOUT_S = 10.0


# The flags of the cluster's compute process that make another compute process one of the cluster's (its
# certificate, the token verify key, the key service): each takes one value.
SECURITY_FLAGS = ("--tls-dir", "--token-verify-key", "--kms")


def security_args(cluster: Cluster) -> list[str]:
    """`SECURITY_FLAGS` with their values as the cluster's compute process has them (none on --insecure)."""
    args = cluster.record(COMPUTE).args
    return [x for i, flag in enumerate(args[:-1]) if flag in SECURITY_FLAGS for x in (flag, args[i + 1])]


class SecondWriter:
    """Another compute process for the same volume: opening it fences the cluster's writer."""

    def __init__(self, cluster: Cluster, out_dir: Path, volume: str) -> None:
        self.cluster = cluster
        self.volume = volume
        self.port_file = out_dir / "run" / "compute-new.port"
        self.log_file = out_dir / "logs" / "compute-new.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> None:
        self.port_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.port_file.unlink()
        command = [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "compute",
            "--control-plane",
            self.cluster.control_plane_address(),
            "--port-file",
            str(self.port_file),
            "--default-volume",
            self.volume,
        ]
        command += security_args(self.cluster)
        with open(self.log_file, "ab") as log:
            log.write(f"--- chaos runner: starting a second writer: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )

    def wait_open(self, timeout_s: float = SECOND_WRITER_OPEN_TIMEOUT_S) -> str:
        """Until the new writer serves (it reports SERVING only once it opened the volume); its address."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the second writer exited with code {self.process.returncode}; see {self.log_file}")
            text = self.port_file.read_text().strip() if self.port_file.exists() else ""
            if text.isdigit():
                address = f"127.0.0.1:{text}"
                if health_check(address, 1.0) == "SERVING":
                    self.address = address
                    return address
            time.sleep(0.05)
        raise RuntimeError(f"the second writer did not open volume {self.volume} within {timeout_s:g} s")

    def stop(self) -> None:
        """SIGTERM by PID (its own session), SIGKILL after a timeout."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(SECOND_WRITER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
