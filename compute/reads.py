"""The writer's read path: pages at the current VDL (or at an older read point a transaction pinned),
from the buffer cache or from one segment.

A page is read at its PG's read point (compute/volume_log.py) from a segment known to be complete to
there, as compute/segment_reads.py reads (routing, hedging, a quorum read of SCLs when none is known).
"""

from __future__ import annotations

import asyncio
from typing import NoReturn

from sixfold.compute.errors import InvalidRequest, PageOutOfRange, QuorumNotMet, Regaining
from sixfold.compute.segment_reads import SegmentGroup
from sixfold.compute.volume_base import VolumeBase


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
        data, _ = await self._read_held(pg, page_no, min(read_point, self.log.read_point(pg.pg_index)))
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
        data, page_lsn = await self._read_held(pg, page_no, self.log.read_point(pg.pg_index))
        if not from_storage:
            cache.put(page_no, data, page_lsn, read_point)
        return data, page_lsn

    # -- the hooks of the shared segment reads (compute/segment_reads.py) ----------------------------

    def _known_scls(self, pg_index: int) -> dict[str, int]:
        assert self.log is not None
        return self.log.pgs[pg_index].scl_of

    def _learn_scl(self, pg_index: int, node: str, scl: int) -> None:
        assert self.log is not None
        self.log.pgs[pg_index].on_scl(node, scl)

    def _no_segment_served(self, pg: SegmentGroup, page_no: int, read_point: int) -> NoReturn:
        self._check_open()  # segments refused this writer's epoch: say fenced, or regaining, not "no segment"
        if self.regaining or self._judging():
            raise Regaining(
                f"segments of volume {self.volume_id} refuse this writer's epoch {self.epoch}; the writer "
                "is finding out whether a newer writer opened it, or regaining it; retry in a moment"
            )
        raise QuorumNotMet(f"no segment of PG {pg.pg_index} could serve page {page_no} at read point {read_point}")
