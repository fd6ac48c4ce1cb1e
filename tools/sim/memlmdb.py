"""A deterministic in-memory stand-in for the part of py-lmdb (3.0) that `storage/store/` uses: the simulator's disk.

`SegmentStore(path, open_env=disk.open)` runs the real store on it. The disk
(`MemDisk`) keeps, per path, only what was committed: every commit is durable
(the store opens with `sync=True`), nothing else is. A crash is dropping the
store and opening the same path again (or `MemDisk.crash(path)`): the new
`MemEnvironment` sees exactly the committed state; the old one's open
transactions are rolled back and it raises `lmdb.Error` from then on, so a
zombie write from the dead "process" cannot land. Faults and checks work on
the committed state without a transaction: `rot` flips a byte of a stored
value; `keys`/`get`/`items` read.

Rules (each checked against the real `lmdb` module by tests/test_memlmdb.py; the real store on
the stand-in by tests/test_memlmdb_store.py):

1. A named database is a sorted map from bytes to bytes in LMDB's default
   bytewise key order. Keys are 1..511 bytes (`BadValsizeError` otherwise);
   keys and values are bytes-like, `str` is a `TypeError`.
2. A read transaction sees the state committed when it began, whatever commits
   later. A write transaction sees its own writes. One write transaction per
   environment at a time: a second is a programmer error (`AssertionError`;
   LMDB would block the thread forever).
3. A nested write transaction (`begin(write=True, parent=txn)`) sees its
   parent's writes; committing it hands them to the parent, aborting it undoes
   them. While it is open the parent refuses `get`/`put`/`delete`/`cursor`
   (`BadTxnError`); finishing the parent first aborts the open child, as
   py-lmdb does. `with env.begin(...) as txn:` commits on a normal exit and
   aborts when the block raises; `abort()` of a finished transaction does
   nothing, `commit()` raises `lmdb.Error`.
4. Cursors follow LMDB's own state machine on a one-leaf-page tree (item
   index and the C_INITIALIZED / C_EOF / C_DEL flags, including the patch
   py-lmdb applies to its bundled LMDB 0.9.36) and py-lmdb's layer above it
   (the cached key/value refreshed after the transaction mutates, the
   `positioned` flag, iterators that stop once the cursor is unpositioned).
   So: unpositioned `next()` is `first()` and `prev()` is `last()`;
   `set_range` past the end returns False and leaves the cursor past the end
   (`prev()` then gives the last item); `delete()` moves to the next item and
   after deleting the last one `key()` is b""; a cursor whose item was deleted
   elsewhere in the transaction moves to the next one; inserts and deletes
   keep the transaction's other cursors on their items; aborting a nested
   transaction puts the cursors back where they were.
5. Map size: a write transaction's data (key plus value bytes, rounded up to
   pages, plus two meta pages) may not exceed the map: `MapFullError`, after
   which the transaction can only abort (`BadTxnError`), as in LMDB.
   `set_mapsize` grows it (never below the data stored; refused while a write
   transaction is open); reopening uses the size asked for, never below the
   data stored. `info()` (`map_size`, `last_pgno`, `last_txnid`) and
   `stat()['psize']` follow from that.
6. Deterministic: no clock, no threads, no randomness except from a seeded
   `random.Random` a caller passes; every iteration order is fixed.

Not emulated: dupsort/integerkey/reverse-key databases; `Cursor.put`/
`replace`/`pop`/`getmulti`, `Transaction.drop`/`replace`/`pop`/`stat`,
`copy`, readers; `sync=False` (refused: there is no lost-tail crash model);
LMDB's page accounting (sizes are key+value bytes); the main database listing
the named ones. Where LMDB reads freed memory, the stand-in does not imitate
it: a cursor that has not moved since another transaction of its write chain
(a nested one, or the parent through a cursor) changed pages returns the bytes
it last read, where py-lmdb returns whatever the page now holds. A tree of
several pages can keep a stale C_EOF flag that the one-page model does not.

Cost: a write transaction changes the committed tables in place and keeps an
undo log (O(changes) per commit); a table is copied only while a read
transaction that began earlier still holds it, or when a reader or `MemDisk`
inspection needs the committed state while a write transaction is open.

Modules: this one holds the disk (`MemDisk`, `open_mem_env`) and re-exports the rest;
memlmdb_env.py the environment, memlmdb_txn.py transactions, cursors and database handles,
memlmdb_cursor_state.py LMDB's cursor state machine, memlmdb_chain.py an open write transaction's
working tables and undo logs, memlmdb_table.py tables, limits, error codes and a path's committed state.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

import lmdb

from sixfold.tools.sim.memlmdb_env import MemEnvironment
from sixfold.tools.sim.memlmdb_table import (
    _EMPTY,
    MAP_SIZE_DEFAULT_BYTES,
    PAGE_SIZE_BYTES,
    _db_key,
    _DiskFile,
    _key_bytes,
    _pages,
    _Table,
)
from sixfold.tools.sim.memlmdb_txn import MemCursor, MemDatabase, MemTransaction

__all__ = [
    "MAP_SIZE_DEFAULT_BYTES",
    "MemCursor",
    "MemDatabase",
    "MemDisk",
    "MemEnvironment",
    "MemTransaction",
    "open_mem_env",
]


class MemDisk:
    """The simulator's disk: committed LMDB state per path, crash-proof by construction.

    `open` is the `open_env` seam of `SegmentStore`. Everything here is keyed by
    path (a node's data directory); paths never opened read as empty.
    """

    def __init__(self) -> None:
        self._files: dict[str, _DiskFile] = {}

    # -- the seam ---------------------------------------------------------------

    def open(self, path: str, **options: Any) -> MemEnvironment:
        """`lmdb.open(path, **options)` on this disk. Opening a path that is still open takes it over:
        the previous environment is crashed first (see `crash`)."""
        return MemEnvironment(self, path, **options)

    # -- faults -----------------------------------------------------------------

    def crash(self, path: str | None = None) -> None:
        """The process holding `path` (every path when None) dies: its open transactions are lost, its
        environment object raises `lmdb.Error` from now on; what it committed stays."""
        for name in sorted(self._files) if path is None else [path]:
            file = self._files.get(name)
            if file is not None and file.env is not None:
                file.env._shut(crashed=True)

    def wipe(self, path: str) -> None:
        """The disk at `path` is replaced by an empty one (after a crash of whatever held it)."""
        self.crash(path)
        self._files.pop(path, None)

    def corrupt(self, path: str, tables: Iterable[bytes | str] | None = None) -> None:
        """The tree at `path` is damaged (bytes overwritten inside the file): from now on every access to
        `tables` (None: to anything) raises `lmdb.CorruptedError`, as LMDB does when it meets a page of the
        wrong type, until the path is wiped (a fresh environment)."""
        file = self._file(path, create=True)
        file.corrupt = "mdb_cursor_get: MDB_CORRUPTED: Located page was wrong type"
        file.corrupt_tables = None if tables is None else frozenset(_db_key(t) for t in tables)

    def is_corrupt(self, path: str) -> bool:
        file = self._files.get(path)
        return file is not None and file.corrupt is not None

    def overwrite(self, path: str, db_name: bytes | str, key: bytes | str, value: bytes) -> None:
        """Replace one committed value outright (a forged copy: `rot` flips a byte, this writes any bytes).
        Refused while a write transaction is open on `path`."""
        file = self._files.get(path)
        name, key = _db_key(db_name), _key_bytes(key)
        if file is None or (file.env is not None and file.env._chain is not None):
            raise ValueError(f"cannot overwrite on {path!r}: it does not exist or a write transaction is open on it")
        table = file.tables.get(name)
        if table is None or key not in table.values:
            raise KeyError(f"{path}: database {name!r} holds no key {key.hex()}")
        fresh = table.copy()  # copy-on-write: an open reader keeps its snapshot
        fresh.values[key] = bytes(value)
        file.tables = {**file.tables, name: fresh}

    def rot(
        self,
        path: str,
        db_name: bytes | str,
        key: bytes | str,
        byte_index: int | None = None,
        rng: random.Random | None = None,
    ) -> int:
        """Flip bits of one byte of a committed value; returns the byte's index.

        The byte is `byte_index`, else one drawn from `rng` (no hidden randomness:
        one of the two is required). The flip mask is 0x01, or drawn from `rng`
        when one is given. Refused while a write transaction is open on `path`.
        """
        file = self._files.get(path)
        name, key = _db_key(db_name), _key_bytes(key)
        if file is None or (file.env is not None and file.env._chain is not None):
            raise ValueError(f"cannot rot {path!r}: it does not exist or a write transaction is open on it")
        table = file.tables.get(name)
        if table is None or key not in table.values:
            raise KeyError(f"{path}: database {name!r} holds no key {key.hex()}")
        value = table.values[key]
        if not value:
            raise ValueError(f"{path}: the value under {key.hex()} is empty; there is no byte to rot")
        if byte_index is None:
            if rng is None:
                raise ValueError("rot needs byte_index or a seeded rng")
            byte_index = rng.randrange(len(value))
        if not 0 <= byte_index < len(value):
            raise IndexError(f"byte {byte_index} is outside the {len(value)}-byte value")
        mask = rng.randrange(1, 256) if rng is not None else 0x01
        rotten = bytearray(value)
        rotten[byte_index] ^= mask
        fresh = table.copy()  # copy-on-write: an open reader keeps its snapshot
        fresh.values[key] = bytes(rotten)
        file.tables = {**file.tables, name: fresh}
        return byte_index

    # -- inspection (committed state, no transaction) -----------------------------

    def paths(self) -> list[str]:
        return sorted(self._files)

    def db_names(self, path: str) -> list[bytes]:
        file = self._files.get(path)
        return sorted(n for n in file.committed() if n is not None) if file else []

    def keys(self, path: str, db_name: bytes | str | None) -> list[bytes]:
        return list(self._table(path, db_name).keys)

    def items(self, path: str, db_name: bytes | str | None) -> list[tuple[bytes, bytes]]:
        table = self._table(path, db_name)
        return [(k, table.values[k]) for k in table.keys]

    def get(self, path: str, db_name: bytes | str | None, key: bytes | str) -> bytes | None:
        return self._table(path, db_name).values.get(_key_bytes(key))

    def used_bytes(self, path: str) -> int:
        """What `SegmentStore.used_bytes()` would report for `path`."""
        file = self._files.get(path)
        return _pages(file.data_bytes()) * PAGE_SIZE_BYTES if file else 0

    def _table(self, path: str, db_name: bytes | str | None) -> _Table:
        file = self._files.get(path)
        return file.committed().get(_db_key(db_name), _EMPTY) if file else _EMPTY

    def _file(self, path: str, create: bool) -> _DiskFile:
        file = self._files.get(path)
        if file is None:
            if not create:
                raise lmdb.Error(f"{path}: No such file or directory")
            file = self._files[path] = _DiskFile()
        return file


def open_mem_env(path: str, disk: MemDisk | None = None, **options: Any) -> MemEnvironment:
    """`lmdb.open` on `disk` (a fresh private one when None, gone with the environment)."""
    return (disk if disk is not None else MemDisk()).open(path, **options)
