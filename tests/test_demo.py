"""`sixfold demo`: the bank on a cluster that loses an AZ half way. The report's arithmetic and verdict
(pure), and one short run end to end as a user runs it: the command starts its own cluster in a fresh
state dir, kills AZ a and brings it back, prints its report and exits 0; the cluster is then stopped
with `sixfold down`, also when the run failed."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sixfold.tools.cluster import PROJECT_ROOT, Cluster
from sixfold.tools.demo_bank import Snapshot, Tally, Verification
from sixfold.tools.demo_report import Checks, Event, Run, phases, report_lines

DEMO_TIMEOUT_S = 300.0  # start-up, 12 s of transfers, the catch-up wait and the checks, on a loaded machine


def sixfold(state_dir: Path, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *args, "--state-dir", str(state_dir)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _run(verification: Verification, checks: Checks, committed: int = 10) -> Run:
    tally = Tally(committed, 1, 2, 3, Counter({"ABORTED": 3}), 0, 0, Counter())
    events = [Event(0.0, "4 clients start transferring"), Event(4.0, "SIGKILL a1 (pid 1)")]
    commit_times = [0.5 * i for i in range(8)] + [4.5, 5.0, 5.5, 6.0] + [8.0 + i / 3 for i in range(12)]
    return Run(12.0, 4, 100, 7, events, phases(commit_times, 4.0, 8.0, 12.0), tally, checks, verification)


def _verification(total: int = 100_000, missing: list[int] | None = None) -> Verification:
    return Verification(Snapshot(500, total, 100, 10), 100_000, 100, missing or [], [], 0, 0, "ok")


@pytest.mark.unit
def test_phases_split_the_commits_at_the_outage() -> None:
    before, during, after = phases([0.5, 1.0, 3.9, 4.0, 6.0, 8.0, 11.9], 4.0, 8.0, 12.0)
    assert [(p.name, p.commits) for p in (before, during, after)] == [
        ("before the outage", 3),
        ("during", 2),
        ("after", 2),
    ]
    assert before.rate == 3 / 4.0 and after.rate == 2 / 4.0
    assert [p.name for p in phases([1.0], None, None, 5.0)] == ["before the outage"]  # cut short before the kill
    assert [p.name for p in phases([1.0], 2.0, None, 5.0)] == ["before the outage", "during"]
    assert [p.end_s for p in phases([1.0], 2.0, 6.0, 5.0)] == [2.0, 5.0]  # back only after the clients stopped


@pytest.mark.unit
def test_the_verdict_needs_the_invariant_throughout_and_every_acknowledged_transfer() -> None:
    checks = Checks(100_000)
    assert checks.record(3.0, Snapshot(1, 100_000, 100, 5)) == "total 100000 ok"
    good = _run(_verification(), checks)
    lines = report_lines(good)
    assert good.ok and lines[-1] == "verdict:    OK"
    assert "commits/s:  before the outage 2 (0.0-4.0 s)   during 1 (4.0-8.0 s)   after 3 (8.0-12.0 s)" in lines
    assert "     4.0  SIGKILL a1 (pid 1)" in lines

    lost = _run(_verification(missing=[1_000_000_007]), checks)
    assert not lost.ok and any(line.startswith("rows:       LOST: 1 acknowledged") for line in report_lines(lost))
    drifted = _run(_verification(total=99_990), checks)
    assert not drifted.ok and any("VIOLATED: total balance 99990" in line for line in report_lines(drifted))
    seen_wrong = Checks(100_000)
    assert "WRONG" in seen_wrong.record(6.0, Snapshot(2, 100_001, 100, 6))
    assert not _run(_verification(), seen_wrong).ok  # right at the end, wrong once while running
    assert not _run(_verification(), checks, committed=0).ok


@pytest.mark.unit
def test_too_short_a_run_is_bad_usage(tmp_path: Path) -> None:
    result = sixfold(tmp_path / "cluster", "demo", "--seconds", "3")
    assert result.returncode == 2 and "must be at least 10" in result.stderr, result.stderr
    assert not (tmp_path / "cluster").exists()  # nothing started


@pytest.mark.integration
def test_sixfold_demo_starts_a_cluster_kills_an_az_and_reports(cluster_dir: Path) -> None:
    try:
        result = sixfold(cluster_dir, "demo", "--seconds", "12", "--clients", "4", timeout_s=DEMO_TIMEOUT_S)
        out = result.stdout
        assert result.returncode == 0, f"sixfold demo exited {result.returncode}:\n{out}\n{result.stderr}"
        assert f"no cluster in {cluster_dir}: starting one" in out, out
        assert re.search(r"^\[ +3\.\d s\] +\d+ committed .* total 100000 ok  AZ a up$", out, re.MULTILINE), out
        assert re.search(r"total 100000 ok  AZ a DOWN \(a1 a2 killed\)$", out, re.MULTILINE), out
        for pattern in (
            r"^ +\d+\.\d  SIGKILL a1 \(pid \d+\)$",
            r"^ +\d+\.\d  SIGKILL a2 \(pid \d+\)$",
            r"^ +\d+\.\d  start a1 a2$",
            r"^ +\d+\.\d  a1 a2 serve again \(same data, same ports\)$",
            r"^ +\d+\.\d  clients stop",
            r"^ +\d+\.\d  a1 a2 caught up: every segment at its PG's PGCL",
            r"^transfers:  [1-9]\d* committed \(acknowledged",
            r"^commits/s:  before the outage \d+ \(0\.0-\d+\.\d s\)   during \d+ \(\d+\.\d-\d+\.\d s\)   after \d+ ",
            r"^invariant:  total balance 100000 over 100 accounts, as at the start: holds in \d+ checks",
            r"^rows:       all \d+ acknowledged transfers have their row .*; every balance matches its rows$",
            r"^integrity:  PRAGMA integrity_check: ok$",
            r"^verdict:    OK$",
        ):
            assert re.search(pattern, out, re.MULTILINE), f"{pattern!r} not in:\n{out}"
        assert f"sixfold down --state-dir {cluster_dir}" in out, out
        assert all(Cluster(cluster_dir).pid(name) is not None for name in ("a1", "a2", "compute"))  # left running
    finally:
        down = sixfold(cluster_dir, "down")
    assert down.returncode == 0 and down.stdout.startswith("stopped: "), down.stdout + down.stderr
