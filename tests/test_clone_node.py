"""Clone segments on a storage node (storage/lineage.py): two in-process storage servicers over gRPC, for the
node's RPCs (CreateSegment with a parent, SegmentState's lineage, DropSegment refused) and gossip hydrating a
segment that lost its parent link as a flattened copy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from sixfold.storage import lineage
from sixfold.storage.node import StorageServicer
from sixfold.storage.serving import start_server
from sixfold.storage.status import detail_of
from sixfold.storage.store import SegmentStore
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from tests.test_clone_segments import CLONE, PAGE, PAGES, ROOT, Timeline

pytestmark = pytest.mark.unit


def test_a_segment_that_lost_its_link_is_hydrated_by_gossip_as_a_flattened_copy(tmp_path: Path) -> None:
    """Node A and its peer hold the same parent and clone segments. A's parent must be hydrated again
    above the clone's read LSN, so A's clone loses its link; gossip hydrates both from the peer, the clone
    as a flattened copy (its peer's clone exports the pages it reads through its own parent)."""

    async def run() -> None:
        peer_store = SegmentStore(str(tmp_path / "peer"), map_size_bytes=1 << 25)
        peer = StorageServicer(peer_store, "b1", "b", scrub=False, coalesce_interval_s=0)
        service = pb.DESCRIPTOR.services_by_name["StorageService"]
        server, port, _ = await start_server("127.0.0.1", 0, [(service, peer, pb)])
        address = f"127.0.0.1:{port}"
        store = SegmentStore(str(tmp_path / "node"), map_size_bytes=1 << 25)
        node = StorageServicer(
            store,
            "a1",
            "a",
            peer_channel=grpc.aio.insecure_channel,
            gossip_interval_s=0.05,
            scrub=False,
            coalesce_interval_s=0,
        )
        channel = grpc.aio.insecure_channel(address)
        stub = pb_grpc.StorageServiceStub(channel)
        try:
            # Three peer entries, all the one peer: a rebuilding segment measures its target from three.
            peers = [pb.SegmentPeer(node_id=f"b{i}", address=address) for i in (1, 2, 3)]
            clones = []
            for s in (peer_store, store):
                create = stub.CreateSegment if s is peer_store else (lambda r: node.CreateSegment(r, None))
                await create(
                    pb.CreateSegmentRequest(
                        segment_id=ROOT, volume_id="vol", page_count=PAGES, page_size=PAGE, peers=peers
                    )
                )
                parent = Timeline(s, ROOT, [0])
                parent.write([(p, b"p%d" % p) for p in range(PAGES)])  # 1..8
                reply = await create(
                    pb.CreateSegmentRequest(
                        segment_id=CLONE,
                        volume_id="clone",
                        page_count=PAGES,
                        page_size=PAGE,
                        peers=peers,
                        parent_segment_id=ROOT,
                        branch_lsn=8,
                        parent_read_lsn=8,
                    )
                )
                assert reply.created and reply.state.parent_segment_id == ROOT and reply.state.parent_read_lsn == 8
                parent.write([(p, b"q%d" % p) for p in range(4)], batch_id=2)  # 9..12: the parent only
                clone = Timeline(s, CLONE, parent.lsn, tail=8, parent=parent, branch=8)
                clone.write([(0, b"own")] * 3, batch_id=3)  # 13..15
                clones.append(clone)
            state = (await stub.GetSegmentState(pb.GetSegmentStateRequest(segment_id=ROOT))).state
            assert list(state.child_segment_ids) == [CLONE] and state.branch_lsn == 0
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.DropSegment(pb.DropSegmentRequest(segment_id=ROOT))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert detail_of(refused.value).metadata["condition"] == lineage.HAS_CHILDREN
            store.begin_hydration(ROOT, 10)  # A's parent replaces its pages up to 10: the clone reads at 8
            assert not store.segment(CLONE).whole and store.segment(CLONE).meta.parent_segment_id == ""
            node.start()
            deadline = asyncio.get_running_loop().time() + 20
            while not (store.segment(CLONE).whole and store.segment(ROOT).whole):
                assert asyncio.get_running_loop().time() < deadline, "gossip did not hydrate the segments"
                await asyncio.sleep(0.05)
            meta = store.segment(CLONE).meta
            assert meta.pages_hydrated == PAGES and meta.parent_segment_id == "" and meta.retention_horizon_lsn == 8
            clones[1].check([8, clones[1].tail])
            print(f"the clone hydrated {meta.pages_hydrated} pages from its peer as a flattened copy")
        finally:
            await node.stop()
            await channel.close()
            await server.stop(None)
            peer.writer.shutdown(wait=True)
            store.close()
            peer_store.close()

    asyncio.run(run())
