"""FindCommit (storage/store/commits.py, StorageService.FindCommit): the newest commit at or before a time
among a segment's own records in its complete chain. Real LMDB stores in temporary directories, and the RPC
through an in-process gRPC server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from sixfold.storage.errors import InvalidRequest, ReadPointOutOfRange, UnknownSegment
from sixfold.storage.keys import record_key
from sixfold.storage.node import StorageServicer
from sixfold.storage.records import LSN_MAX, LogRecord, make_record
from sixfold.storage.serving import start_server
from sixfold.storage.store import SegmentStore
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from tests.test_clone_segments import CLONE, ROOT, Timeline, coalesce, gc, seg_meta
from tests.test_store import batch, commit_ok

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000_000  # a commit time (us)


def write(store: SegmentStore, segment_id: str, times: list[int], start: int = 0, batch_id: int = 1) -> list[LogRecord]:
    """One record per entry, chained from LSN `start`: a CPL carrying that commit time, or (0) a record
    inside an MTR."""
    out = []
    for i, t in enumerate(times):
        lsn = start + 1 + i
        out.append(make_record(lsn, i % 4, b"r%d" % lsn, prev_pg_lsn=lsn - 1, cpl=bool(t), commit_time_us=t))
    b = batch(out, segment_id=segment_id, batch_id=batch_id)
    b.vdl_hint = out[-1].lsn
    commit_ok(store, b)
    return out


def put_raw(store: SegmentStore, key: bytes, raw: bytes) -> None:
    store.disk.write(lambda txn: txn.put(key, raw, db=store._records))


@pytest.fixture
def store(tmp_path: Path):
    s = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    s.create_segment(seg_meta(ROOT))
    yield s
    s.close()


# Commits at LSNs 2 (T0+10), 4 (T0+20), 7 (T0+30); the others are inside MTRs.
TIMES = [0, T0 + 10, 0, T0 + 20, 0, 0, T0 + 30, 0]


def test_the_newest_commit_at_or_before_the_time_and_the_bound(store: SegmentStore) -> None:
    write(store, ROOT, TIMES)
    for at, want in [(T0 + 10, 2), (T0 + 19, 2), (T0 + 20, 4), (T0 + 29, 4), (T0 + 30, 7), (T0 + 999, 7)]:
        found = store.find_commit(ROOT, at)
        assert (found.lsn, found.commit_time_us) == (want, TIMES[want - 1]), at
        assert found.oldest_commit_time_us == T0 + 10 and found.gc_floor_lsn == 0 and found.records_skipped == 0
    before = store.find_commit(ROOT, T0 + 9)
    assert (before.lsn, before.commit_time_us, before.oldest_commit_time_us) == (0, 0, T0 + 10)
    assert store.find_commit(ROOT, T0 + 999, at_or_below_lsn=6).lsn == 4
    assert store.find_commit(ROOT, T0 + 999, at_or_below_lsn=3).lsn == 2
    assert store.find_commit(ROOT, T0 + 999, at_or_below_lsn=LSN_MAX + 5).lsn == 7


def test_only_records_in_the_complete_chain_count(store: SegmentStore) -> None:
    write(store, ROOT, TIMES[:4])  # 1..4
    later = [make_record(6, 0, b"x", prev_pg_lsn=5, cpl=True, commit_time_us=T0 + 50)]
    commit_ok(store, batch(later, segment_id=ROOT, batch_id=2))  # 5 is missing: SCL stays at 4
    assert store.segment(ROOT).tracker.scl == 4
    assert store.find_commit(ROOT, T0 + 999).lsn == 4


def test_a_record_that_fails_its_check_is_skipped_and_counted(store: SegmentStore) -> None:
    records = write(store, ROOT, TIMES)
    seg_no = store.segment(ROOT).meta.seg_no
    for lsn in (7, 2):  # the newest commit and the oldest: one byte of each flips on disk
        raw = bytearray(records[lsn - 1].encode())
        raw[-1] ^= 0x01
        put_raw(store, record_key(seg_no, lsn), bytes(raw))
    found = store.find_commit(ROOT, T0 + 999)
    assert (found.lsn, found.commit_time_us) == (4, T0 + 20)  # never the rotten 7
    assert found.oldest_commit_time_us == T0 + 20  # nor the rotten 2
    assert found.records_skipped == 1 + 1
    before = store.find_commit(ROOT, T0 + 15)
    assert before.lsn == 0 and before.records_skipped == 2 + 1  # the backwards walk passed both


def test_a_search_longer_than_its_bound_stops_with_a_sentence(store: SegmentStore) -> None:
    write(store, ROOT, [T0 + 1] + [0] * 9)  # one commit, then nine records inside an MTR
    assert store.find_commit(ROOT, T0 + 5, records_max=10).lsn == 1
    with pytest.raises(ReadPointOutOfRange, match="stopped after 9 records without finding one"):
        store.find_commit(ROOT, T0 + 5, records_max=9)
    assert store.find_commit(ROOT, T0 + 5, at_or_below_lsn=3, records_max=3).lsn == 1


def test_the_gc_floor_and_what_gc_left(store: SegmentStore) -> None:
    write(store, ROOT, TIMES)
    coalesce(store, ROOT, 5)  # a version of every page at or below 5: GC deletes the records there
    assert gc(store, ROOT, 5) == 5
    found = store.find_commit(ROOT, T0 + 999)
    assert found.gc_floor_lsn == 5 and found.lsn == 7
    assert found.oldest_commit_time_us == T0 + 30  # the commits at 2 and 4 were collected
    assert store.find_commit(ROOT, T0 + 25).lsn == 0


def test_a_clone_answers_from_its_own_records_only(store: SegmentStore) -> None:
    parent = Timeline(store, ROOT, [4], tail=4, records=write(store, ROOT, TIMES[:4]))
    clone = parent.clone(store, CLONE, branch=4)
    empty = store.find_commit(CLONE, T0 + 999)
    assert (empty.lsn, empty.oldest_commit_time_us, empty.gc_floor_lsn) == (0, 0, 4)
    write(store, CLONE, [0, T0 + 40], start=clone.tail)
    own = store.find_commit(CLONE, T0 + 999)
    assert (own.lsn, own.commit_time_us, own.oldest_commit_time_us) == (6, T0 + 40, T0 + 40)
    assert store.find_commit(CLONE, T0 + 39).lsn == 0


def test_bad_requests(store: SegmentStore) -> None:
    with pytest.raises(UnknownSegment):
        store.find_commit("nope", T0)
    with pytest.raises(InvalidRequest, match="at_time_us"):
        store.find_commit(ROOT, 0)
    store.create_segment(seg_meta("vol/pg-00001"), rebuild=True)  # not whole until it caught up
    with pytest.raises(ReadPointOutOfRange, match="not whole"):
        store.find_commit("vol/pg-00001", T0)


def test_the_rpc(tmp_path: Path) -> None:
    async def run() -> None:
        store = SegmentStore(str(tmp_path / "node"), map_size_bytes=1 << 25)
        node = StorageServicer(store, "a1", "a", scrub=False, coalesce_interval_s=0)
        service = pb.DESCRIPTOR.services_by_name["StorageService"]
        server, port, _ = await start_server("127.0.0.1", 0, [(service, node, pb)])
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.StorageServiceStub(channel)
        try:
            store.create_segment(seg_meta(ROOT))
            write(store, ROOT, TIMES)
            reply = await stub.FindCommit(pb.FindCommitRequest(segment_id=ROOT, at_time_us=T0 + 25))
            assert (reply.lsn, reply.commit_time_us, reply.gc_floor_lsn, reply.oldest_commit_time_us) == (
                4,
                T0 + 20,
                0,
                T0 + 10,
            )
            reply = await stub.FindCommit(pb.FindCommitRequest(segment_id=ROOT, at_time_us=T0 + 99, at_or_below_lsn=5))
            assert reply.lsn == 4
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await stub.FindCommit(pb.FindCommitRequest(segment_id="nope", at_time_us=T0))
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError) as no_time:
                await stub.FindCommit(pb.FindCommitRequest(segment_id=ROOT))
            assert no_time.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        finally:
            await node.stop()
            await channel.close()
            await server.stop(None)
            store.close()

    asyncio.run(run())
