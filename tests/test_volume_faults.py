"""The quorum volume under faults: real storage nodes, control plane and writer, started by the launcher.

Clients write MTRs that each put the same token (client, sequence) into a slot of
every page the client owns, spread over two PGs. Atomicity and durability then
read off the pages: all of a client's pages show one sequence number, at least
its last acknowledged one and at most its last attempted one.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.security import transport
from sixfold.tools.chaos.second_writer import security_args
from sixfold.tools.cluster import Cluster

pytestmark = pytest.mark.integration

VOLUME = "vol0"
PAGES_PER_PG = 16384  # the launcher's default volume: 64 MiB segments of 4 KiB pages
SLOT_BYTES = 16
CALL_TIMEOUT_S = 15


def stub(address: str) -> vgrpc.VolumeServiceStub:
    return vgrpc.VolumeServiceStub(transport.channel(address, ()))


def write(address: str, patches: list[tuple[int, int, bytes]], volume: str = VOLUME) -> int:
    reply = stub(address).WritePages(
        vpb.WritePagesRequest(
            volume_id=volume, patches=[vpb.PagePatch(page_no=p, offset=o, data=d) for p, o, d in patches]
        ),
        timeout=CALL_TIMEOUT_S,
    )
    return reply.lsn


def read(address: str, pages: list[int], volume: str = VOLUME, *, from_storage: bool = False) -> dict[int, bytes]:
    """The pages at VDL; `from_storage` skips the writer's buffer cache, so a storage segment must serve them."""
    reply = stub(address).ReadPages(
        vpb.ReadPagesRequest(volume_id=volume, page_nos=pages, from_storage=from_storage), timeout=CALL_TIMEOUT_S
    )
    return {p.page_no: p.data for p in reply.pages}


def status(address: str) -> vpb.VolumeStatus:
    return stub(address).GetVolumeStatus(vpb.GetVolumeStatusRequest(volume_id=VOLUME), timeout=CALL_TIMEOUT_S).status


def wait_connected(address: str, count: int = 6, timeout_s: float = 30, *, at_most: bool = False) -> None:
    """Until every PG's writer streams to `count` segments are connected (or, with at_most, no more than that)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        st = status(address)
        connected = [sum(s.connected for s in pg.segments) for pg in st.protection_groups]
        if all((n <= count) if at_most else (n >= count) for n in connected):
            return
        time.sleep(0.1)
    raise AssertionError(f"the writer's connected segments per PG did not reach {count} in {timeout_s} s")


def expect_code(fn, code: grpc.StatusCode, phrase: str = "") -> str:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == code, (info.value.code(), info.value.details())
    assert phrase in (info.value.details() or ""), info.value.details()
    print(f"{code.name}: {info.value.details()}")
    return info.value.details() or ""


@dataclass
class Client:
    """Writes MTRs of the same token to every page it owns; records what was acknowledged."""

    client_id: int
    pages: list[int]
    acked: int = 0  # highest sequence acknowledged
    attempted: int = 0  # highest sequence sent
    failures: list[str] = field(default_factory=list)

    def token(self, seq: int) -> bytes:
        return f"c{self.client_id:03d}s{seq:09d}".encode()[:SLOT_BYTES].ljust(SLOT_BYTES, b".")

    def slot(self) -> int:
        return self.client_id * SLOT_BYTES

    def write_next(self, address: str) -> bool:
        seq = self.attempted + 1
        self.attempted = seq
        try:
            write(address, [(p, self.slot(), self.token(seq)) for p in self.pages])
        except grpc.RpcError as error:
            self.failures.append(f"{error.code().name}: {error.details()}")
            return False
        self.acked = seq
        return True

    def check(self, address: str) -> int:
        """Every page shows the same sequence, between the last acknowledged and the last attempted, as
        the storage segments hold it (never the writer's buffer cache)."""
        images = read(address, self.pages, from_storage=True)
        seqs = set()
        for page in self.pages:
            raw = images[page][self.slot() : self.slot() + SLOT_BYTES]
            seqs.add(0 if raw == bytes(SLOT_BYTES) else int(raw.decode().split("s")[1].rstrip(".")))
        assert len(seqs) == 1, f"client {self.client_id}: an MTR is partly visible: {sorted(seqs)} on {self.pages}"
        (seq,) = seqs
        assert self.acked <= seq <= self.attempted, (
            f"client {self.client_id}: pages show {seq}; acknowledged {self.acked}, attempted {self.attempted}"
        )
        return seq


def clients_for(count: int, rng: random.Random) -> list[Client]:
    """Each client owns one page in PG 0 and one in PG 1 (and a shared hot page), so MTRs span PGs."""
    hot = rng.randrange(8)
    return [Client(i, sorted({hot, rng.randrange(100), PAGES_PER_PG + rng.randrange(100)})) for i in range(count)]


def run_clients(address_of, clients: list[Client], seconds: float, stop: threading.Event | None = None) -> None:
    stop = stop or threading.Event()
    deadline = time.monotonic() + seconds

    def loop(client: Client) -> None:
        while time.monotonic() < deadline and not stop.is_set():
            if not client.write_next(address_of()):
                time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)


