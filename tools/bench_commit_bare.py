"""`sixfold bench commit`'s bare baseline: the same records fanned out from the bench process straight to
the six segments of one PG over one AppendRecords stream each (boxcar, the writer's window), a commit
done once a write quorum acknowledged its batch: no VolumeService hop, no LSN/VCL/VDL machinery.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from typing import Any

from sixfold.storage.quorum import WRITE_QUORUM
from sixfold.tools.bench_commit_measure import CALL_TIMEOUT_S, describe_error, random_patch

BARE_BATCH_RECORDS_MAX = 2_000


class BareStream:
    """One AppendRecords stream to one segment: boxcar whatever is queued, at most `window` batches in flight."""

    def __init__(
        self, fanout: BareFanout, index: int, segment_id: str, membership_epoch: int, channel: Any, window: int
    ) -> None:
        from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

        self.fanout = fanout
        self.index = index
        self.segment_id = segment_id
        self.membership_epoch = membership_epoch
        self.stub = pb_grpc.StorageServiceStub(channel)
        self.window = window
        self.queue: deque[tuple[int, Any]] = deque()
        self.inflight: deque[int] = deque()  # last LSN of each batch awaiting its ack
        self.batch_id = 0
        self.bytes_sent = 0
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def enqueue(self, lsn: int, record: Any) -> None:
        self.queue.append((lsn, record))
        self.wake.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        from sixfold.storage.v1 import storage_service_pb2 as pb

        call = self.stub.AppendRecords()
        reader = asyncio.create_task(self._acks(call))
        try:
            while True:
                if reader.done():
                    reader.result()
                    raise RuntimeError(f"segment {self.segment_id} ended the stream")
                if not self.queue or len(self.inflight) >= self.window:
                    self.wake.clear()
                    waiter = asyncio.create_task(self.wake.wait())
                    await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                records: list[Any] = []
                last = 0
                while self.queue and len(records) < BARE_BATCH_RECORDS_MAX:
                    last, record = self.queue.popleft()
                    records.append(record)
                self.inflight.append(last)
                self.batch_id += 1
                request = pb.AppendRecordsRequest(
                    segment_id=self.segment_id,
                    volume_epoch=1,
                    membership_epoch=self.membership_epoch,
                    batch_id=self.batch_id,
                    records=records,
                )
                self.bytes_sent += request.ByteSize()
                await call.write(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - fail every waiting commit with the reason
            self.fanout.fail(f"segment {self.segment_id}: {describe_error(error)}")
        finally:
            reader.cancel()
            call.cancel()

    async def _acks(self, call: Any) -> None:
        async for _ack in call:
            self.fanout.on_ack(self.index, self.inflight.popleft())
            self.wake.set()


class BareFanout:
    """Commits of one record each: enqueue on all six streams, done once 4 acknowledged a batch holding it."""

    def __init__(self, page_size: int, pool: list[bytes]) -> None:
        from sixfold.storage.chain import ChainBuilder

        self.chain = ChainBuilder(epoch=1)
        self.page_size = page_size
        self.pool = pool
        self.streams: list[BareStream] = []
        self.acked: list[int] = []
        self.waiters: deque[tuple[int, asyncio.Future[int]]] = deque()
        self.commits = 0
        self.error = ""

    def open(self, segments: list[tuple[str, int, Any]], window: int) -> None:
        self.streams = [
            BareStream(self, i, sid, m_epoch, channel, window) for i, (sid, m_epoch, channel) in enumerate(segments)
        ]
        self.acked = [0] * len(self.streams)
        for stream in self.streams:
            stream.start()

    async def close(self) -> None:
        for stream in self.streams:
            if stream.task:
                stream.task.cancel()
        await asyncio.gather(*(s.task for s in self.streams if s.task), return_exceptions=True)

    @property
    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self.streams)

    async def commit(self, rng: random.Random) -> int:
        from sixfold.storage.wire import record_to_proto

        if self.error:
            raise RuntimeError(self.error)
        page_no, offset, data = random_patch(rng, self.pool, self.page_size)
        record = self.chain.patch(page_no, data, offset)
        proto = record_to_proto(record)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiters.append((record.lsn, future))
        for stream in self.streams:
            stream.enqueue(record.lsn, proto)
        return await asyncio.wait_for(future, CALL_TIMEOUT_S)

    def on_ack(self, index: int, lsn: int) -> None:
        self.acked[index] = lsn
        quorum_lsn = sorted(self.acked, reverse=True)[WRITE_QUORUM - 1]
        while self.waiters and self.waiters[0][0] <= quorum_lsn:
            lsn_done, future = self.waiters.popleft()
            if not future.done():
                future.set_result(lsn_done)
            self.commits += 1

    def fail(self, reason: str) -> None:
        self.error = self.error or reason
        while self.waiters:
            _, future = self.waiters.popleft()
            if not future.done():
                future.set_exception(RuntimeError(reason))
