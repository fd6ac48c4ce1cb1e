"""SQLite's files on the volume: an apsw VFS whose one database file is the volume's pages.

Rules (this module owns them):
1. Files. The VFS opens the writer's database file (`WRITER_FILE`), readers' database files
   (`reader_file(i)`, opened read-only) and SQLite's temporary files (kept in memory). It refuses any other
   name: no rollback journal or WAL file ever exists (the connections run `journal_mode=MEMORY`), and
   `xAccess` says so. Page mapping and the file size are compute/sql/pages.py's rules 1 and 2.
2. The writer buffers. Every xWrite lands in the file object's pending pages; xRead sees them first, then
   the source's writer view. xSync, SQLite's commit point, turns all pending pages into ONE MTR of
   byte-range patches against the previous page versions (compute/sql/pages.py `mtr_patches`) and hands it
   to the source; the number the source gives it is kept for the engine (`take_submitted`). Pending pages
   never synced (a rollback) are dropped when SQLite unlocks.
3. Readers pin. A reader's file takes a read point when SQLite takes its SHARED lock from none (a read
   transaction begins) and gives it back at unlock to none; every read between is at that read point, so
   the transaction sees one snapshot. SQLite notices other connections' commits through the change
   counter in page 1, which it reads again at each SHARED lock (locking_mode=NORMAL): at a new read
   point, so a reader's page cache is never served stale across transactions.

Crash safety. Nothing reaches storage before xSync; SQLite's journal lives in memory and only serves
rollbacks inside this process. A crash before the MTR is handed off ships nothing: the volume still holds
the previous commit, whole. The MTR is atomic at the storage layer (VDL moves past its CPL, the last
record, only once every record of it is complete: compute/volume_log.py rule 3), so after a crash a
recovery finds all of it durable or truncates all of it. A commit is acknowledged only once durable
(compute/sql/engine.py), so a crash loses only unacknowledged commits, and never leaves a part of one.
"""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import cast

import apsw

from sixfold.compute.sql.errors import SqlReadOnly, TransactionTooLarge
from sixfold.compute.sql.pages import header_page_count, mtr_patches, page_span
from sixfold.compute.sql.source import PageSource
from sixfold.compute.volume_log import MTR_RECORDS_MAX

WRITER_FILE = "sixfold-writer.db"
_READER_FILE = re.compile(r"sixfold-reader-\d+\.db")
LOCK_NONE, LOCK_SHARED = apsw.SQLITE_LOCK_NONE, apsw.SQLITE_LOCK_SHARED
# A transaction that dirties more pages than one MTR has records can never commit: it fails at once.
PENDING_PAGES_MAX = MTR_RECORDS_MAX
KNOWN_BYTES_MAX = 64 << 20  # the writer's copies of committed pages (commit bases without a round trip)
_TEMP_FLAGS = (
    apsw.SQLITE_OPEN_TEMP_DB
    | apsw.SQLITE_OPEN_TEMP_JOURNAL
    | apsw.SQLITE_OPEN_TRANSIENT_DB
    | apsw.SQLITE_OPEN_SUBJOURNAL
)


def reader_file(index: int) -> str:
    return f"sixfold-reader-{index}.db"


class PageVfs(apsw.VFS):
    """One VFS per engine (its own name), over one page source. `files` holds the open database files."""

    def __init__(self, source: PageSource, name: str | None = None) -> None:
        self.vfs_name = name or f"sixfold-{uuid.uuid4().hex[:12]}"
        self.source = source
        self.files: dict[str, PageFile] = {}
        super().__init__(self.vfs_name, "")

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> apsw.VFSFile:
        # apsw takes any object with the file methods; its stubs name only its own VFSFile.
        return cast(apsw.VFSFile, self._open(name, flags))

    def _open(self, name: str | apsw.URIFilename | None, flags: list[int]) -> object:
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        if filename is None or flags[0] & _TEMP_FLAGS:
            flags[1] = flags[0]
            return MemoryFile()
        file: PageFile
        if filename == WRITER_FILE and flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            file = WriterFile(self.source)
        elif _READER_FILE.fullmatch(filename) and flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            file = ReaderFile(self.source)
        else:
            raise apsw.CantOpenError(
                f"the volume holds one SQLite database and no other file: {filename!r} cannot be opened"
            )
        assert filename not in self.files, f"{filename} is open twice"
        flags[1] = flags[0]  # as asked: a reader's read-only flag tells SQLite never to write
        self.files[filename] = file
        file.on_close = lambda: self.files.pop(filename, None)
        return file

    def xAccess(self, pathname: str, flags: int) -> bool:
        return False  # no journal, no WAL, nothing else on any disk

    def xDelete(self, filename: str, syncdir: bool) -> None:
        return None

    def xFullPathname(self, name: str) -> str:
        return name


