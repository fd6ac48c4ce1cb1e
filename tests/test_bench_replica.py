"""`sixfold bench replica` and `sixfold bench failover` still run end to end through the CLI and print every
figure they promise (tiny settings; no timing is asserted: the figures are printed, not judged).

Each bench starts its own cluster in a temporary directory, here under the test's tmp_path (TMPDIR), kept
(`--keep`) so that the test can stop every recorded process by PID afterwards, also when the bench failed
or timed out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sixfold.tools.cluster import Cluster

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
NUMBER = r"[\d,]+(?:\.\d+)?"


def bench(tmp_path: Path, *args: str, timeout_s: float = 300) -> str:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sixfold.tools.cli", "bench", *args, "--keep"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    finally:
        for state_dir in tmp_path.glob("sixfold-bench-*/cluster"):
            Cluster(state_dir).down()  # by the PIDs cluster.json records (a no-op after a clean run)
    print(done.stdout[-4000:])
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def value(pattern: str, out: str) -> float:
    found = re.search(pattern, out, re.MULTILINE)
    assert found, f"no match for {pattern!r}"
    return float(found.group(1).replace(",", ""))


def test_bench_replica_prints_reader_lag_and_read_throughput_with_ratios(tmp_path: Path) -> None:
    out = bench(
        tmp_path, "replica", "--duration", "1", "--rows", "300", "--concurrency", "4", "--read-concurrency", "4"
    )
    assert value(rf"^reader lag under c=4 autocommit INSERTs on compute: ({NUMBER}) commits/s", out) > 0
    assert value(r"^probe: (\d+) markers committed on the writer", out) > 0
    for reader in ("replica1", "replica2", "overall"):
        row = rf"^\s+{reader} \|\s+({NUMBER}) ms\s+{NUMBER} ms\s+{NUMBER} ms"
        assert value(row, out) >= 0, reader
    for reader in ("replica1", "replica2"):
        own = rf"^\s+{reader} \|.*\|\s+{NUMBER} ms\s+{NUMBER} ms\s+{NUMBER} ms \|\s+({NUMBER})\s+\d+$"
        assert value(own, out) >= 0, f"{reader}: no instance-reported lag or VDL gap"
    assert re.search(rf"aim lag p99 <= 20 ms: probe .* p99 {NUMBER} ms; instances' own .* p99 {NUMBER} ms", out)
    assert re.search(r"at the end: writer VDL [\d,]+; applied VDL replica1 [\d,]+, replica2 [\d,]+", out)
    for serving in (r"writer \(compute\)", r"1 reader \(replica1\)", "2 readers", "local SQLite"):
        rate = value(rf"^\s+{serving} \|\s+({NUMBER})\s+{NUMBER}\s+{NUMBER} \|\s+{NUMBER}x \| bench", out)
        assert rate > 0, f"{serving}: no selects"
    assert value(rf"^\s+writer \(compute\) \|.*\|\s+({NUMBER})x \|", out) == pytest.approx(1.0)
    assert value(rf"^\s+2 readers \|.*\|\s+({NUMBER})x \| bench {NUMBER}, compute", out) > 0


def test_bench_failover_prints_kill_to_commit_the_baseline_and_no_lost_insert(tmp_path: Path) -> None:
    out = bench(tmp_path, "failover", "--rounds", "1", "--clients", "2", "--settle", "0.2")
    row = rf"^\s+1 \|\s+\S+\s+\S+ \|\s+({NUMBER}) ms\s+{NUMBER} ms \|"
    assert value(row, out) > 0, "no kill -> commit time for round 1"
    assert value(rf"kill -> first acknowledged commit: p50 ({NUMBER}) ms, max {NUMBER} ms over 1 rounds", out) > 0
    assert re.search(rf"detector \(control plane log\): writer silent p50 {NUMBER} ms .* promoted in p50 {NUMBER}", out)
    assert value(rf"baseline: manual ClusterService.Failover of the live writer: ({NUMBER}) ms", out) >= 0
    assert re.search(rf"ratios: kill->commit p50 / manual failover->commit {NUMBER}x", out)
    acknowledged = value(rf"^writes: ({NUMBER}) acknowledged, {NUMBER} rows in the table, 0 acknowledged missing", out)
    assert acknowledged > 0
