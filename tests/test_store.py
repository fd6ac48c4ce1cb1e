"""The LMDB store with the segment rules: real LMDB files in a temporary directory."""

from __future__ import annotations

import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import (
    AlreadyExists,
    BadChecksum,
    BatchTooLarge,
    ChecksumMismatch,
    InvalidRequest,
    LsnConflict,
    PageOutOfRange,
    ReadPointOutOfRange,
    StaleEpoch,
    StorageError,
    Truncated,
    UnknownSegment,
)
from sixfold.storage.records import LogRecord, PayloadKind, apply_record
from sixfold.storage.segment import BATCH_RECORDS_MAX, AppendBatch, SegmentMeta, TruncationRange
from sixfold.storage.store import BatchResult, SegmentStore, record_key
from tests.depth import examples

pytestmark = pytest.mark.unit

SEG = "vol/pg-00000"
PAGE = 4096


def meta(segment_id: str = SEG, first_page: int = 0, page_count: int = 64) -> SegmentMeta:
    return SegmentMeta(segment_id, "vol", 0, first_page, page_count, PAGE, membership_epoch=1, seg_no=0)


def batch(
    records: list[LogRecord],
    *,
    epoch: int = 1,
    batch_id: int = 1,
    segment_id: str = SEG,
    ranges: list[TruncationRange] | None = None,
) -> AppendBatch:
    return AppendBatch(segment_id, epoch, 1, batch_id, [(r, r.crc()) for r in records], ranges or [])


def commit_ok(store: SegmentStore, *batches: AppendBatch):
    results = store.commit_appends(list(batches))
    for r in results:
        assert not isinstance(r, Exception), r
    return results


@pytest.fixture
def store(tmp_path):
    s = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
    s.create_segment(meta())
    yield s
    s.close()


def oracle_page(records: list[LogRecord], page_no: int, read_point: int) -> bytes:
    page = bytearray(PAGE)
    for r in sorted(records, key=lambda r: r.lsn):
        if r.page_no == page_no and r.lsn <= read_point:
            apply_record(page, r)
    return bytes(page)


@st.composite
def writes(draw: st.DrawFn) -> list[tuple[int, int, bytes, bool]]:
    return draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, PAGE - 64), st.binary(min_size=1, max_size=64), st.booleans()),
            min_size=1,
            max_size=40,
        )
    )


