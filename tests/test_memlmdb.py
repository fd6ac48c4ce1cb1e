"""tools/sim/memlmdb.py: the in-memory LMDB stand-in against real LMDB (the same operations on both give the
same results), and the behaviours the store relies on spelled out. The real SegmentStore on the stand-in:
tests/test_memlmdb_store.py."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from typing import Any

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.tools.sim.memlmdb import MemDisk, open_mem_env
from tests.depth import examples

pytestmark = pytest.mark.unit

# -- differential driver: one sequence of operations, applied to real LMDB and to the stand-in ---------------

CURSOR_OPS = ["first", "last", "next", "prev", "set_range", "set_key", "key", "value", "item", "delete", "get", "close"]
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

    One thing is not compared: py-lmdb caches a cursor's key and value as
    pointers into LMDB's pages and refreshes them only when the cursor's own
    transaction has counted a mutation since. When another transaction of the
    write chain (a nested one, or its parent through a cursor) changes pages, or
    a nested transaction ends and its pages are freed, a cursor that has not
    moved since reads whatever that memory now holds (garbage, in LMDB). The
    stand-in returns the bytes it last read. Such cursors are "stale" here until
    they move, and reading them is skipped on both sides.
    """

    def __init__(self, reopen: Callable[[], Any]) -> None:
        self._reopen = reopen
        self.env = reopen()
        self.dbs = [self.env.open_db(b"one"), self.env.open_db(b"two")]
        self.writes: list[Any] = []  # open write transactions, outermost first
        self.reads: list[Any] = []
        self.txns: list[Any] = []
        self.cursors: list[Any] = []
        self.cursor_txn: list[Any] = []
        self.stale: set[int] = set()  # cursors whose cached key/value LMDB may have pulled from under them
        self.iters: list[Any] = []
        self.iter_cursor: list[int] = []

    def run(self, op: tuple) -> Any:
        try:
            return _norm(self._run(op))
        except StopIteration:
            return "stop"
        except (lmdb.Error, TypeError) as error:
            return ("error", type(error).__name__)

    def _counted(self, txn: Any, changed: bool) -> None:
        """`txn` counted a mutation (its cursors refresh); if data changed, the chain's other cursors go stale."""
        chain = [i for i, t in enumerate(self.cursor_txn) if any(t is w for w in self.writes)]
        for i in chain:
            if self.cursor_txn[i] is txn:
                self.stale.discard(i)
            elif changed:
                self.stale.add(i)

    def _run(self, op: tuple) -> Any:
        kind = op[0]
        if kind == "begin":
            write = op[1]
            if (write and len(self.writes) >= WRITE_DEPTH_MAX) or (not write and len(self.reads) >= READERS_MAX):
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
            i = op[1] % len(self.iters)
            if self.iter_cursor[i] in self.stale:
                return "skip"
            return next(self.iters[i])
        if kind in ("cop", "iter"):
            if not self.cursors:
                return "skip"
            c = op[1] % len(self.cursors)
            cursor = self.cursors[c]
            if kind == "iter":
                make = [
                    lambda: iter(cursor),
                    lambda: cursor.iternext(values=False),
                    cursor.iterprev,
                    lambda: cursor.iterprev(keys=False),
                ][op[2]]
                self.iters.append(make())
                self.iter_cursor.append(c)
                return len(self.iters) - 1
            name, key = op[2], op[3]
            if name in ("key", "value", "item") and c in self.stale:
                return "skip"
            if name != "delete":
                self.stale.discard(c)  # it moves: py-lmdb reads its item afresh
                if name in ("set_range", "set_key", "get"):
                    return getattr(cursor, name)(key)
                return getattr(cursor, name)()
            try:
                deleted = cursor.delete()
            except lmdb.Error:
                self._counted(self.cursor_txn[c], changed=False)
                raise
            if deleted:
                self._counted(self.cursor_txn[c], changed=True)
            return deleted
        if not self.txns:
            return "skip"
        txn = self.txns[op[1] % len(self.txns)]
        if kind == "end":
            try:
                return txn.commit() if op[2] else txn.abort()
            finally:
                if txn in self.writes:
                    del self.writes[self.writes.index(txn) :]
                    # A nested transaction's pages are freed or handed over: the chain's cursors go stale.
                    self.stale |= {i for i, t in enumerate(self.cursor_txn) if any(t is w for w in self.writes)}
                if txn in self.reads:
                    self.reads.remove(txn)
        db = self.dbs[op[2]]
        if kind in ("put", "delete"):
            changed = False
            try:
                if kind == "put":
                    flags = [{}, {"overwrite": False}, {"append": True}][op[5]]
                    changed = txn.put(op[3], op[4], db=db, **flags)
                else:
                    changed = txn.delete(op[3], db=db)
            finally:
                self._counted(txn, changed)
            return changed
        if kind == "get":
            return txn.get(op[3], db=db)
        if kind == "cursor":
            self.cursors.append(txn.cursor(db=db))
            self.cursor_txn.append(txn)
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
        # No fsync on the real side: only the semantics are compared, and it keeps the test fast.
        real = Driver(lambda: lmdb.open(tmp, map_size=1 << 26, max_dbs=4, sync=False, metasync=False))
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


