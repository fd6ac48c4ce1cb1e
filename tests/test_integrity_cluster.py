"""Issue 10 on a real cluster started by the launcher: what an outside tester did to a node, and what must
hold. Each test writes acknowledged data first and reads every page back from the storage segments (not the
writer's cache) at the end; a test that uses randomness prints its seed.

1. a raised SCL in a stopped node's segment metadata (a flipped digit, and a forged copy with a valid CRC);
2. bytes overwritten inside a stopped node's data.mdb (a corrupt tree);
3. RaiseVolumeEpoch(current + 1) sent to one segment, and an opener that raised a write quorum and gave up;
4. epochs and LSNs near the top of uint64;
5. DropSegment on a healthy member;
6. a full disk (a small tmpfs under one node's data directory; needs root to mount);
7. a node restarted on a new port.

The cluster uses mutual TLS (the default): the hostile calls of items 3-5 carry a certificate of the role the
node requires for them, from the cluster's CA (`hostile_stub`: a caller who stole one).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.security import pki, transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.storage.wire import record_to_proto
from sixfold.tools.cluster import COMPUTE, Cluster
from sixfold.tools.cluster_tls import harness_channel
from sixfold.tools.lmdb_tamper import edit_metadata, overwrite_pages
from tests.test_volume_faults import CALL_TIMEOUT_S, read, status, write

pytestmark = pytest.mark.integration

SEGMENT = "vol0/pg-00000"
PAGES = 60
WAIT_S = 40.0


def stub(address: str) -> pb_grpc.StorageServiceStub:
    """A storage node's stub as the cluster's `cli` (segment state and listings)."""
    return pb_grpc.StorageServiceStub(transport.channel(address, CHANNEL_OPTIONS))


def hostile_stub(cluster: Cluster, address: str, role: str) -> pb_grpc.StorageServiceStub:
    """A storage node's stub with a certificate of `role` from the cluster's CA: the data-changing and admin
    RPCs below come from a caller who stole one (the node's role checks let them through to its own rules)."""
    return pb_grpc.StorageServiceStub(harness_channel(cluster.state_dir, role, address, CHANNEL_OPTIONS))


def writer(cluster: Cluster) -> str:
    return cluster.node_address(COMPUTE)


def fill(cluster: Cluster, rounds: int = 3) -> dict[int, bytes]:
    """Acknowledged writes to pages 0..PAGES-1; returns what each page must hold at its start."""
    expected: dict[int, bytes] = {}
    for r in range(rounds):
        for page in range(PAGES):
            token = f"page{page:03d}-round{r}-TOKEN".encode()
            write(writer(cluster), [(page, 0, token)])
            expected[page] = token
    return expected


def check_pages(cluster: Cluster, expected: dict[int, bytes], reads: int = 3) -> None:
    """Every page, read from the segments `reads` times (different segments answer), is what was acknowledged."""
    for _ in range(reads):
        got = read(writer(cluster), sorted(expected), from_storage=True)
        wrong = {p: got[p][: len(v)] for p, v in expected.items() if got[p][: len(v)] != v}
        assert not wrong, f"pages served wrong: {wrong}"


def segment_state(cluster: Cluster, node: str) -> pb.SegmentState | None:
    try:
        return (
            stub(cluster.node_address(node))
            .GetSegmentState(pb.GetSegmentStateRequest(segment_id=SEGMENT), timeout=CALL_TIMEOUT_S)
            .state
        )
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = WAIT_S) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s:g} s: {what}")


def all_whole(cluster: Cluster) -> bool:
    states = [segment_state(cluster, n) for n in cluster.node_names()]
    return all(s is not None and s.whole for s in states) and len({s.scl for s in states if s}) == 1


def restart_writer(cluster: Cluster) -> None:
    """A cold buffer cache: every read then goes to the segments."""
    cluster.stop(COMPUTE)
    cluster.start(COMPUTE)


def data_file(cluster: Cluster, node: str) -> str:
    return str(Path(cluster.data_dir(node)) / "lmdb" / "data.mdb")


