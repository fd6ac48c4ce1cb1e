"""Storage nodes as real processes, started through the launcher (tools.cluster), over gRPC."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.records import LogRecord, decode_record
from sixfold.storage.security import pki, transport
from sixfold.storage.segment import BATCH_RECORDS_MAX
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.storage.wire import record_from_proto, record_to_proto
from sixfold.tools.cluster import Cluster
from sixfold.tools.cluster_tls import harness_identity
from tests.test_store import flip_byte_in_file

pytestmark = [pytest.mark.integration, pytest.mark.cluster_options(compute=False)]  # storage only: saves CPU
RPC_TIMEOUT_S = 10


class Writer:
    """These tests play the compute writer of a storage-only cluster: a writer certificate from its CA (None
    on a plaintext cluster), set by `create_volume`."""

    identity: pki.Identity | None = None


def stub(address: str) -> pb_grpc.StorageServiceStub:
    return pb_grpc.StorageServiceStub(transport.channel_as(Writer.identity, address, CHANNEL_OPTIONS))


def create_volume(
    cluster: Cluster,
    volume_id: str,
    page_size: int = 4096,
    segment_bytes: int = 4096 * 256,
    backtrack_window_s: int = 0,
):
    Writer.identity = harness_identity(cluster.state_dir, pki.ROLE_WRITER)
    channel = transport.channel_as(Writer.identity, cluster.control_plane_address(), CHANNEL_OPTIONS)
    reply = cp_grpc.ControlPlaneServiceStub(channel).CreateVolume(
        cp_pb.CreateVolumeRequest(
            volume_id=volume_id,
            page_size=page_size,
            segment_size_bytes=segment_bytes,
            backtrack_window_s=backtrack_window_s,
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return reply.geometry


def append_once(
    address: str,
    segment_id: str,
    records: list[LogRecord],
    *,
    epoch: int = 1,
    crc_of=lambda r: r.crc(),
    batch_id: int = 1,
) -> pb.AppendRecordsResponse:
    request = pb.AppendRecordsRequest(
        segment_id=segment_id,
        volume_epoch=epoch,
        membership_epoch=1,
        batch_id=batch_id,
        records=[record_to_proto(r) for r in records],
    )
    for proto, record in zip(request.records, records):
        proto.crc32c = crc_of(record)
    (ack,) = list(stub(address).AppendRecords(iter([request]), timeout=RPC_TIMEOUT_S))
    return ack


def all_records(address: str, segment_id: str) -> list[pb.LogRecord]:
    out, from_lsn = [], 0
    while True:
        reply = stub(address).ReadRecords(
            pb.ReadRecordsRequest(segment_id=segment_id, from_lsn=from_lsn), timeout=RPC_TIMEOUT_S
        )
        out.extend(reply.records)
        if not reply.more:
            return out
        from_lsn = reply.records[-1].lsn


def healthy(address: str) -> bool:
    channel = transport.channel(address, CHANNEL_OPTIONS)
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


class SegmentStreamer(threading.Thread):
    """Streams a PG's batches to one segment and remembers the highest batch it saw acknowledged."""

    def __init__(self, address: str, segment_id: str, batches: list[list[LogRecord]], window: int = 4) -> None:
        super().__init__(daemon=True)
        self.address, self.segment_id, self.batches = address, segment_id, batches
        self.credit = threading.Semaphore(window)
        self.acked_batches = 0
        self.error: grpc.RpcError | None = None

    def requests(self) -> Iterator[pb.AppendRecordsRequest]:
        for i, batch in enumerate(self.batches):
            self.credit.acquire()
            yield pb.AppendRecordsRequest(
                segment_id=self.segment_id,
                volume_epoch=1,
                membership_epoch=1,
                batch_id=i,
                records=[record_to_proto(r) for r in batch],
            )
            time.sleep(0.002)  # keep the stream going long enough to be cut mid-way

    def run(self) -> None:
        try:
            for ack in stub(self.address).AppendRecords(self.requests()):
                assert ack.batch_id == self.acked_batches, (ack.batch_id, self.acked_batches)
                assert ack.scl >= self.batches[ack.batch_id][-1].lsn
                self.acked_batches += 1
                self.credit.release()
        except grpc.RpcError as error:
            self.error = error

    def acknowledged_records(self) -> list[LogRecord]:
        return [r for batch in self.batches[: self.acked_batches] for r in batch]


