"""Gossip repair on a storage node: each segment catches up from its PG's peers.

The adapter half: every `interval_s` it asks each peer of each segment for its
state, applies the truncation ranges it lacks, and pulls missing records from
the most complete peer (storage/repair.py decides; the records go through the
node's own group commit, so they are checked and fsynced like any batch).
When that peer has garbage-collected the records this segment lacks, the
segment is hydrated from the peer's page versions instead (`hydrate`): in
batches of at most `HYDRATE_BATCH_BYTES_MAX`, each CRC-checked and stored in
one synced write transaction, then SCL moves to the peer's LSN.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc

from sixfold.storage import epochs
from sixfold.storage.errors import ChecksumMismatch, StorageError
from sixfold.storage.lmdb_env import OK
from sixfold.storage.records import page_version_crc
from sixfold.storage.repair import (
    PULL_RECORDS_MAX,
    PeerView,
    plan_repair,
    rebuild_target,
    records_to_append,
)
from sixfold.storage.segment import AppendBatch
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.storage.wire import record_from_proto, truncation_from_proto

if TYPE_CHECKING:
    from sixfold.storage.node_writer import NodeWriter
    from sixfold.storage.store import SegmentStore

log = logging.getLogger(__name__)

GOSSIP_INTERVAL_S = 1.0
PEER_TIMEOUT_S = 2.0
# A segment that is behind keeps pulling batch after batch for up to this long per round (a new
# segment hydrates at the rate of the pulls, not one batch per interval); then the next segment's turn.
CATCH_UP_BUDGET_S = 5.0
HYDRATE_BATCH_BYTES_MAX = 1024 * 1024  # page images per ReadPageVersions call and per write transaction


class Gossip:
    def __init__(
        self,
        store: SegmentStore,
        writer: NodeWriter,
        channel_factory: Callable[[str], Any],
        interval_s: float = GOSSIP_INTERVAL_S,
        isolated: Callable[[], bool] = lambda: False,
    ) -> None:
        """`writer`: the node-writer handle (storage/node_writer.py); every change to `store` goes through
        it. `isolated()` true (the node's fault file cuts it off): no round asks any peer."""
        self.store = store
        self.writer = writer
        self.isolated = isolated
        self.channel_factory = channel_factory
        self.interval_s = interval_s
        self._channels: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self.records_repaired: dict[str, int] = {}
        # The lowest SCL among each segment's peers that answered its last round: the retention horizon
        # waits for lagging or hydrating peers (storage/retention.py rule 2).
        self.peer_floor: dict[str, int] = {}
        self.rounds = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gossip")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    def _stub(self, address: str) -> pb_grpc.StorageServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self.channel_factory(address)
        return pb_grpc.StorageServiceStub(channel)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if self.isolated():
                continue  # a partition cuts both ways: an isolated node reaches no peer either
            if self.store.disk.condition.state != OK:
                continue  # nothing could be stored (the disk doctor sees to it: storage/disk_doctor.py)
            self.rounds += 1
            for segment_id in sorted(self.store.segments):
                try:
                    deadline = asyncio.get_running_loop().time() + CATCH_UP_BUDGET_S
                    while await self.repair(segment_id) and asyncio.get_running_loop().time() < deadline:
                        pass
                except asyncio.CancelledError:
                    raise
                except StorageError as error:
                    log.warning("gossip for %s: %s", segment_id, error.message)
                except Exception:
                    log.exception("gossip for %s failed", segment_id)

    async def repair(self, segment_id: str) -> int:
        """One round for one segment; returns the progress made: records pulled, or 1 after a hydration
        (so a segment that is behind keeps going within its catch-up budget)."""
        seg = self.store.segments.get(segment_id)
        if seg is None or not seg.meta.peers:
            return 0
        peers = await self._peer_views(segment_id, seg.meta.peers)
        if peers:
            self.peer_floor[segment_id] = min(v.scl for v in peers.values())
        else:
            self.peer_floor.pop(segment_id, None)
        if seg.meta.rebuilding:
            target = rebuild_target(list(peers.values()))
            if target is not None:
                seg = await self.writer(self.store.set_rebuild_target, segment_id, target)
                log.info(
                    "gossip: %s (rebuilding a lost copy) must catch up to LSN %d, the most %d peers may have "
                    "acknowledged; it is whole once its SCL (now %d) gets there",
                    segment_id,
                    target,
                    len(peers),
                    seg.tracker.scl,
                )
        plan = plan_repair(
            seg.tracker.scl, seg.meta.truncation_ranges, list(peers.values()), seg.meta.retention_horizon_lsn
        )
        for r in plan.ranges_to_apply:
            current = self.store.segment(segment_id)
            epoch = epochs.peer_copy_epoch(current.meta.volume_epoch, [r.epoch])
            await self.writer(self.store.truncate, segment_id, epoch, r)
            log.info(
                "gossip: %s took truncation range [%d, %d]@%d from a peer", segment_id, r.start_lsn, r.end_lsn, r.epoch
            )
        if plan.pull_from is None:
            return 0
        address = dict(seg.meta.peers)[plan.pull_from]
        if plan.hydrate_at:
            return 1 if await self.hydrate(segment_id, plan.pull_from, address, plan.hydrate_at) else 0
        try:
            reply = await self._stub(address).ReadRecords(
                pb.ReadRecordsRequest(
                    segment_id=segment_id, from_lsn=plan.from_lsn, to_lsn=plan.to_lsn, max_records=PULL_RECORDS_MAX
                ),
                timeout=PEER_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            log.debug("gossip: %s: %s could not send records: %s", segment_id, plan.pull_from, error.code().name)
            return 0
        current = self.store.segment(segment_id)
        pulled = [record_from_proto(r) for r in reply.records]
        records = records_to_append([r for r, _ in pulled], current.meta.truncation_ranges)
        if not records:
            return 0
        crc_of = {r.lsn: crc for r, crc in pulled}
        batch = AppendBatch(
            segment_id=segment_id,
            volume_epoch=epochs.peer_copy_epoch(current.meta.volume_epoch, (r.epoch for r in records)),
            membership_epoch=current.meta.membership_epoch,
            batch_id=0,
            records=[(r, crc_of[r.lsn]) for r in records],
        )
        before = current.tracker.scl
        result = await self.writer.submit(batch)
        self.records_repaired[segment_id] = self.records_repaired.get(segment_id, 0) + result.stored
        if result.stored:
            log.info(
                "gossip: %s pulled %d records from %s; SCL %d -> %d",
                segment_id,
                result.stored,
                plan.pull_from,
                before,
                result.scl,
            )
        return result.stored

    async def hydrate(self, segment_id: str, peer: str, address: str, at_lsn: int) -> bool:
        """Copy `peer`'s pages at `at_lsn` (repair rule 5); True once the segment is complete to there.
        A failed call leaves the segment refusing reads (SCL below its horizon); the next round resumes."""
        store = self.store
        log.info(
            "gossip: %s hydrates from %s's page versions at LSN %d (the records it lacks were garbage-collected)",
            segment_id,
            peer,
            at_lsn,
        )
        await self.writer(store.begin_hydration, segment_id, at_lsn)
        start, tail = 0, 0
        while True:
            try:
                reply = await self._stub(address).ReadPageVersions(
                    pb.ReadPageVersionsRequest(
                        segment_id=segment_id, at_lsn=at_lsn, start_page=start, max_bytes=HYDRATE_BATCH_BYTES_MAX
                    ),
                    timeout=PEER_TIMEOUT_S * 5,
                )
            except grpc.aio.AioRpcError as error:
                log.info(
                    "gossip: %s: hydration from %s stopped at page %d: %s %s",
                    segment_id,
                    peer,
                    start,
                    error.code().name,
                    error.details(),
                )
                return False
            versions = []
            for v in reply.versions:
                if page_version_crc(v.page_no, v.page_lsn, v.data) != v.crc32c:
                    raise ChecksumMismatch(
                        f"page {v.page_no} at LSN {v.page_lsn} from {peer} failed its CRC-32C "
                        "check; hydration starts again next round"
                    )
                versions.append((v.page_no, v.page_lsn, v.data))
            next_page = reply.next_page if reply.more else None
            await self.writer(store.hydrate_pages, segment_id, at_lsn, start, next_page, versions)
            tail = reply.chain_tail_lsn
            if next_page is None:
                break
            start = next_page
        scl = await self.writer(store.finish_hydration, segment_id, at_lsn, tail)
        meta = store.segment(segment_id).meta
        log.info(
            "gossip: %s hydrated from %s at LSN %d: %d pages, %d bytes in all; SCL %d",
            segment_id,
            peer,
            at_lsn,
            meta.pages_hydrated,
            meta.bytes_hydrated,
            scl,
        )
        return True

    async def _peer_views(self, segment_id: str, peers: list[list[str]]) -> dict[str, PeerView]:
        async def one(node_id: str, address: str) -> tuple[str, PeerView | None]:
            try:
                reply = await self._stub(address).GetSegmentState(
                    pb.GetSegmentStateRequest(segment_id=segment_id), timeout=PEER_TIMEOUT_S
                )
            except grpc.aio.AioRpcError:
                return node_id, None
            state = reply.state
            return node_id, PeerView(
                node_id,
                state.scl,
                tuple(truncation_from_proto(r) for r in state.truncation_ranges),
                state.retention_horizon_lsn,
                state.chain_anchor_lsn,
                state.scl_high_water,
                state.rebuilding,
            )

        results = await asyncio.gather(*(one(n, a) for n, a in peers))
        return {n: v for n, v in results if v is not None}
