"""The recent-records cache (storage/store/recent_records.py): coalescing and reads take a decoded record
from it only when the stored row is byte for byte the one appended; anything else is opened and checked
as before. Hypothesis compares a store with the cache against one without it (capacity 0) and against
the brute-force page oracle, with rows rotted, truncated and coalesced along the way."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import ChecksumMismatch, KeyUnavailable
from sixfold.storage.store import SegmentStore, record_key
from sixfold.storage.store.recent_records import ENTRY_OVERHEAD_BYTES, RecentRecords
from tests.depth import examples
from tests.test_encryption_store import NoKeys, sealed_meta
from tests.test_store import SEG, batch, commit_ok, meta, oracle_page

pytestmark = pytest.mark.unit


def test_a_record_is_given_only_for_the_very_row_it_was_stored_as() -> None:
    cache = RecentRecords(capacity=2)
    one, two, three = (ChainBuilder().patch(p, b"d") for p in (1, 2, 3))
    cache.put_all([("s", 1, b"row-1", one), ("s", 2, b"row-2", two)])
    assert cache.get("s", 1, b"row-1") is one
    assert cache.get("s", 1, b"row-X") is None, "another row under the same LSN is not the one appended"
    assert cache.get("t", 1, b"row-1") is None, "the same bytes under another segment are not it either"
    cache.put_all([("s", 3, b"row-3", three)])  # over capacity: the oldest put (LSN 1) goes, read or not
    assert len(cache) == 2 and cache.get("s", 1, b"row-1") is None and cache.get("s", 2, b"row-2") is two
    assert (cache.hits, cache.misses) == (2, 3)
    off = RecentRecords(capacity=0)
    off.put_all([("s", 1, b"row-1", one)])
    assert len(off) == 0 and off.get("s", 1, b"row-1") is None


def test_the_cache_holds_at_most_its_bytes_and_drops_the_oldest_first() -> None:
    chain = ChainBuilder()
    images = [chain.image(i, bytes([i]) * 4096) for i in range(1, 6)]
    weight = 5000 + 4096 + ENTRY_OVERHEAD_BYTES
    cache = RecentRecords(capacity=100, bytes_max=3 * weight)
    cache.put_all([("s", r.lsn, b"x" * 5000, r) for r in images])
    assert len(cache) == 3 and cache.bytes_held == 3 * weight
    assert (
        cache.get("s", images[1].lsn, b"x" * 5000) is None and cache.get("s", images[4].lsn, b"x" * 5000) is images[4]
    )
    cache.put_all([("s", images[4].lsn, b"y" * 5000, images[4])])  # the same key again: counted once
    assert len(cache) == 3 and cache.bytes_held == 3 * weight


def test_a_sealed_segments_records_are_not_served_from_memory_once_its_key_is_gone(tmp_path) -> None:
    """Sealing rule 1 holds on the fast path too: no key at hand, no rows, though the cache has them."""
    from sixfold.storage.security import envelope
    from sixfold.tools.sim.keys import SIM_MASTER_KEY, SimKeys

    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24, keys=SimKeys())
    try:
        store.create_segment(sealed_meta(envelope.wrap(SIM_MASTER_KEY, envelope.new_data_key(), "vol")))
        chain = ChainBuilder()
        commit_ok(store, batch([chain.patch(1, b"s%03d" % i) for i in range(6)]))
        assert store.read_page(SEG, 1, 6).data[:4] == b"s005" and store.recent.hits == 6  # from memory
        store.keys = NoKeys()
        with pytest.raises(KeyUnavailable):
            store.read_page(SEG, 1, 6)
    finally:
        store.close()


def test_a_row_rotted_after_it_was_appended_is_refused_not_served_from_memory(tmp_path) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
    try:
        store.create_segment(meta())
        chain = ChainBuilder()
        records = [chain.patch(1, b"v%03d" % i) for i in range(5)]
        commit_ok(store, batch(records))
        assert store.read_page(SEG, 1, 5).data[:4] == b"v004" and store.recent.hits == 5
        seg_no = store.segment(SEG).meta.seg_no
        with store.env.begin(write=True) as txn:  # a bit flips in the stored row of LSN 3
            row = bytearray(txn.get(record_key(seg_no, 3), db=store._records))
            row[-3] ^= 0x10
            txn.put(record_key(seg_no, 3), bytes(row), db=store._records)
        with pytest.raises(ChecksumMismatch):
            store.read_page(SEG, 1, 5)
        assert store.read_page(SEG, 1, 2).data[:4] == b"v001"  # below the rotten row: still served
    finally:
        store.close()


@settings(max_examples=examples(30), deadline=None)
@given(
    pages=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    batch_size=st.integers(1, 9),
    capacity=st.integers(0, 40),
    rot=st.lists(st.integers(1, 60), max_size=3),
    data=st.data(),
)
def test_with_or_without_the_cache_coalescing_and_reads_give_the_same_pages(
    pages: list[int], batch_size: int, capacity: int, rot: list[int], data: st.DataObject
) -> None:
    chain = ChainBuilder()
    records = [chain.patch(p, b"%d:%d" % (p, i), offset=(i * 7) % 100) for i, p in enumerate(pages)]
    rotten = {lsn for lsn in rot if lsn <= len(records)}
    fold_at = data.draw(st.integers(1, len(records)))
    outcomes = []
    for cap in (capacity, 0):
        with tempfile.TemporaryDirectory() as tmp:
            store = SegmentStore(tmp, map_size_bytes=1 << 24)
            store.recent = RecentRecords(cap)
            try:
                store.create_segment(meta())
                for i in range(0, len(records), batch_size):
                    b = batch(records[i : i + batch_size], batch_id=i + 1)
                    b.vdl_hint = len(records)
                    commit_ok(store, b)
                seg_no = store.segment(SEG).meta.seg_no
                with store.env.begin(write=True) as txn:
                    for lsn in rotten:
                        row = bytearray(txn.get(record_key(seg_no, lsn), db=store._records))
                        row[-1] ^= 0x01
                        txn.put(record_key(seg_no, lsn), bytes(row), db=store._records)
                folded: object
                try:
                    folded = store.coalesce_pages(SEG, [0, 1, 2, 3], fold_at, 1)
                except ChecksumMismatch:
                    folded = "refused"
                seen = []
                for page_no in range(4):
                    for read_point in range(len(records) + 1):
                        try:
                            seen.append(store.read_page(SEG, page_no, read_point).data)
                        except ChecksumMismatch:
                            seen.append(b"refused")
                outcomes.append((folded, seen))
            finally:
                store.close()
    assert outcomes[0] == outcomes[1]
    folded, seen = outcomes[0]
    for page_no in range(4):  # and both are right wherever no rotten row lies beneath
        for read_point in range(len(records) + 1):
            below = [r for r in records[:read_point] if r.page_no == page_no]
            got = seen[page_no * (len(records) + 1) + read_point]
            if not any(r.lsn in rotten for r in below):
                assert got == oracle_page(records, page_no, read_point), (page_no, read_point)
