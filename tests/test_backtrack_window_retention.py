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

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.coalesce import Coalescer
from sixfold.storage.control_plane_limits import BACKTRACK_WINDOW_S_MAX
from sixfold.storage.errors import ChecksumMismatch, InvalidRequest
from sixfold.storage.records import crc32c
from sixfold.storage.segment import SegmentMeta
from sixfold.storage.store import SegmentStore
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

        coalescer = Coalescer(store, on_writer, lambda segment_id: chain.last_lsn, history_window_s=0, tick_pause_s=0)
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
