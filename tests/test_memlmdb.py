"""tools/sim/memlmdb.py: the in-memory LMDB stand-in against real LMDB, and the real SegmentStore on it."""

from __future__ import annotations

import random
import tempfile
from typing import Any, Callable

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage.chain import ChainBuilder
from storage.errors import ChecksumMismatch
from storage.records import LogRecord, PayloadKind
from storage.segment import AppendBatch, TruncationRange
from storage.store import SegmentStore, record_key
from tests.test_store import PAGE, SEG, batch, commit_ok, meta, oracle_page
from tools.sim.memlmdb import MemDisk, MemEnvironment, open_mem_env

# -- differential driver: one sequence of operations, applied to real LMDB and to the stand-in ---------------

CURSOR_OPS = ["first", "last", "next", "prev", "set_range", "set_key", "key", "value", "item", "delete", "get",
              "close"]
WRITE_DEPTH_MAX = 3
READERS_MAX = 3


def _norm(value: Any) -> Any:
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, tuple):
        return tuple(_norm(v) for v in value)
    return value


class Driver:
    """Carries out operations on one environment; every result (or error class) is returned for comparison.

    References to transactions, cursors and iterators are indexes into lists that
    keep finished ones too, so operations on dead objects are compared as well.
    """

    def __init__(self, reopen: Callable[[], Any]) -> None:
        self._reopen = reopen
        self.env = reopen()
        self.dbs = [self.env.open_db(b"one"), self.env.open_db(b"two")]
        self.writes: list[Any] = []  # open write transactions, outermost first
        self.reads: list[Any] = []
        self.txns: list[Any] = []
        self.cursors: list[Any] = []
        self.iters: list[Any] = []

    def run(self, op: tuple) -> Any:
        try:
            return _norm(self._run(op))
        except StopIteration:
            return "stop"
        except (lmdb.Error, TypeError) as error:
            return ("error", type(error).__name__)

    def _run(self, op: tuple) -> Any:
        kind = op[0]
        if kind == "begin":
            write = op[1]
            if write and len(self.writes) >= WRITE_DEPTH_MAX or not write and len(self.reads) >= READERS_MAX:
                return "skip"
            parent = self.writes[-1] if write and self.writes else None
            txn = self.env.begin(write=write, parent=parent, buffers=op[2])
            (self.writes if write else self.reads).append(txn)
            self.txns.append(txn)
            return len(self.txns) - 1
        if kind == "reopen":
            self.env.close()
            self.env = self._reopen()
            self.dbs = [self.env.open_db(b"one"), self.env.open_db(b"two")]
            self.writes, self.reads = [], []
            return "reopened"
        if kind == "inext":
            if not self.iters:
                return "skip"
            return next(self.iters[op[1] % len(self.iters)])
        if kind in ("cop", "iter"):
            if not self.cursors:
                return "skip"
            cursor = self.cursors[op[1] % len(self.cursors)]
            if kind == "iter":
                make = [lambda: iter(cursor), lambda: cursor.iternext(values=False), lambda: cursor.iterprev(),
                        lambda: cursor.iterprev(keys=False)][op[2]]
                self.iters.append(make())
                return len(self.iters) - 1
            name, key = op[2], op[3]
            if name in ("set_range", "set_key", "get"):
                return getattr(cursor, name)(key)
            return getattr(cursor, name)()
        if not self.txns:
            return "skip"
        txn = self.txns[op[1] % len(self.txns)]
        if kind == "end":
            try:
                return txn.commit() if op[2] else txn.abort()
            finally:
                if txn in self.writes:
                    del self.writes[self.writes.index(txn):]
                if txn in self.reads:
                    self.reads.remove(txn)
        db = self.dbs[op[2]]
        if kind == "put":
            flags = [{}, {"overwrite": False}, {"append": True}][op[5]]
            return txn.put(op[3], op[4], db=db, **flags)
        if kind == "delete":
            return txn.delete(op[3], db=db)
        if kind == "get":
            return txn.get(op[3], db=db)
        if kind == "cursor":
            self.cursors.append(txn.cursor(db=db))
            return len(self.cursors) - 1
        raise AssertionError(op)

    def contents(self) -> list[list[tuple[bytes, bytes]]]:
        for txn in self.reads + self.writes[::-1]:
            txn.abort()
        with self.env.begin() as txn:
            return [[(bytes(k), bytes(v)) for k, v in txn.cursor(db=db)] for db in self.dbs]


