"""The SQL engine on a real volume: a cluster started through the launcher (storage only), and a `Volume`
opened in this process the way the compute node opens one, with the engine on top.

A volume of 64 KiB segments (16 pages of 4 KiB per PG) makes a few hundred rows span several PGs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import grpc
import pytest

from sixfold.compute.sql import REASON_IDLE_TIMEOUT, SqlEngine, TransactionAborted, Value
from sixfold.compute.sql.errors import SqlConstraint
from sixfold.compute.volume import Channels, Volume
from sixfold.compute.volume_log import Mtr
from sixfold.storage.security import pki, transport
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.tools.cluster import Cluster
from sixfold.tools.cluster_tls import harness_identity

pytestmark = [pytest.mark.integration, pytest.mark.cluster_options(compute=False)]

SEGMENT_BYTES = 64 * 1024
TEST_TIMEOUT_S = 240


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), TEST_TIMEOUT_S))


@asynccontextmanager
async def opened(cluster: Cluster, volume_id: str, **engine_options: float) -> AsyncIterator[tuple[Volume, SqlEngine]]:
    """Create the volume if needed, open it (a recovery), start the engine; close all of it after. This process
    is the writer of a storage-only cluster: a writer certificate from the cluster's CA."""
    transport.use(harness_identity(cluster.state_dir, pki.ROLE_WRITER))
    channel = transport.aio_channel(cluster.control_plane_address(), ())
    control_plane = cp_grpc.ControlPlaneServiceStub(channel)
    try:
        await control_plane.CreateVolume(
            cp_pb.CreateVolumeRequest(volume_id=volume_id, segment_size_bytes=SEGMENT_BYTES), timeout=30
        )
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    channels = Channels()
    volume = Volume(volume_id, control_plane, channels)
    try:
        await volume.open()
        engine = SqlEngine(
            volume,
            idle_timeout_s=engine_options.get("idle_timeout_s", 30.0),
            readers=int(engine_options.get("readers", 4)),
        )
        await engine.start()
        try:
            yield volume, engine
        finally:
            await engine.close()
    finally:
        await volume.close()
        await channels.close()
        await channel.close()


async def scalar(engine: SqlEngine, sql: str) -> object:
    result, _ = await engine.execute(sql)
    return result.rows[0][0]


def test_sql_round_trips_a_two_pg_transaction_is_one_mtr_and_a_reopen_sees_every_commit(cluster: Cluster) -> None:
    async def test() -> None:
        async with opened(cluster, "sql") as (volume, engine):
            assert volume.pages_per_pg == 16
            mtrs: list[Mtr] = []
            volume.on_allocate = mtrs.append
            _, lsn = await engine.execute(
                "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT UNIQUE, cents INT)"
            )
            assert lsn > 0 and volume.vdl >= lsn
            inserted, _ = await engine.execute("INSERT INTO accounts (owner, cents) VALUES (?, ?)", ["alice", 100])
            assert inserted.rows_affected == 1 and inserted.last_row_id == 1
            rows, _ = await engine.execute("SELECT id, owner, cents FROM accounts")
            assert rows.columns == ["id", "owner", "cents"] and rows.rows == [(1, "alice", 100)]

            # ~120 KiB of rows in one transaction: pages in at least two PGs, one MTR.
            mtrs.clear()
            batch: list[tuple[str, Sequence[Value]]] = [
                ("INSERT INTO accounts (owner, cents) VALUES (?, ?)", [f"owner-{i:04d}-" + "x" * 300, i])
                for i in range(400)
            ]
            _, lsn = await engine.run_transaction(batch)
            assert len(mtrs) == 1 and mtrs[0].cpl == lsn
            assert len(set(mtrs[0].pg_of_record)) >= 2, "the transaction should touch pages in two PGs"
            assert len(volume.pgs) >= 2

            # A transaction across both PGs that fails at its last statement writes nothing at all.
            mtrs.clear()
            vdl = volume.vdl
            failing = [
                ("INSERT INTO accounts (owner, cents) VALUES (?, 0)", [f"late-{i}-" + "y" * 300]) for i in range(300)
            ]
            with pytest.raises(SqlConstraint):
                await engine.run_transaction(
                    failing + [("INSERT INTO accounts (owner, cents) VALUES ('alice', 1)", [])]
                )
            assert mtrs == [] and volume.vdl == vdl
            assert await scalar(engine, "SELECT count(*) FROM accounts") == 401
            total = await scalar(engine, "SELECT sum(cents) FROM accounts")

            # Interactive: a transfer, committed once durable.
            txn = await engine.begin()
            await txn.execute("UPDATE accounts SET cents = cents - 10 WHERE id = 1")
            await txn.execute("UPDATE accounts SET cents = cents + 10 WHERE id = 2")
            commit_lsn = await txn.commit()
            assert volume.vdl >= commit_lsn > lsn
            assert not volume.read_points  # no read point left in flight

        # A new writer: a recovery, then every acknowledged transaction is there, and nothing else.
        async with opened(cluster, "sql") as (volume, engine):
            assert await scalar(engine, "SELECT count(*) FROM accounts") == 401
            assert await scalar(engine, "SELECT sum(cents) FROM accounts") == total
            assert await scalar(engine, "SELECT cents FROM accounts WHERE id = 1") == 90
            assert await scalar(engine, "PRAGMA integrity_check") == "ok"
            await engine.execute("INSERT INTO accounts (owner, cents) VALUES ('bob', 5)")
            assert await scalar(engine, "SELECT count(*) FROM accounts") == 402

    run(test)


def test_a_snapshot_holds_while_writes_commit_and_an_abandoned_writer_is_rolled_back(cluster: Cluster) -> None:
    async def test() -> None:
        async with opened(cluster, "snap", idle_timeout_s=1.0) as (volume, engine):
            await engine.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            await engine.run_transaction([("INSERT INTO t VALUES (?, ?)", [i, "old" * 100]) for i in range(200)])
            reader = await engine.begin(read_only=True)
            assert reader.read_point == volume.vdl
            before = (await reader.execute("SELECT count(*), min(v), max(v) FROM t")).rows
            for round_ in range(5):  # rewrite every page the reader read, and grow into new ones
                await engine.run_transaction(
                    [
                        ("UPDATE t SET v = ? WHERE k % 5 = ?", [f"new{round_}" * 100, round_]),
                        ("INSERT INTO t VALUES (?, ?)", [1000 + round_, "more" * 300]),
                    ]
                )
                # held in flight: every segment's retention horizon stays at or below it
                assert all(volume.min_read_point(pg) <= reader.read_point for pg in volume.pgs)
            assert (await reader.execute("SELECT count(*), min(v), max(v) FROM t")).rows == before
            assert volume.storage_page_reads > 0
            await reader.commit()
            assert await scalar(engine, "SELECT count(*) FROM t") == 205

            abandoned = await engine.begin()
            await abandoned.execute("DELETE FROM t")
            started = asyncio.get_running_loop().time()
            await engine.execute("INSERT INTO t VALUES (5000, 'next writer')")  # waits for the idle timeout
            assert asyncio.get_running_loop().time() - started < 10
            with pytest.raises(TransactionAborted) as aborted:
                await abandoned.execute("SELECT 1")
            assert aborted.value.reason == REASON_IDLE_TIMEOUT
            assert await scalar(engine, "SELECT count(*) FROM t") == 206
            assert await scalar(engine, "PRAGMA integrity_check") == "ok"

    run(test)
