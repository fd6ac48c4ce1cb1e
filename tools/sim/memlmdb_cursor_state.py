"""LMDB's own cursor state machine (mdb_cursor_get and friends) on a one-leaf-page tree, for the stand-in.

`_CursorState` keeps LMDB's MDB_cursor fields: the item index and the C_INITIALIZED / C_EOF / C_DEL
flags, including the patch py-lmdb applies to its bundled LMDB 0.9.36 (an unpositioned cursor whose item
was deleted does not wrap around). `_WriteChain` (memlmdb_chain.py) moves these fields when the
transaction inserts or deletes; `MemCursor` (memlmdb_txn.py) is py-lmdb's layer above.
"""

from __future__ import annotations

import bisect

from sixfold.tools.sim.memlmdb_table import (
    _BAD_VALSIZE_RC,
    _EINVAL,
    _FIRST,
    _GET_CURRENT,
    _LAST,
    _NEXT,
    _NOTFOUND,
    _OK,
    _PREV,
    _SET_KEY,
    _SET_RANGE,
    _Table,
)


class _CursorState:
    """LMDB's MDB_cursor on one database of a one-page tree."""

    def __init__(self, name: bytes | None) -> None:
        self._name = name
        self._init = False  # C_INITIALIZED
        self._ki = 0  # index of the item on the page
        self._eof = False  # C_EOF
        self._del = False  # C_DEL: the item it was on was deleted; it already points at the next one

    def _mdb_op(self, table: _Table, op: int, key: bytes = b"") -> int:
        """mdb_cursor_get on `table` (the transaction's view of this cursor's database)."""
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
