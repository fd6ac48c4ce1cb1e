"""A storage node's LMDB environment: opening it, its one writer and many readers, growing it, and
what a failing disk becomes.

Rules (this module owns them; `storage/store/` keeps the segments in it):
1. One environment per node, opened in the process that uses it, with the
   named tables of `TABLES`. Every write transaction is synced when it commits
   (`sync=True`, `metasync=True`).
2. Writes go through `write(fn, *args)`: one at a time; on MapFullError the
   transaction is aborted, the map doubles (up to MAP_SIZE_MAX_BYTES) and `fn`
   runs again from the start, so `fn` must not touch in-memory state before it
   returns.
3. Readers enter through `read()`. Growing the map, reopening or replacing the
   environment needs no transaction open in the process: `ResizeGate` waits for
   the readers inside and holds new ones meanwhile.
4. A failing disk is reported, never a traceback:
   - LMDB's corruption errors (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID,
     MDB_VERSION_MISMATCH, a bad reader slot) mark the environment `failed`:
     every later read or write raises `DiskFailed` (DATA_LOSS) until the owner
     replaces it with a fresh one (`replace`, which moves the old files aside);
   - a write that fails for want of space (ENOSPC, EDQUOT, or an I/O error
     while the file system is nearly full: less than DISK_FULL_FREE_BYTES and
     DISK_FULL_FREE_FRACTION of it free; LMDB reports a short write as EIO)
     raises `DiskFull` (RESOURCE_EXHAUSTED): nothing was stored, the
     environment stays usable, and the condition clears at a commit that
     succeeds once room is back (DISK_RESUME_FREE_BYTES or
     DISK_RESUME_FREE_FRACTION free: a little room freed inside the file does
     not count, or the condition would flap);
   - any other I/O error raises `DiskFailed` and marks the disk `io_error`
     (the environment stays open: a later commit that succeeds clears it);
   - MDB_PANIC (LMDB could not write its meta page) reopens the same files:
     their last committed state is intact.
   Each change of condition is logged once, with a sentence; `condition` says
   where the disk stands for status and heartbeats.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import lmdb

from sixfold.storage.errors import DiskFailed, DiskFull, StorageError, Unavailable

log = logging.getLogger(__name__)

TABLES = (b"meta", b"segments", b"segments_copy", b"records", b"page_index", b"versions")
MAX_DBS = 8
MAP_SIZE_DEFAULT_BYTES = 1 << 30
MAP_SIZE_MAX_BYTES = 1 << 40
# An I/O error while this little room is left on the data directory's file system is a full disk
# (either bound: a small file system counts by the fraction).
DISK_FULL_FREE_BYTES = 64 * 1024 * 1024
DISK_FULL_FREE_FRACTION = 0.05
# A full disk counts as fine again once this much is free (either bound).
DISK_RESUME_FREE_BYTES = 128 * 1024 * 1024
DISK_RESUME_FREE_FRACTION = 0.10
CORRUPTION_ERRORS: tuple[type[BaseException], ...] = (
    lmdb.CorruptedError,
    lmdb.PageNotFoundError,
    lmdb.InvalidError,
    lmdb.VersionMismatchError,
    lmdb.BadRslotError,
    lmdb.IncompatibleError,
)
# A read transaction has no child: MDB_BAD_TXN there means it met a bad page and went invalid.
READ_CORRUPTION_ERRORS: tuple[type[BaseException], ...] = (*CORRUPTION_ERRORS, lmdb.BadTxnError)
_SPACE_WORDS = ("no space left", "disk quota exceeded", "file too large")

# Conditions (`LmdbEnvironment.condition`).
OK = "ok"
FULL = "disk_full"
IO_ERROR = "io_error"
FAILED = "failed"


class ResizeGate:
    """Readers share the environment; the writer takes it alone to grow the map or swap the environment."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._resizing = False

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._resizing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def resizing(self) -> Iterator[None]:
        with self._cond:
            self._resizing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._resizing = False
                self._cond.notify_all()


@dataclass(frozen=True)
class DiskCondition:
    state: str  # OK, FULL, IO_ERROR or FAILED
    detail: str = ""
    since_s: float = 0.0  # time.monotonic() when it began


