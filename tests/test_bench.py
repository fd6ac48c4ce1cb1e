"""The benchmarks still run end to end and print every figure they promise (tiny sizes; no timing
is asserted: the figures are printed, not judged)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent


def bench(*args: str, timeout_s: float = 240) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "bench", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_bench_storage_prints_node_and_lmdb_rates_and_their_ratio() -> None:
    out = bench("storage", "--records", "3000", "--payloads", "100,4096")
    for payload in ("100B", "4096B"):
        row = re.search(
            rf"^\s+{payload}\s+3000 \|\s+([\d,]+)\s+([\d.]+) \|\s+([\d,]+)\s+([\d.]+) \|\s+([\d.]+)$", out, re.MULTILINE
        )
        assert row, f"no result row for {payload}"
        node_rate, lmdb_rate, ratio = (float(row.group(i).replace(",", "")) for i in (1, 3, 5))
        assert node_rate > 0 and lmdb_rate > 0 and ratio == pytest.approx(node_rate / lmdb_rate, abs=0.01)


def test_bench_commit_prints_every_mode_bytes_per_commit_and_ratios(tmp_path: Path) -> None:
    plot = tmp_path / "commit.png"
    out = bench("commit", "--seconds", "0.5", "--concurrency", "2", "--peer", "etcd", "--plot", str(plot), "--profile")
    for mode in ("normal", "stream", "2 paused", "stream 2 paused", "bare", "empty"):
        row = re.search(rf"^\s*{mode}\s+2 \|\s+([\d,]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+) \|", out, re.MULTILINE)
        assert row, f"no result row for {mode}"
        assert int(row.group(1).replace(",", "")) > 0, f"{mode}: no commits"
        if mode != "empty":
            assert re.search(rf"^\s+{mode} c=2\s+[\d,]+ B/commit\s+vs whole pages", out, re.MULTILINE), mode
    assert re.search(r"commit at c=2:\s+[\d.]+% of bare", out)
    assert re.search(r"2 paused at c=2:\s+[\d.]+% of normal", out)
    assert re.search(r"commit at c=2:\s+[\d.]+% of empty calls to the writer", out)
    assert re.search(r"^\s+normal\s+c=2\s+[\d.]+\s*$", out, re.MULTILINE), "no boxcar figure"  # commits/message
    cpu = r"^\s+c=2\s+sixfold normal [\d.]+ ms \(writer [\d.]+, nodes [\d.]+, control [\d.]+\)"
    assert re.search(cpu, out, re.MULTILINE), "no CPU per commit"
    assert plot.stat().st_size > 0 and f"plot saved: {plot}" in out
    assert (tmp_path / "commit-profile-normal-writer.svg").stat().st_size > 0, "no flame graph of the writer"
    assert (tmp_path / "commit-profile-stream-writer.svg").stat().st_size > 0, "no flame graph of the writer (stream)"
    assert (tmp_path / "commit-profile-normal-node.svg").stat().st_size > 0, "no flame graph of a node"
    assert out.count("most often innermost (self):") == 4
    if shutil.which("etcd"):
        peer_row = r"^\s+2 \|(\s+[\d,]+\s+[\d.]+ \|){2}\s+[\d,]+ \|\s+[\d,]+\s+[\d.]+ \|\s+[\d.]+\s+[\d.]+$"
        assert re.search(peer_row, out, re.MULTILINE), "no sixfold/etcd row"
        assert re.search(r"c=2: [\d,]+ acknowledged puts, 0 missing on follower m\d", out)
    else:
        assert "peer etcd: skipped, no `etcd` binary on PATH" in out and "apt-get install etcd-server" in out


def test_bench_sql_prints_sixfold_sqlite_and_page_shipping_with_ratios_and_the_invariant() -> None:
    out = bench("sql", "--accounts", "2000", "--seconds", "0.5", "--concurrency", "2")
    for system, net in (("sixfold", r"[\d,]+"), ("SQLite", "-")):
        row = re.search(rf"^\s*{system}\s+2 \|\s+([\d,]+)\s+[\d.]+\s+[\d.]+\s+\d+ \|\s+{net} \|", out, re.MULTILINE)
        assert row, f"no result row for {system}"
        assert int(row.group(1).replace(",", "")) > 0, f"{system}: no transactions"
    assert re.search(r"^\s*page ship\s+2 \|.*\|\s+[\d,]+ \| [\d.]+ pages dirtied x", out, re.MULTILINE)
    assert re.search(r"c=2\s+sixfold/SQLite\s+[\d.]+x txn/s.*page shipping/sixfold\s+[\d.]+x bytes", out)
    assert re.search(r"c=2\s+[\d.]+ records carrying [\d,]+ changed bytes per transaction", out)
    for system in ("sixfold", "SQLite"):
        assert re.search(rf"^\s*{system}: sum\(abalance\) .*: ok$", out, re.MULTILINE), f"{system}: invariant"
    assert "the page-watching replay ends with sixfold's totals: yes" in out


def test_bench_clone_prints_clone_times_bytes_copied_read_through_ratio_and_backtrack_times() -> None:
    out = bench("clone", "--sizes", "64KiB,256KiB", "--reads", "20", "--seed", "1")
    assert "seed 1" in out
    for size in ("64k", "256k"):
        assert re.search(rf"bench-{size}: clones in [\d.]+, [\d.]+, [\d.]+ ms; backtrack over [\d,]+ commits", out)
    rows = re.findall(
        r"^\s+\d+ KiB\s+([\d,]+)\s+[\d.]+\s+[\d.]+ /\s+[\d.]+\s+([\d,]+) \(([\d,]+) B\)\s+[\d.]+ MiB"
        r"\s+[\d.]+ /\s+[\d.]+\s+[\d.]+ /\s+[\d.]+\s+([\d.]+)x\s+([\d.]+)\s+([\d.]+)$",
        out,
        re.MULTILINE,
    )
    assert [int(r[0].replace(",", "")) for r in rows] == [16, 64], rows  # pages written per size
    for _pages, copied, copied_bytes, ratio, backtrack_ms, forward_ms in rows:
        assert copied == "0" and copied_bytes == "0", "a clone copied page data"
        assert float(ratio) > 0 and float(backtrack_ms) > 0 and float(forward_ms) > 0
    assert "backtrack ms  forward ms" in out
