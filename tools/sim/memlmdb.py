"""A deterministic in-memory stand-in for the part of py-lmdb (3.0) that `storage/store.py` uses: the simulator's disk.

`SegmentStore(path, open_env=disk.open)` runs the real store on it. The disk
(`MemDisk`) keeps, per path, only what was committed: every commit is durable
(the store opens with `sync=True`), nothing else is. A crash is dropping the
store and opening the same path again (or `MemDisk.crash(path)`): the new
`MemEnvironment` sees exactly the committed state; the old one's open
transactions are rolled back and it raises `lmdb.Error` from then on, so a
zombie write from the dead "process" cannot land. Faults and checks work on
the committed state without a transaction: `rot` flips a byte of a stored
value; `keys`/`get`/`items` read.

Rules (each checked against the real `lmdb` module by tests/test_memlmdb.py):

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
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lmdb

PAGE_SIZE_BYTES = 4096
META_PAGES = 2
MAP_SIZE_DEFAULT_BYTES = 10 * 1024 * 1024  # py-lmdb's default map_size
KEY_SIZE_MAX_BYTES = 511
MAX_READERS = 126

_INVALID = "Attempt to operate on closed/deleted/dropped object."
_BAD_TXN = "MDB_BAD_TXN: Transaction must abort, has a child, or is invalid"
_BAD_VALSIZE = "MDB_BAD_VALSIZE: Unsupported size of key/DB name/data, or wrong DUPFIXED size"
_NOT_FOUND = "MDB_NOTFOUND: No matching key/data pair found"
_MAP_FULL = "MDB_MAP_FULL: Environment mapsize limit reached"

# Return codes of the emulated C functions.
_OK, _NOTFOUND, _EINVAL, _EACCES, _BAD_VALSIZE_RC, _BAD_TXN_RC, _KEYEXIST = range(7)
# Cursor operations (MDB_cursor_op).
_GET_CURRENT, _SET_KEY, _SET_RANGE, _FIRST, _LAST, _NEXT, _PREV = range(7)

_ABSENT = object()  # undo-log marker: the key did not exist


def _raise(where: str, rc: int) -> None:
    if rc == _NOTFOUND:
        raise lmdb.NotFoundError(f"{where}: {_NOT_FOUND}")
    if rc == _EINVAL:
        raise lmdb.InvalidParameterError(f"{where}: Invalid argument")
    if rc == _EACCES:
        raise lmdb.ReadonlyError(f"{where}: Permission denied")
    if rc == _BAD_VALSIZE_RC:
        raise lmdb.BadValsizeError(f"{where}: {_BAD_VALSIZE}")
    if rc == _BAD_TXN_RC:
        raise lmdb.BadTxnError(f"{where}: {_BAD_TXN}")
    raise AssertionError(f"{where}: unexpected return code {rc}")


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        raise TypeError("Won't implicitly convert Unicode to bytes; use .encode()")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"expected a bytes-like object, not {type(value).__name__}")


def _db_key(name: bytes | str | None) -> bytes | None:
    return name.encode() if isinstance(name, str) else name


def _key_bytes(key: bytes | str) -> bytes:
    """Keys given to the disk's inspection helpers: bytes, or str taken as UTF-8."""
    return key.encode() if isinstance(key, str) else _as_bytes(key)


