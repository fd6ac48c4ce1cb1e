"""The pure parts of `sixfold bench commit`'s peer and profiles: etcd's prefix range end and messages, the
collapsed stacks' top frames, and the flame graph."""

from __future__ import annotations

from collections import Counter

import pytest

from sixfold.tools.bench_commit_etcd import MESSAGES, prefix_end
from sixfold.tools.bench_commit_measure import NORMAL, PAUSED, STREAM, STREAM_PAUSED, Phase, Snapshot
from sixfold.tools.bench_commit_profile import REPO_ROOT as ROOT
from sixfold.tools.bench_commit_profile import flame_svg, short, top_frames
from sixfold.tools.bench_commit_report import ETCD, print_target

pytestmark = pytest.mark.unit


def test_a_prefix_range_ends_after_every_key_with_the_prefix() -> None:
    assert prefix_end(b"bench/c1/") == b"bench/c10"
    assert b"bench/c1/" <= b"bench/c1/000000042" < prefix_end(b"bench/c1/")
    assert not b"bench/c1/" <= b"bench/c2/" < prefix_end(b"bench/c1/")


def test_etcd_messages_use_etcds_field_numbers() -> None:
    put = MESSAGES["PutRequest"](key=b"k", value=b"v")
    assert put.SerializeToString() == b"\x0a\x01k\x12\x01v"  # key = 1, value = 2 (rpc.proto)
    listing = MESSAGES["RangeRequest"](key=b"a", range_end=b"b", serializable=True, keys_only=True)
    assert listing.SerializeToString() == b"\x0a\x01a\x12\x01b\x38\x01\x40\x01"  # serializable = 7, keys_only = 8


STACKS = Counter(
    {
        ("<module> (/x/cli.py:3)", f"run ({ROOT}/storage/loop.py:10)", "fsync (/x/disk.py:5)"): 6,
        ("<module> (/x/cli.py:3)", f"run ({ROOT}/storage/loop.py:10)", "encode (/x/wire.py:7)"): 3,
        ("<module> (/x/cli.py:3)", f"run ({ROOT}/storage/loop.py:10)"): 1,
    }
)


def test_top_frames_rank_self_and_total_samples() -> None:
    total, own, anywhere = top_frames(STACKS)
    assert total == 10
    assert own == [("fsync (disk.py)", 6), ("encode (wire.py)", 3), ("run (loop.py)", 1)]
    assert anywhere == [("run (loop.py)", 10)]  # only sixfold's own frames count there
    assert short("thread (0x7f01)") == "thread (0x7f01)"


def test_the_flame_graph_draws_each_frame_as_wide_as_its_samples() -> None:
    svg = flame_svg(STACKS, "writer")
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert "fsync (disk.py): 6 samples (60.0%)" in svg and "run (loop.py): 10 samples (100.0%)" in svg
    assert 'width="1600.0"' in svg  # the root spans the whole width


def _phase(mode: str, c: int, per_s: float, latency_s: float) -> Phase:
    n = int(per_s)
    return Phase(mode, c, 1.0, [latency_s] * n, [], Snapshot(0.0), Snapshot(1.0, commits=n))


def test_the_goal_lines_judge_each_mode_against_etcd_p99_and_two_paused(capsys: pytest.CaptureFixture[str]) -> None:
    by = {
        (p.mode, p.concurrency): p
        for p in [
            _phase(NORMAL, 1, 100, 0.010),
            _phase(NORMAL, 64, 500, 0.120),
            _phase(PAUSED, 64, 900, 0.130),
            _phase(STREAM, 1, 900, 0.001),
            _phase(STREAM, 64, 7000, 0.030),
            _phase(STREAM_PAUSED, 64, 4000, 0.040),
            _phase(ETCD, 1, 800, 0.001),
            _phase(ETCD, 64, 6800, 0.010),
        ]
    }
    print_target(by)
    lines = capsys.readouterr().out.splitlines()

    def line(text: str) -> str:
        return next(each for each in lines if text in each)

    assert line("normal at c=1:").startswith("  [BELOW]") and "(0.12x)" in line("normal at c=1:")
    assert line("stream at c=1:").startswith("  [PASS ]") and line("stream at c=64:").startswith("  [PASS ]")
    assert line("normal p99 at c=64").startswith("  [BELOW]") and line("stream p99 at c=64").startswith("  [PASS ]")
    assert line("normal with two nodes paused").startswith("  [PASS ]") and "faster" in line("normal with two")
    assert line("stream with two nodes paused").startswith("  [BELOW]")  # 0.57x
    del by[(ETCD, 1)]
    print_target(by)
    assert "no etcd figure (--peer etcd)" in capsys.readouterr().out
