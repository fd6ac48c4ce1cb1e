"""`sixfold bench sql`'s page-shipping baseline: what each transaction sixfold acknowledged dirtied, measured.

The transactions are replayed in commit-LSN order on a local SQLite file set up like the engine's (the
volume's page size, `journal_mode=MEMORY`: at each COMMIT SQLite writes exactly the pages the transaction
dirtied into the database file, each once, as the engine's VFS sees them) through a VFS that watches those
writes. For each commit it yields:

- the distinct pages written: what a page-shipping system sends, whole, to each copy;
- the byte-range patches that turn each page's previous image into its new one (compute/sql/pages.py
  `diff_patches`, the engine's own diff): how many log records and changed bytes sixfold's MTR carries
  before record headers and message framing.

A measurement, not an estimate. `synchronous=OFF` there: which pages are written does not depend on it,
and the replay is not timed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import apsw

from sixfold.compute.sql.pages import diff_patches
from sixfold.tools.bench_sql_local import run_transaction, totals
from sixfold.tools.bench_sql_workload import Statement, Totals, Tpcb

REPLAY_PROGRESS_EVERY = 5_000  # transactions
ENGINE_LIKE_SETTINGS = (  # compute/sql/connection.py rule 1 and its writer's cache, but for synchronous
    "journal_mode=MEMORY",
    "locking_mode=NORMAL",
    "synchronous=OFF",
    "temp_store=MEMORY",
    "cache_size=-65536",
)


@dataclass(frozen=True)
class Dirtied:
    """What one commit changed (or several, on average): pages written whole, and the same change as
    byte-range patches."""

    pages: float
    records: float
    changed_bytes: float


class _WatchingVfs(apsw.VFS):
    """The default VFS; of a main database file's writes it keeps each page's image before the first write
    of the commit (`before`) and after the last (`after`)."""

    def __init__(self, page_size: int) -> None:
        self.page_size = page_size
        self.before: dict[int, bytes] = {}
        self.after: dict[int, bytes] = {}
        self.vfs_name = f"sixfold-bench-watching-{uuid.uuid4().hex[:8]}"
        super().__init__(self.vfs_name, "")

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        return _WatchedFile(self, name, flags)

    def take(self) -> Dirtied:
        patches = [p for page, image in self.after.items() for p in diff_patches(self.before[page], image, page)]
        dirtied = Dirtied(len(self.after), len(patches), sum(len(p.data) for p in patches))
        self.before.clear()
        self.after.clear()
        return dirtied


class _WatchedFile(apsw.VFSFile):
    def __init__(self, vfs: _WatchingVfs, name: str | apsw.URIFilename | None, flags: list[int]) -> None:
        self._vfs = vfs
        self._main = bool(flags[0] & apsw.SQLITE_OPEN_MAIN_DB)
        super().__init__("", name, flags)

    def xWrite(self, data: bytes, offset: int) -> None:
        if self._main:
            self._note(bytes(data), offset)
        super().xWrite(data, offset)

    def _note(self, data: bytes, offset: int) -> None:
        """SQLite writes whole pages at page offsets; the page's image before it and after it."""
        size = self._vfs.page_size
        for page in range(offset // size, (offset + len(data) - 1) // size + 1):
            start = page * size
            if page not in self._vfs.before:
                old = self.xRead(size, start) if start < self.xFileSize() else b""
                self._vfs.before[page] = bytes(old).ljust(size, b"\0")
            image = bytearray(self._vfs.after.get(page, self._vfs.before[page]))
            lo, hi = max(start, offset), min(start + size, offset + len(data))
            image[lo - start : hi - start] = data[lo - offset : hi - offset]
            self._vfs.after[page] = bytes(image)


def replay(
    directory: str,
    page_size: int,
    load: Sequence[tuple[list[Statement], int]],
    transactions: Sequence[Tpcb],
    progress: Callable[[str], None],
) -> tuple[list[Dirtied], Totals]:
    """Replay the load, then `transactions` in order; what each transaction dirtied, and the totals the
    replay ends with."""
    vfs = _WatchingVfs(page_size)
    db = apsw.Connection(os.path.join(directory, "replay.db"), vfs=vfs.vfs_name)
    try:
        db.execute(f"PRAGMA page_size={page_size}")
        db.execute("PRAGMA auto_vacuum=NONE")
        for setting in ENGINE_LIKE_SETTINGS:
            db.execute(f"PRAGMA {setting}").fetchall()
        for statements, _ in load:
            run_transaction(db, statements, "BEGIN")
            vfs.take()
        dirtied: list[Dirtied] = []
        for n, txn in enumerate(transactions, 1):
            run_transaction(db, txn.statements(), "BEGIN")  # as the engine runs it
            dirtied.append(vfs.take())
            if n % REPLAY_PROGRESS_EVERY == 0:
                progress(f"  replayed {n:,} / {len(transactions):,} transactions")
        return dirtied, totals(db)
    finally:
        db.close()
        vfs.unregister()