def _pages(data_bytes: int) -> int:
    """Pages an environment holding `data_bytes` of keys and values is taken to use."""
    return META_PAGES + -(-data_bytes // PAGE_SIZE_BYTES)


class _Table:
    """One named database: keys kept sorted (bytewise, as LMDB's default comparator) beside a dict."""

    __slots__ = ("data_bytes", "keys", "readers", "values")

    def __init__(
        self, keys: list[bytes] | None = None, values: dict[bytes, bytes] | None = None, data_bytes: int = 0
    ) -> None:
        self.keys = keys if keys is not None else []
        self.values = values if values is not None else {}
        self.data_bytes = data_bytes
        self.readers = 0  # open read transactions whose snapshot holds this very object

    def copy(self) -> _Table:
        return _Table(list(self.keys), dict(self.values), self.data_bytes)

    def set(self, key: bytes, value: bytes) -> None:
        """Insert or overwrite; no cursor bookkeeping (callers do it)."""
        old = self.values.get(key)
        if old is None:
            bisect.insort(self.keys, key)
            self.data_bytes += len(key) + len(value)
        else:
            self.data_bytes += len(value) - len(old)
        self.values[key] = value

    def remove(self, key: bytes) -> None:
        old = self.values.pop(key)
        del self.keys[bisect.bisect_left(self.keys, key)]
        self.data_bytes -= len(key) + len(old)


_EMPTY = _Table()  # what a database that does not exist yet reads as; never written


class _DiskFile:
    """One path on the fake disk: the committed tables (never changed in place while a reader holds one)."""

    def __init__(self) -> None:
        self.tables: dict[bytes | None, _Table] = {None: _Table()}
        self.last_txnid = 0
        self.env: MemEnvironment | None = None  # the environment open on this path, if any
        # `MemDisk.corrupt`: accesses fail as LMDB's do on a bad page: to the tables named (None: every access)
        self.corrupt: str | None = None
        self.corrupt_tables: frozenset[bytes | None] | None = None

    def data_bytes(self) -> int:
        """Bytes of keys and values committed."""
        return sum(t.data_bytes for t in self.committed().values())

    def committed(self) -> dict[bytes | None, _Table]:
        """The committed tables, separated first from a write transaction working on them in place."""
        env = self.env
        if env is not None and env._chain is not None:
            env._chain.materialize()
        return self.tables


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


class MemDatabase:
    """A database handle (`lmdb._Database`)."""

    __slots__ = ("_env", "name")

    def __init__(self, env: MemEnvironment, name: bytes | None) -> None:
        self._env, self.name = env, name

    def __repr__(self) -> str:
        return f"MemDatabase({self.name!r})"


class MemEnvironment:
    """`lmdb.Environment` over a `MemDisk` path."""

    def __init__(
        self,
        disk: MemDisk,
        path: str,
        map_size: int = MAP_SIZE_DEFAULT_BYTES,
        subdir: bool = True,
        readonly: bool = False,
        metasync: bool = True,
        sync: bool = True,
        map_async: bool = False,
        mode: int = 0o755,
        create: bool = True,
        readahead: bool = True,
        writemap: bool = False,
        meminit: bool = True,
        max_readers: int = MAX_READERS,
        max_dbs: int = 0,
        max_spare_txns: int = 1,
        lock: bool = True,
    ) -> None:
        if not (sync and metasync) or map_async:
            raise NotImplementedError("only synced commits are emulated (sync=True, metasync=True, map_async=False)")
        file = disk._file(path, create=create and not readonly)
        if file.env is not None:
            file.env._shut(crashed=True)  # a new open of the path means whoever held it died
        self._disk, self._path, self._file = disk, path, file
        self._readonly = readonly
        self._max_dbs = max_dbs
        self._map_size = max(map_size, _pages(file.data_bytes()) * PAGE_SIZE_BYTES)
        self._dbs: dict[bytes | None, MemDatabase] = {None: MemDatabase(self, None)}
        self._txns: dict[MemTransaction, None] = {}  # open ones, in the order they began
        self._chain: _WriteChain | None = None  # the open write transaction with its nested ones
        self._closed: str | None = None  # why the environment no longer works
        file.env = self

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        if self._closed is None:
            self._shut(crashed=False)

    def _shut(self, crashed: bool) -> None:
        for txn in list(self._txns):
            if txn._alive and txn._parent is None:
                txn._end(commit=False)
        self._closed = (
            f"{_INVALID} (the environment at {self._path!r} crashed or was opened again)" if crashed else _INVALID
        )
        if self._file.env is self:
            self._file.env = None

    def _check_open(self) -> None:
        if self._closed is not None:
            raise lmdb.Error(self._closed)
        if self._file.corrupt is not None and self._file.corrupt_tables is None:
            raise lmdb.CorruptedError(self._file.corrupt)

    def __enter__(self) -> MemEnvironment:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- databases and transactions ------------------------------------------------

    def open_db(
        self,
        key: bytes | None = None,
        txn: MemTransaction | None = None,
        reverse_key: bool = False,
        dupsort: bool = False,
        create: bool = True,
        integerkey: bool = False,
        integerdup: bool = False,
        dupfixed: bool = False,
    ) -> MemDatabase:
        self._check_open()
        if txn is not None:
            txn._check_alive()
        if reverse_key or dupsort or integerkey or integerdup or dupfixed:
            raise NotImplementedError("only plain databases (bytewise keys, one value per key) are emulated")
        name = None if key is None else _as_bytes(key)
        handle = self._dbs.get(name)
        if handle is not None:
            return handle
        if len(self._dbs) - 1 >= self._max_dbs:
            raise lmdb.DbsFullError("mdb_dbi_open: MDB_DBS_FULL: Environment maxdbs limit reached")
        exists = name in (txn._view() if txn is not None else self._file.committed())
        if not exists:
            if not create:
                raise lmdb.NotFoundError(f"mdb_dbi_open: {_NOT_FOUND}")
            if self._readonly or (txn is not None and not txn._write):
                raise lmdb.ReadonlyError("mdb_dbi_open: Permission denied")
            if txn is not None:
                txn._check_usable("mdb_dbi_open")
                txn._chain.create(name)
            else:
                assert self._chain is None, "open_db without txn= while a write transaction is open would deadlock"
                self._file.tables = {**self._file.tables, name: _Table()}
                self._file.last_txnid += 1  # py-lmdb creates it in a write transaction of its own
        handle = self._dbs[name] = MemDatabase(self, name)
        return handle

    def begin(
        self,
        db: MemDatabase | None = None,
        parent: MemTransaction | None = None,
        write: bool = False,
        buffers: bool = False,
    ) -> MemTransaction:
        self._check_open()
        if db is not None and db._env is not self:
            raise lmdb.Error("Database handle belongs to another Environment.")
        if parent is not None:
            if parent._env is not self:
                raise lmdb.Error("The parent transaction belongs to another Environment.")
            if not (write and parent._write):
                raise lmdb.InvalidParameterError("Read-only transactions cannot be nested.: Invalid argument")
            parent._check_alive()
            parent._check_usable("mdb_txn_begin")
            return MemTransaction(self, db, parent._chain, parent, True, buffers)
        if write:
            if self._readonly:
                raise lmdb.ReadonlyError("mdb_txn_begin: Permission denied")
            if self._chain is not None:
                raise AssertionError(
                    f"a write transaction is already open on {self._path!r}: LMDB would block this thread forever"
                )
            self._chain = _WriteChain(self)
            return MemTransaction(self, db, self._chain, None, True, buffers)
        return MemTransaction(self, db, None, None, False, buffers)

    # -- size -------------------------------------------------------------------

    def info(self) -> dict[str, int]:
        self._check_open()
        return {
            "map_addr": 0,
            "map_size": self._map_size,
            "last_pgno": _pages(self._file.data_bytes()) - 1,
            "last_txnid": self._file.last_txnid,
            "max_readers": MAX_READERS,
            "num_readers": sum(1 for t in self._txns if not t._write),
        }

    def stat(self) -> dict[str, int]:
        self._check_open()
        tables = self._file.committed()
        main = tables[None]
        leaf_pages = -(-main.data_bytes // PAGE_SIZE_BYTES)
        return {
            "psize": PAGE_SIZE_BYTES,
            "depth": 1 if main.keys or len(tables) > 1 else 0,
            "branch_pages": 0,
            "leaf_pages": leaf_pages,
            "overflow_pages": 0,
            "entries": len(main.keys) + len(tables) - 1,
        }

    def set_mapsize(self, map_size: int) -> None:
        self._check_open()
        if self._chain is not None:
            raise lmdb.Error("Cannot set_mapsize while a write transaction is active")
        used = _pages(self._file.data_bytes()) * PAGE_SIZE_BYTES
        self._map_size = max(map_size or self._map_size, used)

    # -- odds and ends that callers may touch ------------------------------------------

    def path(self) -> str:
        self._check_open()
        return self._path

    def max_key_size(self) -> int:
        return KEY_SIZE_MAX_BYTES

    def sync(self, force: bool = False) -> None:
        self._check_open()


class _WriteChain:
    """A write transaction and the nested ones inside it: the working tables they share.

    Tables are written in place. One the committed state still shares ("in place")
    has its changes logged in `root_undo`, so an abort or a reader beginning
    mid-transaction can get the committed content back; one a reader holds is
    copied first ("owned"). Each nested transaction logs its own changes to undo
    them if it aborts.
    """

    def __init__(self, env: MemEnvironment) -> None:
        self.env = env
        self.file = env._file
        self.tables: dict[bytes | None, _Table] = dict(self.file.tables)
        self.owned: set[bytes | None] = set()
        self.in_place: set[bytes | None] = set()
        self.root_undo: list[tuple[bytes | None, bytes, Any]] = []
        self.data_bytes = sum(t.data_bytes for t in self.tables.values())
        self.cursors: dict[MemCursor, None] = {}  # every open cursor of the chain's transactions (LMDB tracks them)
        self.innermost: MemTransaction | None = None
        self.dirty = False

    # -- tables -------------------------------------------------------------------

    def create(self, name: bytes | None) -> None:
        if name not in self.tables:
            self.tables[name] = _Table()
            self.owned.add(name)
            self.dirty = True

    def writable(self, name: bytes | None) -> _Table:
        table = self.tables.get(name)
        if name in self.owned or name in self.in_place:
            assert table is not None
            return table
        if table is None:
            self.create(name)
            return self.tables[name]
        if table.readers == 0 and self.file.tables.get(name) is table:
            self.in_place.add(name)
            return table
        table = self.tables[name] = table.copy()
        self.owned.add(name)
        return table

    def materialize(self) -> None:
        """Give the committed state back its own copies of the tables written in place so far."""
        if not self.in_place:
            return
        committed = dict(self.file.tables)
        for name in self.in_place:
            committed[name] = committed[name].copy()
        _replay(committed, self.root_undo)
        self.file.tables = committed
        self.owned |= self.in_place
        self.in_place.clear()
        self.root_undo.clear()

    def _log(self, name: bytes | None, key: bytes, old: Any) -> None:
        if name in self.in_place:
            self.root_undo.append((name, key, old))
        txn = self.innermost
        if txn is not None and txn._undo is not None:
            txn._undo.append((name, key, old))
        self.dirty = True

    # -- the two mutations, with LMDB's cursor bookkeeping ------------------------------

    def put(
        self, txn: MemTransaction, name: bytes | None, key: bytes, value: bytes, overwrite: bool, append: bool
    ) -> int:
        view = self.tables.get(name, _EMPTY)
        i = bisect.bisect_left(view.keys, key)
        exists = i < len(view.keys) and view.keys[i] == key
        if append and view.keys and key <= view.keys[-1]:
            return _KEYEXIST
        if exists and not overwrite:
            return _KEYEXIST
        old = view.values[key] if exists else None
        grown = self.data_bytes + (len(value) - len(old) if old is not None else len(key) + len(value))
        if _pages(grown) * PAGE_SIZE_BYTES > self.env._map_size:
            txn._error = True
            raise lmdb.MapFullError(f"mdb_put: {_MAP_FULL}")
        table = self.writable(name)  # the same content as `view`: index i still holds
        self._log(name, key, old if old is not None else _ABSENT)
        if exists:
            table.data_bytes += len(value) - len(old)
        else:
            table.keys.insert(i, key)
            table.data_bytes += len(key) + len(value)
        table.values[key] = value
        self.data_bytes = grown
        if not exists:
            for c in self.cursors:
                if c._name == name and c._init and c._ki >= i:
                    c._ki += 1
        return _OK

    def delete_at(self, name: bytes | None, i: int, mc: MemCursor | None) -> None:
        """mdb_cursor_del0 on the item at index `i`, for cursor `mc` (None: txn.delete's own cursor)."""
        table = self.writable(name)
        key = table.keys[i]
        old = table.values[key]
        self._log(name, key, old)
        del table.keys[i]
        del table.values[key]
        table.data_bytes -= len(key) + len(old)
        self.data_bytes -= len(key) + len(old)
        count = len(table.keys)
        same_db = [c for c in self.cursors if c._name == name]
        for c in same_db:
            if c is not mc and c._init:
                if c._ki == i:
                    c._del = True
                elif c._ki > i:
                    c._ki -= 1
        if count == 0:  # mdb_rebalance: the tree is empty, every cursor on it unpositioned
            for c in same_db:
                c._init = False
            if mc is not None:
                mc._eof = True
            return
        for c in same_db:
            if c._init and c._ki >= i and c._ki >= count:
                c._eof = True  # past the last item: no right sibling
        if mc is not None:
            mc._del = True

    def undo(self, entries: list[tuple[bytes | None, bytes, Any]]) -> None:
        for name, key, old in reversed(entries):
            table = self.tables[name]
            if old is _ABSENT:
                if key in table.values:
                    self.data_bytes -= len(key) + len(table.values[key])
                    table.remove(key)
            else:
                prior = table.values.get(key)
                self.data_bytes += len(old) - len(prior) if prior is not None else len(key) + len(old)
                table.set(key, old)

    def commit(self) -> None:
        file = self.file
        if self.dirty:
            file.tables = self.tables
            file.last_txnid += 1
        self.root_undo.clear()
        self.in_place.clear()

    def abort(self) -> None:
        _replay(self.tables, self.root_undo)  # the tables written in place get their committed content back
        self.root_undo.clear()
        self.in_place.clear()


def _replay(tables: dict[bytes | None, _Table], undo: list[tuple[bytes | None, bytes, Any]]) -> None:
    """Undo logged changes, newest first: each key ends with the value it had before its oldest logged change."""
    for name, key, old in reversed(undo):
        table = tables[name]
        if old is not _ABSENT:
            table.set(key, old)
        elif key in table.values:
            table.remove(key)


class MemTransaction:
    """`lmdb.Transaction`."""

    def __init__(
        self,
        env: MemEnvironment,
        db: MemDatabase | None,
        chain: _WriteChain | None,
        parent: MemTransaction | None,
        write: bool,
        buffers: bool,
    ) -> None:
        self._env = env
        self._db = db if db is not None else env._dbs[None]
        self._chain = chain
        self._parent = parent
        self._write = write
        self._buffers = buffers
        self._alive = True
        self._error = False  # MDB_TXN_ERROR: only abort is left
        self._child: MemTransaction | None = None
        self._mutations = 0
        self._cursors: dict[MemCursor, None] = {}
        # A nested transaction logs what to undo and where the chain's cursors were.
        self._undo: list[tuple[bytes | None, bytes, Any]] | None = [] if parent is not None else None
        self._cursor_backup: list[tuple[MemCursor, tuple[bool, int, bool, bool]]] = []
        self._snapshot: dict[bytes | None, _Table] | None = None
        if chain is not None:
            if parent is not None:
                parent._child = self
                self._cursor_backup = [(c, (c._init, c._ki, c._eof, c._del)) for c in chain.cursors]
            chain.innermost = self
        else:
            self._snapshot = env._file.committed()
            for table in self._snapshot.values():
                table.readers += 1
        env._txns[self] = None

    # -- state checks ----------------------------------------------------------------

    def _check_alive(self) -> None:
        self._env._check_open()
        if not self._alive:
            raise lmdb.Error(_INVALID)

    def _blocked(self) -> bool:
        return self._error or self._child is not None

    def _check_usable(self, where: str) -> None:
        if self._blocked():
            raise lmdb.BadTxnError(f"{where}: {_BAD_TXN}")

    def _view(self) -> dict[bytes | None, _Table]:
        return self._chain.tables if self._chain is not None else self._snapshot  # type: ignore[return-value]

    def _db_name(self, db: MemDatabase | None) -> bytes | None:
        if db is None:
            db = self._db
        if db._env is not self._env:
            raise lmdb.Error("Database handle belongs to another Environment.")
        file = self._env._file
        if file.corrupt is not None and file.corrupt_tables is not None and db.name in file.corrupt_tables:
            raise lmdb.CorruptedError(file.corrupt)
        return db.name

    def _out(self, value: bytes) -> bytes | memoryview:
        return memoryview(value) if self._buffers else value

    # -- data --------------------------------------------------------------------------

    def get(self, key: bytes, default: Any = None, db: MemDatabase | None = None) -> Any:
        self._check_alive()
        name = self._db_name(db)
        key = _as_bytes(key)
        self._check_usable("mdb_get")
        if not key:
            _raise("mdb_get", _BAD_VALSIZE_RC)
        value = self._view().get(name, _EMPTY).values.get(key)
        return default if value is None else self._out(value)

    def put(
        self,
        key: bytes,
        value: bytes,
        dupdata: bool = True,
        overwrite: bool = True,
        append: bool = False,
        db: MemDatabase | None = None,
    ) -> bool:
        self._check_alive()
        name = self._db_name(db)
        key, value = _as_bytes(key), _as_bytes(value)
        self._mutations += 1
        if not self._write:
            _raise("mdb_put", _EACCES)
        self._check_usable("mdb_put")
        if not key or len(key) > KEY_SIZE_MAX_BYTES:
            _raise("mdb_put", _BAD_VALSIZE_RC)
        assert self._chain is not None and self._chain.innermost is self
        return self._chain.put(self, name, key, value, overwrite, append) == _OK

    def delete(self, key: bytes, value: bytes = b"", db: MemDatabase | None = None) -> bool:
        self._check_alive()
        name = self._db_name(db)
        key = _as_bytes(key)
        self._mutations += 1
        if not self._write:
            _raise("mdb_del", _EACCES)
        self._check_usable("mdb_del")
        if not key:
            _raise("mdb_del", _BAD_VALSIZE_RC)
        assert self._chain is not None
        table = self._chain.tables.get(name, _EMPTY)
        i = bisect.bisect_left(table.keys, key)
        if i == len(table.keys) or table.keys[i] != key:
            return False
        self._chain.delete_at(name, i, None)
        return True

    def cursor(self, db: MemDatabase | None = None) -> MemCursor:
        self._check_alive()
        name = self._db_name(db)
        self._check_usable("mdb_cursor_open")
        return MemCursor(self, name)

    # -- end ----------------------------------------------------------------------------

    def commit(self) -> None:
        self._check_alive()
        self._end(commit=True)

    def abort(self) -> None:
        if self._alive:  # py-lmdb 3.0: aborting a finished transaction does nothing
            self._end(commit=False)

    def __enter__(self) -> MemTransaction:
        self._check_alive()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._alive:
            return  # py-lmdb 3.0: leaving the block of an already finished transaction does nothing
        self._end(commit=exc_type is None)

    def _end(self, commit: bool) -> None:
        """Commit or abort; a failed commit (the transaction hit an error) aborts and raises BadTxnError."""
        if self._child is not None:
            self._child._end(commit=False)  # py-lmdb aborts an open child before finishing its parent
        failed = commit and self._error
        commit = commit and not self._error
        env, chain = self._env, self._chain
        for cursor in list(self._cursors):
            cursor._invalidate()
        if chain is None:
            assert self._snapshot is not None
            for table in self._snapshot.values():
                table.readers -= 1
            self._snapshot = None
        elif self._parent is not None:
            parent = self._parent
            if commit:
                if parent._undo is not None:
                    parent._undo.extend(self._undo or [])
            else:
                chain.undo(self._undo or [])
                for cursor, (init, ki, eof, deleted) in self._cursor_backup:
                    if cursor._alive:
                        cursor._init, cursor._ki, cursor._eof, cursor._del = init, ki, eof, deleted
            parent._child = None
            chain.innermost = parent
        else:
            if commit:
                chain.commit()
            else:
                chain.abort()
            chain.innermost = None
            env._chain = None
        self._alive = False
        self._undo = None
        self._cursor_backup = []
        env._txns.pop(self, None)
        if failed:
            raise lmdb.BadTxnError(f"mdb_txn_commit: {_BAD_TXN}")


class MemCursor:
    """`lmdb.Cursor`: LMDB's cursor state (`_init`, `_ki`, `_eof`, `_del`) under py-lmdb's cached view of it."""

    def __init__(self, txn: MemTransaction, name: bytes | None) -> None:
        self._txn = txn
        self._name = name
        self._alive = True
        # LMDB's MDB_cursor on a one-page tree.
        self._init = False  # C_INITIALIZED
        self._ki = 0  # index of the item on the page
        self._eof = False  # C_EOF
        self._del = False  # C_DEL: the item it was on was deleted; it already points at the next one
        # py-lmdb's CursorObject.
        self._positioned = False
        self._key = b""
        self._val = b""
        self._last_mutation = txn._mutations
        txn._cursors[self] = None
        if txn._chain is not None:
            txn._chain.cursors[self] = None

    def _invalidate(self) -> None:
        if self._alive:
            self._alive = False
            self._txn._cursors.pop(self, None)
            if self._txn._chain is not None:
                self._txn._chain.cursors.pop(self, None)

    def _check_alive(self) -> None:
        self._txn._env._check_open()
        if not self._alive:
            raise lmdb.Error(_INVALID)

    def _table(self) -> _Table:
        return self._txn._view().get(self._name, _EMPTY)

    def _effective_txn(self) -> MemTransaction:
        """LMDB moves a parent's cursors into its nested transaction while that is open."""
        chain = self._txn._chain
        return chain.innermost if chain is not None and chain.innermost is not None else self._txn

    # -- LMDB (mdb_cursor_get and friends, one leaf page) -------------------------------------

    def _mdb_get(self, op: int, key: bytes = b"") -> int:
        if self._effective_txn()._blocked():
            return _BAD_TXN_RC
        table = self._table()
        count = len(table.keys)
        if op == _GET_CURRENT:
            if not self._init:
                rc = _EINVAL
            elif count == 0 or self._ki >= count:
                self._ki = count
                rc = _NOTFOUND
            else:
                rc = _OK
        elif op in (_SET_KEY, _SET_RANGE):
            rc = self._mdb_set(table, key, op)
        elif op == _FIRST:
            rc = self._mdb_first(table)
        elif op == _LAST:
            rc = self._mdb_last(table)
        elif op == _NEXT:
            rc = self._mdb_next(table)
        else:
            assert op == _PREV
            rc = self._mdb_prev(table)
        self._del = False
        return rc

    def _mdb_first(self, table: _Table) -> int:
        if not self._init and not table.keys:
            return _NOTFOUND
        self._init, self._eof, self._ki = True, False, 0
        return _OK

    def _mdb_last(self, table: _Table) -> int:
        if not self._init and not table.keys:
            return _NOTFOUND
        self._init, self._eof, self._ki = True, True, len(table.keys) - 1
        return _OK

    def _mdb_next(self, table: _Table) -> int:
        if not self._init:
            if self._del:  # py-lmdb's cursor-next-prev-uninitialized.patch
                return _NOTFOUND
            return self._mdb_first(table)
        count = len(table.keys)
        if self._eof:
            if self._ki >= count - 1:
                return _NOTFOUND
            self._eof = False
        if self._del:
            self._del = False
            return _OK if self._ki < count else _NOTFOUND
        if self._ki + 1 >= count:
            self._eof = True
            return _NOTFOUND
        self._ki += 1
        return _OK

    def _mdb_prev(self, table: _Table) -> int:
        if not self._init:
            if self._del:  # py-lmdb's cursor-next-prev-uninitialized.patch
                return _NOTFOUND
            rc = self._mdb_last(table)
            if rc != _OK:
                return rc
            self._ki += 1
        self._eof = self._del = False
        if self._ki == 0:
            return _NOTFOUND
        self._ki -= 1
        return _OK

    def _mdb_set(self, table: _Table, key: bytes, op: int) -> int:
        if not key:
            return _BAD_VALSIZE_RC
        keys = table.keys
        count = len(keys)
        if self._init:  # "see if we're already on the right page": the only page
            if count == 0:
                self._ki = 0
                return _NOTFOUND
            if key == keys[0]:
                self._ki = 0
                return self._set_found()
            if key > keys[0]:
                if count > 1:
                    if key == keys[-1]:
                        self._ki = count - 1
                        return self._set_found()
                    if key < keys[-1]:
                        if self._ki < count and key == keys[self._ki]:
                            return self._set_found()
                        self._eof = False
                        return self._set_search(keys, key, op)
                self._ki = count  # no other pages
                return _NOTFOUND
            self._ki = 0  # before the first key, no other pages
            return self._set_found() if op == _SET_RANGE else _NOTFOUND
        if count == 0:
            return _NOTFOUND
        self._init, self._eof = True, False  # mdb_page_search_root
        return self._set_search(keys, key, op)

    def _set_search(self, keys: list[bytes], key: bytes, op: int) -> int:
        i = bisect.bisect_left(keys, key)
        self._ki = i
        if op == _SET_KEY and not (i < len(keys) and keys[i] == key):
            return _NOTFOUND
        if i >= len(keys):
            self._eof = True
            return _NOTFOUND
        return self._set_found()

    def _set_found(self) -> int:
        self._init, self._eof = True, False
        return _OK

    def _mdb_del(self) -> int:
        txn = self._effective_txn()
        if not txn._write:
            return _EACCES
        if txn._blocked():
            return _BAD_TXN_RC
        if not self._init:
            return _EINVAL
        if self._ki >= len(self._table().keys):
            return _NOTFOUND
        assert self._txn._chain is not None
        self._txn._chain.delete_at(self._name, self._ki, self)
        return _OK

    # -- py-lmdb ------------------------------------------------------------------------------

    def _cursor_get(self, op: int, key: bytes = b"") -> bool:
        rc = self._mdb_get(op, key)
        self._positioned = rc == _OK
        self._last_mutation = self._txn._mutations
        if rc == _OK:
            table = self._table()
            self._key = table.keys[self._ki]
            self._val = table.values[self._key]
        else:
            self._key = self._val = b""
            if rc != _NOTFOUND and not (rc == _EINVAL and op == _GET_CURRENT):
                _raise("mdb_cursor_get", rc)
        return self._positioned

    def _refresh(self) -> None:
        self._check_alive()
        if self._last_mutation != self._txn._mutations:
            self._cursor_get(_GET_CURRENT)

    def key(self) -> bytes | memoryview:
        self._refresh()
        return self._txn._out(self._key)

    def value(self) -> bytes | memoryview:
        self._refresh()
        return self._txn._out(self._val)

    def item(self) -> tuple[bytes | memoryview, bytes | memoryview]:
        self._refresh()
        return self._txn._out(self._key), self._txn._out(self._val)

    def first(self) -> bool:
        self._check_alive()
        return self._cursor_get(_FIRST)

    def last(self) -> bool:
        self._check_alive()
        return self._cursor_get(_LAST)

    def next(self) -> bool:
        self._check_alive()
        return self._cursor_get(_NEXT)

    def prev(self) -> bool:
        self._check_alive()
        return self._cursor_get(_PREV)

    def set_key(self, key: bytes) -> bool:
        self._check_alive()
        return self._cursor_get(_SET_KEY, _as_bytes(key))

    def set_range(self, key: bytes) -> bool:
        self._check_alive()
        key = _as_bytes(key)
        return self._cursor_get(_SET_RANGE, key) if key else self._cursor_get(_FIRST)

    def get(self, key: bytes, default: Any = None) -> Any:
        self._check_alive()
        if not self._cursor_get(_SET_KEY, _as_bytes(key)):
            return default
        return self.value()

    def delete(self, dupdata: bool = False) -> bool:
        self._check_alive()
        if not self._positioned:
            return False
        rc = self._mdb_del()
        self._txn._mutations += 1
        if rc != _OK:
            _raise("mdb_cursor_del", rc)
        self._cursor_get(_GET_CURRENT)
        return True

    def iternext(self, keys: bool = True, values: bool = True) -> Iterator[Any]:
        self._check_alive()
        if not self._positioned:
            self._cursor_get(_FIRST)
        return _CursorIterator(self, self._getter(keys, values), _NEXT)

    def iterprev(self, keys: bool = True, values: bool = True) -> Iterator[Any]:
        self._check_alive()
        if not self._positioned:
            self._cursor_get(_LAST)
        return _CursorIterator(self, self._getter(keys, values), _PREV)

    __iter__ = iternext

    def _getter(self, keys: bool, values: bool) -> Callable[[], Any]:
        return self.key if not values else self.value if not keys else self.item

    def close(self) -> None:
        self._invalidate()

    def __enter__(self) -> MemCursor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _CursorIterator:
    """py-lmdb's Iterator: yields the current item, then steps; stops as soon as the cursor is unpositioned."""

    def __init__(self, cursor: MemCursor, get: Callable[[], Any], op: int) -> None:
        self._cursor, self._get, self._op = cursor, get, op
        self._started = False

    def __iter__(self) -> _CursorIterator:
        return self

    def __next__(self) -> Any:
        cursor = self._cursor
        cursor._check_alive()
        if not cursor._positioned:
            raise StopIteration
        if self._started:
            cursor._cursor_get(self._op)
            if not cursor._positioned:
                raise StopIteration
        self._started = True
        return self._get()