@settings(max_examples=examples(40), deadline=None)
@given(writes(), st.integers(1, 7), st.data())
def test_read_page_matches_oracle_at_every_read_point(ops, batch_size: int, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SegmentStore(tmp, map_size_bytes=1 << 24)
        try:
            store.create_segment(meta())
            chain = ChainBuilder()
            records = []
            for page_no, offset, payload, image in ops:
                if image:
                    records.append(chain.image(page_no, (payload * (PAGE // len(payload) + 1))[:PAGE]))
                else:
                    records.append(chain.patch(page_no, payload, offset))
            for i in range(0, len(records), batch_size):
                commit_ok(store, batch(records[i : i + batch_size], batch_id=i))
            # A page version in the middle must give the same answers.
            if data.draw(st.booleans()):
                lsn = data.draw(st.integers(1, len(records)))
                store.put_page_version(
                    SEG, records[lsn - 1].page_no, lsn, oracle_page(records, records[lsn - 1].page_no, lsn)
                )
            assert store.segment(SEG).tracker.scl == len(records)
            for read_point in range(len(records) + 1):
                for page_no in range(4):
                    got = store.read_page(SEG, page_no, read_point)
                    assert got.data == oracle_page(records, page_no, read_point), (page_no, read_point)
        finally:
            store.close()


def test_resend_is_idempotent_and_conflict_is_refused(store: SegmentStore) -> None:
    chain = ChainBuilder()
    records = [chain.patch(1, b"a"), chain.patch(2, b"b")]
    commit_ok(store, batch(records))
    (again,) = commit_ok(store, batch(records))
    assert again.stored == 0 and again.duplicates == 2 and again.scl == 2
    forged = LogRecord(2, 2, PayloadKind.PATCH, 0, b"X", 1, 1, 0, 1)
    (error,) = store.commit_appends([batch([forged])])
    assert isinstance(error, LsnConflict) and "different content" in error.message
    assert store.read_page(SEG, 2, 2).data[:1] == b"b"


def test_lsn_below_scl_not_in_chain_and_forks_are_refused(store: SegmentStore) -> None:
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(1, b"a"), chain.patch(1, b"b", lsn_gap=3)]))  # LSNs 1 and 5
    assert store.segment(SEG).tracker.scl == 5
    (error,) = store.commit_appends([batch([LogRecord(3, 1, PayloadKind.PATCH, 0, b"z", 1, 1, 0, 1)])])
    assert isinstance(error, LsnConflict) and "below the segment's SCL" in error.message
    (error,) = store.commit_appends([batch([LogRecord(9, 1, PayloadKind.PATCH, 0, b"z", 1, 1, 0, 1)])])
    assert isinstance(error, LsnConflict) and "cannot fork" in error.message


def test_refused_batch_changes_nothing_and_others_in_the_group_commit(store: SegmentStore) -> None:
    chain = ChainBuilder()
    good1 = [chain.patch(1, b"one")]
    bad = [chain.patch(2, b"two"), chain.patch(999, b"out")]  # second record outside the segment
    results = store.commit_appends([batch(good1, batch_id=1), batch(bad, batch_id=2)])
    assert isinstance(results[0], BatchResult) and results[0].scl == 1
    assert isinstance(results[1], PageOutOfRange) and "page 999" in results[1].message
    assert store.segment(SEG).tracker.scl == 1 and store.segment(SEG).meta.highest_lsn == 1
    assert store.read_records(SEG, 0, 0, 100, 0)[0] == good1


@pytest.mark.parametrize(
    "case",
    ["bad_crc", "stale_epoch", "future_record_epoch", "too_many", "unknown_segment", "epoch_zero", "bad_membership"],
)
def test_bad_batches_are_refused_with_a_sentence(store: SegmentStore, case: str) -> None:
    chain = ChainBuilder(epoch=2)
    commit_ok(store, batch([chain.patch(1, b"a")], epoch=2))
    before = store.read_records(SEG, 0, 0, 100, 0)[0]
    rec = chain.patch(1, b"b")
    b = batch([rec], epoch=2)
    expected: type[StorageError] = InvalidRequest
    if case == "bad_crc":
        b.records = [(rec, rec.crc() ^ 0xFF)]
        expected = BadChecksum
    elif case == "stale_epoch":
        b.volume_epoch = 1
        expected = StaleEpoch
    elif case == "future_record_epoch":
        b.records = [(r := LogRecord(rec.lsn, 1, PayloadKind.PATCH, 0, b"b", 1, 1, 1, 3), r.crc())]
    elif case == "too_many":
        b.records = b.records * (BATCH_RECORDS_MAX + 1)
        expected = BatchTooLarge
    elif case == "unknown_segment":
        b.segment_id = "nope"
        expected = UnknownSegment
    elif case == "epoch_zero":
        b.volume_epoch = 0
    elif case == "bad_membership":
        b.membership_epoch = 0
        expected = StaleEpoch
    (error,) = store.commit_appends([b])
    assert isinstance(error, expected), error
    assert error.message.endswith(tuple(".;:)'abcdefghijklmnopqrstuvwxyz0123456789")) and len(error.message) > 20
    assert store.read_records(SEG, 0, 0, 100, 0)[0] == before
    assert store.segment(SEG).tracker.scl == 1


def test_read_point_bounds(store: SegmentStore) -> None:
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(1, b"a")]))
    with pytest.raises(ReadPointOutOfRange, match="above segment"):
        store.read_page(SEG, 1, 2)
    with pytest.raises(PageOutOfRange):
        store.read_page(SEG, 64, 1)
    store.segments[SEG].meta.retention_horizon_lsn = 1
    with pytest.raises(ReadPointOutOfRange, match="retention horizon"):
        store.read_page(SEG, 1, 0)