def move_aside(path: str) -> None:
    """Keep the last failed environment for a post-mortem (`<path>.failed`), replacing an older one."""
    aside = f"{path}.failed"
    if os.path.exists(aside):
        shutil.rmtree(aside, ignore_errors=True)
    if os.path.exists(path):
        os.replace(path, aside)


class LmdbEnvironment:
    def __init__(
        self,
        path: str,
        map_size_bytes: int = MAP_SIZE_DEFAULT_BYTES,
        open_env: Callable[..., Any] = lmdb.open,
        discard: Callable[[str], None] | None = None,
        free_bytes: Callable[[str], tuple[int, int]] | None = None,
        zero_slack: bool = False,
    ) -> None:
        """`open_env` is `lmdb.open`; the simulator passes an in-memory stand-in with the same API (and its
        own `discard` and `free_bytes`). `zero_slack`: LMDB zeroes the unused part of each page it writes (a
        node that encrypts at rest: else the heap's leftovers, plaintext included, reach the file)."""
        self.path = path
        self.zero_slack = zero_slack
        self.map_size_bytes = map_size_bytes
        self._open_env = open_env
        self._discard = discard or move_aside
        self.real = open_env is lmdb.open  # the real LMDB (not the simulator's stand-in)
        self._real = self.real
        self._free_bytes = free_bytes or (_free_bytes_of if self._real else _plenty)
        self.gate = ResizeGate()
        self._write_lock = threading.RLock()  # one writer at a time, even if callers slip
        self._condition = DiskCondition(OK)
        self._condition_lock = threading.Lock()
        self.env: Any = None
        self.dbs: dict[bytes, Any] = {}
        self.replacements = 0  # call `open()` next

    # -- opening ---------------------------------------------------------------

    def open(self) -> None:
        """Open (or reopen) the files at `path`; a corrupt file raises DiskFailed and marks `failed`."""
        if self._real:
            os.makedirs(self.path, exist_ok=True)
        try:
            self.env = self._open_env(
                self.path,
                map_size=self.map_size_bytes,
                max_dbs=MAX_DBS,
                sync=True,
                metasync=True,
                readahead=False,
                # Without it LMDB copies whatever the heap held into a page's unused part, which on an
                # encrypting node can be plaintext a sealed row was made from (tests/test_encryption_store.py
                # found a page image in clear in data.mdb, in no row). In clear anyway without encryption.
                meminit=self.zero_slack,
            )
            self.dbs = {name: self.env.open_db(name) for name in TABLES}
        except CORRUPTION_ERRORS as error:
            raise self._corrupt(error) from None

    def close(self) -> None:
        if self.env is not None:
            with suppress(lmdb.Error):
                self.env.close()

    def replace(self) -> None:
        """Close the environment, move its files aside and open a fresh, empty one. Call on the writer
        thread; readers wait at the gate meanwhile."""
        with self._write_lock, self.gate.resizing():
            self.close()
            self._discard(self.path)
            self.env = None
            self.open()
        self.replacements += 1
        self._set(DiskCondition(OK), f"a fresh LMDB environment replaced the failed one at {self.path}")

    def reopen(self) -> None:
        """After MDB_PANIC: the same files again (their last committed state is intact)."""
        with self._write_lock, self.gate.resizing():
            self.close()
            self.env = None
            self.open()
        log.warning("LMDB environment at %s reopened after a fatal error", self.path)

    # -- condition ---------------------------------------------------------------

    @property
    def condition(self) -> DiskCondition:
        return self._condition

    @property
    def failed(self) -> bool:
        return self._condition.state == FAILED

    def _set(self, condition: DiskCondition, sentence: str) -> None:
        with self._condition_lock:
            before = self._condition
            if before.state == condition.state:
                return
            self._condition = condition
        if condition.state == OK:
            log.warning("disk: %s (was %s for %.1f s)", sentence, before.state, time.monotonic() - before.since_s)
        else:
            log.error("disk: %s", sentence)

    def fail(self, error: BaseException) -> DiskFailed:
        """The owner found the environment unusable (any LMDB error while it was being loaded)."""
        return self._corrupt(error)

    def _corrupt(self, error: BaseException) -> DiskFailed:
        sentence = (
            f"the LMDB environment at {self.path} is corrupt ({error}); nothing in it is served, and its "
            "segments are rebuilt from their peers in a fresh environment"
        )
        if not self.failed:
            self._set(DiskCondition(FAILED, sentence, time.monotonic()), sentence)
        return DiskFailed(sentence)

    def check_usable(self) -> None:
        if self.failed:
            raise DiskFailed(self._condition.detail)

    # -- transactions --------------------------------------------------------------

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A read transaction; corruption met while reading becomes DiskFailed (and marks the disk failed)."""
        self.check_usable()
        with self.gate.reading():
            try:
                with self.env.begin(buffers=False) as txn:
                    yield txn
            except READ_CORRUPTION_ERRORS as error:
                raise self._corrupt(error) from None
            except lmdb.PanicError:
                raise Unavailable(f"the LMDB environment at {self.path} must be reopened; retry") from None

    def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(txn, *args) in one synced write transaction (rule 2), errors as rule 4 says."""
        self.check_usable()
        with self._write_lock:
            while True:
                try:
                    with self.env.begin(write=True) as txn:
                        result = fn(txn, *args)
                except lmdb.MapFullError:
                    self._grow_map()
                    continue
                except StorageError:
                    raise
                except CORRUPTION_ERRORS as error:
                    raise self._corrupt(error) from None
                except lmdb.PanicError:
                    self.reopen()
                    raise Unavailable(f"the LMDB environment at {self.path} had to be reopened; retry") from None
                except lmdb.Error as error:
                    raise self._write_failed(error) from None
                if self._condition.state == IO_ERROR or (self._condition.state == FULL and self._room_again()):
                    self._set(DiskCondition(OK), f"writes to {self.path} succeed again")
                return result

    def _room_again(self) -> bool:
        free, total = self._free_bytes(self.path)
        return free >= min(DISK_RESUME_FREE_BYTES, total * DISK_RESUME_FREE_FRACTION)

    def _write_failed(self, error: lmdb.Error) -> StorageError:
        text = str(error)
        free, total = self._free_bytes(self.path)
        nearly_full = free < min(DISK_FULL_FREE_BYTES, total * DISK_FULL_FREE_FRACTION)
        if any(word in text.lower() for word in _SPACE_WORDS) or nearly_full:
            sentence = (
                f"the disk holding {self.path} is full ({free} bytes free; LMDB said: {text}); nothing "
                f"was stored, and writes resume once space is freed"
            )
            if self._condition.state != FULL:
                self._set(DiskCondition(FULL, sentence, time.monotonic()), sentence)
            return DiskFull(sentence, {"free_bytes": str(free)})
        sentence = (
            f"a write to {self.path} failed with an I/O error ({text}) although {free} bytes are free; "
            "nothing was stored"
        )
        if self._condition.state != IO_ERROR:
            self._set(DiskCondition(IO_ERROR, sentence, time.monotonic()), sentence)
        return DiskFailed(sentence)

    def _grow_map(self) -> None:
        current = self.env.info()["map_size"]
        new = current * 2
        if new > MAP_SIZE_MAX_BYTES:
            raise DiskFull(f"the LMDB map would exceed {MAP_SIZE_MAX_BYTES} bytes; this node is out of room")
        with self.gate.resizing():
            self.env.set_mapsize(new)
        log.info("LMDB map grown from %d to %d bytes", current, new)

    def probe(self) -> bool:
        """One tiny synced write (a disk that was full or failing may be fine again); True if it committed."""

        def put(txn: Any) -> None:
            txn.put(b"probe", str(time.monotonic()).encode(), db=self.dbs[b"meta"])

        try:
            self.write(put)
        except StorageError:
            return False
        return True

    # -- size -----------------------------------------------------------------------

    def used_bytes(self) -> int:
        info, stat = self.env.info(), self.env.stat()
        return int((info["last_pgno"] + 1) * stat["psize"])

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])


def _plenty(path: str) -> tuple[int, int]:
    return 1 << 50, 1 << 51


def _free_bytes_of(path: str) -> tuple[int, int]:
    """(bytes free to an unprivileged writer, the file system's size) of the file system holding `path`."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0, 1  # cannot tell: an I/O error then counts as a full disk, the cautious reading
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
