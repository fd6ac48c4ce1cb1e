"""Segment replacement with real processes: a cluster with one spare per AZ, started by the launcher,
where nodes fail for good (or come back) while clients keep writing through the writer.

Slowness is injected with the storage node's fault file (storage/faults.py): a spare whose every
request waits a few seconds keeps a change in flight long enough to act on it mid-way."""

from __future__ import annotations

import random
import re
import threading
import time

import pytest

from sixfold.storage.faults import FaultState, clear_fault_file, default_fault_file, write_fault_file
from sixfold.storage.security import transport
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.cluster import Cluster
from tests.test_volume_faults import VOLUME, Client, clients_for, run_clients, seed, status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.expected_log_errors,
    pytest.mark.cluster_options(spares=1, heartbeat_timeout_ms=1000, failure_timeout_ms=2000),
]

HEAL_WAIT_S = 90.0
# Below the control plane's 5 s segment-call timeout, above its 0.5 s healing interval several times over.
SPARE_DELAY_MS = 3500


def geometry(cluster: Cluster) -> cp_pb2.VolumeGeometry:
    with transport.channel(cluster.control_plane_address(), ()) as channel:
        reply = cp_grpc.ControlPlaneServiceStub(channel).DescribeVolume(
            cp_pb2.DescribeVolumeRequest(volume_id=VOLUME), timeout=10
        )
    return reply.geometry


def node_ids(pg: cp_pb2.ProtectionGroup) -> set[str]:
    return {s.node_id for s in pg.segments}


def wait_for(what: str, predicate, timeout_s: float = HEAL_WAIT_S, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting until {what}")


def healed_without(cluster: Cluster, gone: set[str]) -> cp_pb2.VolumeGeometry | None:
    g = geometry(cluster)
    ok = all(not pg.changes and len(pg.segments) == 6 and not (node_ids(pg) & gone) for pg in g.protection_groups)
    return g if ok else None


class Writers:
    """Clients writing in the background until stopped; `acked()` counts acknowledged MTRs so far."""

    def __init__(self, cluster: Cluster, clients: list[Client]) -> None:
        self.clients = clients
        self.stop_event = threading.Event()
        address = cluster.compute_address()
        self.thread = threading.Thread(
            target=run_clients, args=(lambda: address, clients, 600.0, self.stop_event), daemon=True
        )

    def __enter__(self) -> Writers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(120)

    def acked(self) -> int:
        return sum(c.acked for c in self.clients)

    def wait_progress(self, what: str, at_least: int = 20) -> None:
        before = self.acked()
        wait_for(f"{at_least} more MTRs are acknowledged {what}", lambda: self.acked() >= before + at_least, 30.0)


def check_clients(cluster: Cluster, clients: list[Client]) -> None:
    address = cluster.compute_address()
    for c in clients:
        seq = c.check(address)
        print(
            f"client {c.client_id}: acknowledged {c.acked}, attempted {c.attempted}, visible {seq}, "
            f"failures {len(c.failures)}"
        )


def segment_state(cluster: Cluster, node: str, segment_id: str) -> pb.SegmentState:
    with transport.channel(cluster.node_address(node), ()) as channel:
        return (
            pb_grpc.StorageServiceStub(channel)
            .GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id), timeout=10)
            .state
        )


def slow(cluster: Cluster, node: str, delay_ms: float) -> str:
    path = default_fault_file(str(cluster.data_dir(node)))
    write_fault_file(path, FaultState(delay_ms=delay_ms))
    return path


def pg0_clients(count: int, rng: random.Random) -> list[Client]:
    """Clients whose pages all lie in PG 0 (on a1 a2 b1 b2 c1 c2: the spares a3 b3 c3 hold nothing)."""
    hot = rng.randrange(8)
    return [Client(i, sorted({hot, rng.randrange(8, 100)})) for i in range(count)]


