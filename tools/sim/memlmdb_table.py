"""The in-memory LMDB stand-in's stored data: limits, LMDB's error codes, tables, and a path's committed state.

`_Table` is one named database (sorted keys beside a dict); `_DiskFile` is one path on the fake disk: the
committed tables, as a crash leaves them. `_raise` turns an emulated C return code into py-lmdb's
exception. Names with a leading underscore are internal to the memlmdb modules (tools/sim/memlmdb.py is
the public face and states the rules the stand-in keeps).
"""

from __future__ import annotations

import bisect
from typing import Any, Protocol

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
# An undo-log entry: (database, key, the value before the change, or _ABSENT).
Undo = tuple[bytes | None, bytes, Any]


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


def _replay(tables: dict[bytes | None, _Table], undo: list[Undo]) -> None:
    """Undo logged changes, newest first: each key ends with the value it had before its oldest logged change."""
    for name, key, old in reversed(undo):
        table = tables[name]
        if old is not _ABSENT:
            table.set(key, old)
        elif key in table.values:
            table.remove(key)


class _Materializer(Protocol):
    """An open write transaction that may be working on the committed tables in place."""

    def materialize(self) -> None:
        """Give the committed state back its own copies of the tables written in place so far."""


class _Holder(Protocol):
    """The environment open on a path, as its disk file sees it (memlmdb_env.py `MemEnvironment`)."""

    @property
    def _chain(self) -> _Materializer | None: ...

    def _shut(self, crashed: bool) -> None: ...


class _DiskFile:
    """One path on the fake disk: the committed tables (never changed in place while a reader holds one)."""

    def __init__(self) -> None:
        self.tables: dict[bytes | None, _Table] = {None: _Table()}
        self.last_txnid = 0
        self.env: _Holder | None = None  # the environment open on this path, if any
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
