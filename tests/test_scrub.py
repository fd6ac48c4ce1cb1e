"""Scrubbing (storage/scrub.py): stored copies are re-checked on a schedule; a bad one is quarantined,
the chain breaks at the hole, and gossip fetches the record again from a peer.

Tiers are marked per test: in-process ones `unit`, the one that starts a cluster `integration`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.errors import ReadPointOutOfRange
from sixfold.storage.records import LogRecord, apply_record
from sixfold.storage.scrub import Scrubber, record_problem, version_problem
from sixfold.storage.store import SegmentStore, page_key
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.wire import record_from_proto
from sixfold.tools.cluster import Cluster
from sixfold.tools.launcher import _details
from tests.test_storage_integration import all_records, append_once, create_volume, stub
from tests.test_store import PAGE, SEG, batch, commit_ok, flip_byte_in_file, meta


async def inline(fn: Any, *args: Any) -> Any:
    """Stands in for the node's writer executor: runs the write at once."""
    return fn(*args)


def scrub_once(store: SegmentStore, **limits: Any) -> Scrubber:
    scrubber = Scrubber(store, inline, tick_pause_s=0, **limits)
    asyncio.run(scrubber.scrub_pass())
    return scrubber


def page_at(records: list[LogRecord], page_no: int, read_point: int) -> bytes:
    page = bytearray(PAGE)
    for r in records:
        if r.page_no == page_no and r.lsn <= read_point:
            apply_record(page, r)
    return bytes(page)


def written(tmp_path: Path, records: list[LogRecord]) -> str:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 24)
    store.create_segment(meta())
    commit_ok(store, batch(records))
    store.close()
    return path


@pytest.mark.unit
def test_a_rotten_record_below_scl_is_quarantined_and_the_chain_breaks_there(tmp_path: Path) -> None:
    chain = ChainBuilder()
    records = [
        chain.patch(3, b"before"),
        chain.patch(3, b"SCRUB-ROT-TARGET-0001", 100),
        chain.patch(4, b"after"),
        chain.patch(3, b"later", 200),
        chain.patch(5, b"last"),
    ]
    path = written(tmp_path, records)
    flip_byte_in_file(f"{path}/data.mdb", b"SCRUB-ROT-TARGET-0001")
    store = SegmentStore(path)
    try:
        # The restart recomputes SCL from the records: the chain stops before the rotten copy. The scrubber
        # then deletes that copy (a quarantine), so a resend or gossip can store the good one.
        assert store.segment(SEG).tracker.scl == 1 and not store.segment(SEG).whole
        scrubber = scrub_once(store)
        counts = scrubber.counts_of(SEG)
        assert (counts.records_quarantined, counts.versions_quarantined, counts.scrub_passes) == (1, 0, 1)
        seg = store.segment(SEG)
        assert seg.tracker.scl == 1, "SCL falls to just below the hole"
        assert seg.tracker.pending == {2: 3, 3: 4, 4: 5}, "the records above wait for the hole to fill"
        assert (seg.meta.scl, seg.meta.record_count, seg.meta.highest_lsn) == (1, 4, 5)
        assert store.read_page(SEG, 3, 1).data == page_at(records, 3, 1)
        for read_point in (2, 3, 5):  # at or above the hole: refused, never served wrong
            with pytest.raises(ReadPointOutOfRange, match="SCL 1"):
                store.read_page(SEG, 3, read_point)
        assert [r.lsn for r in store.read_records(SEG, 0, 0, 10, 0)[0]] == [1, 3, 4, 5]
        with store.env.begin() as txn:  # the page-index row went with the record
            assert txn.get(page_key(seg.meta.seg_no, 3, 2), db=store._page_index) is None
        assert scrub_once(store).counts_of(SEG).records_quarantined == 0, "a second pass finds nothing more"
    finally:
        store.close()
    store = SegmentStore(path)  # the lowered SCL is durable: a restart does not claim the hole again
    try:
        assert store.segment(SEG).tracker.scl == 1 and store.segment(SEG).tracker.pending == {2: 3, 3: 4, 4: 5}
        (ok,) = commit_ok(store, batch([records[1]]))  # a peer sends the good copy (what gossip does)
        assert ok.stored == 1 and ok.scl == 5
        for read_point in range(6):
            assert store.read_page(SEG, 3, read_point).data == page_at(records, 3, read_point)
        assert scrub_once(store).counts_of(SEG).records_quarantined == 0
    finally:
        store.close()


