"""Coalescing, the retention horizon, GC and hydration: the pure plans against brute-force oracles,
then the LMDB store carrying them out.

Tiers are marked per test: in-process ones `unit`, the one that starts a cluster `integration`."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import ReadPointOutOfRange
from sixfold.storage.records import LogRecord
from sixfold.storage.retention import HistoryWindow, coalesce_target, next_horizon, plan_page_gc
from sixfold.storage.store import SegmentStore, page_key
from tests.depth import examples
from tests.test_store import SEG, batch, commit_ok, meta, oracle_page

# -- pure: GC keeps what every read point at or above the horizon needs ---------------------


def materialize_oracle(versions: set[int], records: set[int], read_point: int) -> tuple[int, tuple[int, ...]]:
    """A page at `read_point` as (the version it starts from, the record LSNs applied to it); a version
    at V stands for all records <= V (of every record that ever existed, `universe`)."""
    base = max((v for v in versions if v <= read_point), default=0)
    return base, tuple(sorted(r for r in records if base < r <= read_point))


def content(versions: set[int], records: set[int], read_point: int, universe: set[int]) -> tuple[int, ...] | None:
    base, applied = materialize_oracle(versions, records, read_point)
    needed = tuple(sorted(r for r in universe if base < r <= read_point))
    if applied != needed:
        return None  # a record it needs is gone: the page would be wrong
    return tuple(sorted(r for r in universe if r <= read_point))


@pytest.mark.unit
@settings(max_examples=examples(400), deadline=None)
@given(st.sets(st.integers(1, 60), max_size=25), st.data())
def test_gc_keeps_every_read_point_at_or_above_the_horizon_exact(universe: set[int], data: st.DataObject) -> None:
    versions = data.draw(st.sets(st.sampled_from(sorted(universe)), max_size=8)) if universe else set()
    horizon = data.draw(st.integers(0, 70))
    plan = plan_page_gc(3, horizon, sorted(versions), sorted(universe))
    kept_versions = versions - set(plan.versions_to_delete)
    kept_records = universe - set(plan.records_to_delete)
    assert set(plan.versions_to_delete) <= versions and set(plan.records_to_delete) <= universe
    for read_point in range(horizon, 72):
        assert content(kept_versions, kept_records, read_point, universe) == content(
            versions, universe, read_point, universe
        ), (read_point, plan)
    # And it keeps nothing it does not need: at most one version at or below the horizon.
    assert len([v for v in kept_versions if v <= horizon]) <= 1
    if plan.base_lsn:
        assert not [r for r in kept_records if r <= plan.base_lsn]


@pytest.mark.unit
@given(st.lists(st.integers(1, 100), unique=True, max_size=20), st.integers(0, 110), st.integers(1, 10))
def test_coalesce_target_is_the_newest_foldable_record_once_the_chain_is_long(
    lsns: list[int], limit: int, chain_min: int
) -> None:
    target = coalesce_target(sorted(lsns), limit, chain_min)
    foldable = [x for x in lsns if x <= limit]
    if len(foldable) >= chain_min:
        assert target == max(foldable) and target <= limit
    else:
        assert target is None


@pytest.mark.unit
@given(
    st.integers(0, 100),
    st.integers(0, 100),
    st.integers(0, 100),
    st.one_of(st.none(), st.integers(0, 100)),
    st.lists(st.integers(0, 100), max_size=3),
    st.one_of(st.none(), st.integers(0, 100)),
    st.one_of(st.none(), st.integers(0, 100)),
)
def test_the_horizon_is_the_lowest_bound_and_never_goes_down(
    current: int, scl: int, vdl_hint: int, mrp: int | None, pins: list[int], window: int | None, peer_floor: int | None
) -> None:
    h = next_horizon(
        current, scl=scl, vdl_hint=vdl_hint, min_read_point=mrp, pins=pins, window_bound=window, peer_floor=peer_floor
    )
    assert h >= current
    if h > current:
        assert mrp is not None and window is not None
        assert h <= min([scl, vdl_hint, mrp, window, *pins])
        assert peer_floor is None or h <= peer_floor
    if mrp is None or window is None:
        assert h == current


@pytest.mark.unit
def test_the_history_window_knows_nothing_older_than_its_first_sample() -> None:
    w = HistoryWindow(10.0)
    w.sample(100.0, 5)
    assert w.bound(105.0) is None
    w.sample(106.0, 50)
    assert w.bound(110.0) == 5  # the SCL at 100 is the newest known at or before 110 - 10
    w.sample(117.0, 90)
    assert w.bound(117.0) == 50
    for t in range(5000):
        w.sample(200.0 + t, t)
    assert len(w.times) <= 4096 and w.bound(5199.0) == 4989


# -- the store ------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    s = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    s.create_segment(meta())
    yield s
    s.close()


def fill(store: SegmentStore, seed: int, count: int = 400, pages: int = 6) -> list[LogRecord]:
    rng = random.Random(seed)
    chain = ChainBuilder()
    records = [
        chain.patch(rng.randrange(pages), bytes([rng.randrange(256)]) * rng.randrange(1, 40), rng.randrange(4000))
        for _ in range(count)
    ]
    for i in range(0, count, 100):
        b = batch(records[i : i + 100], batch_id=i)
        b.vdl_hint = records[min(i + 99, count - 1)].lsn
        commit_ok(store, b)
    return records


def coalesce_all(store: SegmentStore, limit: int, chain_min: int = 8) -> int:
    pages, _, _ = store.coalesce_candidates(SEG, 0, 1000, limit, chain_min)
    return store.coalesce_pages(SEG, pages, limit, chain_min)


def gc_all(store: SegmentStore, horizon: int) -> None:
    store.raise_horizon(SEG, horizon)
    page: int | None = 0
    while page is not None:
        page = store.collect_garbage(SEG, page, 2)


@pytest.mark.unit
@pytest.mark.parametrize("seed", range(3))
def test_coalescing_then_gc_keeps_every_read_at_or_above_the_horizon(store: SegmentStore, seed: int) -> None:
    print(f"seed {seed}")
    records = fill(store, seed)
    last = records[-1].lsn
    assert coalesce_all(store, 150) > 0
    assert store.segment(SEG).meta.versions_coalesced > 0
    for rp in (1, 100, 150, 151, 300, last):
        for p in range(6):
            assert store.read_page(SEG, p, rp).data == oracle_page(records, p, rp)
    coalesce_all(store, 200, chain_min=1)
    coalesce_all(store, 320, chain_min=1)
    gc_all(store, 250)
    m = store.segment(SEG).meta
    assert m.retention_horizon_lsn == 250 and m.records_collected > 0 and m.versions_collected > 0
    assert m.record_count == last - m.records_collected
    for rp in (250, 251, 320, last):
        for p in range(6):
            assert store.read_page(SEG, p, rp).data == oracle_page(records, p, rp)
    with pytest.raises(ReadPointOutOfRange, match="retention horizon"):
        store.read_page(SEG, 0, 249)
    with pytest.raises(ReadPointOutOfRange, match="garbage-collected; hydrate from page versions"):
        store.read_records(SEG, 10, 0, 100, 0)
    got, _ = store.read_records(SEG, 250, 0, 1000, 0)
    assert [r.lsn for r in got] == [r.lsn for r in records if r.lsn > 250]
    assert store.tail_at_or_below(SEG, 250) == 250 and store.tail_at_or_below(SEG, 260) == 260


@pytest.mark.unit
def test_the_horizon_never_passes_scl_vdl_hint_or_a_pin(store: SegmentStore) -> None:
    fill(store, 7, count=200)
    store.pin_lsns(SEG, [120, 180])
    assert store.raise_horizon(SEG, 150) == 120
    with pytest.raises(ReadPointOutOfRange, match="cannot be pinned"):
        store.pin_lsns(SEG, [100])
    store.pin_lsns(SEG, [])
    assert store.raise_horizon(SEG, 10_000) == 200  # SCL and VDL hint
    assert store.raise_horizon(SEG, 50) == 200  # never goes down


@pytest.mark.unit
def test_restart_after_gc_keeps_scl_tail_and_the_chain(tmp_path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 25)
    store.create_segment(meta())
    chain = ChainBuilder()
    records = [chain.patch(i % 3, b"x%03d" % i) for i in range(1, 61)]
    # Record 61 is held back: the segment then has a hole above the GC floor.
    later = [chain.patch(i % 3, b"y%03d" % i) for i in range(3)]
    b = batch(records)
    b.vdl_hint = 60
    commit_ok(store, b)
    commit_ok(store, batch(later[1:], batch_id=2))
    coalesce_all(store, 60, chain_min=1)
    gc_all(store, 60)  # every record of every page is folded: none at or below 60 is left
    assert store.segment(SEG).meta.record_count == 2 and store.tail_at_or_below(SEG, 60) == 60
    store.close()
    store = SegmentStore(path, map_size_bytes=1 << 25)
    seg = store.segment(SEG)
    assert seg.tracker.scl == 60 and seg.meta.chain_anchor_lsn == 60
    assert store.tail_at_or_below(SEG, 61) == 60  # the chain anchor stands in for the collected record
    commit_ok(store, batch(later[:1], batch_id=3))  # fills the hole: the chain continues from the anchor
    assert store.segment(SEG).tracker.scl == later[-1].lsn
    for p in range(3):
        assert store.read_page(SEG, p, later[-1].lsn).data == oracle_page(records + later, p, later[-1].lsn)
    # A resend of a collected record is a duplicate, not a conflict.
    commit_ok(store, batch(records[:5], batch_id=4))
    store.close()


@pytest.mark.unit
def test_hydration_from_page_versions_rebuilds_a_segment_exactly(tmp_path) -> None:
    source = SegmentStore(str(tmp_path / "a"), map_size_bytes=1 << 25)
    source.create_segment(meta())
    records = fill(source, 3, count=300, pages=20)
    coalesce_all(source, 200, chain_min=1)
    gc_all(source, 200)
    target = SegmentStore(str(tmp_path / "b"), map_size_bytes=1 << 25)
    target.create_segment(meta())
    commit_ok(target, batch(records[:50]))  # it has some old records (and misses the rest)
    with pytest.raises(ReadPointOutOfRange):
        source.read_records(SEG, 50, 0, 10, 0)
    target.begin_hydration(SEG, 200)
    with pytest.raises(ReadPointOutOfRange, match="hydrated again"):
        target.read_page(SEG, 0, 200)
    start, tail = 0, 0
    while True:
        versions, next_page, tail = source.read_page_versions(SEG, 200, start, 3 * 4096, 100)
        target.hydrate_pages(SEG, 200, start, next_page, versions)
        if next_page is None:
            break
        start = next_page
    assert target.finish_hydration(SEG, 200, tail) == 200
    got, _ = source.read_records(SEG, 200, 0, 1000, 0)
    b = batch(got, batch_id=9)
    commit_ok(target, b)
    m = target.segment(SEG).meta
    assert (
        target.segment(SEG).tracker.scl == 300 and m.pages_hydrated > 0 and m.bytes_hydrated == m.pages_hydrated * 4096
    )
    for rp in (200, 250, 300):
        for p in range(20):
            assert target.read_page(SEG, p, rp).data == oracle_page(records, p, rp)
    source.close()
    target.close()


# -- real processes: a node that was down while its peers collected garbage -----------------

RETENTION_FLAGS = ["--history-window-s", "0.5", "--coalesce-interval-ms", "200"]


@pytest.mark.integration
@pytest.mark.cluster_options(compute=False, node_flags=RETENTION_FLAGS)
def test_a_node_back_after_its_peers_collected_garbage_hydrates_from_page_versions(cluster) -> None:
    import time

    import grpc

    from sixfold.storage.v1 import storage_service_pb2 as pb
    from sixfold.storage.wire import record_to_proto
    from tests.test_storage_integration import create_volume, stub
    from tests.test_store import oracle_page

    # The nodes keep 0.5 s of history; a volume's backtrack window, if longer, is what they keep of it:
    # gcvol's 1 s lets GC run within the test, kept's 1 h keeps every record the same writes leave.
    geometry = create_volume(cluster, "gcvol", backtrack_window_s=1)
    pg = geometry.protection_groups[0]
    absent, peers = pg.segments[0], pg.segments[1:]
    kept_pg = create_volume(cluster, "kept", backtrack_window_s=3600).protection_groups[0]
    kept = [s for s in kept_pg.segments if s.node_id != absent.node_id]
    cluster.stop(absent.node_id)
    chain = ChainBuilder()
    records: list[LogRecord] = []
    for b in range(30):
        batch_records = [chain.patch(i % 50, b"r%05d" % (b * 100 + i), offset=(i * 7) % 4000) for i in range(100)]
        records += batch_records
        request = pb.AppendRecordsRequest(
            segment_id=absent.segment_id,
            volume_epoch=1,
            membership_epoch=1,
            batch_id=b,
            records=[record_to_proto(r) for r in batch_records],
            vdl_hint=chain.last_lsn,
            min_read_point=chain.last_lsn,
        )
        for s in peers:  # no writer: a batch straight to each live segment, reporting its VDL and read point
            list(stub(s.address).AppendRecords(iter([request]), timeout=10))
        for s in kept:  # the same batches to the volume with the long window
            request.segment_id = s.segment_id
            list(stub(s.address).AppendRecords(iter([request]), timeout=10))
        request.segment_id = absent.segment_id
    last = chain.last_lsn

    def state(address: str, segment_id: str = absent.segment_id) -> pb.SegmentState:
        return stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id)).state

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(state(s.address).retention_horizon_lsn == last for s in peers):
        time.sleep(0.2)
    collected = [state(s.address) for s in peers]
    assert all(st.retention_horizon_lsn == last and st.records_collected > 0 for st in collected), collected
    print("peers collected", [(st.records_collected, st.versions_collected, st.versions_coalesced) for st in collected])
    held = [state(s.address, s.segment_id) for s in kept]
    assert all(st.scl == last and st.versions_coalesced > 0 for st in held), held  # folded, as gcvol's were
    assert all(st.retention_horizon_lsn == 0 and st.records_collected == 0 for st in held), held
    print("inside its 1 h backtrack window, kept's segments collected nothing:", [st.record_count for st in held])
    with pytest.raises(grpc.RpcError) as refused:
        stub(peers[0].address).ReadRecords(pb.ReadRecordsRequest(segment_id=absent.segment_id, from_lsn=0))
    assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "garbage-collected; hydrate from page versions" in (refused.value.details() or "")

    cluster.start(absent.node_id)
    address = cluster.node_address(absent.node_id)
    deadline = time.monotonic() + 60
    got = state(address)
    while time.monotonic() < deadline and got.scl != last:
        time.sleep(0.2)
        got = state(address)
    assert got.scl == last, f"SCL {got.scl} != {last}"
    print(f"{absent.node_id} hydrated {got.pages_hydrated} pages ({got.bytes_hydrated} bytes); SCL {got.scl}")
    assert got.pages_hydrated == 50 and got.bytes_hydrated == 50 * 4096
    for page_no in range(50):
        reply = stub(address).ReadPage(
            pb.ReadPageRequest(segment_id=absent.segment_id, page_no=page_no, read_point=last)
        )
        assert reply.data == oracle_page(records, page_no, last)
    # And it keeps up with new records linked to the collected chain.
    more = [chain.patch(i % 5, b"late%03d" % i) for i in range(20)]
    request = pb.AppendRecordsRequest(
        segment_id=absent.segment_id,
        volume_epoch=1,
        membership_epoch=1,
        batch_id=99,
        records=[record_to_proto(r) for r in more],
    )
    for s in pg.segments:
        (ack,) = list(stub(cluster.node_address(s.node_id)).AppendRecords(iter([request]), timeout=10))
        assert ack.scl == chain.last_lsn
    for page_no in range(5):
        reply = stub(address).ReadPage(
            pb.ReadPageRequest(segment_id=absent.segment_id, page_no=page_no, read_point=chain.last_lsn)
        )
        assert reply.data == oracle_page(records + more, page_no, chain.last_lsn)


@pytest.mark.unit
def test_after_its_first_full_pass_coalescing_looks_only_at_pages_that_received_records(store: SegmentStore) -> None:
    import asyncio

    from sixfold.storage.coalesce import Coalescer

    async def on_writer(fn, *args):
        return fn(*args)

    coalescer = Coalescer(store, on_writer, lambda segment_id: None, tick_pause_s=0, chain_min=8)
    chain = ChainBuilder()

    def append(page: int, count: int) -> None:
        records = [chain.patch(page, b"x%04d" % i) for i in range(count)]
        b = batch(records, batch_id=chain.last_lsn)
        b.vdl_hint = chain.last_lsn
        commit_ok(store, b)

    append(1, 10)
    append(2, 3)  # too short a chain to fold
    assert store.dirty_pages(SEG) == {1: 10, 2: 3}
    store.take_dirty_pages(SEG)  # as after a restart: the appends before it were never counted
    append(1, 1)
    asyncio.run(coalescer.round())  # the first pass looks at every page, and counts what it leaves
    assert store.segment(SEG).meta.versions_coalesced == 1
    assert store.dirty_pages(SEG) == {2: 3}  # page 1 was folded whole; page 2 waits with 3 records
    asyncio.run(coalescer.round())  # nothing new: page 2 waits without being read, nothing written
    assert store.segment(SEG).meta.versions_coalesced == 1 and store.dirty_pages(SEG) == {2: 3}
    append(2, 6)  # page 2 now has 9 records above no version; page 1 only 3 above its version
    append(1, 3)
    asyncio.run(coalescer.round())
    assert store.segment(SEG).meta.versions_coalesced == 2
    assert store.dirty_pages(SEG) == {1: 3}
    assert store.read_page(SEG, 2, chain.last_lsn).data[:5] == b"x0005"
    # Records above the fold limit (the writer's VDL) wait, and are looked at again once it rises.
    records = [chain.patch(3, b"y%04d" % i) for i in range(9)]
    b = batch(records, batch_id=chain.last_lsn)
    b.vdl_hint = records[0].lsn - 1
    commit_ok(store, b)
    asyncio.run(coalescer.round())
    assert store.segment(SEG).meta.versions_coalesced == 2
    b = batch([chain.patch(4, b"z")], batch_id=chain.last_lsn)
    b.vdl_hint = chain.last_lsn
    commit_ok(store, b)
    asyncio.run(coalescer.round())
    assert store.segment(SEG).meta.versions_coalesced == 3


@pytest.mark.unit
def test_a_fold_that_fails_leaves_its_page_counted_and_it_is_folded_next_round(store: SegmentStore) -> None:
    """Counts go down only by what a committed fold took: a failed fold (here the writer thread raising
    once) must not make coalescing forget the page until eight more records arrive."""
    import asyncio

    from sixfold.storage.coalesce import Coalescer
    from sixfold.storage.errors import StorageError

    failures = [1]

    async def on_writer(fn, *args):
        if fn == store.coalesce_pages and failures[0]:
            failures[0] -= 1
            raise StorageError("the map is full (injected once)")
        return fn(*args)

    coalescer = Coalescer(store, on_writer, lambda segment_id: None, tick_pause_s=0, chain_min=8)
    chain = ChainBuilder()
    asyncio.run(coalescer.round())  # the first full pass, on an empty segment
    records = [chain.patch(1, b"x%04d" % i) for i in range(10)]
    b = batch(records, batch_id=chain.last_lsn)
    b.vdl_hint = chain.last_lsn
    commit_ok(store, b)
    asyncio.run(coalescer.round())  # the fold fails: nothing written, the page stays counted
    assert store.segment(SEG).meta.versions_coalesced == 0
    assert store.dirty_pages(SEG) == {1: 10}
    asyncio.run(coalescer.round())  # no new record: folded all the same
    assert store.segment(SEG).meta.versions_coalesced == 1
    assert store.dirty_pages(SEG) == {}
    assert store.read_page(SEG, 1, chain.last_lsn).data[:5] == b"x0009"


@pytest.mark.unit
def test_a_quarantined_version_sends_its_page_back_to_coalescing(store: SegmentStore) -> None:
    from sixfold.storage.store import LOOK_AGAIN

    chain = ChainBuilder()
    records = [chain.patch(2, b"y%04d" % i) for i in range(9)]
    b = batch(records, batch_id=chain.last_lsn)
    b.vdl_hint = chain.last_lsn
    commit_ok(store, b)
    store.take_dirty_pages(SEG)
    assert coalesce_all(store, chain.last_lsn) == 1
    lsn = chain.last_lsn
    seg_no = store.segment(SEG).meta.seg_no
    with store.env.begin(write=True, db=store._versions) as txn:  # rot the version's bytes
        raw = bytearray(txn.get(page_key(seg_no, 2, lsn)))
        raw[-1] ^= 0xFF
        txn.put(page_key(seg_no, 2, lsn), bytes(raw))
    assert store.quarantine_version(SEG, 2, lsn)
    assert store.dirty_pages(SEG).get(2, 0) >= LOOK_AGAIN


@pytest.mark.unit
def test_a_fold_asked_for_while_the_segment_is_below_its_gc_floor_writes_nothing(store: SegmentStore) -> None:
    """SCL may drop below the GC floor (a lost copy, a hydration begun) between the coalescer's look and
    its fold: the fold then writes nothing and says so (it used to fail on its own result)."""
    chain = ChainBuilder()
    b = batch([chain.patch(1, b"z%04d" % i) for i in range(9)], batch_id=1)
    b.vdl_hint = chain.last_lsn
    commit_ok(store, b)
    store.begin_hydration(SEG, chain.last_lsn + 1)  # SCL 9 is now below the horizon 10
    assert store.coalesce_pages(SEG, [1], chain.last_lsn, 2) == 0
    assert store.segment(SEG).meta.versions_coalesced == 0
