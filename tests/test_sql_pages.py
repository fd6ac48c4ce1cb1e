"""SQLite's pages on the volume: the diffs a commit ships (against a brute-force oracle), the file size
from the header, and the VFS running real SQLite over an in-memory page source (compute/sql/memory.py):
one commit is one MTR, a rollback or a crash before the hand-off ships nothing, a reader keeps its
snapshot and never serves a stale page cache.
"""

from __future__ import annotations

import itertools
import random

import apsw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.compute.sql.connection import SqlConnection
from sixfold.compute.sql.errors import SqlConstraint, SqlInvalid, TransactionTooLarge
from sixfold.compute.sql.memory import MemoryPages
from sixfold.compute.sql.pages import (
    MERGE_GAP_BYTES,
    diff_patches,
    header_page_count,
    mtr_patches,
    page_span,
)
from sixfold.compute.sql.vfs import WRITER_FILE, PageVfs, WriterFile, reader_file
from sixfold.compute.volume_log import MTR_RECORDS_MAX, Patch
from tests.depth import examples

pytestmark = pytest.mark.unit


# -- diffs (pure), against a byte-by-byte oracle -----------------------------------------------------


def oracle_runs(old: bytes, new: bytes) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i in range(len(new)):
        if old[i] != new[i]:
            if runs and runs[-1][1] == i:
                runs[-1] = (runs[-1][0], i + 1)
            else:
                runs.append((i, i + 1))
    return runs


def apply(old: bytes, patches: list[Patch]) -> bytes:
    page = bytearray(old)
    for p in patches:
        page[p.offset : p.offset + len(p.data)] = p.data
    return bytes(page)


@st.composite
def page_pairs(draw: st.DrawFn) -> tuple[bytes, bytes]:
    size = draw(st.sampled_from([1, 7, 64, 65, 200, 512]))
    old = bytes(draw(st.lists(st.integers(0, 3), min_size=size, max_size=size)))  # few values: equal bytes abound
    new = bytearray(old)
    for _ in range(draw(st.integers(0, 6))):  # a few changed regions, as SQLite makes them
        start = draw(st.integers(0, size - 1))
        length = draw(st.integers(1, min(80, size - start)))
        new[start : start + length] = bytes(draw(st.lists(st.integers(0, 3), min_size=length, max_size=length)))
    return old, bytes(new)


@settings(max_examples=examples(400))
@given(pair=page_pairs(), gap=st.integers(0, 70))
def test_diff_patches_rebuild_the_page_and_never_carry_long_equal_runs(pair: tuple[bytes, bytes], gap: int) -> None:
    old, new = pair
    patches = diff_patches(old, new, 5, merge_gap=gap)
    assert apply(old, patches) == new
    assert all(p.page_no == 5 and p.data for p in patches)
    assert sum(len(p.data) for p in patches) <= len(new)
    ends = [(p.offset, p.offset + len(p.data)) for p in patches]
    assert ends == sorted(ends)
    for (_, end), (start, _) in itertools.pairwise(ends):
        assert start - end > gap  # two patches closer than the gap would have been merged
    for p in patches:
        assert p.data[0] != old[p.offset] and p.data[-1] != old[p.offset + len(p.data) - 1]
        equal_run = 0
        for i, byte in enumerate(p.data):
            equal_run = equal_run + 1 if byte == old[p.offset + i] else 0
            assert equal_run <= gap, "a patch carries more equal bytes in a row than the merge gap"
    # exactly the oracle's runs, merged greedily across gaps of at most `gap`
    merged: list[tuple[int, int]] = []
    for start, end in oracle_runs(old, new):
        if merged and start - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    assert ends == merged


def test_equal_pages_ship_nothing_and_the_default_gap_is_one_record_header() -> None:
    page = random.Random(1).randbytes(4096)
    assert diff_patches(page, page, 0) == []
    changed = bytearray(page)
    changed[100] ^= 1
    changed[100 + MERGE_GAP_BYTES + 1] ^= 1  # exactly the gap apart: one patch
    changed[4000] ^= 1  # far: another
    patches = diff_patches(page, bytes(changed), 0)
    assert [(p.offset, len(p.data)) for p in patches] == [(100, MERGE_GAP_BYTES + 2), (4000, 1)]


def test_an_mtr_too_many_patches_falls_back_to_one_span_per_page_then_refuses() -> None:
    size = 4096
    old = bytes(size)
    scattered = bytearray(size)
    for i in range(0, size, 200):  # ~21 runs per page, far apart
        scattered[i] = 1
    pages = 60  # 60 * 21 fine patches > 1000 records; 60 spans fit
    bases = dict.fromkeys(range(pages), old)
    images = dict.fromkeys(range(pages), bytes(scattered))
    patches = mtr_patches(bases, images)
    assert len(patches) == pages
    assert all(apply(old, [p]) == bytes(scattered) for p in patches)
    with pytest.raises(TransactionTooLarge):
        mtr_patches(
            dict.fromkeys(range(MTR_RECORDS_MAX + 1), old), dict.fromkeys(range(MTR_RECORDS_MAX + 1), b"\1" * size)
        )