@pytest.mark.expected_log_errors("is lost")
def test_a_raised_scl_in_a_nodes_metadata_is_never_trusted(cluster: Cluster) -> None:
    """Item 1: SCL raised by 1,000 in a stopped node's metadata, once as a flipped digit (the copies fail
    their CRC: the segment is lost and created again, rebuilding) and once forged with a valid CRC (the
    records prove less). Neither node claims records it lacks, and no page is served wrong."""
    expected = fill(cluster)
    peer = segment_state(cluster, "c1")  # a peer: what every segment holds
    assert peer is not None, "c1 holds no copy of the segment"
    true_scl = peer.scl
    for node, fix_crc in (("a2", False), ("b1", True)):
        cluster.stop(node)
        edits = edit_metadata(data_file(cluster, node), SEGMENT, "scl", 1000, fix_crc=fix_crc)
        print(f"{node}: {[(e.before, e.after) for e in edits]} (CRC {'recomputed' if fix_crc else 'left'})")
        cluster.start(node)
    forged = segment_state(cluster, "b1")
    assert forged is not None and forged.scl <= true_scl, "the forged SCL was believed"
    lost = segment_state(cluster, "a2")
    assert lost is None or (lost.rebuilding or lost.scl <= true_scl)
    restart_writer(cluster)
    check_pages(cluster, expected)
    took = wait_for("every segment whole again", lambda: all_whole(cluster))
    print(f"six whole segments again {took:.1f} s after the restarts")
    check_pages(cluster, expected)
    assert "is lost" in cluster.log_path("a2").read_text()
    assert "records prove" in cluster.log_path("b1").read_text()
    assert "lost its copy" in cluster.log_path("control-plane").read_text()


@pytest.mark.expected_log_errors("corrupt")
@pytest.mark.cluster_options(insecure=True)  # plaintext on disk: the test finds the pages to rot by their bytes
def test_a_corrupt_tree_is_replaced_and_rebuilt_from_peers(cluster: Cluster) -> None:
    """Item 2: pages of a stopped node's data.mdb overwritten: the node finds it at start, serves nothing
    from it, moves it aside and rebuilds its segments from their peers, by itself."""
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    expected = fill(cluster)
    cluster.stop("c1")
    first, size = overwrite_pages(data_file(cluster, "c1"), expected[rng.randrange(PAGES)], rng.choice([2, 4, 16]), rng)
    print(f"overwrote {size} bytes at {first}")
    cluster.start("c1")
    listing = stub(cluster.node_address("c1")).ListSegments(pb.ListSegmentsRequest(), timeout=CALL_TIMEOUT_S)
    assert listing.environments_replaced >= 1, "the corrupt environment was not noticed at start"
    assert Path(cluster.data_dir("c1"), "lmdb.failed").is_dir()
    took = wait_for("every segment whole again", lambda: all_whole(cluster))
    print(f"rebuilt from its peers {took:.1f} s after the restart")
    restart_writer(cluster)
    check_pages(cluster, expected)
    assert "corrupt" in cluster.log_path("c1").read_text()


def write_for(cluster: Cluster, seconds: float) -> tuple[int, float]:
    """Write for `seconds`; (acknowledged writes, the longest stretch without one)."""
    acked, last, longest = 0, time.monotonic(), 0.0
    end = time.monotonic() + seconds
    page = 0
    while time.monotonic() < end:
        try:
            write(writer(cluster), [(page % PAGES, 100, b"after-the-raise")])
            acked += 1
            now = time.monotonic()
            longest = max(longest, now - last)
            last = now
        except grpc.RpcError as error:
            print(f"write refused: {error.code().name}: {(error.details() or '')[:120]}")
            time.sleep(0.05)
        page += 1
    return acked, max(longest, time.monotonic() - last)


def raise_epoch(cluster: Cluster, node: str, epoch: int, writer_id: str = "not-a-writer") -> None:
    hostile_stub(cluster, cluster.node_address(node), pki.ROLE_WRITER).RaiseVolumeEpoch(
        pb.RaiseVolumeEpochRequest(segment_id=SEGMENT, volume_epoch=epoch, writer_id=writer_id), timeout=CALL_TIMEOUT_S
    )