@settings(max_examples=examples(200), deadline=None)
@given(operations(value_size_max=8, key_count=len(KEYS)))
def test_memenv_matches_lmdb_on_random_operations(ops: list[tuple]) -> None:
    run_both(ops)


@settings(max_examples=examples(60), deadline=None)
@given(operations(value_size_max=1500, key_count=len(KEYS)))
def test_memenv_matches_lmdb_with_values_spanning_pages(ops: list[tuple]) -> None:
    run_both(ops)


def test_cursor_semantics_the_store_relies_on(tmp_path) -> None:
    """The handful of py-lmdb behaviours storage/store/ depends on, spelled out (and run on both)."""
    envs: list[Any] = [lmdb.open(str(tmp_path), max_dbs=2), open_mem_env("x", max_dbs=2)]  # lmdb is untyped
    for env in envs:
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
            with pytest.raises(RuntimeError), env.begin(write=True, parent=txn, db=db) as child:
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


def test_map_full_aborts_the_transaction_and_set_mapsize_grows_the_map() -> None:
    disk = MemDisk()
    env = disk.open("n", map_size=64 * 1024, max_dbs=1)
    db = env.open_db(b"d")
    with env.begin(write=True, db=db) as txn:
        txn.put(b"kept", b"1")
    txn = env.begin(write=True, db=db)
    with pytest.raises(lmdb.MapFullError):
        for i in range(100):
            txn.put(b"k%03d" % i, bytes(1000))
    with pytest.raises(lmdb.BadTxnError):
        txn.get(b"kept")  # as in LMDB, the transaction can only abort now
    with pytest.raises(lmdb.BadTxnError):
        txn.commit()
    assert disk.keys("n", b"d") == [b"kept"]
    env.set_mapsize(1 << 20)
    with env.begin(write=True, db=db) as txn:
        for i in range(100):
            txn.put(b"k%03d" % i, bytes(1000))
    assert env.info()["map_size"] == 1 << 20 and len(disk.keys("n", b"d")) == 101
    used = disk.used_bytes("n")
    assert env.info()["last_pgno"] + 1 == used // env.stat()["psize"]
    env.set_mapsize(4096)  # never below the data stored, as in LMDB
    assert env.info()["map_size"] == used
    env.close()
    assert disk.open("n", map_size=4096, max_dbs=1).info()["map_size"] == used


def test_a_reader_keeps_its_snapshot_and_the_disk_shows_only_committed_state() -> None:
    disk = MemDisk()
    env = disk.open("n", max_dbs=1)
    db = env.open_db(b"d")
    with env.begin(write=True, db=db) as txn:
        txn.put(b"a", b"old")
    txn = env.begin(write=True, db=db)
    txn.put(b"a", b"new")
    txn.put(b"b", b"new")
    assert disk.get("n", b"d", b"a") == b"old" and disk.get("n", "d", "b") is None  # written in place, not committed
    reader = env.begin(db=db)  # begins while the write is open
    txn.put(b"c", b"new")
    txn.commit()
    assert reader.get(b"a") == b"old" and reader.get(b"c") is None
    assert disk.items("n", b"d") == [(b"a", b"new"), (b"b", b"new"), (b"c", b"new")]
    reader.abort()
    txn = env.begin(write=True, db=db)
    txn.delete(b"a")
    txn.abort()
    assert disk.get("n", b"d", b"a") == b"new" and disk.db_names("n") == [b"d"]


def test_a_crash_keeps_what_was_committed_and_stops_the_dead_environment() -> None:
    disk = MemDisk()
    env = disk.open("n", max_dbs=1)
    db = env.open_db(b"d")
    with env.begin(write=True, db=db) as txn:
        txn.put(b"durable", b"1")
    txn = env.begin(write=True, db=db)
    txn.put(b"lost", b"1")
    disk.crash("n")
    with pytest.raises(lmdb.Error, match="crashed"):
        txn.put(b"zombie", b"1")
    with pytest.raises(lmdb.Error):
        env.begin()
    again = disk.open("n", max_dbs=1)
    with again.begin(db=again.open_db(b"d")) as txn:
        assert list(txn.cursor()) == [(b"durable", b"1")]
    newest = disk.open("n", max_dbs=1)  # opening again takes over: the previous one counts as crashed
    with pytest.raises(lmdb.Error):
        again.begin()
    newest.close()
    disk.wipe("n")
    assert disk.keys("n", b"d") == [] and disk.paths() == []
    with pytest.raises(lmdb.Error):
        disk.open("n", create=False)


def test_rot_is_deterministic_and_needs_an_index_or_an_rng() -> None:
    flipped = []
    for _ in range(2):
        disk = MemDisk()
        env = disk.open("n", max_dbs=1)
        with env.begin(write=True, db=env.open_db(b"d")) as txn:
            txn.put(b"k", bytes(64))
        index = disk.rot("n", b"d", b"k", rng=random.Random(7))
        flipped.append((index, disk.get("n", b"d", b"k")))
    assert flipped[0] == flipped[1] and flipped[0][1] != bytes(64)
    assert disk.rot("n", b"d", b"k", byte_index=3) == 3
    rotten = disk.get("n", b"d", b"k")
    assert rotten is not None and rotten[3] == 1
    with pytest.raises(ValueError):
        disk.rot("n", b"d", b"k")
    with pytest.raises(KeyError):
        disk.rot("n", b"d", b"missing", byte_index=0)
