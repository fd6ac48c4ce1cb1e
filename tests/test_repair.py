"""Gossip repair planning (storage/repair.py) and gossip between real storage node processes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.records import LogRecord, PayloadKind
from sixfold.storage.repair import PeerView, batch_epoch, plan_repair, records_to_append
from sixfold.storage.segment import TruncationRange
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.tools.cluster import Cluster
from tests.test_storage_integration import all_records, append_once, create_volume, stub


def test_ranges_travel_before_records_and_the_most_complete_peer_is_chosen() -> None:
    r1, r2 = TruncationRange(10, 20, 2), TruncationRange(30, 40, 3)
    plan = plan_repair(5, [r1], [PeerView("b1", 50, (r1, r2)), PeerView("c1", 70, (r2,)), PeerView("a2", 3, ())])
    assert plan.ranges_to_apply == (r2,)
    assert (plan.pull_from, plan.from_lsn, plan.to_lsn) == ("c1", 5, 70)


def test_nothing_to_pull_when_no_peer_is_ahead() -> None:
    plan = plan_repair(9, [], [PeerView("b1", 9, ()), PeerView("c1", 2, ())])
    assert plan.pull_from is None and plan.ranges_to_apply == ()


def test_truncated_records_are_never_pulled_back() -> None:
    old = LogRecord(12, 1, PayloadKind.PATCH, 0, b"old", 11, 11, 0, 1)
    new = LogRecord(41, 1, PayloadKind.PATCH, 0, b"new", 11, 11, 0, 2)
    kept = records_to_append([old, new], [TruncationRange(12, 40, 2)])
    assert kept == [new]
    assert batch_epoch(1, kept) == 2


@pytest.mark.integration
@pytest.mark.cluster_options(compute=False)
def test_a_node_that_was_down_catches_up_through_gossip_alone(cluster: Cluster) -> None:
    geometry = create_volume(cluster, "gossipvol")
    pg = geometry.protection_groups[0]
    absent = pg.segments[0]
    cluster.stop(absent.node_id)
    chain = ChainBuilder()
    batches = [[chain.patch(i % 50, b"r%05d" % (b * 100 + i)) for i in range(100)] for b in range(30)]
    for s in pg.segments[1:]:  # no writer: records go straight to the five live segments
        for n, batch in enumerate(batches):
            append_once(s.address, s.segment_id, batch, batch_id=n)
    assert (
        stub(pg.segments[1].address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=absent.segment_id)).state.scl
        == chain.last_lsn
    )
    cluster.start(absent.node_id)
    address = cluster.node_address(absent.node_id)
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline:
        state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=absent.segment_id)).state
        if state.scl == chain.last_lsn:
            break
        time.sleep(0.2)
    assert state is not None and state.scl == chain.last_lsn, f"SCL {state.scl if state else None} != {chain.last_lsn}"
    print(f"{absent.node_id} caught up to SCL {state.scl} ({state.records_repaired} records pulled by gossip)")
    assert state.records_repaired == 3000
    assert all_records(address, absent.segment_id) == all_records(pg.segments[1].address, absent.segment_id)


@pytest.mark.integration
@pytest.mark.cluster_options(compute=False)
def test_a_record_truncated_by_recovery_is_never_resurrected_by_gossip(cluster: Cluster) -> None:
    """Records 11..15 reach only node X; X is down while a new writer (epoch 2) recovers the PG and
    truncates above VDL 10 on the other five. When X comes back with the highest SCL of all, gossip
    must carry the truncation to X rather than X's abandoned records to its peers."""
    geometry = create_volume(cluster, "truncvol")
    pg = geometry.protection_groups[0]
    absent, others = pg.segments[0], pg.segments[1:]
    segment_id = absent.segment_id
    chain = ChainBuilder()
    durable = [chain.patch(i % 4, b"kept%02d" % i) for i in range(10)]
    for s in pg.segments:
        append_once(s.address, segment_id, durable)
    abandoned = [chain.patch(1, b"gone%02d" % i) for i in range(5)]  # LSN 11..15: never reached a quorum
    append_once(absent.address, segment_id, abandoned, batch_id=2)
    cluster.stop(absent.node_id)
    truncation = pb.TruncationRange(start_lsn=11, end_lsn=10 + 1000, epoch=2)  # the new writer's recovery
    for s in others:
        stub(s.address).RaiseVolumeEpoch(pb.RaiseVolumeEpochRequest(segment_id=segment_id, volume_epoch=2))
        reply = stub(s.address).TruncateSegment(
            pb.TruncateSegmentRequest(segment_id=segment_id, volume_epoch=2, range=truncation)
        )
        assert reply.state.scl == 10
    cluster.start(absent.node_id)
    address = cluster.node_address(absent.node_id)
    deadline = time.monotonic() + 30
    state = None
    while time.monotonic() < deadline:
        state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id)).state
        if any(r.start_lsn == 11 and r.epoch == 2 for r in state.truncation_ranges):
            break
        time.sleep(0.2)
    assert state is not None and state.scl == 10 and state.highest_lsn == 10, state
    time.sleep(3.0)  # several more gossip rounds: nothing may come back
    for s in [absent, *others]:
        where = address if s is absent else s.address
        lsns = [r.lsn for r in all_records(where, segment_id)]
        assert lsns == list(range(1, 11)), f"{s.node_id} holds {lsns}"
        st = stub(where).GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id)).state
        assert (st.scl, st.highest_lsn, st.volume_epoch) == (10, 10, 2), (s.node_id, st)
    print(
        f"{absent.node_id} came back holding LSN 11..15 above everyone; gossip truncated them there and "
        f"no peer took them"
    )


def test_an_isolated_node_asks_no_peer(tmp_path: Path) -> None:
    """The fault file's `unreachable` cuts both ways: while it holds, gossip rounds do not run at all."""
    from sixfold.storage.node import StorageServicer
    from sixfold.storage.store import SegmentStore

    async def run() -> None:
        store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
        isolated = [True]
        servicer = StorageServicer(
            store,
            "a1",
            "a",
            peer_channel=lambda address: None,
            gossip_interval_s=0.01,
            scrub=False,
            coalesce_interval_s=0,
            isolated=lambda: isolated[0],
        )
        assert servicer.gossip is not None
        servicer.gossip.start()
        try:
            await asyncio.sleep(0.2)
            assert servicer.gossip.rounds == 0
            isolated[0] = False
            await asyncio.sleep(0.2)
            assert servicer.gossip.rounds > 0
        finally:
            await servicer.gossip.stop()
            servicer.writer.shutdown(wait=True)
            store.close()

    asyncio.run(run())
