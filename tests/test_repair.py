"""Gossip repair planning (storage/repair.py) and gossip between real storage node processes."""

from __future__ import annotations

import time

import pytest

from storage.chain import ChainBuilder
from storage.records import LogRecord, PayloadKind
from storage.repair import PeerView, batch_epoch, plan_repair, records_to_append
from storage.segment import TruncationRange
from storage.v1 import storage_service_pb2 as pb
from tests.test_storage_integration import all_records, append_once, create_volume, stub
from tools.cluster import Cluster


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
    assert stub(pg.segments[1].address).GetSegmentState(
        pb.GetSegmentStateRequest(segment_id=absent.segment_id)).state.scl == chain.last_lsn
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
