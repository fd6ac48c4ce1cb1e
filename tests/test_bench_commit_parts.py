"""The pure parts of `sixfold bench commit`'s peer and profiles: etcd's prefix range end and messages, the
collapsed stacks' top frames, and the flame graph."""

from __future__ import annotations

from collections import Counter

import pytest

from sixfold.tools.bench_commit_etcd import MESSAGES, prefix_end
from sixfold.tools.bench_commit_profile import REPO_ROOT as ROOT
from sixfold.tools.bench_commit_profile import flame_svg, short, top_frames

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
