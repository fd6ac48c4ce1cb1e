"""The control plane's backtrack and time RPCs in-process (storage/control_plane_backtrack.py) with fake storage
nodes that keep records: a backtrack swaps the name, keeps the old timeline hidden, re-points the clones made
before, fences the old timeline on a quorum and makes the new one above every LSN allocated; each bad input is
refused with nothing changed; a later backtrack moves forward again; VolumeHistory; expiry and deletion. FindCommit
and the statuses over gRPC: tests/test_control_plane_time.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sixfold.storage.control_plane_limits import CommitNotFound
from sixfold.storage.control_plane_server import STATE_FILE_NAME, ControlPlaneServicer
from sixfold.storage.control_plane_timelines import when
from sixfold.storage.errors import (
    InvalidRequest,
    ReadPointOutOfRange,
    StaleVolumeEpoch,
    StorageError,
    Unavailable,
    UnknownSegment,
    UnknownVolume,
)
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

pytestmark = pytest.mark.unit

NODES = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]
MIB = 2**20
WALL_MS = 1_767_000_000_000
DAY_MS = 86_400_000


def address(node_id: str) -> str:
    return f"{node_id}:1"


def us(offset_ms: int) -> int:
    """A commit time `offset_ms` after the volume's creation."""
    return (WALL_MS + offset_ms) * 1000


@dataclass
class Segment:
    """A fake segment: its own records (LSN -> (cpl, commit time)) and the state it reports."""

    request: ss_pb2.CreateSegmentRequest
    records: dict[int, tuple[bool, int]] = field(default_factory=dict)
    volume_epoch: int = 0
    epoch_owner: str = ""
    horizon: int = 0
    truncation_ends: list[int] = field(default_factory=list)

    def tail(self, lsn: int) -> int:
        own = [x for x in self.records if x <= lsn]
        return max(own) if own else self.request.parent_read_lsn

    def state(self) -> ss_pb2.SegmentState:
        r = self.request
        floor = max(r.branch_lsn, r.lsn_floor, r.parent_read_lsn)
        highest = max([floor, *self.records])
        return ss_pb2.SegmentState(
            segment_id=r.segment_id,
            volume_id=r.volume_id,
            pg_index=r.pg_index,
            scl=highest,
            highest_lsn=highest,
            whole=True,
            volume_epoch=self.volume_epoch,
            volume_epoch_owner=self.epoch_owner,
            retention_horizon_lsn=self.horizon,
            truncation_ranges=[
                ss_pb2.TruncationRange(start_lsn=e - 1, end_lsn=e, epoch=1) for e in self.truncation_ends
            ],
            parent_segment_id=r.parent_segment_id,
            branch_lsn=r.branch_lsn,
            parent_read_lsn=r.parent_read_lsn,
        )


