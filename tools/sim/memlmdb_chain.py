"""The stand-in's open write transaction: the working tables a write transaction and its nested ones share.

Tables are written in place with an undo log (so a commit costs O(changes)); LMDB's cursor bookkeeping
for the two mutations (an insert or a delete moves the other cursors of the chain) lives here too.
"""

from __future__ import annotations

import bisect
from typing import Any, Generic, Protocol, TypeVar

import lmdb

from sixfold.tools.sim.memlmdb_cursor_state import _CursorState
from sixfold.tools.sim.memlmdb_table import (
    _ABSENT,
    _EMPTY,
    _KEYEXIST,
    _MAP_FULL,
    _OK,
    PAGE_SIZE_BYTES,
    Undo,
    _DiskFile,
    _pages,
    _replay,
    _Table,
)


class _ChainTxn(Protocol):
    """A transaction of the chain, as the chain sees it (memlmdb_txn.py `MemTransaction`)."""

    _undo: list[Undo] | None  # a nested transaction's own changes, to undo if it aborts
    _error: bool  # MDB_TXN_ERROR: only abort is left


TxnT = TypeVar("TxnT", bound=_ChainTxn)
CursorT = TypeVar("CursorT", bound=_CursorState)


class _WriteChain(Generic[TxnT, CursorT]):
    """A write transaction and the nested ones inside it: the working tables they share.

    Tables are written in place. One the committed state still shares ("in place")
    has its changes logged in `root_undo`, so an abort or a reader beginning
    mid-transaction can get the committed content back; one a reader holds is
    copied first ("owned"). Each nested transaction logs its own changes to undo
    them if it aborts.
    """

    def __init__(self, file: _DiskFile, map_size: int) -> None:
        self.file = file
        self.map_size = map_size  # fixed while a write transaction is open (set_mapsize refuses then)
        self.tables: dict[bytes | None, _Table] = dict(self.file.tables)
        self.owned: set[bytes | None] = set()
        self.in_place: set[bytes | None] = set()
        self.root_undo: list[Undo] = []
        self.data_bytes = sum(t.data_bytes for t in self.tables.values())
        self.cursors: dict[CursorT, None] = {}  # every open cursor of the chain's transactions (LMDB tracks them)
        self.innermost: TxnT | None = None
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

    def put(self, txn: TxnT, name: bytes | None, key: bytes, value: bytes, overwrite: bool, append: bool) -> int:
        view = self.tables.get(name, _EMPTY)
        i = bisect.bisect_left(view.keys, key)
        exists = i < len(view.keys) and view.keys[i] == key
        if append and view.keys and key <= view.keys[-1]:
            return _KEYEXIST
        if exists and not overwrite:
            return _KEYEXIST
        old = view.values[key] if exists else None
        grown = self.data_bytes + (len(value) - len(old) if old is not None else len(key) + len(value))
        if _pages(grown) * PAGE_SIZE_BYTES > self.map_size:
            txn._error = True
            raise lmdb.MapFullError(f"mdb_put: {_MAP_FULL}")
        table = self.writable(name)  # the same content as `view`: index i still holds
        self._log(name, key, old if old is not None else _ABSENT)
        if old is not None:  # it exists
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

    def delete_at(self, name: bytes | None, i: int, mc: CursorT | None) -> None:
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

    def undo(self, entries: list[Undo]) -> None:
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