@pytest.mark.expected_log_errors  # the killed node's log may end mid-line
def test_sigkill_mid_stream_loses_nothing_acknowledged(cluster: Cluster) -> None:
    seed = random.randrange(2**32)
    print(f"seed={seed}")
    rng = random.Random(seed)
    geometry = create_volume(cluster, "killvol")
    pg = geometry.protection_groups[0]
    assert len(pg.segments) == 6 and len({s.node_id for s in pg.segments}) == 6
    assert sorted(s.az for s in pg.segments) == ["a", "a", "b", "b", "c", "c"]
    chain = ChainBuilder()
    batches = [
        [
            chain.patch(rng.randrange(pg.page_count), rng.randbytes(rng.randint(1, 200)))
            for _ in range(rng.randint(1, 60))
        ]
        for _ in range(600)
    ]
    streamers = {s.node_id: SegmentStreamer(s.address, s.segment_id, batches) for s in pg.segments}
    victim = rng.choice(sorted(streamers))
    for streamer in streamers.values():
        streamer.start()
    deadline = time.monotonic() + 60
    while streamers[victim].acked_batches < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    cluster.kill(victim)
    print(f"killed {victim} after {streamers[victim].acked_batches} acknowledged batches")
    for streamer in streamers.values():
        streamer.join(120)
        assert not streamer.is_alive()
    acked = streamers[victim].acknowledged_records()
    assert streamers[victim].error is not None, "the victim's stream should have been cut"
    assert len(streamers[victim].acknowledged_records()) >= 50 or streamers[victim].acked_batches >= 50
    assert streamers[victim].acked_batches < len(batches), "the kill came too late to be mid-stream"
    for node, streamer in streamers.items():
        if node != victim:
            assert streamer.error is None and streamer.acked_batches == len(batches), (node, streamer.error)

    cluster.start(victim)
    segment_id = next(s.segment_id for s in pg.segments if s.node_id == victim)
    address = cluster.node_address(victim)
    stored = {r.lsn: r for r in all_records(address, segment_id)}
    for record in acked:
        got = stored.get(record.lsn)
        assert got is not None, f"acknowledged LSN {record.lsn} is missing on {victim}"
        plain, carried_crc = record_from_proto(got)
        assert plain == record and carried_crc == record.crc() == decode_record(record.encode()).crc()
    state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id)).state
    assert state.scl >= acked[-1].lsn
    print(f"{victim}: {len(acked)} acknowledged records all present after restart; SCL {state.scl}")
    # The restarted node takes the rest of the stream (resending what it already has is idempotent).
    rest = SegmentStreamer(address, segment_id, batches)
    rest.run()
    assert rest.error is None and rest.acked_batches == len(batches)
    assert stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=segment_id)).state.scl == chain.last_lsn


@pytest.fixture(scope="module")
def one_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    local = Cluster(tmp_path_factory.mktemp("bad-input") / "cluster")
    with local:
        local.up(compute=False)
        yield local


def expect_status(call, code: grpc.StatusCode, *phrases: str) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == code, (info.value.code(), info.value.details())
    details = info.value.details() or ""
    for phrase in phrases:
        assert phrase in details, details
    assert "Traceback" not in details
    print(f"{code.name}: {details}")
    return details


