"""WritePagesStream on a real cluster (through the launcher): many MTRs per message, each durable or refused
on its own with the status WritePages gives, results in LSN order; the sync client's `write_many` and the
asyncio `StreamingWriter` over it; a message that cannot be decoded ends the stream with INVALID_ARGUMENT and
the writer keeps serving."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.write_stream_client import StreamingWriter
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.tools.cluster import Cluster
from tests.sql_cluster import module_cluster

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as local:
        yield local


@pytest.fixture
def client(cluster: Cluster) -> Iterator[VolumeClient]:
    with VolumeClient(cluster.compute_address(), timeout_s=TIMEOUT_S) as c:
        yield c


def test_write_many_pipelines_mtrs_each_durable_or_refused_on_its_own(client: VolumeClient) -> None:
    client.create_volume("ws")
    pages = client.status("ws").protection_groups[0].page_count
    mtrs = [[(i % 50, 0, b"v%04d" % i)] for i in range(600)]  # three messages
    mtrs[300] = [(pages * 10**9, 0, b"far")]  # past the largest volume: refused alone (as WritePages would)
    results = client.write_many("ws", mtrs)
    refused = results[300]
    assert isinstance(refused, VolumeError) and refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
    assert "beyond" in refused.details
    assert not refused.may_have_committed
    lsns = [r for i, r in enumerate(results) if i != 300 and isinstance(r, int)]
    assert len(lsns) == 599 and lsns == sorted(lsns) and len(set(lsns)) == len(lsns)
    for p in range(50):  # the last MTR to each page wins
        last = max(i for i in range(600) if i % 50 == p and i != 300)
        assert client.read_page("ws", p)[:5] == b"v%04d" % last
    assert client.status("ws").vdl >= max(lsns)


def test_streaming_writer_serves_many_coroutines_and_survives_a_bad_message(cluster: Cluster) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)

    async def scenario() -> None:
        channel = transport.aio_channel(cluster.compute_address(), CHANNEL_OPTIONS)
        writer = StreamingWriter(channel, "ws2")
        try:
            with VolumeClient(cluster.compute_address(), timeout_s=TIMEOUT_S) as sync:
                sync.create_volume("ws2")

            async def one(i: int) -> tuple[int, int, bytes]:
                page_no, data = rng.randrange(20), b"w%05d" % i
                return await writer.write([(page_no, 0, data)]), page_no, data

            done = await asyncio.gather(*(one(i) for i in range(400)))
            # In LSN order: the last one per page is what it holds.
            expected = {page_no: data for _, page_no, data in sorted(done)}
            assert writer.messages_sent < 400, "no MTRs shared a message"
            with pytest.raises(VolumeError) as refused:
                await writer.write([(0, 1 << 20, b"x")])  # an offset past the page: INVALID_ARGUMENT, alone
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
            # A message that is not a WritePagesStreamRequest ends that stream with INVALID_ARGUMENT.
            raw: Any = channel.stream_stream("/compute.v1.VolumeService/WritePagesStream")
            call = raw(iter([b"\xff\xff\xff"]))
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                async for _ in call:
                    pass
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert await writer.write([(1, 0, b"after")]) > max(lsn for lsn, _, _ in done)  # still serving
            expected[1] = b"after"
            with VolumeClient(cluster.compute_address(), timeout_s=TIMEOUT_S) as sync:
                for page_no, data in expected.items():
                    assert sync.read_page("ws2", page_no)[: len(data)] == data, page_no
        finally:
            await writer.close()
            await channel.close()

    asyncio.run(scenario())
