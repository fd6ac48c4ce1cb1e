"""The writer's read path: pages at the current VDL (or at an older read point a transaction pinned),
from the buffer cache or from one segment.

A page is read at its PG's read point (compute/volume_log.py) from a segment known to be complete to
there (compute/routing.py picks the fastest first); a segment slow to answer is hedged with a second one,
and a failure moves on to the next. With no segment known complete, a read quorum is asked for its SCLs.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from sixfold.compute.errors import InvalidRequest, PageOutOfRange, QuorumNotMet, Regaining
from sixfold.compute.placement import PgInfo
from sixfold.compute.segment_stream import SegmentStream, refused_epoch_of
from sixfold.compute.volume_base import VolumeBase, loop_time
from sixfold.storage.v1 import storage_service_pb2 as pb

log = logging.getLogger("sixfold.compute.volume")  # every part of the volume logs under one name

READ_TIMEOUT_S = 5.0  # a whole read, across segments
READ_ATTEMPT_TIMEOUT_S = 1.0  # one segment's answer; then the next segments are tried


class ReadPath(VolumeBase):
    async def read(
        self, page_nos: list[int], *, from_storage: bool = False
    ) -> tuple[int, list[tuple[int, bytes, int]]]:
        """The pages at the current VDL. `from_storage`: every page from a segment, not the buffer cache."""
        await self._ready()
        assert self.log is not None and self.cache is not None
        for page_no in page_nos:
            if page_no >= self.page_count:
                raise PageOutOfRange(
                    f"page {page_no} is beyond the end of volume {self.volume_id} "
                    f"({self.page_count} pages); write to it first to grow the volume"
                )
        read_point = self.log.vdl
        results = await asyncio.gather(*(self._read_page(p, read_point, from_storage) for p in page_nos))
        return read_point, [(p, data, lsn) for p, (data, lsn) in zip(page_nos, results)]

    async def pin_read_point(self) -> int:
        """Take the current VDL as a read point and hold it in `read_points` (so every segment's retention
        horizon stays at or below it) until `unpin_read_point`: a transaction that reads at one point."""
        await self._ready()
        assert self.log is not None
        return self.read_points.acquire(self.log.vdl)

    def unpin_read_point(self, read_point: int) -> None:
        self.read_points.release(read_point)

    async def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]:
        """The pages exactly as of `read_point`, a VDL this writer had (pinned with `pin_read_point`).

        From the buffer cache when the cached image's page LSN is at or below the read point: the cache
        holds the page with every durable record applied, so no record of the page lies between the read
        point and VDL, and the image is the page at the read point. Else from a segment, at the PG's read
        point for it: the PG's newest record at or below it. That is min(read point, the PG's current read
        point): when the PG's newest durable record is older than the read point, the PG did not change
        between them; else the read point itself is served by any segment complete to the PG's current read
        point (SCL at or above it), which is complete to every older point too."""
        await self._ready()
        assert self.log is not None and self.cache is not None
        if read_point > self.log.vdl:
            raise InvalidRequest(f"read point {read_point} is above VDL {self.log.vdl}: it is not durable")
        for page_no in page_nos:
            if page_no >= self.page_count:
                raise PageOutOfRange(
                    f"page {page_no} is beyond the end of volume {self.volume_id} ({self.page_count} pages)"
                )
        return list(await asyncio.gather(*(self._read_page_at(p, read_point) for p in page_nos)))

    async def _read_page_at(self, page_no: int, read_point: int) -> bytes:
        assert self.log is not None and self.cache is not None
        cached = self.cache.get(page_no)
        if cached is not None and cached[1] <= read_point:
            return cached[0]
        pg = self.pgs[self.pg_of_page(page_no)]
        pg_read_point = self.read_points.acquire(min(read_point, self.log.read_point(pg.pg_index)))
        try:
            data, _ = await self._read_from_segments(pg, page_no, pg_read_point)
        finally:
            self.read_points.release(pg_read_point)
        self.storage_page_reads += 1
        return data

    async def _read_page(self, page_no: int, read_point: int, from_storage: bool = False) -> tuple[bytes, int]:
        # The cache this read may fill: a regain meanwhile starts a new one, which must not take an image read
        # before it (the new one has not seen the records that became durable between).
        cache = self.cache
        assert cache is not None
        if not from_storage:
            cached = cache.get(page_no)
            if cached is not None:
                return cached
        pg = self.pgs[self.pg_of_page(page_no)]
        assert self.log is not None
        pg_read_point = self.read_points.acquire(self.log.read_point(pg.pg_index))
        try:
            data, page_lsn = await self._read_from_segments(pg, page_no, pg_read_point)
        finally:
            self.read_points.release(pg_read_point)
        self.storage_page_reads += 1
        if not from_storage:
            cache.put(page_no, data, page_lsn, read_point)
        return data, page_lsn

    async def _read_from_segments(self, pg: PgInfo, page_no: int, read_point: int) -> tuple[bytes, int]:
        assert self.log is not None
        tried: set[str] = set()
        deadline = loop_time() + READ_TIMEOUT_S
        quorum_refreshed = False
        while loop_time() < deadline:
            scl_of = {n: scl for n, scl in self.log.pgs[pg.pg_index].scl_of.items() if n in pg.streams}
            candidates = self.router.candidates(scl_of, read_point, frozenset(tried))
            if not candidates:
                if quorum_refreshed:
                    break
                # No segment known complete to the read point: ask a read quorum for their SCLs.
                got = await self._states(pg)
                for node, reply in got.items():
                    if self.state_counts(f"segment {reply.state.segment_id} on {node}", reply.state):
                        self.log.pgs[pg.pg_index].on_scl(node, reply.state.scl)
                quorum_refreshed = True
                tried.clear()
                continue
            result = await self._hedged_read(pg, candidates, page_no, read_point, tried)
            if result is not None:
                return result
        self._check_open()  # segments refused this writer's epoch: say fenced, or regaining, not "no segment"
        if self.regaining or self._judging():
            raise Regaining(
                f"segments of volume {self.volume_id} refuse this writer's epoch {self.epoch}; the writer "
                "is finding out whether a newer writer opened it, or regaining it; retry in a moment"
            )
        raise QuorumNotMet(f"no segment of PG {pg.pg_index} could serve page {page_no} at read point {read_point}")

    async def _hedged_read(
        self, pg: PgInfo, candidates: list[str], page_no: int, read_point: int, tried: set[str]
    ) -> tuple[bytes, int] | None:
        first = candidates[0]
        tried.add(first)
        tasks = {asyncio.create_task(self._read_one(pg.streams[first], page_no, read_point)): first}
        done, _ = await asyncio.wait(tasks, timeout=self.router.hedge_delay_ms(first) / 1000)
        if not done and len(candidates) > 1:
            self.hedged_reads += 1
            second = candidates[1]
            tried.add(second)
            tasks[asyncio.create_task(self._read_one(pg.streams[second], page_no, read_point))] = second
        pending = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=READ_ATTEMPT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    return None
                for task in done:
                    result = task.result()
                    if result is not None:
                        return result
            return None
        finally:
            for task in pending:
                task.cancel()

    async def _read_one(self, stream: SegmentStream, page_no: int, read_point: int) -> tuple[bytes, int] | None:
        started = loop_time()
        try:
            reply = await stream.stub.ReadPage(
                pb.ReadPageRequest(
                    segment_id=stream.segment_id, page_no=page_no, read_point=read_point, volume_epoch=self.epoch
                ),
                timeout=READ_ATTEMPT_TIMEOUT_S,
            )
        except grpc.aio.AioRpcError as error:
            refused = refused_epoch_of(error)
            if refused is not None:  # one segment holds a newer epoch: judged apart, read elsewhere meanwhile
                self.on_epoch_refusal(
                    f"segment {stream.segment_id} on {stream.node_id}", refused, error.details() or ""
                )
            self.router.penalize(stream.node_id)
            if error.code() == grpc.StatusCode.DATA_LOSS:
                log.warning("segment %s on %s: %s", stream.segment_id, stream.node_id, error.details())
            return None
        self.router.observe(stream.node_id, (loop_time() - started) * 1000)
        return reply.data, reply.page_lsn
