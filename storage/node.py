"""The storage node's gRPC adapter: StorageService over a SegmentStore.

Writes (appends, truncations, epoch raises, segment create/drop) all run on one
writer thread, so LMDB sees one writer; appends from every stream are grouped by
`GroupCommitter` (storage/writer.py) into one synced transaction per group. Reads run
on the event loop's thread against LMDB's MVCC snapshots. In the background, `Gossip`
(storage/gossip.py) pulls what a segment lacks from its peers, and `Scrubber`
(storage/scrub.py) re-checks every stored copy and quarantines a bad one through
the writer, so gossip fetches it again, and `Coalescer` (storage/coalesce.py) folds
records into page versions and garbage-collects below the retention horizon. Each
gets the node-writer handle (`WriterHandle`), not this servicer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from sixfold.storage import epochs, node_keys
from sixfold.storage.coalesce import COALESCE_INTERVAL_S, HISTORY_WINDOW_S, Coalescer
from sixfold.storage.disk_doctor import DiskDoctor
from sixfold.storage.errors import InvalidRequest, StorageError
from sixfold.storage.gossip import GOSSIP_INTERVAL_S, Gossip
from sixfold.storage.lmdb_env import FAILED, FULL, IO_ERROR, OK
from sixfold.storage.records import page_version_crc
from sixfold.storage.scrub import SCRUB_INTERVAL_S, Scrubber
from sixfold.storage.segment import (
    PAGE_NO_LIMIT,
    PAGE_SIZE_MAX,
    PAGE_SIZE_MIN,
    PEERS_MAX,
    SEGMENT_ID_BYTES_MAX,
    SegmentMeta,
    TruncationRange,
)
from sixfold.storage.serving import Undecodable, abort_with
from sixfold.storage.store import BatchResult, SegmentStore
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.wire import batch_from_proto, record_to_proto, state_to_proto, truncation_from_proto
from sixfold.storage.writer import GROUP_BATCHES_MAX, GROUP_RECORDS_MAX, GroupCommitter, WriterHandle

log = logging.getLogger(__name__)

__all__ = ["GROUP_BATCHES_MAX", "GROUP_RECORDS_MAX", "GroupCommitter", "StorageServicer"]

INFLIGHT_BATCHES_MAX = 64  # per stream: batches received but not yet acknowledged
PINS_MAX = 1_000  # pinned LSNs per segment
PAGE_VERSIONS_BYTES_MAX = 4 * 1024 * 1024  # page images in one ReadPageVersions reply
PAGE_VERSIONS_PAGES_MAX = 1_024
DISK_CONDITIONS = {
    OK: pb.DISK_CONDITION_OK,
    FULL: pb.DISK_CONDITION_FULL,
    IO_ERROR: pb.DISK_CONDITION_IO_ERROR,
    FAILED: pb.DISK_CONDITION_FAILED,
}


def _check_segment_id(segment_id: str) -> None:
    if not segment_id:
        raise InvalidRequest("the request names no segment_id")
    if len(segment_id.encode()) > SEGMENT_ID_BYTES_MAX:
        raise InvalidRequest(f"segment_id is longer than {SEGMENT_ID_BYTES_MAX} bytes")


class StorageServicer:
    """Implements storage.v1.StorageService. Registered via storage.serving.generic_handler."""

    def __init__(
        self,
        store: SegmentStore,
        node_id: str,
        az: str,
        writer: Any = None,
        peer_channel: Callable[[str], Any] | None = None,
        gossip_interval_s: float = GOSSIP_INTERVAL_S,
        scrub: bool = True,
        scrub_interval_s: float = SCRUB_INTERVAL_S,
        coalesce_interval_s: float = COALESCE_INTERVAL_S,
        history_window_s: float = HISTORY_WINDOW_S,
        isolated: Callable[[], bool] = lambda: False,
    ) -> None:
        """`writer` runs every LMDB write (default: one dedicated thread; the simulator runs them inline).
        `peer_channel(address)` opens a channel to a peer for gossip repair (None: no gossip).
        `scrub`: re-check every stored copy, a pass every `scrub_interval_s` (storage/scrub.py).
        `coalesce_interval_s`: fold records and collect garbage that often (0: never; storage/coalesce.py),
        keeping at least `history_window_s` of history. `isolated()`: a fault file cuts the node off, so its
        gossip asks no peer either."""
        self.store = store
        self.node_id = node_id
        self.az = az
        self.writer = writer or ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmdb-writer")
        self.committer = GroupCommitter(store, self.writer)
        self.node_writer = WriterHandle(self.writer, self.committer)  # what the background tasks get
        self.gossip = (
            Gossip(store, self.node_writer, peer_channel, gossip_interval_s, isolated)
            if peer_channel is not None
            else None
        )
        self.scrubber = (
            Scrubber(store, self.node_writer, scrub_interval_s, appends_committed=self._appends_committed)
            if scrub
            else None
        )
        self.min_read_points: dict[str, int] = {}  # segment -> the writer's latest report (in memory only)
        self.coalescer = (
            Coalescer(
                store,
                self.node_writer,
                self.min_read_points.get,
                coalesce_interval_s,
                history_window_s,
                peer_floor=self._peer_floor,
            )
            if coalesce_interval_s > 0
            else None
        )
        self.doctor = DiskDoctor(store, self.node_writer)

    def _appends_committed(self) -> int:
        return self.committer.batches_committed

    def _peer_floor(self, segment_id: str) -> int | None:
        return self.gossip.peer_floor.get(segment_id) if self.gossip is not None else None

    def start(self) -> None:
        self.committer.start()
        self.doctor.start()
        if self.gossip is not None:
            self.gossip.start()
        if self.scrubber is not None:
            self.scrubber.start()
        if self.coalescer is not None:
            self.coalescer.start()

    async def stop(self) -> None:
        if self.coalescer is not None:
            await self.coalescer.stop()
        if self.scrubber is not None:
            await self.scrubber.stop()
        if self.gossip is not None:
            await self.gossip.stop()
        await self.doctor.stop()
        await self.committer.stop()
        self.writer.shutdown(wait=True)

    async def _on_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await self.node_writer(fn, *args)

    def _state(self, segment_id: str) -> pb.SegmentState:
        seg = self.store.segment(segment_id)
        repaired = self.gossip.records_repaired.get(segment_id, 0) if self.gossip is not None else 0
        scrubbed = self.scrubber.counts_of(segment_id) if self.scrubber is not None else None
        state = state_to_proto(
            seg,
            records_repaired=repaired,
            records_quarantined=scrubbed.records_quarantined if scrubbed else 0,
            versions_quarantined=scrubbed.versions_quarantined if scrubbed else 0,
            scrub_passes=scrubbed.scrub_passes if scrubbed else 0,
            chain_gaps=scrubbed.chain_gaps if scrubbed else 0,
            metadata_repaired=scrubbed.metadata_repaired if scrubbed else 0,
        )
        # The lineage (storage/lineage.py): what this segment reads through, and what reads through it.
        state.parent_segment_id, state.branch_lsn, state.parent_read_lsn = seg.meta.lineage
        state.child_segment_ids.extend(self.store.child_segment_ids(segment_id))
        return state

    def heartbeat_report(self) -> tuple[list[cp_pb.HeldSegment], pb.DiskCondition, str]:
        """What a heartbeat tells the control plane: every segment held, and the disk's condition."""
        held = [
            cp_pb.HeldSegment(
                segment_id=seg.meta.segment_id,
                membership_epoch=seg.meta.membership_epoch,
                scl=seg.tracker.scl,
                whole=seg.whole,
                rebuilding=seg.meta.rebuilding,
            )
            for seg in sorted(self.store.segments.values(), key=lambda s: s.meta.segment_id)
        ]
        condition = self.store.disk.condition
        return held, DISK_CONDITIONS[condition.state], condition.detail

    # -- the write stream -----------------------------------------------------

    async def AppendRecords(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AppendRecordsResponse]:
        """Acks leave in request order, each once its batch is durable. A refused batch
        ends the stream with its status; batches before it are acknowledged first."""
        inflight: asyncio.Queue[Any] = asyncio.Queue(maxsize=INFLIGHT_BATCHES_MAX)
        done = object()

        async def pump() -> None:
            try:
                async for request in request_iterator:
                    if isinstance(request, Undecodable):
                        await inflight.put(InvalidRequest(request.sentence()))
                        return
                    try:
                        batch = batch_from_proto(request)
                        _check_segment_id(batch.segment_id)
                        self.store.segment(batch.segment_id)
                    except StorageError as error:
                        await inflight.put(error)
                        return
                    await inflight.put((batch, self.committer.submit(batch)))  # waits while the window is full
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the client's side of the stream broke: end ours
                pass
            # Blocks only while the consumer is still draining the queue; once the consumer is gone
            # it cancels this task, so the pump never outlives the call.
            await inflight.put(done)

        pump_task = asyncio.create_task(pump())
        try:
            while True:
                item = await inflight.get()
                if item is done:
                    break
                if isinstance(item, StorageError):
                    await abort_with(context, item)
                batch, future = item
                try:
                    result: BatchResult = await future
                except StorageError as error:
                    await abort_with(context, error)
                if batch.min_read_point:  # only an accepted batch's writer may move the horizon
                    self.min_read_points[batch.segment_id] = batch.min_read_point
                yield pb.AppendRecordsResponse(
                    batch_id=result.batch_id,
                    segment_id=result.segment_id,
                    scl=result.scl,
                    highest_lsn=result.highest_lsn,
                    records_stored=result.stored,
                    records_duplicate=result.duplicates,
                )
        finally:
            pump_task.cancel()

    # -- unary ----------------------------------------------------------------

    async def ReadPage(self, request: pb.ReadPageRequest, context: Any) -> pb.ReadPageResponse:
        _check_segment_id(request.segment_id)
        seg = self.store.segment(request.segment_id)
        seg.check_read_epoch(request.volume_epoch)
        page = self.store.read_page(request.segment_id, request.page_no, request.read_point)
        return pb.ReadPageResponse(data=page.data, page_lsn=page.page_lsn, scl=page.scl)

    async def ReadRecords(self, request: pb.ReadRecordsRequest, context: Any) -> pb.ReadRecordsResponse:
        _check_segment_id(request.segment_id)
        seg = self.store.segment(request.segment_id)
        seg.check_read_epoch(request.volume_epoch)
        if request.to_lsn and request.to_lsn < request.from_lsn:
            raise InvalidRequest(f"to_lsn {request.to_lsn} is below from_lsn {request.from_lsn}")
        records, more, scl = self.store.read_records_with_scl(
            request.segment_id, request.from_lsn, request.to_lsn, request.max_records, request.max_bytes
        )
        return pb.ReadRecordsResponse(records=[record_to_proto(r) for r in records], scl=scl, more=more)

    async def FindCommit(self, request: pb.FindCommitRequest, context: Any) -> pb.FindCommitResponse:
        """The newest commit at or before a time among the segment's own records (storage/store/commits.py),
        on a reader thread: the walk may be long, and LMDB reads run on any thread."""
        _check_segment_id(request.segment_id)
        self.store.segment(request.segment_id)
        found = await asyncio.to_thread(
            self.store.find_commit, request.segment_id, request.at_time_us, request.at_or_below_lsn
        )
        if found.records_skipped:
            log.warning(
                "segment %s: %d records failed their check while searching for a commit; they were skipped "
                "(scrubbing quarantines them and gossip fetches them again)",
                request.segment_id,
                found.records_skipped,
            )
        return pb.FindCommitResponse(
            lsn=found.lsn,
            commit_time_us=found.commit_time_us,
            gc_floor_lsn=found.gc_floor_lsn,
            oldest_commit_time_us=found.oldest_commit_time_us,
        )

    async def GetSegmentState(self, request: pb.GetSegmentStateRequest, context: Any) -> pb.GetSegmentStateResponse:
        _check_segment_id(request.segment_id)
        state = self._state(request.segment_id)
        tail = (
            self.store.tail_at_or_below(request.segment_id, request.tail_at_or_below_lsn)
            if request.tail_at_or_below_lsn
            else 0
        )
        return pb.GetSegmentStateResponse(state=state, tail_lsn=tail)

    # -- retention: pins and hydration (storage/retention.py) --------------------

    async def PinLsns(self, request: pb.PinLsnsRequest, context: Any) -> pb.PinLsnsResponse:
        _check_segment_id(request.segment_id)
        self.store.segment(request.segment_id)
        if len(request.lsns) > PINS_MAX:
            raise InvalidRequest(f"{len(request.lsns)} pinned LSNs exceed the limit of {PINS_MAX} per segment")
        await self._on_writer(self.store.pin_lsns, request.segment_id, list(request.lsns))
        return pb.PinLsnsResponse(state=self._state(request.segment_id))

    async def ReadPageVersions(self, request: pb.ReadPageVersionsRequest, context: Any) -> pb.ReadPageVersionsResponse:
        _check_segment_id(request.segment_id)
        seg = self.store.segment(request.segment_id)
        seg.check_read_epoch(request.volume_epoch)
        max_bytes = min(request.max_bytes or PAGE_VERSIONS_BYTES_MAX, PAGE_VERSIONS_BYTES_MAX)
        versions, next_page, tail = self.store.read_page_versions(
            request.segment_id, request.at_lsn, request.start_page, max_bytes, PAGE_VERSIONS_PAGES_MAX
        )
        return pb.ReadPageVersionsResponse(
            versions=[
                pb.PageVersion(page_no=p, page_lsn=lsn, data=image, crc32c=page_version_crc(p, lsn, image))
                for p, lsn, image in versions
            ],
            more=next_page is not None,
            next_page=next_page or 0,
            chain_tail_lsn=tail,
            scl=seg.tracker.scl,
        )

    async def TruncateSegment(self, request: pb.TruncateSegmentRequest, context: Any) -> pb.TruncateSegmentResponse:
        _check_segment_id(request.segment_id)
        if not request.HasField("range"):
            raise InvalidRequest("the request carries no truncation range")
        r: TruncationRange = truncation_from_proto(request.range)
        r.validate()
        removed = await self._on_writer(self.store.truncate, request.segment_id, request.volume_epoch, r)
        log.info(
            "segment %s truncated [%d, %d] epoch %d: %d records removed",
            request.segment_id,
            r.start_lsn,
            r.end_lsn,
            r.epoch,
            removed,
        )
        return pb.TruncateSegmentResponse(state=self._state(request.segment_id), records_removed=removed)

    async def RaiseVolumeEpoch(self, request: pb.RaiseVolumeEpochRequest, context: Any) -> pb.RaiseVolumeEpochResponse:
        _check_segment_id(request.segment_id)
        epoch = await self._on_writer(
            self.store.raise_volume_epoch, request.segment_id, request.volume_epoch, request.writer_id
        )
        return pb.RaiseVolumeEpochResponse(volume_epoch=epoch, state=self._state(request.segment_id))

    async def CreateSegment(self, request: pb.CreateSegmentRequest, context: Any) -> pb.CreateSegmentResponse:
        _check_segment_id(request.segment_id)
        if not request.volume_id:
            raise InvalidRequest("the request names no volume_id")
        if not PAGE_SIZE_MIN <= request.page_size <= PAGE_SIZE_MAX or request.page_size & (request.page_size - 1):
            raise InvalidRequest(
                f"page size {request.page_size} is not a power of two from {PAGE_SIZE_MIN} to {PAGE_SIZE_MAX}"
            )
        if request.page_count == 0:
            raise InvalidRequest("a segment must hold at least one page")
        if request.first_page + request.page_count > PAGE_NO_LIMIT:
            raise InvalidRequest(f"pages {request.first_page}+{request.page_count} run past page {PAGE_NO_LIMIT}")
        membership_epoch = epochs.initial_membership_epoch(request.membership_epoch)
        meta = SegmentMeta(
            segment_id=request.segment_id,
            volume_id=request.volume_id,
            pg_index=request.pg_index,
            first_page=request.first_page,
            page_count=request.page_count,
            page_size=request.page_size,
            membership_epoch=membership_epoch,
            seg_no=0,
            peers=self._peers_of(request.peers),
            parent_segment_id=request.parent_segment_id,
            branch_lsn=request.branch_lsn,
            parent_read_lsn=request.parent_read_lsn,
            lsn_floor=request.lsn_floor,
            backtrack_window_s=request.backtrack_window_s,
            wrapped_data_key=await node_keys.key_for_new_segment(
                self.store, request.segment_id, request.wrapped_data_key
            ),
        )
        meta.check_lineage()  # also the backtrack window's bound
        created_meta, created = await self._on_writer(self.store.create_segment, meta, request.rebuild)
        if created and meta.parent_segment_id:
            log.info(
                "segment %s created as a clone of %s at branch LSN %d: volume %s PG %d, pages it never writes "
                "read from the parent at LSN %d",
                meta.segment_id,
                meta.parent_segment_id,
                meta.branch_lsn,
                meta.volume_id,
                meta.pg_index,
                meta.parent_read_lsn,
            )
        elif created:
            log.info(
                "segment %s created%s: volume %s PG %d pages %d..%d",
                meta.segment_id,
                " to replace a lost copy (rebuilding from its peers)" if request.rebuild else "",
                meta.volume_id,
                meta.pg_index,
                meta.first_page,
                meta.first_page + meta.page_count - 1,
            )
        return pb.CreateSegmentResponse(state=self._state(created_meta.segment_id), created=created)

    async def RewrapSegmentKey(self, request: pb.RewrapSegmentKeyRequest, context: Any) -> pb.RewrapSegmentKeyResponse:
        _check_segment_id(request.segment_id)
        wrapped = await node_keys.check_rewrap(self.store, request.segment_id, request.wrapped_data_key)
        changed = await self._on_writer(self.store.set_wrapped_data_key, request.segment_id, wrapped)
        if changed:
            log.info("segment %s keeps a new wrapping of its data key", request.segment_id)
        return pb.RewrapSegmentKeyResponse(segment_id=request.segment_id, changed=changed)

    async def UpdateMembership(self, request: pb.UpdateMembershipRequest, context: Any) -> pb.UpdateMembershipResponse:
        _check_segment_id(request.segment_id)
        epochs.check_epoch_value("membership epoch", request.membership_epoch)
        before = self.store.segment(request.segment_id).meta.membership_epoch
        peers = self._peers_of(request.peers)
        epoch = await self._on_writer(self.store.update_membership, request.segment_id, request.membership_epoch, peers)
        if epoch != before:
            log.info(
                "segment %s: membership epoch %d -> %d, peers %s",
                request.segment_id,
                before,
                epoch,
                ", ".join(p[0] for p in peers),
            )
        return pb.UpdateMembershipResponse(state=self._state(request.segment_id))

    def _peers_of(self, peers: Any) -> list[list[str]]:
        """The PG's other segments as [node_id, address], bounded (they are stored with the segment)."""
        if len(peers) > PEERS_MAX:
            raise InvalidRequest(f"{len(peers)} peers exceed the limit of {PEERS_MAX}")
        out = []
        for p in peers:
            if (
                not p.node_id
                or len(p.node_id.encode()) > SEGMENT_ID_BYTES_MAX
                or len(p.address.encode()) > SEGMENT_ID_BYTES_MAX
            ):
                raise InvalidRequest(f"peer {p.node_id[:40]!r} has an empty or over-long node id or address")
            if p.node_id != self.node_id:
                out.append([p.node_id, p.address])
        return out

    async def DropSegment(self, request: pb.DropSegmentRequest, context: Any) -> pb.DropSegmentResponse:
        _check_segment_id(request.segment_id)
        removed = await self._on_writer(self.store.drop_segment, request.segment_id)
        log.info("segment %s dropped (%d records)", request.segment_id, removed)
        return pb.DropSegmentResponse(records_removed=removed)

    async def ListSegments(self, request: pb.ListSegmentsRequest, context: Any) -> pb.ListSegmentsResponse:
        segments = [self._state(segment_id) for segment_id in sorted(self.store.segments)]
        condition = self.store.disk.condition
        healthy = condition.state != FAILED
        return pb.ListSegmentsResponse(
            node_id=self.node_id,
            az=self.az,
            segments=segments,
            lmdb_map_size_bytes=self.store.map_size() if healthy else 0,
            lmdb_used_bytes=self.store.used_bytes() if healthy else 0,
            disk_condition=DISK_CONDITIONS[condition.state],
            disk_detail=condition.detail,
            lost_segments=sorted(self.store.lost),
            environments_replaced=self.store.disk.replacements,
        )