def test_truncation_removes_records_rewinds_scl_and_refuses_them_forever(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    old = [chain.patch(1, bytes([i + 1])) for i in range(10)]
    commit_ok(store, batch(old))
    assert store.truncate(SEG, 2, TruncationRange(7, 20, 2)) == 4
    assert store.segment(SEG).tracker.scl == 6 and store.segment(SEG).meta.highest_lsn == 6
    assert store.volume_epoch(SEG) == 2
    (error,) = store.commit_appends([batch([old[7]], epoch=2)])
    assert isinstance(error, Truncated) and "must not come back" in error.message
    # The new writer continues above the range, linking to the last record it kept.
    new = LogRecord(21, 1, PayloadKind.PATCH, 0, b"N", 6, 6, 6, 2)
    commit_ok(store, batch([new], epoch=2))
    assert store.segment(SEG).tracker.scl == 21
    assert store.read_page(SEG, 1, 21).data[:1] == b"N"
    store.close()
    reopened = SegmentStore(path)
    seg = reopened.segment(SEG)
    assert seg.tracker.scl == 21 and seg.meta.truncation_ranges == [TruncationRange(7, 20, 2)]
    (error,) = reopened.commit_appends([batch([old[8]], epoch=2)])
    assert isinstance(error, Truncated)
    with pytest.raises(StaleEpoch):
        reopened.truncate(SEG, 1, TruncationRange(1, 2, 1))
    reopened.close()


def test_truncation_carried_by_a_batch_is_applied_first(store: SegmentStore) -> None:
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(1, b"a"), chain.patch(1, b"b"), chain.patch(1, b"c")]))
    new = LogRecord(10, 1, PayloadKind.PATCH, 0, b"N", 1, 1, 1, 2)
    (ok,) = commit_ok(store, batch([new], epoch=2, ranges=[TruncationRange(2, 9, 2)]))
    assert ok.scl == 10
    assert [r.lsn for r in store.read_records(SEG, 0, 0, 100, 0)[0]] == [1, 10]


def test_restart_rebuilds_scl_and_pending_holes(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    records = [chain.patch(i % 4, b"r%d" % i) for i in range(20)]
    commit_ok(store, batch(records[:10]), batch(records[12:], batch_id=2))  # hole at 11, 12
    assert store.segment(SEG).tracker.scl == 10
    store.close()
    store = SegmentStore(path)
    assert store.segment(SEG).tracker.scl == 10
    commit_ok(store, batch(records[10:12]))
    assert store.segment(SEG).tracker.scl == 20
    store.close()


def test_map_grows_when_full(tmp_path) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=256 * 1024)
    store.create_segment(meta())
    chain = ChainBuilder()
    for b in range(20):
        commit_ok(store, batch([chain.image(i % 64, bytes([b]) * PAGE) for i in range(50)], batch_id=b))
    assert store.map_size() > 256 * 1024
    assert store.segment(SEG).tracker.scl == 1000
    assert store.read_page(SEG, 5, 1000).data == bytes([19]) * PAGE
    store.close()


def test_create_segment_is_idempotent_and_refuses_a_different_shape(store: SegmentStore) -> None:
    _, created = store.create_segment(meta())
    assert not created
    with pytest.raises(AlreadyExists):
        store.create_segment(meta(page_count=5))
    store.create_segment(meta("vol/pg-00001", first_page=64))
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(64, b"x")], segment_id="vol/pg-00001"))
    assert store.drop_segment("vol/pg-00001") == 1
    with pytest.raises(UnknownSegment):
        store.read_page("vol/pg-00001", 64, 0)