def test_a_segment_holding_a_newer_epoch_does_not_stop_the_writer(cluster: Cluster) -> None:
    """Item 3: one segment raised to the writer's epoch + 1 is a failing segment, not a newer writer: the
    writer goes on and regains the volume (a new recovery) within seconds. An opener that raised a write
    quorum and gave up gets a grace, then the writer regains the volume too."""
    expected = fill(cluster, rounds=1)
    epoch = status(writer(cluster)).volume_epoch
    raise_epoch(cluster, "b2", epoch + 1)
    acked, longest = write_for(cluster, 6.0)
    st = status(writer(cluster))
    print(
        f"one segment at epoch {epoch + 1}: {acked} writes acknowledged in 6 s, longest gap {longest:.2f} s; "
        f"writer epoch {st.volume_epoch}, regains {st.regains}"
    )
    assert acked > 0 and longest < 5.0 and not st.fenced
    assert st.regains >= 1 and st.volume_epoch > epoch + 1
    epoch = st.volume_epoch
    for node in ("a1", "a2", "b1", "b2"):  # a write quorum of the PG: what an opener that then failed leaves
        raise_epoch(cluster, node, epoch + 1, writer_id="opener-that-gave-up")
    acked, longest = write_for(cluster, 16.0)
    st = status(writer(cluster))
    print(
        f"a write quorum at epoch {epoch + 1}, no opener: {acked} writes in 16 s, longest gap {longest:.2f} s; "
        f"regains {st.regains}"
    )
    assert acked > 0 and not st.fenced and st.regains >= 2 and st.volume_epoch > epoch + 1
    assert longest < 15.0
    check_pages(cluster, expected)  # the writes above went to another offset of the pages


def test_epochs_and_lsns_near_the_top_of_uint64_are_refused_and_the_volume_still_opens(cluster: Cluster) -> None:
    """Item 4."""
    expected = fill(cluster, rounds=1)
    address = cluster.node_address("a1")
    for epoch in (2**64 - 1, 2**62 + 1):
        with pytest.raises(grpc.RpcError) as refused:
            raise_epoch(cluster, "a1", epoch)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "highest epoch" in (
            refused.value.details() or ""
        )
    epoch = status(writer(cluster)).volume_epoch
    with pytest.raises(grpc.RpcError) as refused:
        hostile_stub(cluster, address, pki.ROLE_WRITER).TruncateSegment(
            pb.TruncateSegmentRequest(
                segment_id=SEGMENT,
                volume_epoch=epoch,
                range=pb.TruncationRange(start_lsn=2**64 - 100, end_lsn=2**64 - 2, epoch=epoch),
            ),
            timeout=CALL_TIMEOUT_S,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "highest LSN" in (refused.value.details() or "")
    chain = ChainBuilder(epoch=epoch, next_lsn=2**64 - 2, last_lsn=2**64 - 3)
    request = pb.AppendRecordsRequest(
        segment_id=SEGMENT,
        volume_epoch=epoch,
        membership_epoch=1,
        batch_id=1,
        records=[record_to_proto(chain.patch(1, b"x"))],
    )
    with pytest.raises(grpc.RpcError) as refused:
        list(hostile_stub(cluster, address, pki.ROLE_WRITER).AppendRecords(iter([request]), timeout=CALL_TIMEOUT_S))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    cluster.kill(COMPUTE)
    cluster.start(COMPUTE)  # a new recovery: the epochs and ranges above were never taken
    assert status(writer(cluster)).volume_epoch == epoch + 1
    write(writer(cluster), [(0, 200, b"still-writable")])
    check_pages(cluster, expected)


def node_info(cluster: Cluster, node: str) -> cp_pb.NodeInfo:
    channel = transport.channel(cluster.control_plane_address(), CHANNEL_OPTIONS)
    nodes = cp_grpc.ControlPlaneServiceStub(channel).ListNodes(cp_pb.ListNodesRequest(), timeout=CALL_TIMEOUT_S).nodes
    return next(n for n in nodes if n.node_id == node)


def test_a_dropped_copy_on_a_healthy_node_is_noticed_and_created_again(cluster: Cluster) -> None:
    """Item 5: the control plane sees the copy missing from the node's heartbeats and creates it again on the
    same node, which rebuilds it from its peers; writes go on meanwhile."""
    expected = fill(cluster, rounds=1)
    dropper = hostile_stub(cluster, cluster.node_address("b2"), pki.ROLE_CONTROL_PLANE)
    dropper.DropSegment(pb.DropSegmentRequest(segment_id=SEGMENT), timeout=CALL_TIMEOUT_S)
    assert segment_state(cluster, "b2") is None
    took = wait_for(
        "the copy exists again and is whole", lambda: (s := segment_state(cluster, "b2")) is not None and s.whole
    )
    print(f"created again and whole {took:.1f} s after the drop")
    # The control plane hears of it with the node's next heartbeat (every 0.5 s).
    wait_for(
        "the control plane sees b2 healthy again", lambda: node_info(cluster, "b2").health == cp_pb.NODE_HEALTH_HEALTHY
    )
    assert "lost its copy" in cluster.log_path("control-plane").read_text()
    write(writer(cluster), [(1, 300, b"after-the-drop")])
    check_pages(cluster, expected)


def _mount_tmpfs(path: Path, size_bytes: int) -> None:
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)], check=True, capture_output=True
    )