def run_both(ops: list[tuple]) -> None:
    """Apply `ops` to real LMDB and to MemEnvironment; every result must be the same."""
    with tempfile.TemporaryDirectory() as tmp:
        disk = MemDisk()
        real = Driver(lambda: lmdb.open(tmp, map_size=1 << 26, max_dbs=4))
        mem = Driver(lambda: disk.open(tmp, map_size=1 << 26, max_dbs=4))
        try:
            for step, op in enumerate(ops):
                want, got = real.run(op), mem.run(op)
                assert got == want, f"step {step} {op!r}: LMDB gave {want!r}, MemEnvironment gave {got!r}"
            assert mem.contents() == real.contents()
        finally:
            real.env.close()
            mem.env.close()


KEYS = [b"a", b"ab", b"b", b"ba", b"bb", b"c", b"ca", b"d", b"e", b"f", b"g", b"h"]


def operations(value_size_max: int, key_count: int) -> st.SearchStrategy[list[tuple]]:
    keys = st.sampled_from(KEYS[:key_count])
    probe_keys = st.one_of(keys, st.sampled_from([b"", b"0", b"aa", b"bc", b"zz", b"k" * 512]))
    which = st.integers(0, 7)
    db = st.integers(0, 1)
    values = st.binary(max_size=value_size_max)
    op = st.one_of(
        st.tuples(st.just("begin"), st.booleans(), st.booleans()),
        st.tuples(st.just("end"), which, st.booleans()),
        st.tuples(st.just("put"), which, db, keys, values, st.sampled_from([0, 0, 0, 1, 2])),
        st.tuples(st.just("put"), which, db, probe_keys, values, st.just(0)),
        st.tuples(st.just("delete"), which, db, probe_keys),
        st.tuples(st.just("get"), which, db, probe_keys),
        st.tuples(st.just("cursor"), which, db),
        st.tuples(st.just("cop"), which, st.sampled_from(CURSOR_OPS), probe_keys),
        st.tuples(st.just("iter"), which, st.integers(0, 3)),
        st.tuples(st.just("inext"), which),
        st.tuples(st.just("reopen")),
    )
    return st.lists(op, max_size=60)


@settings(max_examples=300, deadline=None)
@given(operations(value_size_max=8, key_count=len(KEYS)))
def test_memenv_matches_lmdb_on_random_operations(ops: list[tuple]) -> None:
    run_both(ops)


@settings(max_examples=60, deadline=None)
@given(operations(value_size_max=1500, key_count=len(KEYS)))
def test_memenv_matches_lmdb_with_values_spanning_pages(ops: list[tuple]) -> None:
    run_both(ops)


def test_cursor_semantics_the_store_relies_on() -> None:
    """The handful of py-lmdb behaviours storage/store.py depends on, spelled out (and run on both)."""
    for env in _both_envs():
        db = env.open_db(b"t")
        with env.begin(write=True, db=db) as txn:
            for k in (b"b", b"d", b"f"):
                txn.put(k, k * 2)
        with env.begin(db=db) as txn:
            c = txn.cursor()
            assert c.key() == b"" and c.prev() and c.key() == b"f"  # unpositioned prev() is last()
            c = txn.cursor()
            assert not c.set_range(b"z") and c.key() == b"" and c.prev() and c.key() == b"f"
            c = txn.cursor()
            assert c.set_range(b"c") and [k for k, _ in c] == [b"d", b"f"]
        with env.begin(write=True, db=db) as txn:
            c = txn.cursor()
            assert c.set_range(b"d") and c.delete() and c.key() == b"f"  # delete moves to the next item
            assert c.delete() and c.key() == b""  # deleting the last item leaves it unpositioned
            assert c.prev() and c.key() == b"b"
            txn.abort()
        # A nested transaction commits into its parent or vanishes; the parent sees its child's writes.
        with env.begin(write=True, db=db) as txn:
            with env.begin(write=True, parent=txn, db=db) as child:
                child.put(b"c", b"cc")
            with pytest.raises(RuntimeError):
                with env.begin(write=True, parent=txn, db=db) as child:
                    child.delete(b"b")
                    raise RuntimeError("abort the child")
            assert [k for k, _ in txn.cursor()] == [b"b", b"c", b"d", b"f"]
        reader = env.begin(db=db)
        with env.begin(write=True, db=db) as txn:
            txn.put(b"new", b"1")
            assert txn.get(b"new") == b"1"  # its own write
        assert reader.get(b"new") is None  # a snapshot
        reader.abort()
        env.close()


def _both_envs() -> list[Any]:
    tmp = tempfile.mkdtemp()
    return [lmdb.open(tmp, max_dbs=2), open_mem_env("x", max_dbs=2)]