def flip_byte_in_file(path: str, needle: bytes) -> int:
    with open(path, "r+b") as f:
        blob = f.read()
        at = blob.find(needle)
        assert at >= 0, "needle not found in the LMDB file"
        assert blob.find(needle, at + 1) < 0, "needle is not unique"
        f.seek(at + len(needle) // 2)
        f.write(bytes([blob[at + len(needle) // 2] ^ 0x01]))
    return at


def test_flipped_byte_on_disk_is_detected_and_never_served(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    records = [chain.patch(3, b"before"), chain.patch(3, b"UNIQUE-PAYLOAD-TO-ROT", 100), chain.patch(4, b"other")]
    commit_ok(store, batch(records))
    store.close()
    flip_byte_in_file(f"{path}/data.mdb", b"UNIQUE-PAYLOAD-TO-ROT")
    store = SegmentStore(path)
    # The SCL is what the records prove, not the stored number: the chain stops before the rotten record.
    assert store.segment(SEG).tracker.scl == 1 and not store.segment(SEG).whole
    with pytest.raises(ReadPointOutOfRange, match="SCL 1"):
        store.read_page(SEG, 3, 3)
    with pytest.raises(ChecksumMismatch):
        store.read_records(SEG, 0, 0, 100, 0)
    assert store.read_page(SEG, 3, 1).data[:6] == b"before"  # below the bad record
    # The good copy sent again (a writer's resend, or gossip) repairs it and the chain is whole again.
    commit_ok(store, batch(records))
    assert store.segment(SEG).tracker.scl == 3 and store.segment(SEG).whole
    assert store.read_page(SEG, 3, 3).data[100:121] == b"UNIQUE-PAYLOAD-TO-ROT"
    assert store.read_page(SEG, 4, 3).data[:5] == b"other"
    store.close()


def test_flipped_byte_in_a_page_version_is_detected(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(3, b"x")]))
    image = (b"VERSION-IMAGE-MARK" + bytes(PAGE))[:PAGE]
    store.put_page_version(SEG, 3, 1, image)
    assert store.read_page(SEG, 3, 1).data == image
    store.close()
    flip_byte_in_file(f"{path}/data.mdb", b"VERSION-IMAGE-MARK")
    store = SegmentStore(path)
    with pytest.raises(ChecksumMismatch):
        store.read_page(SEG, 3, 1)
    store.close()


def test_vdl_hint_is_kept_and_chain_tail_is_found(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    b = batch([chain.patch(1, b"a"), chain.patch(1, b"b", lsn_gap=4), chain.patch(2, b"c", lsn_gap=2)])
    b.vdl_hint = 6
    commit_ok(store, b)  # LSNs 1, 6, 9
    assert [store.tail_at_or_below(SEG, x) for x in (1, 5, 6, 8, 9, 100)] == [1, 1, 6, 6, 9, 9]
    store.close()
    reopened = SegmentStore(path)
    assert reopened.segment(SEG).meta.vdl_hint == 6
    reopened.close()


def test_truncation_that_spares_newer_records_keeps_them_in_the_chain(store: SegmentStore) -> None:
    chain = ChainBuilder(epoch=2)
    commit_ok(store, batch([chain.patch(1, b"a"), chain.patch(1, b"b"), chain.patch(1, b"c")], epoch=2))
    assert store.truncate(SEG, 2, TruncationRange(2, 100, 2)) == 0  # epoch-2 records are not older: spared
    assert store.segment(SEG).tracker.scl == 3
    commit_ok(store, batch([chain.patch(1, b"d")], epoch=2))
    assert store.segment(SEG).tracker.scl == 4


def test_truncation_keeps_pending_records_below_the_range(store: SegmentStore) -> None:
    chain = ChainBuilder()
    records = [chain.patch(1, b"r%d" % i) for i in range(12)]
    commit_ok(store, batch(records[:5] + records[6:8]))  # hole at 6; 7 and 8 pending
    assert store.segment(SEG).tracker.scl == 5
    store.truncate(SEG, 2, TruncationRange(10, 20, 2))
    commit_ok(store, batch([records[5]], epoch=2))
    assert store.segment(SEG).tracker.scl == 8


def test_a_refused_batch_leaves_no_truncation_behind(store: SegmentStore) -> None:
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(1, b"a"), chain.patch(1, b"b")]))
    rec = chain.patch(1, b"c")
    bad = AppendBatch(SEG, 2, 1, 9, [(rec, rec.crc() ^ 1)], [TruncationRange(2, 50, 2)])
    (error,) = store.commit_appends([bad])
    assert isinstance(error, BadChecksum)
    assert store.segment(SEG).meta.truncation_ranges == [] and store.segment(SEG).tracker.scl == 2
    assert store.volume_epoch(SEG) == 1
    assert [r.lsn for r in store.read_records(SEG, 0, 0, 10, 0)[0]] == [1, 2]


def test_truncation_range_newer_than_the_batch_epoch_is_refused(store: SegmentStore) -> None:
    rec = ChainBuilder().patch(1, b"a")
    (error,) = store.commit_appends([batch([rec], ranges=[TruncationRange(1, 10**6, 1000)])])
    assert isinstance(error, InvalidRequest) and "newer than the request's volume epoch" in error.message


def test_lsn_at_the_top_of_the_range_is_refused(store: SegmentStore) -> None:
    top = LogRecord(2**64 - 1, 1, PayloadKind.PATCH, 0, b"x", 0, 0, 0, 1)
    (error,) = store.commit_appends([batch([top])])
    assert isinstance(error, InvalidRequest) and "highest LSN" in error.message
    with pytest.raises(InvalidRequest):
        store.read_page(SEG, 1, 2**64 - 1)
    assert store.read_records(SEG, 2**64 - 1, 0, 10, 0) == ([], False)
    assert store.tail_at_or_below(SEG, 2**64 - 1) == 0


def test_a_rotten_record_is_ignored_at_restart_and_repaired_by_a_resend(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    pending = LogRecord(5, 1, PayloadKind.PATCH, 0, b"PENDING-ROT-MARK", 4, 4, 2, 1)
    records = [chain.patch(1, b"one"), chain.patch(1, b"two"), pending]
    commit_ok(store, batch(records))  # LSNs 1, 2, 5: 5 waits for 4
    assert store.segment(SEG).tracker.pending == {4: 5}
    store.close()
    flip_byte_in_file(f"{path}/data.mdb", b"PENDING-ROT-MARK")
    store = SegmentStore(path)  # starts despite the rotten pending record
    assert store.segment(SEG).tracker.scl == 2
    (ok,) = commit_ok(store, batch([records[2]]))  # the good copy replaces the rotten one
    assert ok.stored == 1
    assert [r.data for r in store.read_records(SEG, 0, 0, 10, 0)[0]] == [b"one", b"two", b"PENDING-ROT-MARK"]
    assert store.segment(SEG).tracker.pending == {4: 5}
    commit_ok(
        store,
        batch(
            [
                LogRecord(3, 1, PayloadKind.PATCH, 0, b"3", 2, 2, 2, 1),
                LogRecord(4, 1, PayloadKind.PATCH, 0, b"4", 3, 3, 3, 1),
            ]
        ),
    )
    assert store.segment(SEG).tracker.scl == 5
    store.close()


def test_scl_high_water_keeps_the_highest_scl_a_truncation_lowers_it_to_a_held_record(store: SegmentStore) -> None:
    """The high water is what the segment must hold again to be whole: it stays when scrubbing lowers SCL,
    and a truncation over it lowers it to the newest record held below the range (a chain LSN SCL can
    reach), or to a quarantined one there (it must be fetched again first)."""
    chain = ChainBuilder()
    records = [chain.patch(p % 4, b"x%d" % p) for p in range(1, 9)]  # LSNs 1..8
    commit_ok(store, batch(records))
    assert store.segment(SEG).meta.scl_high_water == 8 and store.segment(SEG).whole
    assert store.quarantine_record(SEG, 3) is None  # sound: nothing to do
    store.truncate(SEG, 2, TruncationRange(7, 100, 2))  # LSNs 7.. were never durable
    seg = store.segment(SEG)
    assert (seg.tracker.scl, seg.meta.scl_high_water) == (6, 6) and seg.whole
    # A rotten record at 5 is quarantined: SCL falls to 4, the high water stays: not whole.
    with store.disk.read() as txn:
        raw = bytearray(txn.get(record_key(seg.meta.seg_no, 5), db=store._records))
    raw[-1] ^= 0xFF
    store.disk.write(lambda txn: txn.put(record_key(seg.meta.seg_no, 5), bytes(raw), db=store._records))
    assert store.quarantine_record(SEG, 5) is not None
    seg = store.segment(SEG)
    assert (seg.tracker.scl, seg.meta.scl_high_water, seg.meta.holes) == (4, 6, [5]) and not seg.whole
    # A truncation over 6 keeps the high water at the hole: the segment is whole only once 5 is back.
    store.truncate(SEG, 3, TruncationRange(6, 200, 3))
    seg = store.segment(SEG)
    assert (seg.tracker.scl, seg.meta.scl_high_water) == (4, 5) and not seg.whole
    commit_ok(store, batch([records[4]], epoch=3))
    seg = store.segment(SEG)
    assert (seg.tracker.scl, seg.meta.holes) == (5, []) and seg.whole