@pytest.mark.expected_log_errors("is full")
def test_a_full_disk_is_reported_as_such_and_the_node_recovers_when_space_returns(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Item 6: c2's data directory on a small file system that fills: the node says so (ENOSPC or a short
    write, with a sentence, no tracebacks), shows degraded on the control plane and in `sixfold status`, the
    volume goes on with the others, and c2 catches up once there is room again."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    data = Path(cluster.data_dir("c2"))
    cluster.stop("c2")
    saved = tmp_path / "c2-data"
    shutil.copytree(data, saved)
    used = sum(f.stat().st_size for f in saved.rglob("*") if f.is_file())
    try:
        _mount_tmpfs(data, used + 1_500_000)
    except (subprocess.CalledProcessError, FileNotFoundError) as error:
        pytest.skip(f"cannot mount a tmpfs here: {error}")
    try:
        shutil.copytree(saved, data, dirs_exist_ok=True)
        cluster.start("c2")
        address = cluster.node_address("c2")
        payload = bytes(range(256)) * 12
        page = 0
        while (
            stub(address)
            .ListSegments(pb.ListSegmentsRequest(), timeout=CALL_TIMEOUT_S, wait_for_ready=True)  # a busy machine
            .disk_condition
            != pb.DISK_CONDITION_FULL
        ):
            write(writer(cluster), [(page % 500, 0, payload)])  # goes on with the five other copies
            page += 1
            assert page < 5_000, "c2's disk never filled"
        print(f"c2's disk full after {page} writes of {len(payload)} bytes")
        wait_for(
            "the control plane shows c2 degraded",
            lambda: node_info(cluster, "c2").health == cp_pb.NODE_HEALTH_DEGRADED,
            10,
        )
        assert node_info(cluster, "c2").condition == pb.DISK_CONDITION_FULL
        shown = subprocess.run(
            ["sixfold", "status", "--state-dir", str(cluster.state_dir)], capture_output=True, text=True, timeout=60
        ).stdout
        assert "degraded: c2 (disk full)" in shown and "DISK FULL" in shown, shown
        for i in range(20):
            write(writer(cluster), [(i, 0, b"while-c2-is-full")])
        subprocess.run(["mount", "-o", "remount,size=64m", str(data)], check=True, capture_output=True)
        wait_for(
            "c2's disk fine again",
            lambda: (
                stub(address).ListSegments(pb.ListSegmentsRequest(), timeout=CALL_TIMEOUT_S).disk_condition
                == pb.DISK_CONDITION_OK
            ),
            20,
        )
        wait_for("c2 caught up", lambda: all_whole(cluster))
        log = cluster.log_path("c2").read_text()
        assert "Traceback" not in log
        print(f"c2's log: {log.count('is full')} lines say the disk is full")
        assert 1 <= log.count("is full") <= 3
    finally:
        cluster.stop("c2")
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


def test_the_writer_and_the_peers_follow_a_node_restarted_on_a_new_port(cluster: Cluster) -> None:
    """Item 7."""
    expected = fill(cluster, rounds=1)
    before = cluster.node_address("a1")
    cluster.stop("a1")
    cluster.start("a1", new_port=True)
    after = cluster.node_address("a1")
    assert after != before

    def followed() -> bool:
        st = status(writer(cluster))
        writer_sees = any(
            s.node_id == "a1" and s.address == after and s.connected for pg in st.protection_groups for s in pg.segments
        )
        peer = segment_state(cluster, "c2")
        return writer_sees and peer is not None and [after] == [p.address for p in peer.peers if p.node_id == "a1"]

    took = wait_for("the writer and a peer use a1's new address", followed, 15)
    print(f"a1 moved {before} -> {after}; followed in {took:.1f} s")
    expected.update(dict.fromkeys(range(5), b"after-the-move"))
    for p in range(5):
        write(writer(cluster), [(p, 0, b"after-the-move")])
    wait_for("a1 holds the writes made after the move", lambda: all_whole(cluster))
    check_pages(cluster, expected)
