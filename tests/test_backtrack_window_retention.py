"""A volume's backtrack window on the storage nodes (storage/retention.py rule 2): a segment keeps the longer
of the node's --history-window-s and its volume's backtrack window (CreateSegmentRequest.backtrack_window_s,
kept in its metadata), so a backtrack inside the window finds its point. Real LMDB stores in temporary
directories; the same through the launcher is in tests/test_retention.py (a node back after GC)."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.coalesce import Coalescer
from sixfold.storage.control_plane_limits import BACKTRACK_WINDOW_S_MAX
from sixfold.storage.errors import ChecksumMismatch, InvalidRequest
from sixfold.storage.records import crc32c
from sixfold.storage.retention import HISTORY_SAMPLES_MAX, HistoryWindow
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.store import SegmentStore
from tests.depth import examples
from tests.test_store import SEG, batch, commit_ok, meta


@pytest.mark.unit
def test_a_volumes_backtrack_window_longer_than_the_nodes_history_window_holds_gc_back(tmp_path) -> None:
    """Rule 2: a segment keeps the longer of the node's history window and its volume's backtrack window
    (CreateSegmentRequest.backtrack_window_s, kept in its metadata across a restart), so a backtrack inside
    the window finds its point. Here the node keeps no history at all (window 0)."""
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    store.create_segment(meta())  # window 0: the node's
    store.create_segment(replace(meta("vol/kept"), volume_id="kept", backtrack_window_s=3600))
    try:
        store.close()
        store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
        assert store.segment("vol/kept").meta.backtrack_window_s == 3600
        assert store.segment(SEG).meta.backtrack_window_s == 0
        chain = ChainBuilder()
        records = [chain.patch(i % 3, b"v%04d" % i) for i in range(30)]
        for segment_id in (SEG, "vol/kept"):
            b = batch(records, batch_id=1, segment_id=segment_id)
            b.vdl_hint = chain.last_lsn
            commit_ok(store, b)

        async def on_writer(fn, *args):
            return fn(*args)

        coalescer = Coalescer(
            store, on_writer, lambda segment_id: chain.last_lsn, history_window_s=0, tick_pause_s=0, chain_min=8
        )
        asyncio.run(coalescer.round())
        asyncio.run(coalescer.round())
        collected, held = store.segment(SEG).meta, store.segment("vol/kept").meta
        assert collected.retention_horizon_lsn == chain.last_lsn and collected.records_collected > 0
        assert held.versions_coalesced == collected.versions_coalesced > 0  # folded alike
        assert held.retention_horizon_lsn == 0 and held.records_collected == 0  # nothing of it collected
    finally:
        store.close()


@pytest.mark.unit
def test_a_backtrack_window_past_its_bound_is_refused_in_a_request_and_in_stored_metadata() -> None:
    stored = replace(meta(), seg_no=1)  # as the store numbers it
    too_long = replace(stored, backtrack_window_s=BACKTRACK_WINDOW_S_MAX + 1)
    with pytest.raises(InvalidRequest, match="longer than the longest kept"):
        too_long.check_lineage()
    with pytest.raises(ChecksumMismatch, match="does not make sense"):
        SegmentMeta.from_bytes(too_long.to_bytes())
    old = json.loads(stored.to_bytes()[8:])  # metadata stored before the field existed means window 0
    del old["backtrack_window_s"]
    body = json.dumps(old, separators=(",", ":")).encode()
    assert SegmentMeta.from_bytes(b"SFM1" + struct.pack(">I", crc32c(body)) + body).backtrack_window_s == 0


def _true_scl_at(samples: list[tuple[float, int]], t: float) -> int | None:
    """The brute-force oracle: the SCL of the newest sample taken at or before `t` (None: none was)."""
    before = [scl for when, scl in samples if when <= t]
    return before[-1] if before else None


@pytest.mark.unit
@settings(max_examples=examples(300), deadline=None)
@given(
    window_s=st.sampled_from([0.0, 0.5, 3.0, 60.0, 3600.0]),
    steps=st.lists(st.tuples(st.floats(0.0, 40.0), st.integers(0, 50)), min_size=1, max_size=300),
)
def test_the_history_window_bound_is_a_true_scl_no_newer_and_at_most_one_spacing_older_than_the_windows(
    window_s: float, steps: list[tuple[float, int]]
) -> None:
    window = HistoryWindow(window_s)
    spacing = window_s / (HISTORY_SAMPLES_MAX // 2)
    samples: list[tuple[float, int]] = []
    now, scl = 0.0, 0
    for dt, dscl in steps:
        now, scl = now + dt, scl + dscl  # SCL only rises here (a scrub may lower it; the horizon takes min)
        window.sample(now, scl)
        samples.append((now, scl))
        got, true = window.bound(now), _true_scl_at(samples, now - window_s)
        if true is None:
            assert got is None
            continue
        assert got is not None and got <= true, (got, true)  # never newer than the SCL a window ago
        stale = _true_scl_at(samples, now - window_s - spacing)
        assert got >= (stale if stale is not None else samples[0][1]), (got, stale)
        assert len(window.times) <= HISTORY_SAMPLES_MAX + 2


@pytest.mark.unit
def test_a_24_hour_window_sampled_every_second_keeps_moving_and_stays_small() -> None:
    """Three days of one sample a second (the coalescer's default interval) against a 24 h window: the bound
    follows the SCL of a day ago (it stuck at the first sample when thinning dropped the samples after it)."""
    window = HistoryWindow(86_400.0)
    spacing = 86_400.0 / (HISTORY_SAMPLES_MAX // 2)
    for t in range(3 * 86_400 + 1):
        window.sample(float(t), t)  # the SCL is the time: the bound must be about 24 h ago
        if t % 3600 == 0 and t >= 86_400:
            got = window.bound(float(t))
            assert got is not None and t - 86_400 - spacing <= got <= t - 86_400, (t, got)
    assert len(window.times) <= HISTORY_SAMPLES_MAX + 2
