"""In-memory stand-ins for storage, so SQLite on the volume runs fully in-process: `MemoryPages`, a
page source for the VFS alone, and `MemoryVolume`, an open volume for the whole engine. For unit tests
and tools that want the engine without a cluster.

Both keep every page version and apply each MTR's patches to the stored pages (never the images the
caller sends): a wrong diff shows as a wrong page.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from dataclasses import dataclass, field

from sixfold.compute.errors import CommitTimeout, Fenced, FencedInFlight, NotCommitted
from sixfold.compute.read_points import ReadPoints
from sixfold.compute.volume_log import Patch
from sixfold.storage.truncation import TruncationRange


class PageVersions:
    """Every version of every page: page -> [(lsn, image)], oldest first."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self._versions: dict[int, list[tuple[int, bytes]]] = {}

    def at(self, page_no: int, read_point: int) -> tuple[bytes, int]:
        """The page as of `read_point`, and the LSN of its newest change at or below it."""
        image, page_lsn = bytes(self.page_size), 0
        for lsn, version in self._versions.get(page_no, []):
            if lsn > read_point:
                break
            image, page_lsn = version, lsn
        return image, page_lsn

    def apply(self, lsn: int, patches: list[Patch]) -> dict[int, bytes]:
        """Apply one MTR's patches at `lsn` (above every stored version); the pages it leaves."""
        changed: dict[int, bytearray] = {}
        for patch in patches:
            assert patch.data and patch.offset >= 0 and patch.offset + len(patch.data) <= self.page_size, patch
            page = changed.setdefault(patch.page_no, bytearray(self.at(patch.page_no, lsn)[0]))
            page[patch.offset : patch.offset + len(patch.data)] = patch.data
        for page_no, page in changed.items():
            self._versions.setdefault(page_no, []).append((lsn, bytes(page)))
        return {page_no: bytes(page) for page_no, page in changed.items()}


class MemoryPages:
    """A page source (compute/sql/source.py) over a dict: each `submit` is one MTR, durable at once."""

    def __init__(self, page_size: int = 4096) -> None:
        self.page_size = page_size
        self.vdl = 0
        self.mtrs: list[list[Patch]] = []  # every MTR submitted, in order
        self.pinned: Counter[int] = Counter()  # read points in use
        self.pages = PageVersions(page_size)
        self._lock = threading.Lock()

    def read_latest(self, page_nos: list[int]) -> list[bytes]:
        with self._lock:
            return [self.pages.at(p, self.vdl)[0] for p in page_nos]

    def pin(self) -> int:
        with self._lock:
            self.pinned[self.vdl] += 1
            return self.vdl

    def unpin(self, read_point: int) -> None:
        with self._lock:
            assert self.pinned[read_point] > 0, read_point
            self.pinned[read_point] -= 1
            if not self.pinned[read_point]:
                del self.pinned[read_point]

    def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]:
        with self._lock:
            assert read_point in self.pinned, f"read point {read_point} is not pinned"
            return [self.pages.at(p, read_point)[0] for p in page_nos]

    def submit(self, patches: list[Patch], images: dict[int, bytes]) -> int:
        with self._lock:
            lsn = self.vdl + 1
            rebuilt = self.pages.apply(lsn, patches)
            assert rebuilt == images, "the patches do not rebuild the pages the writer sent"
            self.mtrs.append(list(patches))
            self.vdl = lsn
            return lsn


@dataclass
class _InFlight:
    cpl: int
    patches: list[Patch]
    future: asyncio.Future[int]


@dataclass
class MemoryVolume:
    """An open volume in memory (the part compute/sql/volume_source.py `SqlVolume` names). MTRs become
    durable at once, or, with `hold` set, when `release` says; `fail_in_flight` plays a regain that
    truncates them, `fence` a newer writer."""

    page_size: int = 4096
    volume_id: str = "memory"
    hold: bool = False
    epoch: int = 1
    fenced: bool = False
    fenced_reason: str = ""
    holds_database: bool = False
    truncations: list[TruncationRange] = field(default_factory=list)
    read_points: ReadPoints = field(default_factory=ReadPoints)
    vdl: int = 0
    lsn_allocated: int = 0
    page_count: int = 1 << 20
    mtrs: list[list[Patch]] = field(default_factory=list)  # every MTR handed off, in order
    _pages: PageVersions | None = None
    _in_flight: list[_InFlight] = field(default_factory=list)

    @property
    def pages(self) -> PageVersions:
        if self._pages is None:
            self._pages = PageVersions(self.page_size)
        return self._pages

    def _check(self) -> None:
        if self.fenced:
            raise Fenced(f"this writer was fenced: {self.fenced_reason}")

    async def read(
        self, page_nos: list[int], *, from_storage: bool = False
    ) -> tuple[int, list[tuple[int, bytes, int]]]:
        self._check()
        return self.vdl, [(p, *self.pages.at(p, self.vdl)) for p in page_nos]

    async def pin_read_point(self) -> int:
        self._check()
        return self.read_points.acquire(self.vdl)

    def unpin_read_point(self, read_point: int) -> None:
        self.read_points.release(read_point)

    async def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]:
        self._check()
        assert read_point <= self.vdl and self.read_points.lowest(read_point + 1) <= read_point
        return [self.pages.at(p, read_point)[0] for p in page_nos]

    async def submit(
        self, patches: list[Patch], *, base_cpl: int = 0, base_epoch: int = 0
    ) -> tuple[int, asyncio.Future[int]]:
        self._check()
        await asyncio.sleep(0)
        if base_cpl > self.vdl and base_epoch != self.epoch:
            raise NotCommitted(f"the MTR builds on MTR {base_cpl}, which a regain truncated")
        self.lsn_allocated += len(patches)
        mtr = _InFlight(self.lsn_allocated, list(patches), asyncio.get_running_loop().create_future())
        self._in_flight.append(mtr)
        self.mtrs.append(list(patches))
        if not self.hold:
            asyncio.get_running_loop().call_soon(self.release)
        return mtr.cpl, mtr.future

    def release(self, count: int | None = None) -> None:
        """Make the oldest `count` MTRs in flight durable (all when None), in LSN order."""
        done, self._in_flight = self._in_flight[:count], self._in_flight[len(self._in_flight[:count]) :]
        for mtr in done:
            self.pages.apply(mtr.cpl, mtr.patches)
            self.vdl = mtr.cpl
            if not mtr.future.done():
                mtr.future.set_result(mtr.cpl)

    def time_out(self) -> None:
        """The commit timeout passes for every MTR in flight: CommitTimeout, but they stay in flight."""
        for mtr in self._in_flight:
            if not mtr.future.done():
                mtr.future.set_exception(CommitTimeout(f"MTR {mtr.cpl} did not become durable in time"))

    def fail_in_flight(self) -> None:
        """A regain that did not find the MTRs in flight durable: truncated, NotCommitted."""
        if self._in_flight:
            self.epoch += 1
            self.truncations.append(TruncationRange(self.vdl + 1, self.lsn_allocated + 1000, self.epoch))
            self.lsn_allocated += 1000
        for mtr in self._in_flight:
            mtr.future.set_exception(NotCommitted(f"MTR {mtr.cpl} was not committed: the writer regained the volume"))
        self._in_flight = []

    def fence(self, reason: str = "a newer writer opened the volume") -> None:
        self.fenced = True
        self.fenced_reason = reason
        for mtr in self._in_flight:
            mtr.future.set_exception(FencedInFlight(f"fenced while MTR {mtr.cpl} was in flight: {reason}"))
        self._in_flight = []
