"""The real SegmentStore on the in-memory LMDB stand-in (tools/sim/memlmdb.py): it runs, survives crashes, never
serves a rotten copy, and gives the same results as on real LMDB for the same operations."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import ChecksumMismatch, StorageError
from sixfold.storage.lmdb_env import TABLES
from sixfold.storage.records import LogRecord, PayloadKind
from sixfold.storage.segment import AppendBatch, TruncationRange
from sixfold.storage.store import SegmentStore, record_key
from sixfold.tools.sim.memlmdb import MemDisk
from tests.depth import examples
from tests.test_store import PAGE, SEG, batch, commit_ok, meta, oracle_page

pytestmark = pytest.mark.unit

# -- the real SegmentStore on the stand-in ----------------------------------------------------------------------


def mem_store(disk: MemDisk, path: str = "node-a1", map_size_bytes: int = 1 << 24) -> SegmentStore:
    return SegmentStore(path, map_size_bytes=map_size_bytes, open_env=disk.open)


def store_state(store: SegmentStore) -> Any:
    seg = store.segment(SEG)
    pages = [store.read_page(SEG, p, rp).data for p in range(4) for rp in range(seg.tracker.scl + 1)]
    records = store.read_records(SEG, 0, 0, 100, 0)
    return seg.tracker.scl, seg.meta.highest_lsn, seg.meta.truncation_ranges, records, pages


def test_segment_store_runs_on_memdisk_and_survives_a_crash() -> None:
    disk = MemDisk()
    store = mem_store(disk)
    store.create_segment(meta())
    chain = ChainBuilder()
    records = [
        chain.patch(i % 4, b"r%d" % i, 8 * i) if i % 5 else chain.image(i % 4, bytes([i]) * PAGE) for i in range(30)
    ]
    commit_ok(store, batch(records[:10]), batch(records[12:20], batch_id=2))  # hole at 11, 12
    assert store.segment(SEG).tracker.scl == 10
    commit_ok(store, batch(records[10:12], batch_id=3))
    assert store.segment(SEG).tracker.scl == 20
    for rp in range(21):
        for p in range(4):
            assert store.read_page(SEG, p, rp).data == oracle_page(records[:20], p, rp)
    store.put_page_version(SEG, 2, 10, oracle_page(records, 2, 10))
    assert store.truncate(SEG, 2, TruncationRange(16, 40, 2)) == 5
    new = LogRecord(41, 1, PayloadKind.PATCH, 0, b"N", 15, 15, 13, 2)
    commit_ok(store, batch([new], epoch=2))
    assert store.segment(SEG).tracker.scl == 41
    before = store_state(store)

    store = mem_store(disk)  # the node crashed: a new process opens the same disk
    assert store_state(store) == before
    assert store.segment(SEG).meta.truncation_ranges == [TruncationRange(16, 40, 2)]
    assert [r.lsn for r in store.read_records(SEG, 0, 0, 100, 0)[0]] == list(range(1, 16)) + [41]
    assert store.used_bytes() == disk.used_bytes("node-a1") and store.used_bytes() <= store.map_size()
    assert store.drop_segment(SEG) == 16
    assert disk.keys("node-a1", b"records") == [] and disk.keys("node-a1", b"page_index") == []


def test_a_rotten_record_is_never_served() -> None:
    disk = MemDisk()
    store = mem_store(disk)
    store.create_segment(meta())
    chain = ChainBuilder()
    commit_ok(
        store,
        batch([chain.patch(3, b"before"), chain.patch(3, b"UNIQUE-PAYLOAD-TO-ROT", 100), chain.patch(4, b"other")]),
    )
    seg_no = store.segment(SEG).meta.seg_no
    raw = disk.get("node-a1", b"records", record_key(seg_no, 2))
    assert raw is not None
    disk.rot("node-a1", b"records", record_key(seg_no, 2), byte_index=raw.index(b"UNIQUE"))
    with pytest.raises(ChecksumMismatch, match="CRC-32C"):
        store.read_page(SEG, 3, 3)
    with pytest.raises(ChecksumMismatch):
        store.read_records(SEG, 0, 0, 100, 0)
    assert store.read_page(SEG, 3, 1).data[:6] == b"before"  # below the bad record
    assert store.read_page(SEG, 4, 3).data[:5] == b"other"  # other pages unaffected
    store.put_page_version(SEG, 4, 3, store.read_page(SEG, 4, 3).data)
    disk.rot("node-a1", b"versions", disk.keys("node-a1", b"versions")[0], rng=random.Random(1))
    with pytest.raises(ChecksumMismatch):
        store.read_page(SEG, 4, 3)


def test_a_rotten_pending_record_is_left_out_at_restart_and_repaired_by_a_resend() -> None:
    disk = MemDisk()
    store = mem_store(disk)
    store.create_segment(meta())
    chain = ChainBuilder()
    pending = LogRecord(5, 1, PayloadKind.PATCH, 0, b"PENDING", 4, 4, 2, 1)
    records = [chain.patch(1, b"one"), chain.patch(1, b"two"), pending]
    commit_ok(store, batch(records))
    seg_no = store.segment(SEG).meta.seg_no
    disk.rot("node-a1", b"records", record_key(seg_no, 5), rng=random.Random(5))
    store = mem_store(disk)  # restart: the rotten pending record is a hole
    assert store.segment(SEG).tracker.scl == 2 and store.segment(SEG).tracker.pending == {}
    (ok,) = commit_ok(store, batch([pending]))
    assert ok.stored == 1 and store.segment(SEG).tracker.pending == {4: 5}
    assert [r.data for r in store.read_records(SEG, 0, 0, 10, 0)[0]] == [b"one", b"two", b"PENDING"]


def test_a_full_map_grows_and_a_restart_keeps_room_for_the_data() -> None:
    disk = MemDisk()
    store = mem_store(disk, map_size_bytes=64 * 1024)
    store.create_segment(meta())
    chain = ChainBuilder()
    for b in range(8):
        commit_ok(store, batch([chain.image(i % 64, bytes([b]) * PAGE) for i in range(20)], batch_id=b))
    assert store.map_size() >= store.used_bytes() > 64 * 1024
    assert store.segment(SEG).tracker.scl == 160
    assert store.read_page(SEG, 5, 160).data == bytes([7]) * PAGE
    store = mem_store(disk, map_size_bytes=64 * 1024)
    assert store.map_size() == store.used_bytes() and store.segment(SEG).tracker.scl == 160
    commit_ok(store, batch([chain.image(1, b"\x09" * PAGE)], batch_id=99))  # grows again
    assert store.read_page(SEG, 1, 161).data == b"\x09" * PAGE


def test_a_dead_store_cannot_write_after_its_node_restarts() -> None:
    disk = MemDisk()
    old = mem_store(disk)
    old.create_segment(meta())
    chain = ChainBuilder()
    commit_ok(old, batch([chain.patch(1, b"a")]))
    new = mem_store(disk)
    with pytest.raises((lmdb.Error, StorageError)):  # the store reports a write it cannot make as a disk error
        old.commit_appends([batch([chain.patch(1, b"b")], batch_id=2)])
    with pytest.raises(lmdb.Error):
        old.read_page(SEG, 1, 1)
    assert new.segment(SEG).tracker.scl == 1


# -- the same store operations on real LMDB and on the stand-in ---------------------------------------------------

STORE_DBS = list(TABLES)  # every table the store keeps


def raw_contents(store: SegmentStore) -> list[list[tuple[bytes, bytes]]]:
    with store.env.begin() as txn:
        return [[(bytes(k), bytes(v)) for k, v in txn.cursor(db=store.env.open_db(name))] for name in STORE_DBS]


def plain(value: Any) -> Any:
    """Errors as (class, message), so that transcripts compare."""
    if isinstance(value, BaseException):
        return type(value).__name__, str(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def store_transcript(
    open_store: Callable[[], SegmentStore],
    crash: Callable[[SegmentStore], None],
    ops: list[tuple],
    records: list[LogRecord],
) -> list[Any]:
    store = open_store()
    out: list[Any] = [store.create_segment(meta())]
    epoch = 1
    for op in ops:
        try:
            if op[0] == "append":
                _, start, count, stale, group = op
                batches = [
                    AppendBatch(
                        SEG,
                        epoch - stale,
                        1,
                        start + g,
                        [(r, r.crc()) for r in records[start + g : start + g + count]],
                        [],
                    )
                    for g in range(group)
                ]
                out.append(store.commit_appends(batches))
            elif op[0] == "truncate":
                _, start, length, bump = op
                out.append(store.truncate(SEG, epoch + bump, TruncationRange(start, start + length, epoch + bump)))
                epoch += bump
            elif op[0] == "version":
                page_no, lsn = op[1], op[2]
                store.put_page_version(SEG, page_no, lsn, oracle_page(records, page_no, lsn))
                out.append("version stored")
            elif op[0] == "read":
                page_no, read_point = op[1], op[2]
                out.append(store.read_page(SEG, page_no, read_point))
            elif op[0] == "records":
                out.append(store.read_records(SEG, op[1], 0, 5, 0))
            elif op[0] == "tail":
                out.append(store.tail_at_or_below(SEG, op[1]))
            else:
                crash(store)
                store = open_store()
                out.append("restarted")
        except Exception as error:  # noqa: BLE001 - the error is part of the transcript
            out.append((type(error).__name__, str(error)))
        seg = store.segment(SEG)
        out.append((seg.tracker.scl, seg.meta.highest_lsn, seg.meta.volume_epoch, dict(seg.tracker.pending)))
    out.append(raw_contents(store))
    store.close()
    return plain(out)


@settings(max_examples=examples(25), deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.binary(min_size=1, max_size=12), st.booleans()), min_size=5, max_size=30),
    st.lists(
        st.one_of(
            st.tuples(
                st.just("append"),
                st.integers(0, 29),
                st.integers(1, 6),
                st.sampled_from([0, 0, 0, 1]),
                st.integers(1, 3),
            ),
            st.tuples(st.just("truncate"), st.integers(1, 30), st.integers(0, 10), st.integers(0, 1)),
            st.tuples(st.just("version"), st.integers(0, 3), st.integers(1, 30)),
            st.tuples(st.just("read"), st.integers(0, 3), st.integers(0, 31)),
            st.tuples(st.just("records"), st.integers(0, 30)),
            st.tuples(st.just("tail"), st.integers(0, 31)),
            st.tuples(st.just("crash")),
        ),
        max_size=15,
    ),
)
def test_segment_store_on_memdisk_matches_segment_store_on_lmdb(writes: list, ops: list[tuple]) -> None:
    chain = ChainBuilder()
    records = [
        chain.image(p, (data * PAGE)[:PAGE]) if image else chain.patch(p, data, 16 * p) for p, data, image in writes
    ]
    with tempfile.TemporaryDirectory() as tmp:
        real = store_transcript(lambda: SegmentStore(tmp, map_size_bytes=1 << 24), lambda s: s.close(), ops, records)
    disk = MemDisk()
    mem = store_transcript(lambda: mem_store(disk), lambda s: None, ops, records)  # crash: just drop it
    assert mem == real