class FakeNodes:
    """Every storage node at once (`TimelineSegmentClient`): segments by node address and id. A node in
    `failing` refuses every call; one in `no_raise` refuses RaiseVolumeEpoch only."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, Segment]] = {address(n): {} for n, _ in NODES}
        self.created: list[ss_pb2.CreateSegmentRequest] = []
        self.dropped: list[tuple[str, str]] = []
        self.raised: list[tuple[str, str, int, str]] = []
        self.failing: set[str] = set()
        self.no_raise: set[str] = set()
        self.no_create: set[str] = set()

    def segment(self, at: str, segment_id: str) -> Segment:
        if at in self.failing:
            raise Unavailable(f"node {at} is down")
        found = self.held[at].get(segment_id)
        if found is None:
            raise UnknownSegment(f"segment {segment_id} is not on {at}")
        return found

    def write(self, segment_id: str, records: dict[int, tuple[bool, int]]) -> None:
        """Records stored (durably) on every copy of the segment."""
        for segments in self.held.values():
            if segment_id in segments:
                segments[segment_id].records.update(records)

    def everywhere(self, segment_id: str) -> list[Segment]:
        return [segments[segment_id] for segments in self.held.values() if segment_id in segments]

    async def create_segment(self, at: str, request: ss_pb2.CreateSegmentRequest) -> None:
        if at in self.failing or at in self.no_create:
            raise RuntimeError("disk is on fire")
        self.created.append(request)
        self.held[at].setdefault(request.segment_id, Segment(request))

    async def drop_segment(self, at: str, segment_id: str) -> None:
        if at in self.failing:
            raise RuntimeError("node is down")
        children = [s for s, seg in self.held[at].items() if seg.request.parent_segment_id == segment_id]
        if children:
            raise RuntimeError(f"{segment_id} still has child segments {children}")
        self.dropped.append((at, segment_id))
        self.held[at].pop(segment_id, None)

    async def update_membership(self, at: str, request: ss_pb2.UpdateMembershipRequest) -> ss_pb2.SegmentState:
        return self.segment(at, request.segment_id).state()

    async def segment_state(self, at: str, segment_id: str) -> ss_pb2.SegmentState:
        return self.segment(at, segment_id).state()

    async def segment_state_at(self, at: str, segment_id: str, tail_at_or_below_lsn: int) -> Any:
        segment = self.segment(at, segment_id)
        if tail_at_or_below_lsn and tail_at_or_below_lsn < segment.horizon:
            raise ReadPointOutOfRange(f"the chain tail at or below LSN {tail_at_or_below_lsn} is unknown")
        tail = segment.tail(tail_at_or_below_lsn) if tail_at_or_below_lsn else 0
        return ss_pb2.GetSegmentStateResponse(state=segment.state(), tail_lsn=tail)

    async def raise_volume_epoch(self, at: str, request: ss_pb2.RaiseVolumeEpochRequest) -> Any:
        segment = self.segment(at, request.segment_id)
        if at in self.no_raise:
            raise RuntimeError("disk is on fire")
        same = request.volume_epoch == segment.volume_epoch and request.writer_id == segment.epoch_owner
        if request.volume_epoch <= segment.volume_epoch and not same:
            raise StaleVolumeEpoch(f"volume epoch {request.volume_epoch} is stale")
        segment.volume_epoch, segment.epoch_owner = request.volume_epoch, request.writer_id
        self.raised.append((at, request.segment_id, request.volume_epoch, request.writer_id))
        return ss_pb2.RaiseVolumeEpochResponse(volume_epoch=request.volume_epoch, state=segment.state())

    async def find_commit(self, at: str, request: ss_pb2.FindCommitRequest) -> Any:
        segment = self.segment(at, request.segment_id)
        kept = {lsn: r for lsn, r in segment.records.items() if lsn > segment.horizon}
        commits = [
            (lsn, t)
            for lsn, (cpl, t) in kept.items()
            if cpl and t <= request.at_time_us and (not request.at_or_below_lsn or lsn <= request.at_or_below_lsn)
        ]
        lsn, t = max(commits, default=(0, 0))
        oldest = min((t for cpl, t in kept.values() if cpl), default=0)
        return ss_pb2.FindCommitResponse(
            lsn=lsn, commit_time_us=t, gc_floor_lsn=segment.horizon, oldest_commit_time_us=oldest
        )

    async def read_records(self, at: str, request: ss_pb2.ReadRecordsRequest) -> Any:
        segment = self.segment(at, request.segment_id)
        if request.from_lsn < segment.horizon:
            raise ReadPointOutOfRange("records below the GC floor were garbage-collected")
        records = [
            ss_pb2.LogRecord(lsn=lsn, cpl=cpl, commit_time_us=t)
            for lsn, (cpl, t) in sorted(segment.records.items())
            if request.from_lsn < lsn <= request.to_lsn
        ]
        return ss_pb2.ReadRecordsResponse(records=records[: request.max_records or None])


class Clocks:
    def __init__(self) -> None:
        self.now_ms = 0.0
        self.wall_ms = float(WALL_MS)

    def monotonic(self) -> float:
        return self.now_ms

    def wall(self) -> float:
        return self.wall_ms


async def servicer(tmp_path: Path, fake: FakeNodes, clocks: Clocks, window_s: int = 0) -> ControlPlaneServicer:
    """Volume v (two PGs) written to: PG 0 holds 10, 20 (inside an MTR), 21 and 30; PG 1 holds 15 and 25."""
    cp = ControlPlaneServicer(tmp_path, segment_client=fake, clock_ms=clocks.monotonic, wall_clock_ms=clocks.wall)
    for node_id, az in NODES:
        await cp.RegisterNode(cp_pb2.RegisterNodeRequest(node_id=node_id, az=az, address=address(node_id)), None)
    request = cp_pb2.CreateVolumeRequest(volume_id="v", segment_size_bytes=MIB, backtrack_window_s=window_s)
    await cp.CreateVolume(request, None)
    await cp.GrowVolume(cp_pb2.GrowVolumeRequest(volume_id="v", geometry_epoch=1), None)
    fake.write("v/pg-00000", {10: (True, us(100)), 20: (False, 0), 21: (True, us(200)), 30: (True, us(300))})
    fake.write("v/pg-00001", {15: (True, us(150)), 25: (True, us(250))})
    fake.created.clear()
    clocks.wall_ms += 1000
    return cp


def back(to_lsn: int = 0, to_time_us: int = 0, vdl: int = 30, tails: tuple[int, ...] = (30, 25), **kw: Any) -> Any:
    return cp_pb2.BacktrackRequest(
        volume_id=kw.get("volume_id", "v"),
        to_lsn=to_lsn,
        to_time_us=to_time_us,
        current_vdl=vdl,
        current_tails=list(tails),
        lsn_allocated=kw.get("allocated", 35),
        writer_epoch=kw.get("writer_epoch", 1),
    )


def persisted(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    return data


async def refused(error: type[StorageError], call: Any) -> str:
    with pytest.raises(error) as info:
        await call
    return info.value.message


def test_backtrack_moves_the_name_and_keeps_the_old_timeline(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        cp = await servicer(tmp_path, fake, clocks)
        clone = cp_pb2.CloneVolumeRequest(
            source_volume_id="v", volume_id="c1", branch_lsn=21, parent_read_lsns=[21, 15]
        )
        await cp.CloneVolume(clone, None)
        fake.created.clear()
        reply = await cp.Backtrack(back(to_lsn=21), None)
        assert (reply.to_lsn, reply.to_commit_time_us, reply.from_timeline_id) == (21, us(200), "v~0")
        geometry = reply.geometry
        assert (geometry.volume_id, geometry.parent_volume_id, geometry.branch_lsn) == ("v", "v~0", 21)
        assert (reply.timeline.timeline_id, reply.timeline.lsn_floor, reply.timeline.branch_lsn) == ("v", 36, 21)
        # The new timeline: same nodes, read through the old segments at the chain tails, LSNs above 35.
        assert len(fake.created) == 12
        for request in fake.created:
            pg = request.pg_index
            assert (request.segment_id, request.parent_segment_id, request.parent_read_lsn) == (
                f"v.2/pg-{pg:05d}",
                f"v/pg-{pg:05d}",
                (21, 15)[pg],
            )
            assert (request.branch_lsn, request.lsn_floor, request.volume_id) == (21, 36, "v")
        # The old timeline was fenced on every segment, one epoch above any, by the backtrack's writer id.
        assert sorted({(e, w) for _, _, e, w in fake.raised}) == [(1, "backtrack:2")]
        assert len(fake.raised) == 12 and {s for _, s, _, _ in fake.raised} == {"v/pg-00000", "v/pg-00001"}
        # Hidden, kept, and the clone follows it.
        described = (await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="v"), None)).geometry
        assert described == geometry
        assert "is a timeline volume v left by a backtrack" in await refused(
            InvalidRequest, cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="v~0"), None)
        )
        listed = (await cp.ListVolumes(cp_pb2.ListVolumesRequest(), None)).volumes
        assert [v.volume_id for v in listed] == ["c1", "v"]
        c1 = (await cp.DescribeVolume(cp_pb2.DescribeVolumeRequest(volume_id="c1"), None)).geometry
        assert c1.parent_volume_id == "v~0"
        assert {s.parent_segment_id for pg in c1.protection_groups for s in pg.segments} == {
            "v/pg-00000",
            "v/pg-00001",
        }
        history = await cp.VolumeHistory(cp_pb2.VolumeHistoryRequest(volume_id="v"), None)
        assert history.backtrack_window_s == 86400
        assert [(t.timeline_id, t.lsn_floor, t.end_lsn) for t in history.timelines] == [("v~0", 0, 30), ("v", 36, 0)]
        assert [(b.from_timeline_id, b.from_vdl, b.to_timeline_id, b.to_lsn) for b in history.backtracks] == [
            ("v~0", 30, "v", 21)
        ]
        assert history.backtracks[0].at_ms == WALL_MS + 1000
        assert persisted(tmp_path)["orphans"] == []
        restarted = ControlPlaneServicer(tmp_path, segment_client=fake, clock_ms=clocks.monotonic)
        assert restarted._published == cp._published

        # Forward again, to a point of the timeline left: the new timeline's writes are left in turn.
        fake.write("v.2/pg-00000", {40: (True, us(1500)), 41: (True, us(1600))})
        clocks.wall_ms += 1000
        fake.created.clear()
        reply = await cp.Backtrack(back(to_lsn=30, vdl=41, tails=(41, 15), allocated=45), None)
        assert (reply.to_lsn, reply.to_commit_time_us, reply.from_timeline_id) == (30, us(300), "v~2")
        assert (reply.geometry.parent_volume_id, reply.timeline.lsn_floor) == ("v~0", 46)
        assert {(r.parent_segment_id, r.parent_read_lsn) for r in fake.created} == {
            ("v/pg-00000", 30),
            ("v/pg-00001", 25),
        }
        assert {s for _, s, _, _ in fake.raised[12:]} == {"v.2/pg-00000", "v.2/pg-00001"}
        history = await cp.VolumeHistory(cp_pb2.VolumeHistoryRequest(volume_id="v"), None)
        assert [(t.timeline_id, t.parent_timeline_id, t.branch_lsn) for t in history.timelines] == [
            ("v~0", "", 0),
            ("v~2", "v~0", 21),
            ("v", "v~0", 30),
        ]
        # And back to the second timeline's own commit 40 by time (between 40 and 41).
        reply = await cp.Backtrack(back(to_time_us=us(1550), vdl=46, tails=(30, 25), allocated=46), None)
        assert (reply.to_lsn, reply.to_commit_time_us, reply.geometry.parent_volume_id) == (40, us(1500), "v~2")
        assert reply.timeline.lsn_floor == 47

    asyncio.run(scenario())


def test_bad_targets_are_refused_with_nothing_changed(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        cp = await servicer(tmp_path, fake, clocks, window_s=3600)
        before = persisted(tmp_path)

        async def no_change(error: type[StorageError], request: Any) -> str:
            sentence = await refused(error, cp.Backtrack(request, None))
            assert persisted(tmp_path) == before and fake.created == [] and fake.raised == []
            return sentence

        assert "volume w does not exist" in await no_change(UnknownVolume, back(to_lsn=21, volume_id="w"))
        assert "give exactly one of to_lsn and to_time_us" in await no_change(InvalidRequest, back())
        assert "give exactly one" in await no_change(InvalidRequest, back(to_lsn=21, to_time_us=us(10)))
        assert "1 current tails for the 2 PGs" in await no_change(InvalidRequest, back(to_lsn=21, tails=(30,)))
        assert await no_change(ReadPointOutOfRange, back(to_lsn=31)) == (
            "LSN 31 is above volume v's VDL 30: nothing above VDL is durable; backtrack to an LSN at or below it"
        )
        assert await no_change(InvalidRequest, back(to_lsn=20)) == (
            "LSN 20 falls inside a transaction of volume v (its newest record, LSN 20, does not end one); choose the "
            "LSN a write returned (a commit)"
        )
        assert "holds no commit at or below LSN 5" in await no_change(ReadPointOutOfRange, back(to_lsn=5))
        # Outside the window: by the commit's time for an LSN, by the time itself for a time.
        clocks.wall_ms = WALL_MS + 3600_000 + 250
        assert (await no_change(ReadPointOutOfRange, back(to_lsn=21))).startswith(
            f"LSN 21 was committed at {when(us(200))}, outside volume v's backtrack window of 1 h"
        )
        assert "outside volume v's backtrack window of 1 h" in await no_change(
            ReadPointOutOfRange, back(to_time_us=us(240))
        )
        clocks.wall_ms = WALL_MS + 1000
        # Below what storage still keeps.
        for segment in fake.everywhere("v/pg-00001"):
            segment.horizon = 20
        assert await no_change(ReadPointOutOfRange, back(to_lsn=21)) == (
            "LSN 21 is below what volume v still keeps (PG 1's retention horizon is 20, above its chain tail 15 "
            "there); choose a later point"
        )
        for segment in fake.everywhere("v/pg-00001"):
            segment.horizon = 0
        for segment in fake.everywhere("v/pg-00000"):
            segment.horizon = 25  # the chain at 21 is no longer known
        assert (await no_change(ReadPointOutOfRange, back(to_lsn=21))).startswith(
            "LSN 21 is below what volume v still keeps (PG 0's segments no longer know its chain there: node a1: "
        )
        for segment in fake.everywhere("v/pg-00000"):
            segment.horizon = 0
        # Before the volume existed; before its oldest commit.
        assert "is before volume v existed" in await no_change(ReadPointOutOfRange, back(to_time_us=us(-1)))
        assert await no_change(CommitNotFound, back(to_time_us=us(50))) == (
            f"volume v has no commit at or before {when(us(50))} (its oldest commit is from {when(us(100))})"
        )

    asyncio.run(scenario())


def test_a_fence_or_a_creation_short_of_a_quorum_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        cp = await servicer(tmp_path, fake, clocks)
        before = persisted(tmp_path)
        fake.no_raise = {address("a1"), address("b1"), address("c1")}
        sentence = await refused(Unavailable, cp.Backtrack(back(to_lsn=21), None))
        assert sentence.startswith("could not fence volume v's current timeline with volume epoch 1: PG 0 took it on 3")
        assert sentence.endswith("nothing was changed; retry once the nodes are back")
        assert persisted(tmp_path) == before and fake.created == []
        # A quorum fenced, but the new segments short of a quorum: undone, the name stays.
        fake.no_raise, fake.no_create = set(), {address("a1"), address("b1"), address("c1")}
        sentence = await refused(Unavailable, cp.Backtrack(back(to_lsn=21), None))
        assert sentence.startswith("could not create the new timeline of volume v (from v at LSN 21): PG 0 was created")
        after = persisted(tmp_path)
        assert after["volumes"] == before["volumes"] and after["orphans"] == []
        assert all(not s.startswith("v.") for held in fake.held.values() for s in held)
        # With two nodes down, the backtrack still goes through (fence and creation on four of six); a recovery
        # truncated up to LSN 70 on the old timeline, so new LSNs start above it.
        fake.no_create, fake.failing = set(), {address("a1"), address("b1")}
        fake.everywhere("v/pg-00001")[-1].truncation_ends = [70]
        # (the compute node's writer opened the volume again meanwhile: at least the epoch the attempts took)
        reply = await cp.Backtrack(back(to_lsn=21, writer_epoch=2), None)
        assert (reply.from_timeline_id, reply.timeline.lsn_floor) == ("v~0", 71)
        assert reply.geometry.protection_groups[0].segments[0].segment_id == "v.2/pg-00000"
        assert min(e for _, _, e, _ in fake.raised[-8:]) == 3  # above the epochs the failed attempts took
        parents = {s.node_id: s.parent_segment_id for s in reply.geometry.protection_groups[0].segments}
        assert parents["a1"] == parents["b1"] == "" and parents["a2"] == "v/pg-00000"  # created again, flattened

    asyncio.run(scenario())


def test_a_writer_a_newer_one_fenced_cannot_backtrack(tmp_path: Path) -> None:
    """The caller's VDL is only the timeline's end if its writer is the newest: a segment holding a newer epoch
    (another writer recovered, and may have acknowledged writes above that VDL) refuses it, nothing changed."""

    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        cp = await servicer(tmp_path, fake, clocks)
        before = persisted(tmp_path)
        newer = fake.everywhere("v/pg-00001")[2]
        newer.volume_epoch, newer.epoch_owner = 4, "writer-b"
        sentence = await refused(StaleVolumeEpoch, cp.Backtrack(back(to_lsn=21, writer_epoch=3), None))
        assert "the writer that asked (volume epoch 3) is not volume v's newest" in sentence
        assert "holds epoch 4 (writer-b)" in sentence and "nothing was changed" in sentence
        assert persisted(tmp_path) == before and fake.created == [] and fake.raised == []
        sentence = await refused(InvalidRequest, cp.Backtrack(back(to_lsn=21, writer_epoch=0), None))
        assert "names no writer_epoch" in sentence
        reply = await cp.Backtrack(back(to_lsn=21, writer_epoch=4), None)  # the newest writer may
        assert reply.from_timeline_id == "v~0"

    asyncio.run(scenario())


def test_expiry_drops_a_timeline_nothing_reads_after_the_window(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake, clocks = FakeNodes(), Clocks()
        cp = await servicer(tmp_path, fake, clocks, window_s=3600)
        for node_id, _ in NODES:
            await cp.Heartbeat(cp_pb2.HeartbeatRequest(node_id=node_id), None)
        await cp.Backtrack(back(to_lsn=21), None)  # v~0 left; v.1 from it
        left_at = clocks.wall_ms
        fake.write("v.1/pg-00000", {40: (True, us(1500))})
        clocks.wall_ms += 10
        await cp.Backtrack(back(to_lsn=30, vdl=40, tails=(40, 15), allocated=40), None)  # v~1 left; v.2 from v~0
        clocks.wall_ms = left_at + 3600_000 + 9
        await cp.heal_once()
        assert fake.dropped == []
        clocks.wall_ms += 1
        await cp.heal_once()
        assert sorted(fake.dropped) == sorted((address(n), f"v.1/pg-{pg:05d}") for n, _ in NODES for pg in (0, 1))
        history = await cp.VolumeHistory(cp_pb2.VolumeHistoryRequest(volume_id="v"), None)
        assert [t.timeline_id for t in history.timelines] == ["v~0", "v"]  # v~0 stays: v reads through it
        assert list(history.backtracks) == []
        assert persisted(tmp_path)["orphans"] == []
        # Deleting v drops v~0 too, children first.
        reply = await cp.DeleteVolume(cp_pb2.DeleteVolumeRequest(volume_id="v"), None)
        assert list(reply.volumes_dropped) == ["v", "v~0"]
        assert all(not segments for segments in fake.held.values())

    asyncio.run(scenario())
