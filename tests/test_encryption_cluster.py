"""Encryption at rest on a real cluster started by the launcher with its default (secure) layout (issue 16,
item 4): a marker written through SQL and through `sixfold volume write` is read back, yet appears in no file
of any process's data dir; the master key file lies outside them (0600); `sixfold volume rotate-key`
rewraps the key and every segment takes it; a storage node restarted gets its keys from the key service and
serves again; with the key service gone, writes fail once the nodes' key leases run out, saying the key
service is why (never stored in clear instead), and work again once it is back.

One cluster for the whole test; the `cluster` fixture stops it by PID even when the test fails."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sixfold.tools.cluster import Cluster
from sixfold.tools.cluster_tls import KMS_SUBDIR, MASTER_KEY_FILE
from tests.polling import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.cluster_options(node_flags=["--key-lease-s", "2"]),
]

SQL_MARKER = "MARKER-sql-5e1f0c7a9b"
PAGE_MARKER = "MARKER-page-3c9d27e8a4"
CALL_S = 60


def sixfold(cluster: Cluster, *args: str, timeout_s: float = CALL_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "--state-dir", str(cluster.state_dir), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def ok(cluster: Cluster, *args: str) -> str:
    done = sixfold(cluster, *args)
    assert done.returncode == 0, f"sixfold {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def files_holding(root: Path, needle: bytes) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            found.append(str(path))
    return found


def test_markers_are_read_back_but_stored_nowhere_in_clear_and_writes_stop_without_the_key_service(
    cluster: Cluster,
) -> None:
    ok(cluster, "sql", "CREATE TABLE secrets(id INTEGER PRIMARY KEY, body TEXT)")
    ok(cluster, "sql", f"INSERT INTO secrets(body) VALUES ('{SQL_MARKER}')")
    ok(cluster, "volume", "create", "pages")
    ok(cluster, "volume", "write", "pages", "7", "--text", PAGE_MARKER)
    assert SQL_MARKER in ok(cluster, "sql", "SELECT body FROM secrets")
    assert PAGE_MARKER in ok(cluster, "volume", "read", "pages", "7")

    data = cluster.state_dir / "data"
    for marker in (SQL_MARKER, PAGE_MARKER):
        assert files_holding(data, marker.encode()) == [], f"{marker} is stored in clear"
    key_file = cluster.state_dir / KMS_SUBDIR / MASTER_KEY_FILE
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert not key_file.resolve().is_relative_to(data.resolve()), "the master key lies in a data dir"

    rotated = ok(cluster, "volume", "rotate-key", "vol0")
    assert "6 segments took the new wrapping" in rotated, rotated
    cluster.stop("a1")
    cluster.start("a1")  # unwraps its segments' keys through the key service again before it serves
    ok(cluster, "sql", "INSERT INTO secrets(body) VALUES ('after rotation and restart')")
    assert SQL_MARKER in ok(cluster, "sql", "SELECT body FROM secrets ORDER BY id")

    cluster.stop("kms")

    def refused() -> subprocess.CompletedProcess[str] | None:
        done = sixfold(cluster, "sql", "INSERT INTO secrets(body) VALUES ('no key service')", "--timeout", "10")
        return done if done.returncode != 0 else None

    failed = wait_until(refused, timeout_s=60, what="a write refused once the key leases ran out")
    assert failed is not None
    assert "key service" in failed.stderr and "not at hand" in failed.stderr, failed.stderr

    cluster.start("kms")
    ok(cluster, "sql", "INSERT INTO secrets(body) VALUES ('the key service is back')")
    assert "the key service is back" in ok(cluster, "sql", "SELECT body FROM secrets")
    for marker in (SQL_MARKER, PAGE_MARKER):
        assert files_holding(data, marker.encode()) == [], f"{marker} is stored in clear"