class PageFile:
    """A database file over a page source: reads and the size, shared by the writer's and readers' files."""

    def __init__(self, source: PageSource) -> None:
        self.source = source
        self.page_size = source.page_size
        self.lock = LOCK_NONE
        self.on_close: Callable[[], object] | None = None

    def _fetch(self, page_nos: list[int]) -> list[bytes]:
        raise NotImplementedError

    def _page0(self) -> bytes:
        raise NotImplementedError

    def size_pages(self) -> int:
        return header_page_count(self._page0())

    def xFileSize(self) -> int:
        return self.size_pages() * self.page_size

    def xRead(self, amount: int, offset: int) -> bytes:
        end = min(offset + amount, self.xFileSize())
        if offset >= end:
            return b""  # past the end: apsw zero-fills and reports a short read, as a file does
        span = page_span(offset, end - offset, self.page_size)
        images = [self._page0()] if span == range(1) else self._fetch(list(span))
        start = offset - span.start * self.page_size
        joined = images[0] if len(images) == 1 else b"".join(images)
        return joined[start : start + end - offset]

    def xLock(self, level: int) -> None:
        self.lock = level

    def xUnlock(self, level: int) -> None:
        self.lock = level

    def xCheckReservedLock(self) -> bool:
        return False  # the engine serializes writers itself

    def xFileControl(self, op: int, pointer: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return self.page_size

    def xDeviceCharacteristics(self) -> int:
        return int(apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE)

    def xClose(self) -> None:
        if self.on_close is not None:
            self.on_close()
            self.on_close = None


class WriterFile(PageFile):
    """The writer's database file (rule 2). It keeps copies of the committed pages it read or wrote (LRU,
    `KNOWN_BYTES_MAX`): only this file changes the volume, so they stay exact, and a commit finds the
    previous versions of its pages there without a round trip to the volume."""

    def __init__(self, source: PageSource) -> None:
        super().__init__(source)
        self.pending: dict[int, bytes] = {}
        self._pending_pages: int | None = None  # the file's size while pages are pending
        self._zeros_from = 0  # while pending: pages from here on that are not pending read as zeros
        self._known: OrderedDict[int, bytes] = OrderedDict()  # page -> image in the writer view
        self._known_max = max(16, KNOWN_BYTES_MAX // self.page_size)
        self._submitted: list[int] = []
        self.syncs = 0

    def _committed(self, page_nos: list[int]) -> dict[int, bytes]:
        """The pages in the writer view (rule 2): from the copies kept, else from the source."""
        out: dict[int, bytes] = {}
        missing = []
        for n in page_nos:
            image = self._known.get(n)
            if image is None:
                missing.append(n)
            else:
                self._known.move_to_end(n)
                out[n] = image
        if missing:
            for n, image in zip(missing, self.source.read_latest(missing)):
                out[n] = image
                self._remember(n, image)
        return out

    def _remember(self, page_no: int, image: bytes) -> None:
        self._known[page_no] = image
        self._known.move_to_end(page_no)
        while len(self._known) > self._known_max:
            self._known.popitem(last=False)

    def _page0(self) -> bytes:
        if 0 in self.pending:
            return self.pending[0]
        return self._committed([0])[0]

    def size_pages(self) -> int:
        if self._pending_pages is not None:
            return self._pending_pages
        return header_page_count(self._committed([0])[0])

    def _fetch(self, page_nos: list[int]) -> list[bytes]:
        out: dict[int, bytes] = {}
        committed = []
        for n in page_nos:
            if n in self.pending:
                out[n] = self.pending[n]
            elif self._pending_pages is not None and n >= self._zeros_from:
                out[n] = bytes(self.page_size)  # a hole the transaction made by extending the file
            else:
                committed.append(n)
        if committed:
            out.update(self._committed(committed))
        return [out[n] for n in page_nos]

    def _begin_pending(self) -> None:
        if self._pending_pages is None:
            self._pending_pages = self._zeros_from = self.size_pages()

    def xWrite(self, data: bytes, offset: int) -> None:
        self._begin_pending()
        assert self._pending_pages is not None
        for n in page_span(offset, len(data), self.page_size):
            page_start = n * self.page_size
            lo, hi = max(offset, page_start), min(offset + len(data), page_start + self.page_size)
            if hi - lo == self.page_size:
                image = bytes(data[lo - offset : hi - offset])
            else:  # a part of a page: SQLite writes whole pages of the main file, but a file need not
                base = bytearray(self._fetch([n])[0] if n < self._pending_pages else bytes(self.page_size))
                base[lo - page_start : hi - page_start] = data[lo - offset : hi - offset]
                image = bytes(base)
            if n not in self.pending and len(self.pending) >= PENDING_PAGES_MAX:
                raise TransactionTooLarge(
                    f"the transaction changes more than {PENDING_PAGES_MAX} pages; one commit carries at most "
                    "that: split it into smaller transactions"
                )
            self.pending[n] = image
            self._pending_pages = max(self._pending_pages, n + 1)

    def xTruncate(self, newsize: int) -> None:
        self._begin_pending()
        pages = -(-newsize // self.page_size)
        self._pending_pages = pages
        self._zeros_from = min(self._zeros_from, pages)
        for n in [n for n in self.pending if n >= pages]:
            del self.pending[n]

    def xSync(self, flags: int) -> None:
        """SQLite's commit point: the pending pages become one MTR (rule 2)."""
        self.syncs += 1
        if not self.pending:
            return
        assert self._pending_pages is not None
        images = {n: image for n, image in self.pending.items() if n < self._pending_pages}
        bases = self._committed(sorted(images))
        patches = mtr_patches(bases, images)
        if patches:
            changed = {p.page_no for p in patches}
            self._submitted.append(self.source.submit(patches, {n: images[n] for n in sorted(changed)}))
            for n in sorted(changed):
                self._remember(n, images[n])
        self._drop_pending()

    def _drop_pending(self) -> None:
        self.pending.clear()
        self._pending_pages = None

    def xUnlock(self, level: int) -> None:
        if level <= LOCK_SHARED:
            self._drop_pending()  # never synced: a rollback
        super().xUnlock(level)

    def take_submitted(self) -> list[int]:
        """The numbers of the commits submitted since the last call, in order."""
        out, self._submitted = self._submitted, []
        return out


class ReaderFile(PageFile):
    """A reader's database file (rule 3): opened read-only, reads at its pinned read point."""

    def __init__(self, source: PageSource) -> None:
        super().__init__(source)
        self.read_point: int | None = None
        self._page0_image: bytes | None = None  # page 0 at the read point

    def xLock(self, level: int) -> None:
        if self.lock == LOCK_NONE and level >= LOCK_SHARED:
            self.read_point = self.source.pin()
            self._page0_image = None
        super().xLock(level)

    def xUnlock(self, level: int) -> None:
        if level == LOCK_NONE:
            self._unpin()
        super().xUnlock(level)

    def _unpin(self) -> None:
        if self.read_point is not None:
            read_point, self.read_point = self.read_point, None
            self._page0_image = None
            self.source.unpin(read_point)

    def _page0(self) -> bytes:
        if self._page0_image is None:
            image = self._fetch([0])[0]
            if self.read_point is None:
                return image  # no read transaction (SQLite reads the header when it opens): nothing to keep
            self._page0_image = image
        return self._page0_image

    def _fetch(self, page_nos: list[int]) -> list[bytes]:
        if self.read_point is not None:
            return self.source.read_at(page_nos, self.read_point)
        read_point = self.source.pin()
        try:
            return self.source.read_at(page_nos, read_point)
        finally:
            self.source.unpin(read_point)

    def xWrite(self, data: bytes, offset: int) -> None:
        raise SqlReadOnly("a reader connection cannot write")

    def xTruncate(self, newsize: int) -> None:
        raise SqlReadOnly("a reader connection cannot write")

    def xSync(self, flags: int) -> None:
        return None

    def xClose(self) -> None:
        self._unpin()
        super().xClose()


class MemoryFile:
    """A temporary file SQLite asks for (sorting, temp tables): in memory, gone at close."""

    def __init__(self) -> None:
        self.data = bytearray()

    def xRead(self, amount: int, offset: int) -> bytes:
        return bytes(self.data[offset : offset + amount])

    def xWrite(self, data: bytes, offset: int) -> None:
        if offset > len(self.data):
            self.data.extend(bytes(offset - len(self.data)))
        self.data[offset : offset + len(data)] = data

    def xFileSize(self) -> int:
        return len(self.data)

    def xTruncate(self, newsize: int) -> None:
        del self.data[newsize:]

    def xSync(self, flags: int) -> None:
        return None

    def xLock(self, level: int) -> None:
        return None

    def xUnlock(self, level: int) -> None:
        return None

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, pointer: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        return 0

    def xClose(self) -> None:
        self.data = bytearray()
