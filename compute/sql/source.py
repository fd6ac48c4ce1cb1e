"""What the VFS needs from storage: `PageSource` (compute/sql/volume_source.py implements it over a Volume,
compute/sql/memory.py over a dict).

A page source is called from SQLite's threads and blocks. Rules (every source keeps them):
1. `read_latest` is the writer's view: every MTR the writer handed off, durable or not yet, then the volume.
2. `pin` takes the current durable point (VDL) as a read point and holds it (storage keeps what it needs)
   until `unpin`; `read_at` reads the pages exactly as of a pinned read point, so a reader never sees a
   change that is not durable, nor one that became durable after its read point.
3. `submit` hands off one commit (one MTR) and returns its number, which the owner of the source turns into
   the commit's LSN once durable; the images are the pages as the MTR leaves them (the writer's view from
   then on). Nothing is handed off when it raises. A source may hand off later, in the order of `submit`
   calls (compute/sql/volume_source.py does).
"""

from __future__ import annotations

from typing import Protocol

from sixfold.compute.volume_log import Patch


class PageSource(Protocol):
    page_size: int

    def read_latest(self, page_nos: list[int]) -> list[bytes]: ...

    def pin(self) -> int: ...

    def unpin(self, read_point: int) -> None: ...

    def read_at(self, page_nos: list[int], read_point: int) -> list[bytes]: ...

    def submit(self, patches: list[Patch], images: dict[int, bytes]) -> int: ...
