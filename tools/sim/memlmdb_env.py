"""The stand-in's `lmdb.Environment`: `MemEnvironment`, over one path of a `MemDisk` (tools/sim/memlmdb.py).

It opens databases, begins transactions (one write transaction at a time, with nested ones inside it),
and reports its map size and usage as LMDB does; a crash or a new open of its path shuts it for good.
"""

from __future__ import annotations

from typing import Any, Protocol

import lmdb

from sixfold.tools.sim.memlmdb_chain import _WriteChain
from sixfold.tools.sim.memlmdb_table import (
    _INVALID,
    _NOT_FOUND,
    KEY_SIZE_MAX_BYTES,
    MAP_SIZE_DEFAULT_BYTES,
    MAX_READERS,
    PAGE_SIZE_BYTES,
    _as_bytes,
    _DiskFile,
    _pages,
    _Table,
)
from sixfold.tools.sim.memlmdb_txn import MemDatabase, MemTransaction, _Chain


class _Disk(Protocol):
    """The disk an environment opens a path of (tools/sim/memlmdb.py `MemDisk`)."""

    def _file(self, path: str, create: bool) -> _DiskFile:
        """The path's committed state; created empty when `create` (else a missing path raises lmdb.Error)."""


class MemEnvironment:
    """`lmdb.Environment` over a `MemDisk` path."""

    def __init__(
        self,
        disk: _Disk,
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
        self._chain: _Chain | None = None  # the open write transaction with its nested ones
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
                assert txn._chain is not None  # a write transaction's
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
            self._chain = _WriteChain(self._file, self._map_size)
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
