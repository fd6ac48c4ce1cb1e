"""The SQL engine over an in-memory volume (compute/sql/memory.py `MemoryVolume`): the whole engine, its
threads and its transactions, without a cluster. MTRs become durable when the test says (`hold`), so the
tests can watch commits pipeline, acknowledgements follow LSN order and a broken commit chain recover.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from sixfold.compute.errors import CommitTimeout, NotCommitted
from sixfold.compute.sql import (
    REASON_ENGINE_CLOSED,
    REASON_FENCED,
    REASON_IDLE_TIMEOUT,
    SqlEngine,
    TransactionAborted,
    UnknownTransaction,
    volume_source,
)
from sixfold.compute.sql.errors import (
    SqlBusy,
    SqlConstraint,
    SqlCorrupt,
    SqlInvalid,
    SqlReadOnly,
    TooLarge,
    WriterSettling,
)
from sixfold.compute.sql.memory import MemoryVolume
from sixfold.compute.sql.statements import VALUE_BYTES_MAX
from sixfold.compute.volume_log import Patch

pytestmark = pytest.mark.unit


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 60))


async def engine_on(volume: MemoryVolume, *, idle_timeout_s: float = 30.0, readers: int = 4) -> SqlEngine:
    engine = SqlEngine(volume, idle_timeout_s=idle_timeout_s, readers=readers)
    await engine.start()
    return engine


async def count(engine: SqlEngine, table: str = "t") -> int:
    result, lsn = await engine.execute(f"SELECT count(*) FROM {table}")
    assert lsn == 0
    value = result.rows[0][0]
    assert isinstance(value, int)
    return value


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def test_statements_round_trip_with_columns_rows_and_commit_lsns() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        created, lsn = await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, r REAL, b BLOB)")
        assert created.columns == [] and lsn == volume.vdl > 0
        inserted, lsn2 = await engine.execute("INSERT INTO t (v, r, b) VALUES (?, ?, ?)", ["one", 1.5, b"\x00\x01"])
        assert (inserted.rows_affected, inserted.last_row_id) == (1, 1) and lsn2 > lsn
        await engine.execute("INSERT INTO t (v) VALUES (NULL)")
        selected, lsn3 = await engine.execute("SELECT k, v AS value, r, b FROM t ORDER BY k")
        assert lsn3 == 0 and selected.columns == ["k", "value", "r", "b"]
        assert selected.rows == [(1, "one", 1.5, b"\x00\x01"), (2, None, None, None)]
        assert selected.rows_affected == 0
        updated, _ = await engine.execute("UPDATE t SET v = 'x'")
        assert updated.rows_affected == 2
        none, lsn4 = await engine.execute("DELETE FROM t WHERE k = 99")
        assert none.rows_affected == 0 and lsn4 == 0  # wrote nothing: no commit to wait for
        results, lsn5 = await engine.run_transaction(
            [("INSERT INTO t (v) VALUES (?)", [str(i)]) for i in range(100)] + [("SELECT count(*) FROM t", [])]
        )
        assert results[-1].rows == [(102,)] and lsn5 == volume.vdl
        assert (await engine.execute("PRAGMA integrity_check"))[0].rows == [("ok",)]
        assert not volume.read_points  # every read point given back
        await engine.close()

    run(test)


def test_bad_input_gets_a_clear_error_and_changes_nothing() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT UNIQUE)")
        await engine.execute("INSERT INTO t VALUES (1, 'a')")
        mtrs = len(volume.mtrs)
        with pytest.raises(SqlInvalid, match="syntax error") as syntax:
            await engine.execute("SELEC 1")
        assert syntax.value.status_code_name == "INVALID_ARGUMENT"
        with pytest.raises(SqlConstraint, match=r"UNIQUE constraint failed: t\.v") as constraint:
            await engine.execute("INSERT INTO t VALUES (2, 'a')")
        assert constraint.value.status_code_name == "FAILED_PRECONDITION"
        assert constraint.value.metadata["sqlite_error"] == "SQLITE_CONSTRAINT_UNIQUE"
        with pytest.raises(TooLarge, match="bytes of SQL"):
            await engine.execute("SELECT 1" + " " * (1 << 20))
        with pytest.raises(TooLarge, match="blob"):
            await engine.execute("INSERT INTO t VALUES (3, ?)", [b"x" * (VALUE_BYTES_MAX + 1)])
        with pytest.raises(TooLarge, match="too big"):  # one SQLite computes
            await engine.execute("INSERT INTO t VALUES (3, zeroblob(?))", [VALUE_BYTES_MAX + 1])
        with pytest.raises(SqlInvalid, match="type list"):
            await engine.execute("INSERT INTO t VALUES (3, ?)", [[1, 2]])  # type: ignore[list-item]
        with pytest.raises(SqlInvalid, match="bindings"):
            await engine.execute("INSERT INTO t VALUES (?, ?)", [3])
        with pytest.raises(SqlInvalid, match="more than one statement"):
            await engine.execute("INSERT INTO t VALUES (3, 'c'); INSERT INTO t VALUES (4, 'd')")
        with pytest.raises(SqlInvalid, match="BEGIN"):
            await engine.execute("COMMIT")
        with pytest.raises(SqlInvalid, match="empty"):
            await engine.execute("  ")
        with pytest.raises(SqlConstraint) as second:
            await engine.run_transaction(
                [("INSERT INTO t VALUES (5, 'e')", []), ("INSERT INTO t VALUES (6, 'a')", []), ("SELECT 1", [])]
            )
        assert second.value.metadata["statement_index"] == "1"
        with pytest.raises(UnknownTransaction) as unknown:
            engine.transaction("no-such-id")
        assert unknown.value.status_code_name == "NOT_FOUND"
        assert len(volume.mtrs) == mtrs  # nothing was written
        assert (await engine.execute("SELECT k, v FROM t"))[0].rows == [(1, "a")]
        await engine.execute("INSERT INTO t VALUES (2, 'b')")  # and it keeps serving
        assert await count(engine) == 2
        await engine.close()

    run(test)


def test_commits_pipeline_and_are_acknowledged_in_lsn_order_once_durable() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        volume.hold = True
        first = asyncio.create_task(engine.execute("INSERT INTO t VALUES (1, 'a')"))
        await wait_until(lambda: volume.lsn_allocated > volume.vdl, "the first commit handed off")
        # The write lock is free while the first waits for durability: the second runs and hands off.
        second = asyncio.create_task(engine.execute("INSERT INTO t VALUES (2, 'b')"))
        await wait_until(lambda: len(volume._in_flight) == 2, "the second commit handed off")
        assert not first.done() and not second.done()
        assert await count(engine) == 0  # readers see only what is durable
        volume.release(1)
        _, first_lsn = await first
        assert not second.done() and await count(engine) == 1
        volume.release()
        _, second_lsn = await second
        assert first_lsn < second_lsn == volume.vdl
        assert await count(engine) == 2
        await engine.close()

    run(test)


def test_a_read_only_transaction_keeps_its_snapshot_while_writes_commit() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume, readers=2)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await engine.execute("INSERT INTO t VALUES (1, 'old')")
        reader = await engine.begin(read_only=True)
        assert reader.read_point == volume.vdl and reader.read_only
        assert engine.transaction(reader.txn_id) is reader
        for i in range(2, 50):
            await engine.execute("INSERT INTO t VALUES (?, 'new')", [i])
        await engine.execute("UPDATE t SET v = 'changed' WHERE k = 1")
        assert (await reader.execute("SELECT count(*), max(v) FROM t")).rows == [(1, "old")]
        assert volume.read_points.lowest(volume.vdl) == reader.read_point  # in flight: the retention horizon
        with pytest.raises(SqlReadOnly):
            await reader.execute("INSERT INTO t VALUES (100, 'x')")
        assert (await reader.execute("SELECT v FROM t WHERE k = 1")).rows == [("old",)]  # still open
        assert await reader.commit() == 0
        with pytest.raises(UnknownTransaction):
            engine.transaction(reader.txn_id)
        assert await count(engine) == 49
        assert not volume.read_points
        await engine.close()

    run(test)


def test_an_interactive_write_transaction_holds_the_lock_and_is_all_or_nothing() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT UNIQUE)")
        txn = await engine.begin()
        assert txn.read_point == 0 and not txn.read_only
        await txn.execute("INSERT INTO t VALUES (1, 'a')")
        other = asyncio.create_task(engine.execute("INSERT INTO t VALUES (2, 'b')"))
        await asyncio.sleep(0.1)
        assert not other.done()  # waits for the write lock
        with pytest.raises(SqlConstraint):  # a failed statement: undone, the transaction goes on
            await txn.execute("INSERT INTO t VALUES (3, 'a')")
        assert (await txn.execute("SELECT count(*) FROM t")).rows == [(1,)]
        assert await count(engine) == 0  # not committed yet
        lsn = await txn.commit()
        assert lsn > 0
        _, other_lsn = await other
        assert other_lsn > lsn and await count(engine) == 2
        rolled = await engine.begin()
        await rolled.execute("DELETE FROM t")
        await rolled.rollback()
        assert await count(engine) == 2
        with pytest.raises(UnknownTransaction):
            await rolled.execute("SELECT 1")
        empty = await engine.begin()
        assert await empty.commit() == 0
        await engine.close()

    run(test)


def test_an_abandoned_transaction_is_rolled_back_and_the_next_writer_proceeds() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume, idle_timeout_s=0.3)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        abandoned = await engine.begin()
        await abandoned.execute("INSERT INTO t VALUES (1)")
        _, lsn = await asyncio.wait_for(engine.execute("INSERT INTO t VALUES (2)"), 5)  # waits ~0.3 s, then runs
        assert lsn > 0
        with pytest.raises(TransactionAborted) as aborted:
            await abandoned.execute("SELECT 1")
        assert aborted.value.reason == REASON_IDLE_TIMEOUT and aborted.value.status_code_name == "ABORTED"
        assert engine.transaction(abandoned.txn_id) is abandoned  # remembered: its calls say why
        with pytest.raises(TransactionAborted):
            await abandoned.commit()
        await abandoned.rollback()
        with pytest.raises(UnknownTransaction):
            engine.transaction(abandoned.txn_id)
        assert (await engine.execute("SELECT k FROM t"))[0].rows == [(2,)]
        idle_reader = await engine.begin(read_only=True)
        await asyncio.sleep(0.6)
        with pytest.raises(TransactionAborted):
            await idle_reader.execute("SELECT 1")
        assert not volume.read_points  # its read point was given back
        await engine.close()

    run(test)


def test_a_regain_that_truncates_commits_in_flight_fails_them_and_later_ones_then_writes_resume() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await engine.execute("INSERT INTO t VALUES (1, 'durable')")
        volume.hold = True
        first = asyncio.create_task(engine.execute("INSERT INTO t VALUES (2, 'lost')"))
        await wait_until(lambda: len(volume._in_flight) == 1, "the first commit handed off")
        second = asyncio.create_task(engine.execute("UPDATE t SET v = 'lost too' WHERE k = 2"))
        await wait_until(lambda: len(volume._in_flight) == 2, "the second commit, built on the first, handed off")
        volume.fail_in_flight()
        with pytest.raises(NotCommitted):
            await first
        with pytest.raises(NotCommitted):
            await second
        volume.hold = False
        await engine.execute("INSERT INTO t VALUES (3, 'after')")  # the writer connection starts afresh
        assert (await engine.execute("SELECT k, v FROM t ORDER BY k"))[0].rows == [(1, "durable"), (3, "after")]
        assert (await engine.execute("PRAGMA integrity_check"))[0].rows == [("ok",)]
        await engine.close()

    run(test)


def test_writes_wait_for_an_unknown_outcome_to_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(volume_source, "SETTLE_WAIT_S", 0.2)

    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        volume.hold = True
        unknown = asyncio.create_task(engine.execute("INSERT INTO t VALUES (1)"))
        await wait_until(lambda: len(volume._in_flight) == 1, "the commit handed off")
        volume.time_out()
        with pytest.raises(CommitTimeout):
            await unknown
        with pytest.raises(WriterSettling):  # its fate is not known: no write may build beside it
            await engine.execute("INSERT INTO t VALUES (2)")
        volume.release()  # it became durable after all
        volume.hold = False
        await engine.execute("INSERT INTO t VALUES (2)")
        assert (await engine.execute("SELECT k FROM t ORDER BY k"))[0].rows == [(1,), (2,)]
        await engine.close()

    run(test)


def test_fencing_and_closing_abort_open_transactions() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        open_txn = await engine.begin()
        await open_txn.execute("INSERT INTO t VALUES (1)")
        volume.fence()
        with pytest.raises(TransactionAborted) as fenced:
            await open_txn.commit()
        assert fenced.value.reason == REASON_FENCED
        with pytest.raises(TransactionAborted) as fenced_write:
            await engine.execute("INSERT INTO t VALUES (2)")
        assert fenced_write.value.reason == REASON_FENCED

        volume2 = MemoryVolume()
        engine2 = await engine_on(volume2)
        await engine2.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        writing = await engine2.begin()
        await writing.execute("INSERT INTO t VALUES (1)")
        reading = await engine2.begin(read_only=True)
        await engine2.close()
        for txn in (writing, reading):
            with pytest.raises(TransactionAborted) as closed:
                await txn.execute("SELECT 1")
            assert closed.value.reason == REASON_ENGINE_CLOSED
        with pytest.raises(TransactionAborted):
            await engine2.execute("SELECT 1")
        await engine.close()

    run(test)


def test_a_new_engine_on_the_volume_sees_every_commit() -> None:
    async def test() -> None:
        volume = MemoryVolume(page_size=1024)
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        for i in range(20):
            await engine.run_transaction(
                [("INSERT INTO t VALUES (?, randomblob(300))", [i * 10 + j]) for j in range(10)]
            )
        await engine.close()
        again = await engine_on(volume)
        assert await count(again) == 200
        assert (await again.execute("PRAGMA integrity_check"))[0].rows == [("ok",)]
        assert (await again.execute("PRAGMA page_size"))[0].rows == [(1024,)]
        await again.close()

    run(test)


def test_readers_are_a_bounded_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    from sixfold.compute.sql import pool

    monkeypatch.setattr(pool, "READER_WAIT_S", 0.2)

    async def test() -> None:
        engine = await engine_on(MemoryVolume(), readers=1)
        await engine.execute("CREATE TABLE t (k)")
        held = await engine.begin(read_only=True)
        with pytest.raises(SqlBusy):
            await engine.execute("SELECT count(*) FROM t")
        await held.rollback()
        assert await count(engine) == 0
        await engine.close()

    run(test)


def test_a_volume_written_some_other_way_is_refused() -> None:
    async def test() -> None:
        volume = MemoryVolume()
        volume.pages.apply(1, [Patch(0, 0, b"not a database" * 8 + b"\x00\x00\x00\x05")])
        volume.vdl = volume.lsn_allocated = 1
        engine = SqlEngine(volume)
        with pytest.raises(SqlCorrupt, match="does not hold a SQLite database"):
            await engine.start()

    run(test)


def test_a_hand_off_refused_with_commits_queued_behind_it_does_not_stop_later_writes() -> None:
    """The first commit's hand-off fails (no write quorum: nothing written) while two more wait behind it:
    all three fail, and once the volume accepts MTRs again the next write goes through (the queued ones were
    once failed twice and stopped the hand-off task, so writes waited for a restart)."""

    async def test() -> None:
        from sixfold.compute.errors import QuorumNotMet

        volume = MemoryVolume()
        engine = await engine_on(volume)
        await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        accepting = volume.submit
        refusals = 0

        async def refuse(patches: list[Patch], *, base_cpl: int = 0, base_epoch: int = 0) -> tuple[int, object]:
            nonlocal refusals
            refusals += 1
            await asyncio.sleep(0.05)  # the later commits queue up meanwhile
            raise QuorumNotMet("PG 0 reaches 1 of 6 segments. Nothing was written.")

        volume.submit = refuse  # type: ignore[method-assign,assignment]  # a volume that lost its write quorum
        outcomes = await asyncio.gather(
            *(engine.execute(f"INSERT INTO t VALUES ({k})") for k in (1, 2, 3)), return_exceptions=True
        )
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        assert refusals >= 1
        volume.submit = accepting  # type: ignore[method-assign]  # the quorum is back
        _, lsn = await asyncio.wait_for(engine.execute("INSERT INTO t VALUES (4)"), 5)
        assert lsn > 0
        assert (await engine.execute("SELECT k FROM t"))[0].rows == [(4,)]
        await engine.close()

    run(test)
