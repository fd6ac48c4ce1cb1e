"""The writer's read path: routing (pure, against a brute-force oracle), hedging and the quorum read.

The async tests run the real `Volume` read code against fake segment stubs in one event loop: a
segment that never answers, one that is behind, one that fails. They assert which segment served
the page and which calls were made, never how long anything took.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixfold.compute.quorum import Membership
from sixfold.compute.routing import HEDGE_DELAY_MAX_MS, HEDGE_DELAY_MIN_MS, ReadRouter
from sixfold.compute.volume import PgInfo, Volume
from sixfold.compute.volume_log import VolumeLog
from sixfold.storage.v1 import storage_service_pb2 as pb

pytestmark = pytest.mark.unit

NODES = ["a1", "a2", "b1", "b2", "c1", "c2"]
PAGE = 3
READ_POINT = 40


# -- routing (pure) ---------------------------------------------------------------------------


@given(
    scl_of=st.dictionaries(st.sampled_from(NODES), st.integers(0, 100)),
    latencies=st.dictionaries(st.sampled_from(NODES), st.floats(0.0, 1000.0)),
    read_point=st.integers(0, 100),
    exclude=st.frozensets(st.sampled_from(NODES)),
)
def test_candidates_are_exactly_the_complete_segments_fastest_first(
    scl_of: dict[str, int], latencies: dict[str, float], read_point: int, exclude: frozenset[str]
) -> None:
    router = ReadRouter(dict(latencies))
    got = router.candidates(scl_of, read_point, exclude)
    # oracle: every segment whose SCL covers the read point and that was not tried, each once
    assert sorted(got) == sorted(n for n, scl in scl_of.items() if scl >= read_point and n not in exclude)
    # never-timed segments first (so each gets measured), then by smoothed latency
    keys = [latencies.get(n, -1.0) for n in got]
    assert keys == sorted(keys)


@given(st.lists(st.floats(0.0, 5000.0), min_size=1, max_size=20))
def test_hedge_delay_stays_within_its_bounds_and_a_failure_sends_a_segment_last(samples: list[float]) -> None:
    router = ReadRouter()
    for sample in samples:
        router.observe("a1", sample)
        assert HEDGE_DELAY_MIN_MS <= router.hedge_delay_ms("a1") <= HEDGE_DELAY_MAX_MS
    router.observe("b1", 1.0)
    router.penalize("a1")
    assert router.candidates({"a1": 10, "b1": 10}, 10) == ["b1", "a1"]


# -- hedging and the quorum read, through the real Volume code ---------------------------------


@dataclass
class FakeStub:
    """A segment: answers ReadPage with its own name in the page, unless told to hang or fail."""

    node: str
    scl: int
    hang: bool = False
    fail: bool = False
    reads: int = 0
    state_calls: int = 0
    cancelled: int = 0
    hung: asyncio.Event = field(default_factory=asyncio.Event)

    async def ReadPage(self, request: pb.ReadPageRequest, timeout: float) -> pb.ReadPageResponse:
        self.reads += 1
        assert request.read_point <= self.scl, "a segment was asked for a read point above its SCL"
        if self.fail:
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down"
            )
        if self.hang:
            try:
                await asyncio.Event().wait()  # never answers; only cancellation ends it
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return pb.ReadPageResponse(data=self.node.encode().ljust(16, b"."), page_lsn=READ_POINT, scl=self.scl)

    async def GetSegmentState(self, request: pb.GetSegmentStateRequest, timeout: float) -> Any:
        self.state_calls += 1
        return pb.GetSegmentStateResponse(state=pb.SegmentState(segment_id=request.segment_id, scl=self.scl))


@dataclass
class FakeStream:
    stub: FakeStub
    segment_id: str
    node_id: str


def volume_with(stubs: dict[str, FakeStub], known_scl: dict[str, int]) -> tuple[Volume, PgInfo]:
    volume = Volume("vol-test", control_plane=None, channels=None)  # type: ignore[arg-type]
    membership = Membership.of(NODES)
    volume.log = VolumeLog(pg_of_page=lambda _: 0, epoch=1, vdl=READ_POINT, next_lsn=READ_POINT + 1)
    volume.log.add_pg(0, membership, last_lsn=READ_POINT)
    for node, scl in known_scl.items():
        volume.log.pgs[0].on_scl(node, scl)
    streams = {n: FakeStream(s, f"seg-{n}", n) for n, s in stubs.items()}
    pg = PgInfo(0, 0, 1000, 1, membership, streams)  # type: ignore[arg-type]
    volume.pgs[0] = pg
    return volume, pg


def test_a_hung_first_segment_is_hedged_and_the_second_answers() -> None:
    async def run() -> None:
        stubs = {n: FakeStub(n, READ_POINT) for n in NODES}
        volume, pg = volume_with(stubs, dict.fromkeys(NODES, READ_POINT))
        for rank, node in enumerate(NODES):  # a1 is the fastest so far: it is asked first, then a2
            volume.router.observe(node, 1.0 + rank)
        stubs["a1"].hang = True
        data, lsn = await volume._read_from_segments(pg, PAGE, READ_POINT)
        assert data.startswith(b"a2"), data  # the hedged second read answered
        assert lsn == READ_POINT
        assert volume.hedged_reads == 1
        assert stubs["a1"].reads == 1 and stubs["a2"].reads == 1
        assert all(stubs[n].reads == 0 for n in ("b1", "b2", "c1", "c2"))
        await asyncio.sleep(0)
        assert stubs["a1"].cancelled == 1  # the losing read is cancelled, not left running

    asyncio.run(run())


def test_a_fast_first_segment_is_not_hedged() -> None:
    async def run() -> None:
        stubs = {n: FakeStub(n, READ_POINT) for n in NODES}
        volume, pg = volume_with(stubs, dict.fromkeys(NODES, READ_POINT))
        for node in NODES:
            volume.router.observe(node, 1.0 if node == "b2" else 5.0)
        data, _ = await volume._read_from_segments(pg, PAGE, READ_POINT)
        assert data.startswith(b"b2")
        assert volume.hedged_reads == 0
        assert sum(s.reads for s in stubs.values()) == 1

    asyncio.run(run())


def test_segments_behind_the_read_point_are_never_asked_and_a_failure_moves_on() -> None:
    async def run() -> None:
        stubs = {n: FakeStub(n, READ_POINT if n in ("b1", "c2") else READ_POINT - 5) for n in NODES}
        stubs["b1"].fail = True
        volume, pg = volume_with(stubs, {n: s.scl for n, s in stubs.items()})
        volume.router.observe("b1", 1.0)
        volume.router.observe("c2", 2.0)
        data, _ = await volume._read_from_segments(pg, PAGE, READ_POINT)
        assert data.startswith(b"c2")  # b1 failed; the others are behind (FakeStub asserts they are not asked)
        assert stubs["b1"].reads == 1 and stubs["c2"].reads == 1

    asyncio.run(run())


def test_with_no_segment_known_complete_a_read_quorum_is_asked_for_scls() -> None:
    async def run() -> None:
        stubs = {n: FakeStub(n, READ_POINT if n == "c1" else READ_POINT - 1) for n in NODES}
        volume, pg = volume_with(stubs, {})  # the writer knows no segment's SCL (e.g. just after a restart)
        data, _ = await volume._read_from_segments(pg, PAGE, READ_POINT)
        assert data.startswith(b"c1")  # the only segment complete to the read point
        asked = [n for n, s in stubs.items() if s.state_calls]
        assert len(asked) >= 3, asked  # a read quorum answered before routing again
        assert volume.log is not None and volume.log.pgs[0].scl_of["c1"] == READ_POINT

    asyncio.run(run())
