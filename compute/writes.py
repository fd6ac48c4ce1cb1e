"""The writer's write path: an MTR checked, the volume grown to hold it, allocated in the log, sent to the
segments of its PGs, and acknowledged once VDL passes its CPL (compute/volume_base.py `_release`).

A write fails fast, before anything is allocated, when a PG cannot reach a write quorum. Once sent, an MTR
that does not become durable within the commit timeout is reported as of unknown outcome (CommitTimeout):
it stays in flight and may still become durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import grpc

from sixfold.compute.errors import (
    CommitTimeout,
    InvalidRequest,
    NotCommitted,
    PageOutOfRange,
    QuorumNotMet,
    VolumeFull,
)
from sixfold.compute.quorum import WRITE_QUORUM
from sixfold.compute.volume_base import RPC_TIMEOUT_S, VolumeBase, loop_time
from sixfold.compute.volume_log import MTR_BYTES_MAX, MTR_RECORDS_MAX, LalExceeded, Patch
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.wire import record_to_proto

log = logging.getLogger("sixfold.compute.volume")  # every part of the volume logs under one name

VOLUME_BYTES_MAX = 128 * 2**40
GROW_PGS_PER_WRITE_MAX = 8
GROW_TIMEOUT_S = RPC_TIMEOUT_S * 10  # the control plane creates a PG's six segments before it answers
CONNECT_WAIT_S = 1.0
CONNECT_POLL_S = 0.02  # how often a write waiting for its streams to connect looks again


class WritePath(VolumeBase):
    async def write(self, patches: list[Patch]) -> int:
        """One MTR, acknowledged once durable: its CPL."""
        _, future = await self.submit(patches)
        return await future

    async def submit(
        self, patches: list[Patch], *, base_cpl: int = 0, base_epoch: int = 0
    ) -> tuple[int, asyncio.Future[int]]:
        """Hand one MTR to the log without waiting for it: its CPL, and a future that resolves to the CPL once
        it is durable (or fails: CommitTimeout when it is not durable within the commit timeout, its outcome
        then unknown; Fenced in flight; NotCommitted when a regain truncated it). Nothing is handed off when
        this raises.

        `base_cpl`, `base_epoch`: the patches apply to the volume as it is after the MTR with CPL `base_cpl`,
        which this writer handed off in epoch `base_epoch` (a caller that pipelines commits builds each on
        the ones still in flight). A regain since then that did not find that MTR durable truncated it, and
        the patches would apply to a page version they were not made against: NotCommitted, nothing sent."""
        await self._ready()
        self._validate(patches)
        await self._ensure_pages(max(p.page_no for p in patches))
        await self._ready()
        await self._wait_write_quorum_reachable({self.pg_of_page(p.page_no) for p in patches})
        deadline = loop_time() + self.commit_timeout_s
        while True:
            # Allocating and enqueueing take no await: the MTR goes to this log and these streams as one step
            # (a regain that begins later finds it among the waiters).
            await self._ready()
            assert self.log is not None
            if base_cpl > self.log.vdl and base_epoch != self.epoch:
                raise NotCommitted(
                    f"the MTR builds on MTR {base_cpl}, which the writer's new recovery (epoch {self.epoch}) did "
                    f"not find durable and truncated; nothing was sent, retry it"
                )
            try:
                mtr = self.log.allocate_mtr(patches, self.wall_clock_us())
                if self.on_allocate is not None:
                    self.on_allocate(mtr)
                break
            except LalExceeded as error:
                remaining = deadline - loop_time()
                if remaining <= 0:
                    raise QuorumNotMet(f"{error}; VDL is not advancing (is a write quorum reachable?)") from None
                self._vdl_advanced.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._vdl_advanced.wait(), remaining)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[mtr.cpl] = future
        self._mtr_records[mtr.cpl] = mtr.records
        by_pg: dict[int, list[tuple[int, pb.LogRecord]]] = {}
        for record, pg_index in zip(mtr.records, mtr.pg_of_record):
            by_pg.setdefault(pg_index, []).append((record.lsn, record_to_proto(record)))
        for pg_index, items in by_pg.items():
            for stream in self.pgs[pg_index].streams.values():
                stream.enqueue(items)

        def time_out() -> None:
            if not future.done():  # the MTR stays in flight: it may still become durable later
                self._waiters.pop(mtr.cpl, None)
                future.set_exception(
                    CommitTimeout(
                        f"MTR with CPL {mtr.cpl} was sent but did not reach write quorum within "
                        f"{self.commit_timeout_s:.0f} s ({self._quorum_picture(by_pg)}); "
                        "it may still become durable later"
                    )
                )

        timer = asyncio.get_running_loop().call_later(max(0.0, deadline - loop_time()), time_out)
        future.add_done_callback(lambda _: timer.cancel())
        return mtr.cpl, future

    def _validate(self, patches: list[Patch]) -> None:
        if not patches:
            raise InvalidRequest("the MTR is empty; send at least one patch")
        if len(patches) > MTR_RECORDS_MAX:
            raise InvalidRequest(f"the MTR has {len(patches)} patches; at most {MTR_RECORDS_MAX} fit in one MTR")
        total = sum(len(p.data) for p in patches)
        if total > MTR_BYTES_MAX:
            raise InvalidRequest(f"the MTR carries {total} bytes; at most {MTR_BYTES_MAX} fit in one MTR")
        for p in patches:
            if not p.data:
                raise InvalidRequest(f"the patch to page {p.page_no} is empty")
            if p.offset + len(p.data) > self.page_size:
                raise InvalidRequest(
                    f"the patch to page {p.page_no} covers bytes {p.offset}..{p.offset + len(p.data)}, "
                    f"past the end of a {self.page_size}-byte page"
                )
            if (p.page_no + 1) * self.page_size > VOLUME_BYTES_MAX:
                raise VolumeFull(f"volume {self.volume_id} is full: page {p.page_no} lies beyond 128 TiB")

    async def _ensure_pages(self, page_no: int) -> None:
        needed_pg = self.pg_of_page(page_no)
        if needed_pg < len(self.pgs):
            return
        if needed_pg - len(self.pgs) >= GROW_PGS_PER_WRITE_MAX:
            raise PageOutOfRange(
                f"page {page_no} is {needed_pg - len(self.pgs) + 1} PGs past the end of volume {self.volume_id} "
                f"({self.page_count} pages); a write grows it by at most {GROW_PGS_PER_WRITE_MAX} PGs "
                f"of {self.pages_per_pg} pages"
            )
        async with self._grow_lock:
            while needed_pg >= len(self.pgs):
                try:
                    reply = await self.control_plane.GrowVolume(
                        cp_pb.GrowVolumeRequest(volume_id=self.volume_id, geometry_epoch=self.geometry_epoch),
                        timeout=GROW_TIMEOUT_S,
                    )
                except grpc.aio.AioRpcError as error:
                    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise VolumeFull(error.details() or f"volume {self.volume_id} is full") from None
                    raise QuorumNotMet(f"could not grow volume {self.volume_id}: {error.details()}") from None
                for pg in self._apply_geometry(reply.geometry):
                    assert self.log is not None
                    self.log.add_pg(pg.pg_index, pg.membership)
                    for stream in pg.streams.values():
                        stream.start()
                    log.info(
                        "volume %s grew: PG %d (pages %d..%d)",
                        self.volume_id,
                        pg.pg_index,
                        pg.first_page,
                        pg.first_page + pg.page_count - 1,
                    )

    async def _wait_write_quorum_reachable(self, pg_indexes: set[int]) -> None:
        """Fail fast, before allocating anything, when a PG cannot reach a write quorum. Streams that are
        (re)connecting get `CONNECT_WAIT_S` to do so."""
        deadline = loop_time() + CONNECT_WAIT_S
        for pg_index in sorted(pg_indexes):
            pg = self.pgs[pg_index]
            connected = [n for n, s in pg.streams.items() if s.connected]
            while not pg.membership.write_quorum_met(connected) and loop_time() < deadline:
                await asyncio.sleep(CONNECT_POLL_S)
                connected = [n for n, s in pg.streams.items() if s.connected]
            if not pg.membership.write_quorum_met(connected):
                down = sorted(set(pg.streams) - set(connected))
                raise QuorumNotMet(
                    f"PG {pg_index} of volume {self.volume_id} reaches only {len(connected)} of 6 segments "
                    f"(unreachable: {', '.join(down)}); a write needs {WRITE_QUORUM}. Nothing was written."
                )

    def _quorum_picture(self, by_pg: dict[int, Any]) -> str:
        parts = []
        for pg_index in by_pg:
            pg = self.pgs[pg_index]
            up = sum(1 for s in pg.streams.values() if s.connected)
            said = sorted({s.last_refusal for s in pg.streams.values() if not s.connected and s.last_refusal})
            parts.append(f"PG {pg_index}: {up} of 6 segments connected" + (f"; they said: {said[0]}" if said else ""))
        return "; ".join(parts)
