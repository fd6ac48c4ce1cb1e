"""A segment's LSN floor (CreateSegmentRequest.lsn_floor, SegmentMeta.lsn_floor): it reports highest_lsn =
max(branch_lsn, lsn_floor) from its creation on, and never less after a restart, a truncation, a quarantine,
a lost parent link or a fresh environment. Real LMDB stores in temporary directories."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import replace
from pathlib import Path

import pytest

from sixfold.storage import segment_load
from sixfold.storage.errors import ChecksumMismatch, InvalidRequest
from sixfold.storage.keys import record_key
from sixfold.storage.node import StorageServicer
from sixfold.storage.records import LSN_MAX, crc32c, make_record
from sixfold.storage.segment import SegmentMeta, TruncationRange
from sixfold.storage.store import SegmentStore
from sixfold.storage.v1 import storage_service_pb2 as pb
from tests.test_clone_segments import CLONE, PAGES, ROOT, Timeline, seg_meta
from tests.test_find_commit import put_raw
from tests.test_store import PAGE, batch, commit_ok

pytestmark = pytest.mark.unit

FLOOR = 100


def floored(
    segment_id: str = ROOT, floor: int = FLOOR, parent: str = "", branch: int = 0, read: int = 0
) -> SegmentMeta:
    return replace(seg_meta(segment_id, parent, branch, read), lsn_floor=floor)


def reopen(store: SegmentStore) -> SegmentStore:
    path = store.path
    store.close()
    return SegmentStore(path, map_size_bytes=1 << 25)


def test_a_segment_without_a_parent_keeps_its_floor_across_restarts_truncation_and_quarantine(tmp_path: Path) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    created, _ = store.create_segment(floored())
    assert created.highest_lsn == FLOOR and created.lsn_floor == FLOOR
    store = reopen(store)
    assert store.segment(ROOT).meta.highest_lsn == FLOOR
    records = [make_record(FLOOR + i, 0, b"r", prev_pg_lsn=FLOOR + i - 1 if i > 1 else 0) for i in (1, 2, 3, 4)]
    commit_ok(store, batch(records, segment_id=ROOT))
    assert store.segment(ROOT).meta.highest_lsn == FLOOR + 4
    store.truncate(ROOT, 2, TruncationRange(FLOOR + 3, FLOOR + 10, 2))
    assert store.segment(ROOT).meta.highest_lsn == FLOOR + 2
    seg_no = store.segment(ROOT).meta.seg_no
    for lsn in (FLOOR + 2, FLOOR + 1):  # both rot, then the scrubber quarantines them, newest first
        put_raw(store, record_key(seg_no, lsn), b"rot")
        assert store.quarantine_record(ROOT, lsn) is not None
    assert store.segment(ROOT).meta.highest_lsn == FLOOR
    store = reopen(store)
    try:
        assert store.segment(ROOT).meta.highest_lsn == FLOOR and store.segment(ROOT).meta.lsn_floor == FLOOR
        store.truncate(ROOT, 3, TruncationRange(1, FLOOR + 10, 3))
        assert store.segment(ROOT).meta.highest_lsn == FLOOR
    finally:
        store.close()


def test_a_clone_with_a_floor_above_its_branch(tmp_path: Path) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    store.create_segment(seg_meta(ROOT))
    parent = Timeline(store, ROOT, [0])
    parent.write([(p, b"p") for p in range(PAGES)])  # 1..8
    store.create_segment(floored(CLONE, parent=ROOT, branch=8, read=8))
    meta = store.segment(CLONE).meta
    assert (meta.highest_lsn, meta.vdl_hint, meta.scl, meta.branch_lsn) == (FLOOR, 8, 8, 8)
    parent.lsn[0] = FLOOR  # the new timeline allocates above its floor
    clone = Timeline(store, CLONE, parent.lsn, tail=8, parent=parent, branch=8)
    clone.write([(0, b"own"), (1, b"own")])  # 101, 102
    assert store.segment(CLONE).meta.highest_lsn == FLOOR + 2
    clone.check([8, FLOOR + 2])
    store.truncate(CLONE, 2, TruncationRange(FLOOR + 1, FLOOR + 10, 2))
    assert store.segment(CLONE).meta.highest_lsn == FLOOR
    store = reopen(store)
    try:
        assert store.segment(CLONE).meta.highest_lsn == FLOOR
        # A fresh environment brings it back as a flattened copy, still above its floor.
        store.rebuild_in_fresh_environment()
        meta = store.segment(CLONE).meta
        assert meta.lineage == ("", 0, 0) and (meta.highest_lsn, meta.lsn_floor) == (FLOOR, FLOOR)
    finally:
        store.close()


def test_a_clone_that_loses_its_parent_keeps_its_branch_as_its_floor(tmp_path: Path) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    try:
        store.create_segment(seg_meta(ROOT))
        parent = Timeline(store, ROOT, [0])
        parent.write([(p, b"p") for p in range(4)])  # 1..4
        parent.clone(store, CLONE, branch=2)
        store.begin_hydration(ROOT, 3)  # the parent's pages at the clone's read LSN are replaced
        meta = store.segment(CLONE).meta
        assert meta.lineage == ("", 0, 0) and meta.lsn_floor == 2 and meta.highest_lsn == 2
        store.truncate(CLONE, 2, TruncationRange(1, 50, 2))
        assert store.segment(CLONE).meta.highest_lsn == 2
    finally:
        store.close()


def test_the_floor_is_bounded_and_old_metadata_has_none(tmp_path: Path) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    try:
        with pytest.raises(InvalidRequest, match=r"lsn_floor \d+ is above the highest LSN"):
            store.create_segment(floored(floor=LSN_MAX + 1))
        assert not store.segments
        store.create_segment(floored(floor=LSN_MAX))
        assert store.segment(ROOT).meta.highest_lsn == LSN_MAX
    finally:
        store.close()
    meta = replace(floored(), seg_no=1)
    body = json.loads(meta.to_bytes()[8:])
    del body["lsn_floor"]
    raw = json.dumps(body, separators=(",", ":")).encode()
    assert SegmentMeta.from_bytes(struct.pack(">4sI", b"SFM1", crc32c(raw)) + raw) == replace(meta, lsn_floor=0)
    body["lsn_floor"] = LSN_MAX + 1
    raw = json.dumps(body, separators=(",", ":")).encode()
    with pytest.raises(ChecksumMismatch, match="does not make sense"):
        SegmentMeta.from_bytes(struct.pack(">4sI", b"SFM1", crc32c(raw)) + raw)
    merged = segment_load.merge_copies(meta, replace(meta, lsn_floor=FLOOR + 5))
    assert merged is not None and merged.lsn_floor == FLOOR + 5


def test_create_segment_rpc_carries_the_floor(tmp_path: Path) -> None:
    async def run() -> None:
        store = SegmentStore(str(tmp_path / "node"), map_size_bytes=1 << 25)
        node = StorageServicer(store, "a1", "a", scrub=False, coalesce_interval_s=0)
        try:
            request = pb.CreateSegmentRequest(
                segment_id=ROOT, volume_id="vol", page_count=PAGES, page_size=PAGE, lsn_floor=FLOOR
            )
            reply = await node.CreateSegment(request, None)
            assert reply.created and reply.state.highest_lsn == FLOOR
            request.segment_id, request.lsn_floor = "vol/pg-00001", LSN_MAX + 1
            with pytest.raises(InvalidRequest, match="lsn_floor"):
                await node.CreateSegment(request, None)
        finally:
            await node.stop()
            store.close()

    asyncio.run(run())
