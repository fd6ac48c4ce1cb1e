"""`sixfold bench commit --tls` (issue 16): the same phases on a plaintext and on a mutual-TLS cluster in one
invocation, each TLS phase beside its plaintext twin with TLS/plaintext ratios, and the note that encryption at
rest is not built yet. Timings are printed, never judged."""

from __future__ import annotations

import argparse
import re

import pytest

from sixfold.storage.security import transport
from sixfold.tools.bench_commit import bench_commit, configure
from sixfold.tools.bench_commit_measure import EMPTY, NORMAL, STREAM, Phase, Snapshot
from sixfold.tools.bench_commit_tls import AT_REST_NOTE, RATIO_LINE, SIXFOLD_MODES, print_tls


def phase(mode: str, commits: int, latency_s: float, cpu_s: float) -> Phase:
    before = Snapshot(0.0, cpu_s={"writer": 0.0, "nodes": 0.0, "control": 0.0})
    after = Snapshot(1.0, cpu_s={"writer": cpu_s, "nodes": 0.0, "control": 0.0})
    return Phase(mode, 4, 1.0, [latency_s] * commits, [], before, after)


@pytest.mark.unit
def test_each_tls_phase_is_set_beside_its_plaintext_twin_as_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    plain = [phase(NORMAL, 200, 0.010, 1.0), phase(STREAM, 400, 0.005, 1.0), phase(EMPTY, 1000, 0.001, 0.5)]
    tls = [phase(NORMAL, 150, 0.020, 1.2), phase(STREAM, 400, 0.005, 1.0)]  # no TLS twin for empty: not shown
    print_tls(plain, tls, [4], [1.5, 6.0])
    out = capsys.readouterr().out
    # commits/s 150/200, p50 and p99 20/10 ms, CPU per call (1.2 s / 150) / (1.0 s / 200) = 1.6
    assert re.search(
        r"^\s+normal\s+4 \|\s+200\s+10\.0\s+10\.0 \|\s+150\s+20\.0\s+20\.0 \|\s+0\.75\s+2\.00\s+2\.00\s+1\.60$",
        out,
        re.MULTILINE,
    )
    assert re.search(r"^\s+stream\s+4 \|.*\|\s+1\.00\s+1\.00\s+1\.00\s+1\.00$", out, re.MULTILINE)
    assert not re.search(r"^\s+empty\s+4 \|", out, re.MULTILINE)
    assert f"{RATIO_LINE} (unary WritePages): c=4 0.75x" in out
    assert AT_REST_NOTE in out and "encryption at rest together" in AT_REST_NOTE
    assert "load average 1.5 as the plaintext one started, 6.0 as the TLS one did" in out


@pytest.mark.integration
def test_bench_commit_tls_runs_both_clusters_prints_the_ratios_and_ends_plaintext(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--tls", "--seconds", "0.3", "--concurrency", "2", "--plot", ""])
    try:
        assert bench_commit(args) == 0
        assert transport.current() is None, "the bench left this process with a TLS identity"
    finally:
        transport.use(None)
    out = capsys.readouterr().out
    print(out[-4000:])
    assert re.search(r"^\[tls\] cluster up in [\d.]+ s with mutual TLS", out, re.MULTILINE)
    assert not re.search(r"^\[tls\]\s+bare", out, re.MULTILINE), "the bare fan-out runs on the plaintext cluster only"
    assert re.search(r"^\s+bare\s+2 \|\s+[\d,]+", out, re.MULTILINE), "the plaintext run keeps its bare baseline"
    for mode in SIXFOLD_MODES:
        row = rf"^\s*{mode}\s+2 \|\s+([\d,]+)\s+[\d.]+\s+[\d.]+ \|\s+([\d,]+)\s+[\d.]+\s+[\d.]+ \|(\s+([\d.]+|-)){{4}}$"
        found = re.search(row, out, re.MULTILINE)
        assert found, f"no TLS/plaintext row for {mode}"
        assert int(found.group(2).replace(",", "")) > 0, f"{mode}: no commits over TLS"
    assert re.search(rf"^{RATIO_LINE} \(unary WritePages\): c=2 [\d.]+x$", out, re.MULTILINE)
    assert AT_REST_NOTE in out
