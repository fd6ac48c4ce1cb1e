"""The read-only SQL engine (a read replica's, compute/sql/engine.py rule 4) over an in-memory volume that a
writer engine changes: reads at one read point, newer commits seen at the next transaction, writes refused
with FAILED_PRECONDITION and nothing changed, an empty volume UNAVAILABLE."""

from __future__ import annotations

import asyncio

import pytest

from sixfold.compute.replica_state import ReadReplicaWrite
from sixfold.compute.sql import SqlEngine
from sixfold.compute.sql.memory import MemoryVolume
from sixfold.storage.errors import REASON_READ_REPLICA, Unavailable
from sixfold.storage.status import status_code

pytestmark = pytest.mark.unit


def test_a_read_only_engine_reads_newer_commits_and_refuses_every_write() -> None:
    async def run() -> None:
        volume = MemoryVolume()
        reader = SqlEngine(volume, read_only=True, readers=2)
        await reader.start()
        with pytest.raises(Unavailable, match="has not created it"):
            await reader.execute("SELECT 1")
        writer = SqlEngine(volume)
        await writer.start()
        await writer.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await writer.execute("INSERT INTO t VALUES (1, 'one')")
        result, lsn = await reader.execute("SELECT v FROM t WHERE k = 1")
        assert result.rows == [("one",)] and lsn == 0

        txn = await reader.begin(read_only=True)
        before = txn.read_point
        await writer.execute("INSERT INTO t VALUES (2, 'two')")
        assert (await txn.execute("SELECT count(*) FROM t")).rows == [(1,)]  # its read point
        await txn.commit()
        assert (await reader.execute("SELECT count(*) FROM t"))[0].rows == [(2,)]  # the next one sees it
        assert volume.vdl > before

        mtrs = len(volume.mtrs)
        for refused in (
            reader.execute("INSERT INTO t VALUES (3, 'three')"),
            reader.execute("WITH x AS (SELECT 1) INSERT INTO t SELECT 4, 'four' FROM x"),
            reader.run_transaction([("SELECT 1", ()), ("DELETE FROM t", ())]),
            reader.begin(read_only=False),
        ):
            with pytest.raises(ReadReplicaWrite) as caught:
                await refused
            assert status_code(caught.value).name == "FAILED_PRECONDITION"
            assert caught.value.reason == REASON_READ_REPLICA and "read replica" in caught.value.message
        results, lsn = await reader.run_transaction([("SELECT count(*) FROM t", ()), ("SELECT max(k) FROM t", ())])
        assert [r.rows for r in results] == [[(2,)], [(2,)]] and lsn == 0
        assert len(volume.mtrs) == mtrs  # nothing written
        await reader.close()
        await writer.close()

    asyncio.run(asyncio.wait_for(run(), 60))