@pytest.mark.unit
def test_a_rotten_record_above_scl_goes_without_moving_scl(tmp_path: Path) -> None:
    chain = ChainBuilder()
    low = [chain.patch(1, b"one"), chain.patch(1, b"two")]
    chain.next_lsn = 5  # LSNs 3 and 4 are missing: 5 and 6 wait above SCL 2
    chain.last_lsn = 4
    high = [chain.patch(2, b"PENDING-ROT-TARGET"), chain.patch(2, b"six")]
    path = written(tmp_path, low + high)
    flip_byte_in_file(f"{path}/data.mdb", b"PENDING-ROT-TARGET")
    store = SegmentStore(path)
    try:
        scrubber = scrub_once(store)
        assert scrubber.counts_of(SEG).records_quarantined == 1
        seg = store.segment(SEG)
        assert seg.tracker.scl == 2 and seg.tracker.pending == {5: 6}
        assert [r.lsn for r in store.read_records(SEG, 0, 0, 10, 0)[0]] == [1, 2, 6]
    finally:
        store.close()


@pytest.mark.unit
def test_a_rotten_page_version_is_quarantined_and_reads_fall_back_to_the_records(tmp_path: Path) -> None:
    chain = ChainBuilder()
    records = [chain.patch(3, b"x"), chain.patch(3, b"y", 10)]
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 24)
    store.create_segment(meta())
    commit_ok(store, batch(records))
    store.put_page_version(SEG, 3, 2, (b"VERSION-ROT-MARK" + bytes(PAGE))[:PAGE])  # a wrong image, found by CRC
    store.close()
    flip_byte_in_file(f"{path}/data.mdb", b"VERSION-ROT-MARK")
    store = SegmentStore(path)
    try:
        counts = scrub_once(store).counts_of(SEG)
        assert (counts.records_quarantined, counts.versions_quarantined) == (0, 1)
        assert store.segment(SEG).tracker.scl == 2
        assert store.read_page(SEG, 3, 2).data == page_at(records, 3, 2)
    finally:
        store.close()


@pytest.mark.unit
def test_a_big_segment_is_scrubbed_over_many_ticks_resuming_where_it_stopped(tmp_path: Path) -> None:
    chain = ChainBuilder()
    records = [chain.patch(i % 7, b"r%04d" % i) for i in range(1, 40)]
    path = written(tmp_path, records)
    flip_byte_in_file(f"{path}/data.mdb", records[32].data)  # LSN 33
    store = SegmentStore(path)
    try:
        starts: list[bytes | None] = []
        scan = store.scrub_records

        def counted(segment_id: str, start_key: bytes | None, rows_max: int, bytes_max: int):
            starts.append(start_key)
            chunk = scan(segment_id, start_key, rows_max, bytes_max)
            assert chunk.checked <= rows_max == 5
            return chunk

        store.scrub_records = counted  # type: ignore[method-assign]
        scrubber = scrub_once(store, rows_per_tick_max=5)
        assert len(starts) == 8, starts  # 39 records, 5 a tick
        assert len(set(starts)) == len(starts), "each tick starts where the previous one stopped"
        assert scrubber.counts_of(SEG).records_quarantined == 1 and store.segment(SEG).tracker.scl == 32
    finally:
        store.close()


@pytest.mark.unit
def test_scrubbing_slows_to_the_busy_pace_while_appends_arrive_and_still_finishes_its_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = ChainBuilder()
    records = [chain.patch(i % 7, b"r%04d" % i) for i in range(1, 40)]
    store = SegmentStore(written(tmp_path, records))
    try:
        appends = [0]
        pauses: list[float] = []
        scrubber = Scrubber(
            store,
            inline,
            tick_pause_s=0.001,
            rows_per_tick_max=5,
            appends_committed=lambda: appends[0],
            busy_pause_s=0.002,
        )
        sleep = asyncio.sleep

        async def recorded(delay: float) -> None:
            pauses.append(delay)
            if len(pauses) in (2, 3, 6):  # appends committed during these ticks
                appends[0] += 1
            await sleep(0)

        monkeypatch.setattr(asyncio, "sleep", recorded)
        asyncio.run(scrubber.scrub_segment(SEG))
        monkeypatch.undo()
        # The pause after a tick is the busy one exactly when the count moved since the tick before.
        assert pauses[:7] == [0.001, 0.001, 0.002, 0.002, 0.001, 0.001, 0.002], pauses
        assert scrubber.busy_ticks == 3
        assert scrubber.counts_of(SEG).scrub_passes == 1, "the busy pace slows the pass, it does not stop it"
    finally:
        store.close()


@pytest.mark.unit
def test_a_copy_repaired_before_the_writer_gets_to_it_is_kept(tmp_path: Path) -> None:
    chain = ChainBuilder()
    records = [chain.patch(1, b"a"), chain.patch(1, b"b")]
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
    try:
        store.create_segment(meta())
        commit_ok(store, batch(records))
        assert store.quarantine_record(SEG, 2) is None  # sound: nothing happens
        assert store.quarantine_version(SEG, 1, 2) is False
        assert store.segment(SEG).tracker.scl == 2 and store.read_page(SEG, 1, 2).data[:1] == b"b"
    finally:
        store.close()


@pytest.mark.unit
def test_a_record_missing_from_the_page_index_is_quarantined(tmp_path: Path) -> None:
    """Reads find a page's records through the index: a record it lacks would be skipped, so it goes."""
    chain = ChainBuilder()
    records = [chain.patch(1, b"a"), chain.patch(1, b"b"), chain.patch(1, b"c")]
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
    try:
        store.create_segment(meta())
        commit_ok(store, batch(records))
        seg_no = store.segment(SEG).meta.seg_no
        with store.env.begin(write=True) as txn:
            txn.delete(page_key(seg_no, 1, 2), db=store._page_index)
        assert scrub_once(store).counts_of(SEG).records_quarantined == 1
        assert store.segment(SEG).tracker.scl == 1
        commit_ok(store, batch([records[1]]))
        assert store.read_page(SEG, 1, 3).data == page_at(records, 1, 3)
    finally:
        store.close()


@pytest.mark.unit
def test_the_checks_name_what_is_wrong() -> None:
    m = meta()
    good = ChainBuilder().patch(1, b"ok")
    raw = good.encode()
    assert record_problem(m, 1, raw, lambda page: True) is None
    assert "says it is LSN 1" in (record_problem(m, 2, raw, lambda page: True) or "")
    assert "page-index" in (record_problem(m, 1, raw, lambda page: False) or "")
    assert "CRC-32C" in (record_problem(m, 1, raw[:-1] + b"X", lambda page: True) or "")
    far = ChainBuilder().patch(m.page_count + 5, b"ok").encode()
    assert "outside the segment" in (record_problem(m, 1, far, lambda page: True) or "")
    from sixfold.storage.records import encode_page_version

    version = encode_page_version(3, 7, bytes(PAGE))
    assert version_problem(m, 3, 7, version) is None
    assert "says it is page 3 at LSN 7" in (version_problem(m, 4, 7, version) or "")
    assert "not one page" in (version_problem(m, 3, 7, encode_page_version(3, 7, bytes(10))) or "")


# -- through the launcher ----------------------------------------------------------------------


def flip_every_copy(path: Path, needle: bytes) -> int:
    """Flip a byte in the middle of every copy of `needle` in the file (LMDB's copy-on-write may leave old
    copies of a page in free pages; flipping those too is harmless). Returns the number of copies."""
    blob = bytearray(path.read_bytes())
    at, copies = blob.find(needle), 0
    while at >= 0:
        blob[at + len(needle) // 2] ^= 0x01
        copies += 1
        at = blob.find(needle, at + 1)
    assert copies, f"{needle!r} is not in {path}"
    path.write_bytes(bytes(blob))
    return copies


@pytest.mark.integration
# Plaintext on disk (--insecure: no encryption at rest), so the test finds the record's bytes in data.mdb to rot
# them; on an encrypting node a rotten byte fails the AES-GCM check instead (tests/test_encryption*.py).
@pytest.mark.cluster_options(compute=False, insecure=True)
def test_scrubbing_finds_a_rotten_record_and_gossip_repairs_it(cluster: Cluster) -> None:
    geometry = create_volume(cluster, "scrubvol")
    pg = geometry.protection_groups[0]
    chain = ChainBuilder()
    batches = [[chain.patch(i % 50, b"scrub-%05d-payload" % (b * 100 + i)) for i in range(100)] for b in range(5)]
    for s in pg.segments:  # no writer: the records go straight to all six segments
        for n, records in enumerate(batches):
            append_once(s.address, s.segment_id, records, batch_id=n)
    victim, peer = pg.segments[2], pg.segments[3]
    target = batches[2][49]  # LSN 250, well below the victim's SCL
    assert target.lsn == 250 and chain.last_lsn == 500
    cluster.stop(victim.node_id)
    copies = flip_every_copy(cluster.data_dir(victim.node_id) / "lmdb" / "data.mdb", target.data)
    cluster.start(victim.node_id)
    address = cluster.node_address(victim.node_id)
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline:
        state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=victim.segment_id)).state
        if state.records_repaired >= 1 and state.scl == chain.last_lsn and state.whole:
            break
        time.sleep(0.2)
    assert state is not None
    print(
        f"{victim.node_id}: {copies} copies of LSN {target.lsn} rotted; quarantined {state.records_quarantined}, "
        f"repaired {state.records_repaired}, SCL {state.scl}, scrub passes {state.scrub_passes}"
    )
    # The restart already proves SCL from the records: the chain stops below the rotten copy, so gossip pulls
    # the good one at once and it replaces the rotten copy; the scrubber quarantines it if it gets there first.
    assert state.records_quarantined in (0, 1)
    assert state.records_repaired >= 1, "gossip fetched it again"
    assert state.scl == chain.last_lsn and state.whole, "SCL is back to its peers'"
    mine, theirs = all_records(address, victim.segment_id), all_records(peer.address, victim.segment_id)
    assert mine == theirs and len(mine) == chain.last_lsn
    for proto in mine:
        record, carried = record_from_proto(proto)
        assert record.crc() == carried
    log = cluster.log_path(victim.node_id).read_text()
    assert f"record LSN {target.lsn}" in log and ("quarantined" in log or "left out of the chain" in log)
    status = cluster.status().by_name(victim.node_id)
    (info,) = [s for s in status.segments if s.segment_id == victim.segment_id]
    assert info.records_repaired >= 1
    assert f"{info.label} scl={chain.last_lsn} repaired={info.records_repaired}" in _details(status)


@pytest.mark.unit
def test_a_rotten_only_copy_below_the_gc_floor_makes_the_segment_refuse_until_hydrated(tmp_path: Path) -> None:
    """With GC the page version a page keeps as its base (and the records at or below the floor) may be
    the only copies: losing one lowers SCL below the floor, so reads are refused instead of served wrong,
    and hydration from a peer's page versions makes the segment whole again."""
    from sixfold.storage.store import record_key

    chain = ChainBuilder()
    records = [chain.patch(i % 4, b"v%03d" % i, 10 * i) for i in range(40)]
    stores = []
    for name in ("sick", "healthy"):
        store = SegmentStore(str(tmp_path / name), map_size_bytes=1 << 24)
        store.create_segment(meta())
        b = batch(records)
        b.vdl_hint = 40
        commit_ok(store, b)
        pages, _, _ = store.coalesce_candidates(SEG, 0, 100, 30, 1)
        store.coalesce_pages(SEG, pages, 30, 1)
        store.raise_horizon(SEG, 30)
        assert store.collect_garbage(SEG, 0, 100) is None
        stores.append(store)
    sick, healthy = stores
    seg_no = sick.segment(SEG).meta.seg_no
    base = max(r.lsn for r in records if r.page_no == 2 and r.lsn <= 30)  # page 2's base version; its records are gone
    assert sick.read_page(SEG, 2, 30).page_lsn == base
    with sick.env.begin(write=True) as txn:
        assert txn.get(record_key(seg_no, base), db=sick._records) is None
        txn.put(page_key(seg_no, 2, base), b"\0" * 40, db=sick._versions)  # rot
    assert scrub_once(sick).counts_of(SEG).versions_quarantined == 1
    assert sick.segment(SEG).tracker.scl < sick.segment(SEG).meta.retention_horizon_lsn
    with pytest.raises(ReadPointOutOfRange, match="hydrated again"):
        sick.read_page(SEG, 1, 35)
    with pytest.raises(ReadPointOutOfRange):
        sick.read_page(SEG, 2, 40)
    sick.begin_hydration(SEG, 30)
    versions, more, tail = healthy.read_page_versions(SEG, 30, 0, 1 << 20, 100)
    assert more is None and tail == 30
    sick.hydrate_pages(SEG, 30, 0, None, versions)
    assert sick.finish_hydration(SEG, 30, tail) == 40
    for page in range(4):
        assert sick.read_page(SEG, page, 40).data == page_at(records, page, 40)
    for store in stores:
        store.close()