def seed() -> random.Random:
    value = random.randrange(2**32)
    print(f"seed={value}")
    return random.Random(value)


@pytest.mark.expected_log_errors
def test_two_nodes_down_writes_go_on_three_down_writes_refused_reads_go_on(cluster: Cluster) -> None:
    rng = seed()
    address = cluster.compute_address()
    clients = clients_for(4, rng)
    run_clients(lambda: address, clients, 1.0)
    assert all(c.acked > 0 for c in clients)
    for victims in (["b1", "b2"], ["a1", "c2"]):  # a whole AZ; one node in each of two AZs
        for v in victims:
            cluster.kill(v)
        before = [c.acked for c in clients]
        run_clients(lambda: address, clients, 1.5)
        assert all(c.acked > b for c, b in zip(clients, before)), [c.failures[-3:] for c in clients]
        for c in clients:
            c.check(address)
        for v in victims:
            cluster.start(v)
        wait_connected(address)
    # Three down: no write succeeds, reads still do.
    for v in ("a1", "b1", "c1"):
        cluster.kill(v)
    # A write racing the kills may be sent and then time out (UNAVAILABLE, "may still become durable");
    # once the writer has seen the streams break it refuses before allocating anything.
    wait_connected(address, 3, at_most=True)
    details = expect_code(lambda: write(address, [(5, 0, b"never")]), grpc.StatusCode.UNAVAILABLE, "needs 4")
    assert "Nothing was written" in details
    for c in clients:
        c.check(address)
    assert read(address, [5], from_storage=True)[5][:5] != b"never"
    for v in ("a1", "b1", "c1"):
        cluster.start(v)
    wait_connected(address)
    run_clients(lambda: address, clients, 1.0)
    # Everything restarts; nothing acknowledged is lost.
    for name in cluster.node_names():
        cluster.stop(name)
    cluster.kill("compute")
    for name in cluster.node_names():
        cluster.start(name)
    cluster.start("compute")
    address = cluster.compute_address()
    for c in clients:
        seq = c.check(address)
        print(f"client {c.client_id}: acknowledged {c.acked}, visible {seq}, failures {len(c.failures)}")


@pytest.mark.expected_log_errors
def test_writer_sigkilled_at_random_moments_loses_no_acknowledged_mtr(cluster: Cluster) -> None:
    rng = seed()
    clients = clients_for(6, rng)
    address = [cluster.compute_address()]
    stop = threading.Event()
    runner = threading.Thread(target=run_clients, args=(lambda: address[0], clients, 60.0, stop), daemon=True)
    runner.start()
    kills = 3
    for i in range(kills):
        time.sleep(rng.uniform(0.5, 2.0))
        cluster.kill("compute")
        time.sleep(rng.uniform(0.0, 0.5))
        cluster.start("compute")
        address[0] = cluster.compute_address()
        print(f"kill {i + 1}: writer restarted; acknowledged so far {sum(c.acked for c in clients)}")
    time.sleep(1.0)
    stop.set()
    runner.join(90)
    assert sum(c.acked for c in clients) > 0
    cluster.kill("compute")
    cluster.start("compute")
    for c in clients:
        seq = c.check(cluster.compute_address())
        print(f"client {c.client_id}: acknowledged {c.acked}, attempted {c.attempted}, visible {seq}")


@pytest.mark.expected_log_errors
def test_two_paused_nodes_do_not_stall_commits(cluster: Cluster) -> None:
    address = cluster.compute_address()
    write(address, [(1, 0, b"warm"), (PAGES_PER_PG + 1, 0, b"warm")])  # both PGs exist before the pause
    cluster.pause("a2")
    cluster.pause("c1")
    try:
        started = time.monotonic()
        lsns = [write(address, [(1, 0, b"p%05d" % i), (PAGES_PER_PG + 1, 0, b"q%05d" % i)]) for i in range(50)]
        elapsed = time.monotonic() - started
        print(f"50 two-PG commits with two nodes paused took {elapsed:.2f} s")
        assert lsns == sorted(lsns)
        assert read(address, [1], from_storage=True)[1][:6] == b"p00049"
    finally:
        cluster.resume("a2")
        cluster.resume("c1")
    assert write(address, [(1, 0, b"after!")]) > lsns[-1]