def test_a_node_killed_for_good_is_replaced_while_clients_write(cluster: Cluster) -> None:
    clients = clients_for(4, seed())  # pages in two PGs: PG 0 on a1 a2 b1 b2 c1 c2, PG 1 on a1 a3 b1 b3 c1 c3
    with Writers(cluster, clients) as writers:
        writers.wait_progress("before the fault")  # both PGs exist
        before = geometry(cluster)
        victim = "a1"
        cluster.kill(victim)
        killed = time.monotonic()
        healed = wait_for(
            f"every PG has six healthy segments without {victim}", lambda: healed_without(cluster, {victim})
        )
        took = time.monotonic() - killed
        writers.wait_progress("after the replacement")
    assert len(healed.protection_groups) == 2
    for old, pg in zip(before.protection_groups, healed.protection_groups):
        [spare] = {"a1", "a2", "a3"} - node_ids(old)
        assert node_ids(pg) == node_ids(old) - {victim} | {spare} and pg.membership_epoch == 3, pg
        state = segment_state(cluster, spare, pg.segments[0].segment_id)
        assert state.membership_epoch == 3 and state.scl > 0, state
        print(f"PG {pg.pg_index}: {victim} replaced by {spare}, whose segment has SCL {state.scl}")
    print(f"six healthy copies again {took:.1f} s after {victim} was killed; {writers.acked()} MTRs acknowledged")
    # The writer streams to the new segments and no longer to the old one.
    for pg, geo in zip(status(cluster.compute_address()).protection_groups, healed.protection_groups):
        assert {s.node_id for s in pg.segments} == node_ids(geo), pg
        assert pg.membership_epoch == 3
    check_clients(cluster, clients)
    # The replacements hold the data: with two more nodes gone (AZ a is down to its new segments), all reads.
    cluster.kill("a2" if "a2" in node_ids(before.protection_groups[0]) else "a3")
    cluster.kill("b1")
    check_clients(cluster, clients)


def test_the_old_node_returning_mid_change_rolls_the_change_back(cluster: Cluster) -> None:
    clients = pg0_clients(3, seed())
    fault = slow(cluster, "b3", SPARE_DELAY_MS)  # the change stays in flight while the spare answers slowly
    try:
        with Writers(cluster, clients) as writers:
            writers.wait_progress("before the fault")
            cluster.kill("b2")
            changing = wait_for(
                "a change to replace b2 begins",
                lambda: [pg for pg in geometry(cluster).protection_groups if pg.changes],
            )
            assert changing[0].changes[0].old_node_id == "b2" and changing[0].changes[0].new_node_id == "b3"
            # Now the spare answers nothing within the control plane's 5 s call timeout, so it cannot finish
            # hydrating before b2 is back, however long b2 takes to start on a loaded machine.
            slow(cluster, "b3", 4 * SPARE_DELAY_MS)
            cluster.start("b2")
            rolled = wait_for("every change is rolled back", lambda: healed_without(cluster, {"b3"}))
            writers.wait_progress("after the rollback")
    finally:
        clear_fault_file(fault)
    for pg in rolled.protection_groups:
        assert node_ids(pg) == {"a1", "a2", "b1", "b2", "c1", "c2"}, pg
        assert pg.membership_epoch >= 3, pg  # begin, then roll back: two bumps at least
    # The spare's segment is dropped.
    wait_for("the spare holds no segment", lambda: not _segments_on(cluster, "b3"), 30.0)
    check_clients(cluster, clients)


