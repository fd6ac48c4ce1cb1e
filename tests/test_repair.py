"""Gossip repair planning (storage/repair.py) and gossip between real storage node processes.

Tiers are marked per test: the planning tests and the in-process gossip test are `unit`, the ones that
start a cluster are `integration`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.epochs import peer_copy_epoch
from sixfold.storage.records import LogRecord, PayloadKind
from sixfold.storage.repair import PeerView, plan_repair, records_to_append
from sixfold.storage.segment import TruncationRange
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.tools.cluster import Cluster
from tests.polling import POLL_S, wait_until
from tests.test_storage_integration import all_records, append_once, create_volume, stub


async def wait_until_async(predicate: Callable[[], object], timeout_s: float, what: str) -> None:
    """`tests/polling.py`'s `wait_until` for a test that runs on an event loop: it yields to the loop
    between looks, so the background task it waits for can run."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting until {what}")
        await asyncio.sleep(POLL_S)


@pytest.mark.unit
def test_ranges_travel_before_records_and_the_most_complete_peer_is_chosen() -> None:
    r1, r2 = TruncationRange(10, 20, 2), TruncationRange(30, 40, 3)
    plan = plan_repair(5, [r1], [PeerView("b1", 50, (r1, r2)), PeerView("c1", 70, (r2,)), PeerView("a2", 3, ())])
    assert plan.ranges_to_apply == (r2,)
    assert (plan.pull_from, plan.from_lsn, plan.to_lsn) == ("c1", 5, 70)


@pytest.mark.unit
def test_nothing_to_pull_when_no_peer_is_ahead() -> None:
    plan = plan_repair(9, [], [PeerView("b1", 9, ()), PeerView("c1", 2, ())])
    assert plan.pull_from is None and plan.ranges_to_apply == ()


@pytest.mark.unit
def test_truncated_records_are_never_pulled_back() -> None:
    old = LogRecord(12, 1, PayloadKind.PATCH, 0, b"old", 11, 11, 0, 1)
    new = LogRecord(41, 1, PayloadKind.PATCH, 0, b"new", 11, 11, 0, 2)
    kept = records_to_append([old, new], [TruncationRange(12, 40, 2)])
    assert kept == [new]
    assert peer_copy_epoch(1, (r.epoch for r in kept)) == 2


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

    def caught_up() -> pb.SegmentState | None:
        state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=absent.segment_id)).state
        return state if state.scl == chain.last_lsn else None

    state = wait_until(caught_up, 60, f"{absent.node_id} caught up to SCL {chain.last_lsn} through gossip")
    assert state is not None

    def all_counted() -> pb.SegmentState | None:
        # The records are visible (SCL) as soon as their transaction commits; gossip counts them once
        # its round's append returns, a moment later.
        now = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=absent.segment_id)).state
        return now if now.records_repaired >= 3000 else None

    state = wait_until(all_counted, 10, f"{absent.node_id} counted the 3000 records gossip pulled")
    assert state is not None
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

    def truncated() -> pb.SegmentState | None:
        state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id)).state
        return state if any(r.start_lsn == 11 and r.epoch == 2 for r in state.truncation_ranges) else None

    state = wait_until(truncated, 30, f"{absent.node_id} took the truncation range [11, 1010]@2 from a peer")
    assert state is not None and state.scl == 10 and state.highest_lsn == 10, state
    # Part of the scenario, not a wait for a condition: nothing may come back over several more gossip
    # rounds (1 s apart), and nothing outside the nodes shows a round went by, so give them the time.
    time.sleep(3.0)
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


@pytest.mark.unit
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
        gossip = servicer.gossip
        try:
            # Part of the scenario: 20 intervals go by isolated, and not one round may run.
            await asyncio.sleep(0.2)
            assert gossip.rounds == 0
            isolated[0] = False
            await wait_until_async(lambda: gossip.rounds > 0, 10, "a gossip round ran once the node was reachable")
        finally:
            await servicer.gossip.stop()
            servicer.writer.shutdown(wait=True)
            store.close()

    asyncio.run(run())