def test_bad_input_gets_a_clear_status_and_changes_nothing(one_cluster: Cluster) -> None:
    geometry = create_volume(one_cluster, "badvol")
    seg = geometry.protection_groups[0].segments[0]
    address, segment_id = seg.address, seg.segment_id
    chain = ChainBuilder(epoch=3)
    good = [chain.patch(1, b"first"), chain.patch(2, b"second")]
    ack = append_once(address, segment_id, good, epoch=3)
    assert ack.scl == 2
    before_records = all_records(address, segment_id)
    before_page = stub(address).ReadPage(pb.ReadPageRequest(segment_id=segment_id, page_no=2, read_point=2)).data
    nxt = chain.patch(1, b"third")

    cases = {
        "older epoch": lambda: append_once(address, segment_id, [nxt], epoch=2),
        "bad CRC": lambda: append_once(address, segment_id, [nxt], epoch=3, crc_of=lambda r: r.crc() ^ 0xDEAD),
        "unknown segment": lambda: append_once(address, "badvol/pg-99999", [nxt], epoch=3),
        "page outside": lambda: append_once(
            address, segment_id, [LogRecord(3, 10_000, nxt.kind, 0, b"x", 2, 2, 0, 3)], epoch=3
        ),
        "LSN conflict": lambda: append_once(
            address, segment_id, [LogRecord(2, 2, nxt.kind, 0, b"CHANGED", 1, 1, 0, 3)], epoch=3
        ),
        "oversized batch": lambda: append_once(address, segment_id, [nxt] * (BATCH_RECORDS_MAX + 1), epoch=3),
    }
    expected = {
        "older epoch": (grpc.StatusCode.FAILED_PRECONDITION, "volume epoch 2 is older than epoch 3"),
        "bad CRC": (grpc.StatusCode.INVALID_ARGUMENT, "CRC-32C"),
        "unknown segment": (grpc.StatusCode.NOT_FOUND, "does not exist on this node"),
        "page outside": (grpc.StatusCode.OUT_OF_RANGE, "page 10000"),
        "LSN conflict": (grpc.StatusCode.ALREADY_EXISTS, "different content"),
        "oversized batch": (grpc.StatusCode.RESOURCE_EXHAUSTED, "exceeds the limit"),
    }
    for name, call in cases.items():
        code, phrase = expected[name]
        expect_status(call, code, phrase)
    # Read-side bad input.
    expect_status(
        lambda: stub(address).ReadPage(pb.ReadPageRequest(segment_id=segment_id, page_no=10_000, read_point=1)),
        grpc.StatusCode.OUT_OF_RANGE,
        "outside segment",
    )
    expect_status(
        lambda: stub(address).ReadPage(pb.ReadPageRequest(segment_id=segment_id, page_no=1, read_point=99)),
        grpc.StatusCode.OUT_OF_RANGE,
        "above segment",
    )
    expect_status(
        lambda: stub(address).ReadPage(
            pb.ReadPageRequest(segment_id=segment_id, page_no=1, read_point=1, volume_epoch=1)
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "fenced",
    )
    expect_status(
        lambda: stub(address).RaiseVolumeEpoch(pb.RaiseVolumeEpochRequest(segment_id=segment_id, volume_epoch=2)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "only moves forward",
    )
    # Garbage bytes, unary and on the stream.
    channel = transport.channel_as(Writer.identity, address, CHANNEL_OPTIONS)
    raw_unary = channel.unary_unary(
        "/storage.v1.StorageService/ReadPage", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    expect_status(
        lambda: raw_unary(b"\xff\xff\xff\xff\xff\x0f\x01garbage", timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a valid storage.v1.ReadPageRequest",
    )
    raw_stream = channel.stream_stream(
        "/storage.v1.StorageService/AppendRecords", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    expect_status(
        lambda: list(raw_stream(iter([b"\x0a\xff\xff\xff\xff\x0f"]), timeout=RPC_TIMEOUT_S)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not a valid storage.v1.AppendRecordsRequest",
    )

    # The node kept serving and nothing already stored changed.
    assert healthy(address)
    assert all_records(address, segment_id) == before_records
    assert (
        stub(address).ReadPage(pb.ReadPageRequest(segment_id=segment_id, page_no=2, read_point=2)).data == before_page
    )
    assert append_once(address, segment_id, [nxt], epoch=3).scl == 3


@pytest.mark.expected_log_errors
# Plaintext on disk (--insecure: no encryption at rest), so the test finds the record's bytes in data.mdb to flip
# one; on an encrypting node a flipped byte fails the AES-GCM check instead (tests/test_encryption*.py).
@pytest.mark.cluster_options(compute=False, insecure=True)
def test_flipped_byte_in_a_nodes_lmdb_file_is_detected_and_never_served(cluster: Cluster) -> None:
    geometry = create_volume(cluster, "rotvol")
    seg = geometry.protection_groups[0].segments[1]
    chain = ChainBuilder()
    append_once(
        seg.address,
        seg.segment_id,
        [chain.patch(5, b"good"), chain.patch(5, b"ROT-ME-PLEASE-0123456789", 64), chain.patch(6, b"fine")],
    )
    cluster.stop(seg.node_id)
    data_files = list(Path(cluster.data_dir(seg.node_id)).rglob("data.mdb"))
    assert len(data_files) == 1
    flip_byte_in_file(str(data_files[0]), b"ROT-ME-PLEASE-0123456789")
    cluster.start(seg.node_id)
    address = cluster.node_address(seg.node_id)
    # The restart proves SCL from the records: the chain stops before the rotten one, so nothing at or above
    # it is served (it is not whole: it once held more), and the rotten copy itself is never sent.
    expect_status(
        lambda: stub(address).ReadPage(pb.ReadPageRequest(segment_id=seg.segment_id, page_no=5, read_point=3)),
        grpc.StatusCode.OUT_OF_RANGE,
        "SCL 1",
    )
    expect_status(lambda: all_records(address, seg.segment_id), grpc.StatusCode.DATA_LOSS, "CRC-32C")
    state = stub(address).GetSegmentState(pb.GetSegmentStateRequest(segment_id=seg.segment_id)).state
    assert state.scl == 1 and state.scl_high_water == 3 and not state.whole
    assert (
        stub(address).ReadPage(pb.ReadPageRequest(segment_id=seg.segment_id, page_no=5, read_point=1)).data[:4]
        == b"good"
    )
    assert healthy(address)


def test_every_server_serves_health_and_reflection(one_cluster: Cluster) -> None:
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    expected = {
        one_cluster.control_plane_address(): "storage.v1.ControlPlaneService",
        one_cluster.node_address("a1"): "storage.v1.StorageService",
    }
    for address, service in expected.items():
        assert healthy(address)
        database = ProtoReflectionDescriptorDatabase(transport.channel(address, CHANNEL_OPTIONS))
        services = set(database.get_services())
        assert {service, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
        methods = {m.name for m in DescriptorPool(database).FindServiceByName(service).methods}
        assert "ListSegments" in methods or "ListNodes" in methods
