"""The stand-in's transactions and cursors: `MemTransaction` (`lmdb.Transaction`) and `MemCursor`
(`lmdb.Cursor`: py-lmdb's layer over LMDB's cursor state, memlmdb_cursor_state.py), and `MemDatabase`.

A read transaction holds a snapshot of the committed tables; a write transaction, and the nested ones
inside it, work on their `_WriteChain` (memlmdb_chain.py). What they need of their environment is
`_TxnEnv` (memlmdb_env.py `MemEnvironment`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import lmdb

from sixfold.tools.sim.memlmdb_chain import _WriteChain
from sixfold.tools.sim.memlmdb_cursor_state import _CursorState
from sixfold.tools.sim.memlmdb_table import (
    _BAD_TXN,
    _BAD_TXN_RC,
    _BAD_VALSIZE_RC,
    _EACCES,
    _EINVAL,
    _EMPTY,
    _FIRST,
    _GET_CURRENT,
    _INVALID,
    _LAST,
    _NEXT,
    _NOTFOUND,
    _OK,
    _PREV,
    _SET_KEY,
    _SET_RANGE,
    KEY_SIZE_MAX_BYTES,
    Undo,
    _as_bytes,
    _DiskFile,
    _raise,
    _Table,
)

_Chain = _WriteChain["MemTransaction", "MemCursor"]


class _TxnEnv(Protocol):
    """What a transaction needs of its environment (memlmdb_env.py `MemEnvironment`)."""

    _file: _DiskFile
    _dbs: dict[bytes | None, MemDatabase]
    _txns: dict[MemTransaction, None]  # open ones, in the order they began
    _chain: _Chain | None  # the open write transaction with its nested ones

    def _check_open(self) -> None: ...


class MemDatabase:
    """A database handle (`lmdb._Database`)."""

    __slots__ = ("_env", "name")

    def __init__(self, env: _TxnEnv, name: bytes | None) -> None:
        self._env, self.name = env, name

    def __repr__(self) -> str:
        return f"MemDatabase({self.name!r})"


class MemTransaction:
    """`lmdb.Transaction`."""

    def __init__(
        self,
        env: _TxnEnv,
        db: MemDatabase | None,
        chain: _Chain | None,
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
        self._undo: list[Undo] | None = [] if parent is not None else None
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
        if self._chain is not None:
            return self._chain.tables
        assert self._snapshot is not None, "a finished read transaction has no snapshot"
        return self._snapshot

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


class MemCursor(_CursorState):
    """`lmdb.Cursor`: LMDB's cursor state (`_init`, `_ki`, `_eof`, `_del`) under py-lmdb's cached view of it."""

    def __init__(self, txn: MemTransaction, name: bytes | None) -> None:
        super().__init__(name)  # LMDB's MDB_cursor on a one-page tree
        self._txn = txn
        self._alive = True
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

    # -- LMDB (mdb_cursor_get and mdb_cursor_del, one leaf page) -------------------------------

    def _mdb_get(self, op: int, key: bytes = b"") -> int:
        if self._effective_txn()._blocked():
            return _BAD_TXN_RC
        return self._mdb_op(self._table(), op, key)

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
