"""One AppendRecords stream from the writer to one segment.

Boxcar: records queue up per segment; the sender takes whatever is queued the
moment it may send (at most `BATCH_RECORDS_MAX` records, `BATCH_BYTES_MAX`
bytes) so a batch leaves on the first record and fills while the previous ones
are in flight (at most `WINDOW_BATCHES` per stream). Acks come back in order and
carry the segment's SCL, which the volume feeds to its quorum tracking.

On a broken stream the sender reconnects with backoff, asks the segment for its
SCL, and resends every record it still holds that was not acknowledged.
Records wait here until acknowledged, at most `RETAIN_RECORDS_MAX` of them; past
that the oldest are dropped and the segment must catch up from its peers.

A stream knows its volume only as a `StreamOwner`: what it stamps on a batch and
where it reports acks and refusals. A refusal is told apart by its machine-readable
reason (google.rpc.ErrorInfo, storage/status.py), never by the words of its message
(`refused_epoch_of`, `is_membership_refusal`, `is_disk_refusal`; the volume uses them too).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Protocol

import grpc

from sixfold.storage.errors import (
    REASON_DISK_FAILED,
    REASON_DISK_FULL,
    REASON_KEY_UNAVAILABLE,
    REASON_STALE_MEMBERSHIP_EPOCH,
    REASON_STALE_VOLUME_EPOCH,
)
from sixfold.storage.status import detail_of
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def _now() -> float:
    """The event loop's clock: real time in the process, virtual time in the simulator."""
    return asyncio.get_running_loop().time()


BATCH_RECORDS_MAX = 2_000
BATCH_BYTES_MAX = 4 * 1024 * 1024
# Batches in flight per stream. Small on purpose: while a batch waits for its fsync, new records
# gather into the next one (boxcar), so batches grow with load instead of leaving half empty. One,
# measured against two with `sixfold bench commit` at c=64: 10.6 and 10.1 commits per message
# against 7.0 and 6.5, and 790 and 734 commits/s against 588 and 590 (fewer gRPC messages per
# commit for the writer and all six nodes, on a machine whose CPU is the limit).
WINDOW_BATCHES = 1
RETAIN_RECORDS_MAX = 500_000
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 0.5
STATE_TIMEOUT_S = 2.0
READER_STATUS_WAIT_S = 1.0  # after a failed write, how long the sender waits for the reader's real status
RECORD_OVERHEAD_BYTES = 64  # what a record adds to its data in a batch (LSN, links, epoch...), for BATCH_BYTES_MAX


# -- what a refusal says: read from its google.rpc.ErrorInfo reason, never from the words of its message --


def refused_epoch_of(error: grpc.RpcError) -> int | None:
    """The epoch a segment holds when it refused the caller's as stale (None: not such a refusal)."""
    detail = detail_of(error)
    return detail.int_of("volume_epoch") if detail.reason == REASON_STALE_VOLUME_EPOCH else None


def is_membership_refusal(error: grpc.RpcError) -> bool:
    """The segment holds a newer membership epoch of its PG than the caller sent."""
    return detail_of(error).reason == REASON_STALE_MEMBERSHIP_EPOCH


def is_disk_refusal(error: grpc.RpcError) -> bool:
    """The node's disk is full or failed, or its key service is gone (the node reports that itself)."""
    return detail_of(error).reason in (REASON_DISK_FULL, REASON_DISK_FAILED, REASON_KEY_UNAVAILABLE)


class StreamOwner(Protocol):
    """What a stream needs of the volume it carries records for (compute/volume.py's `Volume` is one): what
    to stamp on a batch, and where to report what the segment said."""

    @property
    def epoch(self) -> int: ...

    @property
    def fenced(self) -> bool: ...

    @property
    def vdl(self) -> int: ...

    @property
    def truncation_protos(self) -> list[pb.TruncationRange]: ...

    def membership_epoch(self, pg_index: int) -> int: ...

    def min_read_point(self, pg_index: int) -> int: ...

    def state_counts(self, where: str, state: Any) -> bool:
        """Whether a segment's state (GetSegmentState) may count towards the owner's quorums."""
        ...

    def on_session_scl(self, stream: SegmentStream, scl: int) -> None:
        """The stream (re)connected and the segment said its SCL (possibly lower than before)."""
        ...

    def on_ack(self, stream: SegmentStream, scl: int) -> None: ...

    def on_epoch_refusal(self, where: str, epoch: int, details: str) -> None:
        """The segment refused the owner's volume epoch: it holds `epoch`."""
        ...

    def request_geometry_refresh(self) -> None:
        """The segment refused a batch for a stale membership epoch."""
        ...


