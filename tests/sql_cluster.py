"""One real cluster shared by the tests of a module (the SQL and KV integration tests), and the
`sixfold` command run against it as a subprocess.

A cluster is eight processes; starting one per module instead of one per test keeps the
integration tier affordable. It is stopped after the module and its logs are checked like the
`cluster` fixture's (tests/conftest.py): a module marker `expected_log_errors(...)` allows lines.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from sixfold.tools.cluster import PROJECT_ROOT, Cluster
from tests.conftest import check_cluster_logs

CLI_TIMEOUT_S = 60.0


@contextmanager
def module_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    local = Cluster(tmp_path_factory.mktemp("sql") / "cluster")
    with local:  # __exit__ stops every process, also when up() or a test fails
        local.up(compute=True)
        yield local
    check_cluster_logs(local, request)


def sixfold(cluster: Cluster, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`sixfold ARGS --state-dir STATE_DIR` as a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *args, "--state-dir", str(cluster.state_dir)],
        cwd=PROJECT_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )


def sixfold_ok(cluster: Cluster, *args: str, stdin: str | None = None) -> str:
    result = sixfold(cluster, *args, stdin=stdin)
    assert result.returncode == 0, (
        f"sixfold {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout
