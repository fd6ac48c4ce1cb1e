"""Read replicas without a network: the writer's real release path and RedoPublisher feeding a ReplicaState,
checked against a brute-force oracle of the volume (Hypothesis), and the stream's refusals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sixfold.compute import redo_publisher
from sixfold.compute.cache import BufferCache
from sixfold.compute.placement import Channels, PgInfo
from sixfold.compute.quorum import Membership
from sixfold.compute.redo_publisher import RedoPublisher
from sixfold.compute.replica_state import RedoRefused, ReplicaState
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.volume_base import VolumeBase
from sixfold.compute.volume_log import Patch, VolumeLog
from tests.depth import examples

pytestmark = pytest.mark.unit

PAGE_SIZE = 32
PAGES_PER_PG = 4
PGS = 2
SEGMENTS = ["a", "b", "c", "d", "e", "f"]


class Oracle:
    """Every durable version of every page."""

    def __init__(self) -> None:
        self.versions: dict[int, list[tuple[int, bytes]]] = {}

    def at(self, page_no: int, read_point: int) -> tuple[bytes, int]:
        image, lsn = bytes(PAGE_SIZE), 0
        for version_lsn, version in self.versions.get(page_no, []):
            if version_lsn <= read_point:
                image, lsn = version, version_lsn
        return image, lsn

    def apply(self, records: list[Any]) -> None:
        for record in records:
            page = bytearray(self.at(record.page_no, record.lsn)[0])
            page[record.offset : record.offset + len(record.data)] = record.data
            self.versions.setdefault(record.page_no, []).append((record.lsn, bytes(page)))

    def pg_read_point(self, pg: int, vdl: int) -> int:
        lsns = [lsn for p, vs in self.versions.items() if p // PAGES_PER_PG == pg for lsn, _ in vs if lsn <= vdl]
        return max(lsns, default=0)


def writer_volume() -> VolumeBase:
    volume = VolumeBase("v", None, Channels(), writer_id="w")
    volume.page_size, volume.pages_per_pg, volume.epoch = PAGE_SIZE, PAGES_PER_PG, 3
    membership = Membership.of(SEGMENTS)
    volume.pgs = {i: PgInfo(i, i * PAGES_PER_PG, PAGES_PER_PG, 1, membership, {}) for i in range(PGS)}
    volume.log = VolumeLog(pg_of_page=volume.pg_of_page, epoch=3)
    for i in range(PGS):
        volume.log.add_pg(i, membership)
    volume.cache = BufferCache(PAGE_SIZE)
    return volume


def make_durable(volume: VolumeBase, cpl: int) -> None:
    assert volume.log is not None
    for pg in range(PGS):
        for segment in SEGMENTS:
            released = volume.log.on_ack(pg, segment, cpl)
            if released:
                volume._release(released)


patches = st.lists(
    st.tuples(st.integers(0, PGS * PAGES_PER_PG - 1), st.integers(0, PAGE_SIZE - 4), st.binary(min_size=1, max_size=4)),
    min_size=1,
    max_size=3,
    unique_by=lambda p: p[0],
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("mtr"), patches),
        st.tuples(st.just("durable"), st.integers(1, 4)),
        st.tuples(st.just("deliver"), st.integers(1, 3)),
        st.tuples(st.just("read"), st.integers(0, PGS * PAGES_PER_PG - 1)),
        st.tuples(st.just("pin"), st.just(0)),
        st.tuples(st.just("read_pinned"), st.integers(0, PGS * PAGES_PER_PG - 1)),
        st.tuples(st.just("reconnect"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=ops, message_bytes=st.sampled_from([1, 200, 1 << 20]), cache_pages=st.integers(1, 5))
def test_replica_pages_equal_the_oracle_at_every_read_point(
    monkeypatch: pytest.MonkeyPatch, steps: list[tuple[str, Any]], message_bytes: int, cache_pages: int
) -> None:
    monkeypatch.setattr(redo_publisher, "SCL_EVERY_S", 0.0)  # next() never waits: every call is a message
    monkeypatch.setattr(redo_publisher, "MESSAGE_BYTES_MAX", message_bytes)  # 1: one MTR per message
    asyncio.run(_run(steps, cache_pages))


async def _run(steps: list[tuple[str, Any]], cache_pages: int) -> None:
    volume = writer_volume()
    publisher = RedoPublisher(volume)
    subscription = publisher.subscribe("r")
    state = ReplicaState(cache_pages_max=cache_pages)
    state.set_page_size(PAGE_SIZE)
    oracle = Oracle()
    pending: list[Any] = []  # MTRs allocated, not yet durable
    pins: list[int] = []
    highest_sent = 0

    def check_read(page_no: int, read_point: int) -> None:
        want, want_lsn = oracle.at(page_no, read_point)
        cached = state.cached_at(page_no, read_point)
        if cached is not None:
            assert cached == want, (page_no, read_point)
        else:  # as a segment would serve it at the PG's read point
            pg_point = state.pg_read_point(page_no // PAGES_PER_PG, read_point)
            assert oracle.at(page_no, pg_point) == (want, want_lsn)
            state.put(state.cache, page_no, want, want_lsn, read_point)

    for op, arg in steps:
        if op == "mtr":
            assert volume.log is not None
            mtr = volume.log.allocate_mtr([Patch(p, o, d) for p, o, d in arg])
            volume._mtr_records[mtr.cpl] = mtr.records
            pending.append(mtr)
        elif op == "durable" and pending:
            done, pending = pending[:arg], pending[arg:]
            for mtr in done:
                oracle.apply(mtr.records)
            make_durable(volume, done[-1].cpl)
            assert volume.vdl == done[-1].cpl
        elif op == "deliver":
            for _ in range(arg):
                msg = await asyncio.wait_for(subscription.next(), 1)
                assert msg is not None and msg.vdl <= volume.vdl
                highest_sent = max(highest_sent, msg.vdl)
                before = state.vdl
                state.apply(msg, 0)
                assert before <= state.vdl <= highest_sent  # never backwards, never above a VDL sent
                for pg in range(PGS):
                    assert state.pg_read_points.get(pg, 0) == oracle.pg_read_point(pg, state.vdl)
                assert state.cache is not None
                for page_no, (image, _) in state.cache._pages.items():
                    assert bytes(image) == oracle.at(page_no, state.vdl)[0]
                subscription.report(min(pins, default=state.vdl), state.vdl)
        elif op == "read" and state.snapshots:
            check_read(arg, state.vdl)
        elif op == "pin" and state.snapshots:
            pins.append(state.vdl)
        elif op == "read_pinned" and pins:
            check_read(arg, pins[arg % len(pins)])
        elif op == "reconnect":
            subscription.close()
            state.stream_lost()
            subscription = publisher.subscribe("r", min(pins, default=state.vdl))
        # The writer never lets a segment's horizon pass what a live reader reads at (read point 0 reads nothing).
        lowest: int = min(pins, default=0)
        if lowest and subscription.floor:
            assert all(volume.min_read_point(pg) <= lowest for pg in range(PGS))
    publisher.close()
    assert not volume.release_listeners


def snapshot(epoch: int, vdl: int, read_points: dict[int, int], writer: str = "w") -> ipb.FollowRedoResponse:
    msg = ipb.FollowRedoResponse(volume_epoch=epoch, vdl=vdl, snapshot=True, writer_id=writer, page_count=8)
    for pg, read_point in read_points.items():
        msg.pgs.add(pg_index=pg, read_point=read_point, scl_of={"a": read_point})
    return msg


def batch(epoch: int, vdl: int, records: list[Any]) -> ipb.FollowRedoResponse:
    return ipb.FollowRedoResponse(volume_epoch=epoch, vdl=vdl, records=[r.encode() for r in records])


def records_of(*mtrs: list[tuple[int, bytes]]) -> list[list[Any]]:
    log = VolumeLog(pg_of_page=lambda p: p // PAGES_PER_PG, epoch=3)
    for i in range(PGS):
        log.add_pg(i, Membership.of(SEGMENTS))
    return [log.allocate_mtr([Patch(p, 0, d) for p, d in mtr]).records for mtr in mtrs]


def test_the_stream_refuses_what_breaks_its_rules_and_changes_nothing() -> None:
    one, two = records_of([(0, b"x")], [(1, b"y"), (5, b"z")])
    state = ReplicaState()
    state.set_page_size(PAGE_SIZE)
    with pytest.raises(RedoRefused, match="before its snapshot"):
        state.apply(batch(3, 1, one), 0)
    state.apply(snapshot(3, 0, {0: 0, 1: 0}), 0)
    with pytest.raises(RedoRefused, match="records are missing"):
        state.apply(batch(3, 4, two), 0)  # MTR one never came
    with pytest.raises(RedoRefused, match="above the message's VDL"):
        state.apply(batch(3, 0, one), 0)
    with pytest.raises(RedoRefused, match="without a snapshot"):
        state.apply(batch(4, 1, one), 0)
    corrupt = bytearray(one[0].encode())
    corrupt[-1] ^= 1
    with pytest.raises(RedoRefused, match="CRC"):
        state.apply(ipb.FollowRedoResponse(volume_epoch=3, vdl=1, records=[bytes(corrupt)]), 0)
    with pytest.raises(RedoRefused, match="inside an MTR"):
        state.apply(batch(3, 2, [*one, two[0]]), 0)
    assert state.vdl == 0 and state.records_applied == 0
    state.apply(batch(3, 1, one), 5_000)
    state.apply(batch(3, 3, two), 7_000)
    assert state.vdl == 3 and state.pg_read_points == {0: 0, 1: 0}  # no pgs in these hand-made batches
    with pytest.raises(RedoRefused, match="went back"):
        state.apply(batch(3, 2, []), 0)
    with pytest.raises(RedoRefused, match="older than epoch"):
        state.apply(snapshot(2, 9, {0: 9}), 0)


def test_a_snapshot_below_the_applied_vdl_keeps_the_read_point_until_the_new_writer_passes_it() -> None:
    state = ReplicaState()
    state.set_page_size(PAGE_SIZE)
    state.apply(snapshot(3, 10, {0: 10, 1: 7}), 0)
    state.apply(snapshot(4, 8, {0: 8, 1: 8}, writer="w2"), 0)
    assert state.vdl == 10 and state.pg_read_points == {0: 10, 1: 8} and state.writer_id == "w2"
    state.apply(ipb.FollowRedoResponse(volume_epoch=4, vdl=9), 0)
    assert state.vdl == 10
    state.apply(ipb.FollowRedoResponse(volume_epoch=4, vdl=12), 0)
    assert state.vdl == 12 and state.epoch == 4


def test_lag_is_measured_from_the_writer_release_and_windowed() -> None:
    state = ReplicaState()
    state.apply(snapshot(1, 0, {0: 0}), 0)
    for i in range(1, 101):
        state.apply(ipb.FollowRedoResponse(volume_epoch=1, vdl=i, released_at_us=i * 1000), i * 1000 + i * 10)
    p50, p99 = state.lag_ms(101_000)
    assert 0.45 <= p50 <= 0.55 and 0.95 <= p99 <= 1.0
    assert state.lag_ms(101_000 + 11_000_000) == (0.0, 0.0)


def test_a_slow_subscriber_is_cut_off_and_a_closed_one_no_longer_holds_the_horizon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redo_publisher, "BACKLOG_BYTES_MAX", 300)

    async def run() -> None:
        volume = writer_volume()
        publisher = RedoPublisher(volume)
        slow = publisher.subscribe("slow")
        assert (await slow.next()) is not None  # its snapshot
        slow.report(0, 0)
        assert slow.floor == 0 or volume.min_read_point(0) <= slow.floor
        assert volume.log is not None
        for i in range(20):
            mtr = volume.log.allocate_mtr([Patch(i % 8, 0, b"abcd")])
            volume._mtr_records[mtr.cpl] = mtr.records
            make_durable(volume, mtr.cpl)
        assert slow.overflowed and await slow.next() is None
        held = publisher.subscribe("held", lowest_read_point=3)
        assert volume.min_read_point(1) == 3
        held.close()
        assert publisher.read_point_floor() == 0 and volume.min_read_point(1) == volume.log.read_point(1)

    asyncio.run(run())