def test_two_overlapping_failures_compose_and_the_writer_keeps_committing(cluster: Cluster) -> None:
    clients = pg0_clients(3, seed())
    faults = [slow(cluster, "a3", SPARE_DELAY_MS), slow(cluster, "c3", SPARE_DELAY_MS)]
    most_changes = [0]

    def both_in_flight() -> bool:
        g = geometry(cluster)
        most_changes[0] = max(most_changes[0], *(len(pg.changes) for pg in g.protection_groups))
        return most_changes[0] == 2

    try:
        with Writers(cluster, clients) as writers:
            writers.wait_progress("before the faults")
            cluster.kill("a2")
            wait_for("the first change begins", lambda: any(pg.changes for pg in geometry(cluster).protection_groups))
            cluster.kill("c1")
            wait_for("two changes are in flight in one PG", both_in_flight)
            [plane] = [p for p in cluster.status().processes if p.role == "control-plane"]
            print("sixfold status shows:", "; ".join(c.describe() for c in plane.changes))
            assert {(c.old_node_id, c.new_node_id) for c in plane.changes} >= {("a2", "a3"), ("c1", "c3")}
            writers.wait_progress("with two changes in flight")
            progress: dict[str, list[tuple[int, int]]] = {}  # change -> (hydrated SCL, target) as status showed

            def healed_watching_progress():
                [plane] = [p for p in cluster.status().processes if p.role == "control-plane"]
                for change in plane.changes:
                    shown = re.search(r"(\S+ \S+->\S+) hydrated (\d+)/(\d+) \((\d+)%\)", change.describe())
                    if shown:
                        progress.setdefault(shown.group(1), []).append((int(shown.group(2)), int(shown.group(3))))
                return healed_without(cluster, {"a2", "c1"})

            healed = wait_for("both changes complete", healed_watching_progress)
            print("hydration progress seen in sixfold status:", {k: v[:3] + v[-3:] for k, v in progress.items()})
            assert progress, "sixfold status never showed a change's hydration progress"
            for shown in progress.values():
                assert [scl for scl, _ in shown] == sorted(scl for scl, _ in shown), shown  # it only moves up
                assert all(target > 0 for _, target in shown), shown
            writers.wait_progress("after both changes")
    finally:
        for fault in faults:
            clear_fault_file(fault)
    for pg in healed.protection_groups:
        assert node_ids(pg) == {"a1", "a3", "b1", "b2", "c2", "c3"}, pg
        assert pg.membership_epoch == 5, pg  # two begins, two completions
    check_clients(cluster, clients)


def _segments_on(cluster: Cluster, node: str) -> list[str]:
    with transport.channel(cluster.node_address(node), ()) as channel:
        reply = pb_grpc.StorageServiceStub(channel).ListSegments(pb.ListSegmentsRequest(), timeout=10)
    return [s.segment_id for s in reply.segments]


@pytest.mark.cluster_options(
    node_flags=["--history-window-s", "0.5", "--coalesce-interval-ms", "200"],
    compute_flags=["--default-volume-backtrack-window-s", "1"],  # the nodes keep the volume's window if longer
)
def test_a_replacement_hydrates_from_page_versions_when_peers_collected_the_log(cluster: Cluster) -> None:
    clients = pg0_clients(3, seed())
    with Writers(cluster, clients) as writers:
        writers.wait_progress("before the fault")
        segment_id = geometry(cluster).protection_groups[0].segments[0].segment_id
        collected = wait_for(
            "the peers have garbage-collected records below their horizon",
            lambda: all(
                segment_state(cluster, n, segment_id).records_collected > 0 for n in ("a2", "b1", "b2", "c1", "c2")
            ),
            60.0,
        )
        assert collected
        cluster.kill("a1")
        healed = wait_for("PG 0 has six healthy segments without a1", lambda: healed_without(cluster, {"a1"}))
        writers.wait_progress("after the replacement")
    assert node_ids(healed.protection_groups[0]) == {"a2", "a3", "b1", "b2", "c1", "c2"}
    state = segment_state(cluster, "a3", segment_id)
    print(
        f"a3 hydrated {state.pages_hydrated} pages ({state.bytes_hydrated} bytes) from page versions, then "
        f"{state.records_repaired} records; SCL {state.scl}, horizon {state.retention_horizon_lsn}"
    )
    assert state.pages_hydrated > 0 and state.scl > 0
    check_clients(cluster, clients)
    cluster.kill("a2")  # a3 is now the only copy in AZ a: reads still see every acknowledged write
    check_clients(cluster, clients)
