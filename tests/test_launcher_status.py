"""`sixfold status` where it used to trip a newcomer (issue 11): on a directory without a cluster it
leaves nothing behind, and with the control plane down it says in a sentence what it cannot show,
never a traceback or a raw gRPC error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sixfold.tools.cluster import COMPUTE, CONTROL_PLANE, DEFAULT_VOLUME, LOCK_FILE, Cluster
from sixfold.tools.cluster_status import INSECURE_WARNING
from tests.polling import wait_until
from tests.test_launcher import cli_status, sixfold, sixfold_ok

RECONNECT_S = 30.0

pytestmark = pytest.mark.integration

RAW_ERRORS = ("Traceback", "AioRpcError", "DEADLINE_EXCEEDED", "UNKNOWN:", "_InactiveRpcError", "error:")


@pytest.mark.parametrize("existing", [False, True], ids=["new dir", "empty dir"])
def test_commands_on_a_dir_without_a_cluster_leave_no_lock_behind(tmp_path: Path, existing: bool) -> None:
    state_dir = tmp_path / "nothing"
    if existing:
        state_dir.mkdir()
    for command in (["status"], ["status", "--json"], ["kill", "a1"], ["start", "a1"], ["pause", "a1"]):
        result = sixfold(state_dir, *command)
        assert result.returncode == 1 and "sixfold up" in result.stderr, (command, result.stderr)
    assert state_dir.exists() == existing
    assert not (state_dir / LOCK_FILE).exists()


def rows(table: str) -> dict[str, str]:
    """The process table's lines by process name (the first word), up to the blank line before the compute
    instances' section."""
    lines = table.split("\n\n", 1)[0].splitlines()
    return {line.split()[0]: line for line in lines if line.strip()}


def test_status_with_the_control_plane_down_says_what_it_cannot_show(cluster_dir: Path) -> None:
    sixfold_ok(cluster_dir, "up")
    address = cli_status(cluster_dir)[CONTROL_PLANE]["address"]
    unknown_volumes = f"control plane not answering at {address} — volumes unknown"

    # Paused (SIGSTOP): the process is there but answers nothing.
    sixfold_ok(cluster_dir, "pause", CONTROL_PLANE)
    result = sixfold(cluster_dir, "status")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    table = rows(result.stdout)
    assert "nodes and volumes unknown while paused (`sixfold resume control-plane`)" in table[CONTROL_PLANE]
    assert unknown_volumes in table[COMPUTE], result.stdout
    assert "SERVING" in table[COMPUTE] and "1 segments" in table["a1"]  # the others still answer for themselves
    assert not any(raw in result.stdout for raw in RAW_ERRORS), result.stdout
    assert cli_status(cluster_dir)[COMPUTE]["error"] == unknown_volumes
    sixfold_ok(cluster_dir, "resume", CONTROL_PLANE)

    # Stopped: nobody listens at its address any more.
    sixfold_ok(cluster_dir, "stop", CONTROL_PLANE)
    result = sixfold(cluster_dir, "status")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    table = rows(result.stdout)
    assert "stopped" in table[CONTROL_PLANE] and unknown_volumes in table[COMPUTE], result.stdout
    assert not any(raw in result.stdout for raw in RAW_ERRORS), result.stdout

    # Back: every column shows its details again, once the others have reconnected (the compute node's channel
    # to the control plane comes back after gRPC's reconnect backoff, up to a few seconds on a loaded machine).
    sixfold_ok(cluster_dir, "start", CONTROL_PLANE)

    def settled() -> dict[str, Any]:
        status = cli_status(cluster_dir)
        return status if all(p["error"] == "" for p in status.values()) else {}

    status = wait_until(settled, RECONNECT_S, "every process's status details after the control plane restarts")
    assert [v["volume_id"] for v in status[COMPUTE]["volumes"]] == [DEFAULT_VOLUME]


def test_an_insecure_cluster_is_announced_loudly_and_the_default_is_mutual_tls(cluster_dir: Path) -> None:
    """Issue 16: TLS is the default; `up --insecure` starts plaintext, and `up` and `status` say so on stderr."""
    result = sixfold(cluster_dir, "up", "--insecure", "--no-compute")
    assert result.returncode == 0, result.stderr
    assert INSECURE_WARNING in result.stderr and "WARNING: INSECURE CLUSTER" in result.stderr, result.stderr
    assert not (cluster_dir / "tls").exists()
    result = sixfold(cluster_dir, "status")
    assert result.returncode == 0 and INSECURE_WARNING in result.stderr, result.stderr
    assert "SERVING" in rows(result.stdout)["a1"]
    assert cli_status(cluster_dir)["a1"]["state"] == "running"
    sixfold_ok(cluster_dir, "down")


def test_up_makes_a_mutual_tls_cluster_by_default(tmp_path: Path) -> None:
    """The default layout (no flag, and the old `--tls` alias) has the cluster CA and a certificate per process,
    and `status` warns about nothing."""
    for flags in ([], ["--tls"]):
        state_dir = tmp_path / f"cluster{len(flags)}"
        with Cluster(state_dir):  # stops every process by PID afterwards, also when an assertion fails
            result = sixfold(state_dir, "up", "--no-compute", *flags)
            assert result.returncode == 0 and "INSECURE" not in result.stderr, result.stderr
            assert (state_dir / "tls" / "ca.pem").exists() and (state_dir / "tls" / "a1.key").exists()
            result = sixfold(state_dir, "status")
            assert result.returncode == 0 and result.stderr == "", result.stderr
            assert "SERVING" in rows(result.stdout)["a1"]
