"""Reading pages from a PG's segments: shared by the writer (compute/reads.py) and a read replica
(compute/replica_volume.py), which read the same way and differ only in where they learn SCLs and what
they say when no segment can serve.

A page is read at a read point from a segment known to be complete to there (compute/routing.py picks the
fastest first); a segment slow to answer is hedged with a second one, and a failure moves on to the next.
With no segment known complete, a read quorum is asked for its SCLs (GetSegmentState). `_gather` fans
calls out to a PG's segments (recovery uses it too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from sixfold.compute.quorum import Membership
from sixfold.compute.read_points import ReadPoints
from sixfold.compute.routing import ReadRouter
from sixfold.compute.segment_stream import refused_epoch_of
from sixfold.storage.v1 import storage_service_pb2 as pb

log = logging.getLogger("sixfold.compute.volume")  # every part of the volume logs under one name

T = TypeVar("T")

RPC_TIMEOUT_S = 2.0
GATHER_GRACE_S = 0.2
READ_TIMEOUT_S = 5.0  # a whole read, across segments
READ_ATTEMPT_TIMEOUT_S = 1.0  # one segment's answer; then the next segments are tried


def loop_time() -> float:
    """The event loop's clock: real time in the process, virtual time in the simulator."""
    return asyncio.get_running_loop().time()


class SegmentTarget(Protocol):
    """One segment of a PG as a reader sees it (compute/segment_stream.py `SegmentStream` is one)."""

    @property
    def segment_id(self) -> str: ...

    @property
    def node_id(self) -> str: ...

    @property
    def stub(self) -> Any: ...


class SegmentGroup(Protocol):
    """A PG's segments (compute/placement.py `PgInfo` is one)."""

    @property
    def pg_index(self) -> int: ...

    @property
    def membership(self) -> Membership: ...

    @property
    def streams(self) -> Mapping[str, SegmentTarget]: ...


class SegmentReads:
    volume_id: str
    epoch: int
    router: ReadRouter
    hedged_reads: int
    refused_epoch: int
    read_points: ReadPoints
    storage_page_reads: int

    # -- what the reader supplies ------------------------------------------------------------

    def _known_scls(self, pg_index: int) -> dict[str, int]:
        """The SCL each segment of the PG last said, by node."""
        raise NotImplementedError

    def _learn_scl(self, pg_index: int, node: str, scl: int) -> None:
        """A quorum read found the segment's SCL."""
        raise NotImplementedError

    def on_epoch_refusal(self, where: str, epoch: int, details: str) -> None:
        """A segment refused this reader's epoch: it holds `epoch`."""
        raise NotImplementedError

    def state_counts(self, where: str, state: Any) -> bool:
        """Whether a segment's state (GetSegmentState) may count."""
        raise NotImplementedError

    def _no_segment_served(self, pg: SegmentGroup, page_no: int, read_point: int) -> NoReturn:
        """Every segment was tried within the read's time: raise what to tell the caller."""
        raise NotImplementedError

    # -- asking a PG's segments ----------------------------------------------------------------

    async def _gather(
        self, calls: dict[str, Callable[[], Awaitable[T]]], enough: Callable[[set[str]], bool] | None = None
    ) -> dict[str, T]:
        """Run calls concurrently; return the ones that succeeded. With `enough`, stop waiting
        `GATHER_GRACE_S` after the successes satisfy it (a quorum), so one hung node does not hold
        recovery up for a whole RPC deadline; the calls still running are cancelled."""
        results: dict[str, T] = {}

        async def one(key: str, fn: Callable[[], Awaitable[T]]) -> None:
            try:
                results[key] = await fn()
            except grpc.aio.AioRpcError as error:
                refused = refused_epoch_of(error)
                if refused is not None:  # it did not take the step; the next attempt picks a newer epoch
                    self.refused_epoch = max(self.refused_epoch, refused)
                log.warning("volume %s: %s: %s %s", self.volume_id, key, error.code().name, error.details())

        tasks = [asyncio.ensure_future(one(k, fn)) for k, fn in calls.items()]
        pending = set(tasks)
        while pending:
            if enough is not None and enough(set(results)):
                await asyncio.wait(pending, timeout=GATHER_GRACE_S)
                break
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        return {k: results[k] for k in calls if k in results}

    @staticmethod
    def _state_calls(pg: SegmentGroup) -> dict[str, Callable[[], Awaitable[Any]]]:
        """One GetSegmentState call per segment of the PG, keyed by node."""
        return {node: _state_call(stream) for node, stream in pg.streams.items()}

    async def _states(self, pg: SegmentGroup) -> dict[str, Any]:
        return await self._gather(self._state_calls(pg), enough=pg.membership.read_quorum_met)

    # -- reading a page --------------------------------------------------------------------------

    async def _read_held(self, pg: SegmentGroup, page_no: int, read_point: int) -> tuple[bytes, int]:
        """A page from a segment at `read_point`, held in `read_points` while the read is in flight (so
        every segment's retention horizon stays at or below it)."""
        self.read_points.acquire(read_point)
        try:
            result = await self._read_from_segments(pg, page_no, read_point)
        finally:
            self.read_points.release(read_point)
        self.storage_page_reads += 1
        return result

    async def _read_from_segments(self, pg: SegmentGroup, page_no: int, read_point: int) -> tuple[bytes, int]:
        tried: set[str] = set()
        deadline = loop_time() + READ_TIMEOUT_S
        quorum_refreshed = False
        while loop_time() < deadline:
            scl_of = {n: scl for n, scl in self._known_scls(pg.pg_index).items() if n in pg.streams}
            candidates = self.router.candidates(scl_of, read_point, frozenset(tried))
            if not candidates:
                if quorum_refreshed:
                    break
                # No segment known complete to the read point: ask a read quorum for their SCLs.
                got = await self._states(pg)
                for node, reply in got.items():
                    if self.state_counts(f"segment {reply.state.segment_id} on {node}", reply.state):
                        self._learn_scl(pg.pg_index, node, reply.state.scl)
                quorum_refreshed = True
                tried.clear()
                continue
            result = await self._hedged_read(pg, candidates, page_no, read_point, tried)
            if result is not None:
                return result
        self._no_segment_served(pg, page_no, read_point)

    async def _hedged_read(
        self, pg: SegmentGroup, candidates: list[str], page_no: int, read_point: int, tried: set[str]
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

    async def _read_one(self, stream: SegmentTarget, page_no: int, read_point: int) -> tuple[bytes, int] | None:
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
        data: bytes = reply.data
        page_lsn: int = reply.page_lsn
        return data, page_lsn


def _state_call(stream: SegmentTarget) -> Callable[[], Awaitable[Any]]:
    def call() -> Awaitable[Any]:  # the stub is looked up when called: a redirect may have replaced it
        request = pb.GetSegmentStateRequest(segment_id=stream.segment_id)
        result: Awaitable[Any] = stream.stub.GetSegmentState(request, timeout=RPC_TIMEOUT_S)
        return result

    return call