class SegmentStream:
    def __init__(
        self,
        volume: StreamOwner,
        pg_index: int,
        segment_id: str,
        node_id: str,
        az: str,
        address: str,
        channel: grpc.aio.Channel,
    ) -> None:
        self.volume = volume
        self.pg_index = pg_index
        self.segment_id = segment_id
        self.node_id = node_id
        self.az = az
        self.address = address
        self.stub = pb_grpc.StorageServiceStub(channel)
        self.to_send: deque[tuple[int, pb.LogRecord]] = deque()
        self.sent: deque[tuple[int, pb.LogRecord]] = deque()
        self.inflight_batches: deque[int] = deque()  # record counts of batches awaiting their ack
        self.scl = 0
        self.connected = False
        self.last_ack_monotonic = 0.0
        self.dropped_records = 0
        self.batches_sent = 0
        self.bytes_sent = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._closed = False
        self._missing_reported = False  # a NOT_FOUND from the node is said once, until the segment is back
        # What the segment said when it last refused or broke the stream ("" once it is connected again): a
        # write that misses its quorum names it (compute/writes.py), e.g. the node's key service is gone.
        self.last_refusal = ""

    # -- called by the volume ---------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"stream-{self.node_id}-{self.segment_id}")

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        await cancel_and_wait(self._task)

    def enqueue(self, records: list[tuple[int, pb.LogRecord]]) -> None:
        self.to_send.extend(records)
        overflow = len(self.to_send) + len(self.sent) - RETAIN_RECORDS_MAX
        if overflow > 0:
            for _ in range(min(overflow, len(self.to_send))):
                self.to_send.popleft()
            if self.dropped_records == 0:
                log.warning(
                    "segment %s on %s is %d records behind; dropping the oldest, it must catch up from peers",
                    self.segment_id,
                    self.node_id,
                    RETAIN_RECORDS_MAX,
                )
            self.dropped_records += overflow
        self._wake.set()

    @property
    def records_in_flight(self) -> int:
        return len(self.to_send) + len(self.sent)

    # -- the stream -------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        while not self._closed and not self.volume.fenced:
            try:
                await self._session()
                backoff = BACKOFF_MIN_S
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as error:
                self.connected = False
                self.last_refusal = f"{error.code().name}: {error.details()}"
                refused = refused_epoch_of(error)
                if refused is not None:
                    # A newer epoch on this segment: the volume judges whether a newer writer stands behind it
                    # (fenced) or not (it regains the volume); this stream waits meanwhile.
                    self.volume.on_epoch_refusal(
                        f"segment {self.segment_id} on {self.node_id}", refused, error.details() or ""
                    )
                    backoff = BACKOFF_MAX_S
                elif is_membership_refusal(error):
                    self.volume.request_geometry_refresh()  # the PG changed membership: resend under the new one
                elif error.code() == grpc.StatusCode.NOT_FOUND:
                    # The node lost its copy (or is being given a new one): the control plane creates it again.
                    if not self._missing_reported:
                        log.warning(
                            "segment %s is missing on %s (%s); waiting for it to be created again",
                            self.segment_id,
                            self.node_id,
                            error.details(),
                        )
                        self._missing_reported = True
                    backoff = BACKOFF_MAX_S
                elif is_disk_refusal(error):
                    # The node's disk is full or failed (it reports that itself, once): try again later.
                    log.debug("segment %s on %s: %s", self.segment_id, self.node_id, error.details())
                    backoff = BACKOFF_MAX_S
                elif error.code() == grpc.StatusCode.INTERNAL:
                    # What gRPC's core says when the node's process stops mid-call ("Internal error from
                    # Core"): the stream reconnects like after any broken connection.
                    log.warning("stream to segment %s on %s broke: %s", self.segment_id, self.node_id, error.details())
                elif error.code() not in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.CANCELLED,
                ):
                    log.error(
                        "segment %s on %s refused a batch: %s: %s",
                        self.segment_id,
                        self.node_id,
                        error.code().name,
                        error.details(),
                    )
            except Exception as error:  # noqa: BLE001 - a broken call surfaces as several types; reconnect
                self.connected = False
                log.warning("stream to segment %s on %s broke: %r", self.segment_id, self.node_id, error)
            self._requeue_unacknowledged()
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)

    def _requeue_unacknowledged(self) -> None:
        """Everything sent but not acknowledged goes back to the front of the queue, in order."""
        self.to_send.extendleft(reversed(self.sent))
        self.sent.clear()
        self.inflight_batches.clear()

    def redirect(self, address: str, channel: grpc.aio.Channel) -> None:
        """The node moved (a restart on a new port): dial the new address; the current session ends, and
        whatever it had not acknowledged is sent again there."""
        self.address = address
        self.stub = pb_grpc.StorageServiceStub(channel)
        call = self._call
        if call is not None:
            call.cancel()
        self._wake.set()

    async def _session(self) -> None:
        reply = await self.stub.GetSegmentState(
            pb.GetSegmentStateRequest(segment_id=self.segment_id), timeout=STATE_TIMEOUT_S
        )
        # What the segment holds now, even if less than it said before (it lost a copy and is rebuilding);
        # nothing, for this writer, if it holds a newer epoch (StreamOwner.state_counts).
        self._missing_reported = False
        if self.volume.state_counts(f"segment {self.segment_id} on {self.node_id}", reply.state):
            self.scl = reply.state.scl
            self.volume.on_session_scl(self, reply.state.scl)
        while self.to_send and self.to_send[0][0] <= self.scl:
            self.to_send.popleft()  # the segment already holds these
        call = self._call = self.stub.AppendRecords()
        self.connected = True
        self.last_refusal = ""
        reader = asyncio.create_task(self._read_acks(call))
        reader.add_done_callback(lambda _: self._wake.set())  # a broken stream wakes the sender
        try:
            while not self._closed:
                if reader.done():
                    reader.result()  # raises the stream's error
                    return
                if not self.to_send or len(self.inflight_batches) >= WINDOW_BATCHES:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                try:
                    request = self._next_batch()
                    self.bytes_sent += request.ByteSize()
                    await call.write(request)
                except Exception:
                    # After the server aborts, a write fails with a generic status; the reader
                    # holds the real one (e.g. the epoch that fenced this writer).
                    await asyncio.wait({reader}, timeout=READER_STATUS_WAIT_S)
                    reader_error = reader.exception() if reader.done() and not reader.cancelled() else None
                    if reader_error is not None:
                        raise reader_error from None
                    raise
        finally:
            reader.cancel()
            call.cancel()
            self._call = None

    def _next_batch(self) -> pb.AppendRecordsRequest:
        records: list[pb.LogRecord] = []
        size = 0
        while self.to_send and len(records) < BATCH_RECORDS_MAX and size < BATCH_BYTES_MAX:
            item = self.to_send.popleft()
            self.sent.append(item)
            records.append(item[1])
            size += len(item[1].data) + RECORD_OVERHEAD_BYTES
        self.inflight_batches.append(len(records))
        self.batches_sent += 1
        return pb.AppendRecordsRequest(
            segment_id=self.segment_id,
            volume_epoch=self.volume.epoch,
            membership_epoch=self.volume.membership_epoch(self.pg_index),
            batch_id=self.batches_sent,
            records=records,
            truncation_ranges=self.volume.truncation_protos,
            vdl_hint=self.volume.vdl,
            min_read_point=self.volume.min_read_point(self.pg_index),
        )

    async def _read_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        async for ack in call:
            count = self.inflight_batches.popleft()
            for _ in range(count):
                self.sent.popleft()
            self.last_ack_monotonic = _now()
            self.on_scl(ack.scl)
            self._wake.set()
        # The server ended the stream without a status: treat as a broken stream.
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details="stream ended"
        )

    def on_scl(self, scl: int) -> None:
        if scl > self.scl:
            self.scl = scl
        self.volume.on_ack(self, scl)