def test_file_size_comes_from_the_header_and_offsets_map_to_pages() -> None:
    assert header_page_count(bytes(4096)) == 0  # never written: an empty file
    header = bytearray(4096)
    header[28:32] = (1234).to_bytes(4, "big")
    assert header_page_count(bytes(header)) == 1234
    assert list(page_span(0, 100, 4096)) == [0]
    assert list(page_span(4096 * 3, 4096, 4096)) == [3]  # SQLite page 4 is volume page 3
    assert list(page_span(4000, 200, 4096)) == [0, 1]
    assert list(page_span(10, 0, 4096)) == []


# -- the VFS over an in-memory page source -------------------------------------------------------------


def writer_on(source: MemoryPages) -> tuple[PageVfs, SqlConnection]:
    vfs = PageVfs(source)
    writer = SqlConnection(vfs, WRITER_FILE, writer=True)
    writer.open()
    writer.ensure_database(source.page_size)
    return vfs, writer


def reader_on(vfs: PageVfs, index: int = 0) -> SqlConnection:
    reader = SqlConnection(vfs, reader_file(index), writer=False)
    reader.open()
    return reader


def count(connection: SqlConnection, sql: str = "SELECT count(*) FROM t") -> int:
    value = connection.statement(sql, ()).rows[0][0]
    assert isinstance(value, int)
    return value


def test_sqlite_runs_on_the_pages_one_commit_one_mtr() -> None:
    source = MemoryPages(4096)
    vfs, writer = writer_on(source)
    assert len(source.mtrs) == 1  # creating the database
    page0 = source.read_latest([0])[0]
    assert page0.startswith(b"SQLite format 3\0") and int.from_bytes(page0[16:18], "big") == 4096
    writer.statement("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", ())
    assert len(source.mtrs) == 2
    rows = [(f"value {i}" * 3,) for i in range(10_000)]
    results, cpls = writer.transaction([("INSERT INTO t (v) VALUES (?)", row) for row in rows])
    assert len(results) == 10_000 and cpls == [source.vdl] and len(source.mtrs) == 3  # one MTR
    file = vfs.files[WRITER_FILE]
    assert isinstance(file, WriterFile)
    assert file.size_pages() == header_page_count(source.read_latest([0])[0]) > 50
    # an update ships only the bytes it changed, not whole pages
    writer.autocommit("UPDATE t SET v = 'x' WHERE k = 5000", ())
    assert len(source.mtrs) == 4 and sum(len(p.data) for p in source.mtrs[-1]) < 4096
    assert count(writer) == 10_000
    assert writer.statement("PRAGMA integrity_check", ()).rows == [("ok",)]
    reader = reader_on(vfs)
    assert count(reader) == 10_000 and reader.statement("PRAGMA integrity_check", ()).rows == [("ok",)]
    assert not source.pinned  # autocommit reads gave their read points back


def test_a_rollback_and_a_failed_statement_ship_nothing() -> None:
    source = MemoryPages(4096)
    _, writer = writer_on(source)
    writer.statement("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT UNIQUE)", ())
    writer.autocommit("INSERT INTO t VALUES (1, 'a')", ())
    mtrs = len(source.mtrs)
    writer.control("BEGIN")
    for i in range(2, 2000):
        writer.statement("INSERT INTO t VALUES (?, ?)", (i, f"v{i}" * 20))
    writer.control("ROLLBACK")
    with pytest.raises(SqlConstraint, match="UNIQUE"):
        writer.autocommit("INSERT INTO t VALUES (3, 'a')", ())
    assert len(source.mtrs) == mtrs
    assert count(writer) == 1
    file = writer.vfs.files[WRITER_FILE]
    assert isinstance(file, WriterFile) and not file.pending


def test_a_crash_before_the_hand_off_loses_nothing_committed() -> None:
    source = MemoryPages(4096)
    vfs, writer = writer_on(source)
    writer.statement("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)", ())
    writer.transaction([("INSERT INTO t VALUES (?, randomblob(300))", (i,)) for i in range(500)])
    committed = source.vdl
    # The writer dies in the middle of a big transaction, and again in the middle of its commit: the pages
    # are pending in the dead process, and its hand-off never happens.
    writer.control("BEGIN")
    for i in range(500, 1500):
        writer.statement("INSERT INTO t VALUES (?, randomblob(300))", (i,))
    file = vfs.files[WRITER_FILE]
    assert isinstance(file, WriterFile)

    def crash(patches: list[Patch], images: dict[int, bytes]) -> int:
        raise SystemExit("the process died")

    source.submit = crash  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        writer.control("COMMIT")
    assert source.vdl == committed
    del source.submit  # the next process's writer hands off again
    vfs2, writer2 = writer_on(source)  # a new process: a new VFS and connection over the same storage
    assert count(writer2) == 500
    assert writer2.statement("PRAGMA integrity_check", ()).rows == [("ok",)]
    writer2.autocommit("INSERT INTO t VALUES (9999, x'00')", ())
    assert count(reader_on(vfs2)) == 501