@pytest.mark.expected_log_errors
def test_a_second_writer_fences_the_first(cluster: Cluster, tmp_path: Path) -> None:
    old = cluster.compute_address()
    before = write(old, [(7, 0, b"old-writer")])
    port_file = tmp_path / "second.port"
    log_file = open(tmp_path / "second-writer.log", "wb")
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "compute",
            "--control-plane",
            cluster.control_plane_address(),
            "--port-file",
            str(port_file),
            "--default-volume",
            VOLUME,
            *security_args(cluster),  # as a second compute process of the cluster: its certificate and keys
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        new = None
        while time.monotonic() < deadline and new is None:
            if port_file.exists():
                candidate = f"127.0.0.1:{port_file.read_text().strip()}"
                try:
                    assert read(candidate, [7])[7][:10] == b"old-writer"
                    new = candidate
                except grpc.RpcError:
                    time.sleep(0.2)
            else:
                time.sleep(0.1)
        assert new, "the second writer did not open the volume"
        # The old writer learns it is fenced from the segments' answer to this first write: the MTR was in
        # flight by then, so its outcome is unknown (UNAVAILABLE, "may still"), or, if the writer already
        # knew, a definite refusal. Either way it says why; never a success.
        with pytest.raises(grpc.RpcError) as info:
            write(old, [(7, 0, b"stale-write")])
        assert info.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
        details = info.value.details() or ""
        assert "fenced" in details and "newer writer" in details
        print(f"{info.value.code().name}: {info.value.details()}")
        expect_code(lambda: read(old, [7]), grpc.StatusCode.FAILED_PRECONDITION, "fenced")
        assert status(old).fenced
        after = write(new, [(7, 0, b"new-writer")])
        assert after > before
        assert read(new, [7])[7][:10] == b"new-writer"
        # The old writer can never change the volume again.
        expect_code(lambda: write(old, [(7, 0, b"stale-again")]), grpc.StatusCode.FAILED_PRECONDITION, "fenced")
        assert read(new, [7])[7][:10] == b"new-writer"
    finally:
        second.send_signal(signal.SIGTERM)
        try:
            second.wait(10)
        except subprocess.TimeoutExpired:
            second.kill()
            second.wait()
        log_file.close()


def test_bad_input_gets_a_clear_status_and_writes_nothing(cluster: Cluster) -> None:
    address = cluster.compute_address()
    write(address, [(3, 0, b"keep")])
    vdl = status(address).vdl
    cases = [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ([(3, 4090, b"0123456789")], grpc.StatusCode.INVALID_ARGUMENT, "past the end"),
        ([(3, 0, b"")], grpc.StatusCode.INVALID_ARGUMENT, "empty"),
        ([(3, 0, b"x")] * 1001, grpc.StatusCode.INVALID_ARGUMENT, "at most 1000"),
        ([(3, 0, b"x"), (10**9, 0, b"y")], grpc.StatusCode.OUT_OF_RANGE, "past the end of volume"),
        ([(2**40, 0, b"y")], grpc.StatusCode.RESOURCE_EXHAUSTED, "full"),
    ]
    for patches, code, phrase in cases:
        expect_code(lambda patches=patches: write(address, patches), code, phrase)
    expect_code(
        lambda: write(address, [(1, 0, b"x")], volume="no-such-volume"), grpc.StatusCode.NOT_FOUND, "does not exist"
    )
    expect_code(lambda: read(address, [10**9]), grpc.StatusCode.OUT_OF_RANGE, "beyond the end")
    assert status(address).vdl == vdl
    assert read(address, [3])[3][:5] == b"keep\x00"
    # Oversized by bytes (4 KiB pages cannot reach the limit within 1,000 patches): a volume of 64 KiB pages.
    stub(address).CreateVolume(
        vpb.CreateVolumeRequest(volume_id="big-pages", page_size=65536, segment_size_bytes=64 * 2**20),
        timeout=CALL_TIMEOUT_S,
    )
    big = [(page, 0, bytes([page]) * 65536) for page in range(65)]  # 4,259,840 bytes
    expect_code(lambda: write(address, big, volume="big-pages"), grpc.StatusCode.INVALID_ARGUMENT, "at most 4194304")
    assert read(address, [0], volume="big-pages", from_storage=True)[0] == bytes(65536)  # nothing was written


def test_a_write_past_the_end_grows_the_volume(cluster: Cluster) -> None:
    address = cluster.compute_address()
    before = len(status(address).protection_groups)
    far = PAGES_PER_PG * (before + 1) + 5  # two PGs past the current end
    lsn = write(address, [(far, 100, b"grown")])
    st = status(address)
    assert len(st.protection_groups) == before + 2 and st.vdl >= lsn
    assert read(address, [far])[far][100:105] == b"grown"
    assert {s.az for s in st.protection_groups[-1].segments} == {"a", "b", "c"}


def test_the_compute_node_serves_health_and_reflection(cluster: Cluster) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    channel = transport.channel(cluster.compute_address(), ())
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    database = ProtoReflectionDescriptorDatabase(channel)
    assert {
        "compute.v1.VolumeService",
        "compute.v1.SqlService",
        "compute.v1.KvService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(database.get_services())
    methods = {m.name for m in DescriptorPool(database).FindServiceByName("compute.v1.VolumeService").methods}
    assert {"WritePages", "ReadPages", "GetVolumeStatus"} <= methods