def test_a_reader_keeps_its_snapshot_and_sees_the_next_commit_in_its_next_transaction() -> None:
    source = MemoryPages(4096)
    vfs, writer = writer_on(source)
    writer.statement("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", ())
    writer.autocommit("INSERT INTO t VALUES (1, 'one')", ())
    reader = reader_on(vfs)
    assert count(reader) == 1  # its page cache now holds the table's pages
    read_point = reader.begin_read()
    assert read_point == source.vdl and source.pinned[read_point] == 1
    for i in range(2, 200):
        writer.autocommit("INSERT INTO t VALUES (?, 'more')", (i,))
    writer.autocommit("UPDATE t SET v = 'changed' WHERE k = 1", ())
    assert count(reader) == 1  # the snapshot
    assert reader.statement("SELECT v FROM t WHERE k = 1", ()).rows == [("one",)]
    reader.rollback_quietly()
    assert not source.pinned
    # a new transaction: a new read point, page 1's change counter differs, SQLite drops its cache
    assert count(reader) == 199
    assert reader.statement("SELECT v FROM t WHERE k = 1", ()).rows == [("changed",)]


def test_readers_cannot_write_and_only_the_database_file_opens() -> None:
    source = MemoryPages(4096)
    vfs, writer = writer_on(source)
    writer.statement("CREATE TABLE t (k)", ())
    reader = reader_on(vfs)
    with pytest.raises(SqlInvalid, match="readonly"):
        reader.statement("INSERT INTO t VALUES (1)", ())
    with pytest.raises(apsw.CantOpenError):
        apsw.Connection("other.db", vfs=vfs.vfs_name)
    with pytest.raises(SqlInvalid, match="one database"):
        writer.statement("ATTACH 'x.db' AS x", ())
    with pytest.raises(SqlInvalid, match="engine"):
        writer.statement("PRAGMA journal_mode=WAL", ())
    with pytest.raises(SqlInvalid, match="BEGIN, COMMIT"):
        writer.statement("BEGIN", ())
    assert writer.statement("PRAGMA journal_mode", ()).rows == [("memory",)]
    # temporary files stay in memory; sorting a big result uses them
    numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
    writer.autocommit(numbers + "INSERT INTO t SELECT i FROM n", ())
    assert len(reader.statement("SELECT k FROM t ORDER BY random()", ()).rows) == 3000


def test_a_transaction_larger_than_one_mtr_is_refused_and_ships_nothing() -> None:
    source = MemoryPages(512)
    _, writer = writer_on(source)
    writer.statement("CREATE TABLE t (v BLOB)", ())
    mtrs = len(source.mtrs)
    with pytest.raises(TransactionTooLarge):  # > MTR_RECORDS_MAX pages of 512 bytes
        writer.transaction(
            [("INSERT INTO t VALUES (randomblob(?))", (400_000,)), ("INSERT INTO t VALUES (randomblob(?))", (400_000,))]
        )
    assert len(source.mtrs) == mtrs
    assert count(writer) == 0
    writer.transaction([("INSERT INTO t VALUES (randomblob(100))", ())])
    assert count(writer) == 1 and writer.statement("PRAGMA integrity_check", ()).rows == [("ok",)]


def test_a_shrinking_database_truncates_through_its_header() -> None:
    source = MemoryPages(1024)
    vfs, writer = writer_on(source)
    writer.statement("CREATE TABLE t (v BLOB)", ())
    writer.transaction([("INSERT INTO t VALUES (randomblob(700))", ()) for _ in range(300)])
    big = header_page_count(source.read_latest([0])[0])
    writer.autocommit("DELETE FROM t", ())
    writer.autocommit("VACUUM", ())
    small = header_page_count(source.read_latest([0])[0])
    assert small < big // 10
    assert count(reader_on(vfs)) == 0 and writer.statement("PRAGMA integrity_check", ()).rows == [("ok",)]
    writer.transaction([("INSERT INTO t VALUES (randomblob(700))", ()) for _ in range(50)])  # grows over old pages
    assert count(writer) == 50 and writer.statement("PRAGMA integrity_check", ()).rows == [("ok",)]
