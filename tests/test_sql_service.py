"""compute.v1.SqlService on a real cluster (through the launcher), over SQLite on the volume:
round trips of every value type, all-or-nothing transactions, the Session stream, snapshots of
read-only transactions, and bad input answered with a clear status while the service goes on.
One cluster serves the whole module; each test uses its own tables."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.compute.sql_values import PARAMS_MAX, ROWS_PER_RESULT_MAX, SQL_BYTES_MAX, VALUE_BYTES_MAX
from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.compute.v1 import sql_service_pb2_grpc as sgrpc
from sixfold.storage.security import transport
from sixfold.tools.cluster import Cluster
from tests.sql_cluster import module_cluster

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def sql_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as cluster:
        yield cluster


@pytest.fixture
def db(sql_cluster: Cluster) -> Iterator[SqlClient]:
    with SqlClient(sql_cluster.compute_address(), timeout_s=TIMEOUT_S) as client:
        yield client


def code_of(raised: pytest.ExceptionInfo[SqlError]) -> str:
    return raised.value.code.name


def test_round_trip_of_every_type_and_the_services_are_announced(sql_cluster: Cluster, db: SqlClient) -> None:
    with transport.channel(sql_cluster.compute_address(), ()) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("compute.v1.SqlService", "compute.v1.KvService", "compute.v1.VolumeService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service

    created = db.execute("CREATE TABLE types(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n)")
    assert created.commit_lsn > 0 and created.columns == []
    rows = [
        (1, -(1 << 63), -0.5, "", b"", None),
        (2, (1 << 63) - 1, 1e300, "héllo wörld ✓", bytes(range(256)), None),
        (3, 0, float("inf"), "x" * 5000, b"\x00" * 65536, None),
    ]
    lsns = [db.execute("INSERT INTO types VALUES (?, ?, ?, ?, ?, ?)", row).commit_lsn for row in rows]
    assert lsns == sorted(lsns) and lsns[0] > created.commit_lsn
    got = db.execute("SELECT * FROM types ORDER BY id")
    assert got.columns == ["id", "i", "r", "t", "b", "n"] and got.rows == rows and got.commit_lsn == 0
    assert db.execute("SELECT typeof(i), typeof(r), typeof(t), typeof(b), typeof(n) FROM types WHERE id = 2").rows == [
        ("integer", "real", "text", "blob", "null")
    ]
    updated = db.execute("UPDATE types SET t = ? WHERE id >= ?", ["changed", 2])
    assert updated.rows_affected == 2 and updated.commit_lsn > lsns[-1]
    inserted = db.execute("INSERT INTO types(i) VALUES (42)")
    assert (inserted.rows_affected, inserted.last_row_id) == (1, 4)
    assert db.execute("DELETE FROM types WHERE id IN (1, 4)").rows_affected == 2
    assert db.execute("SELECT id, t FROM types ORDER BY id").rows == [(2, "changed"), (3, "changed")]
    assert db.execute("PRAGMA integrity_check").rows == [("ok",)]


def test_run_transaction_is_all_or_nothing(db: SqlClient) -> None:
    db.execute("CREATE TABLE account(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))")
    _, lsn = db.run_transaction([("INSERT INTO account VALUES (?, ?)", [i, 100]) for i in range(1, 201)])
    assert lsn > 0
    before = db.execute("SELECT sum(balance), count(*) FROM account").rows
    with pytest.raises(SqlError) as raised:
        db.run_transaction(
            [
                "UPDATE account SET balance = balance + 1",
                "INSERT INTO account VALUES (201, 5)",
                ("UPDATE account SET balance = balance - ? WHERE id = ?", [102, 1]),  # CHECK fails: last statement
            ]
        )
    assert code_of(raised) == "FAILED_PRECONDITION" and "CHECK constraint failed" in raised.value.details
    assert db.execute("SELECT sum(balance), count(*) FROM account").rows == before == [(20_000, 200)]
    results, lsn2 = db.run_transaction(
        [
            ("UPDATE account SET balance = balance - 30 WHERE id = ?", [1]),
            ("UPDATE account SET balance = balance + 30 WHERE id = ?", [2]),
            "SELECT balance FROM account WHERE id IN (1, 2) ORDER BY id",
        ]
    )
    assert lsn2 > lsn and results[2].rows == [(70,), (130,)]


def test_sessions_and_unary_transactions(db: SqlClient) -> None:
    db.execute("CREATE TABLE s(id INTEGER PRIMARY KEY, v TEXT)")
    with db.session() as session:
        txn_id = session.begin()
        assert txn_id and session.transaction_open
        session.execute("INSERT INTO s VALUES (1, 'a')")
        with pytest.raises(SqlError) as raised:
            session.execute("INSERT INTO s VALUES (1, 'again')")  # fails; the session goes on
        assert code_of(raised) == "FAILED_PRECONDITION" and "UNIQUE" in raised.value.details
        with pytest.raises(SqlError) as raised:
            session.execute("SELEC 1")
        assert code_of(raised) == "INVALID_ARGUMENT"
        assert session.transaction_open
        session.execute("INSERT INTO s VALUES (2, 'b')")
        assert session.execute("SELECT count(*) FROM s").rows == [(2,)]
        assert db.execute("SELECT count(*) FROM s").rows == [(0,)]  # not committed yet
        lsn = session.commit()
        assert lsn > 0 and not session.transaction_open
    assert db.execute("SELECT v FROM s ORDER BY id").rows == [("a",), ("b",)]

    with db.session() as abandoned:  # the stream's end rolls back what it left open
        abandoned.begin()
        abandoned.execute("DELETE FROM s")
    assert db.execute("SELECT count(*) FROM s").rows == [(2,)]

    txn = db.begin()
    txn.execute("INSERT INTO s VALUES (3, 'c')")
    assert txn.commit() > lsn
    txn = db.begin()
    txn.execute("DELETE FROM s")
    txn.rollback()
    with pytest.raises(SqlError) as raised:
        txn.execute("SELECT 1")
    assert code_of(raised) == "NOT_FOUND"
    assert db.execute("SELECT count(*) FROM s").rows == [(3,)]


def test_a_read_only_session_keeps_its_snapshot_while_others_commit(db: SqlClient) -> None:
    db.execute("CREATE TABLE snap(id INTEGER PRIMARY KEY, v INTEGER)")
    db.run_transaction([("INSERT INTO snap VALUES (?, ?)", [i, i]) for i in range(50)])
    with db.session() as reader:
        reader.begin(read_only=True)
        assert reader.read_point > 0
        first = reader.execute("SELECT count(*), sum(v) FROM snap").rows
        for i in range(50, 60):
            db.execute("INSERT INTO snap VALUES (?, ?)", [i, i])
        db.execute("UPDATE snap SET v = v + 1000")
        assert reader.execute("SELECT count(*), sum(v) FROM snap").rows == first == [(50, sum(range(50)))]
        with pytest.raises(SqlError):
            reader.execute("DELETE FROM snap")  # read-only
        assert reader.execute("SELECT count(*) FROM snap").rows == [(50,)]
        reader.rollback()
    assert db.execute("SELECT count(*), sum(v) FROM snap").rows == [(60, sum(range(60)) + 60 * 1000)]


def test_bad_input_gets_a_clear_status_and_the_service_keeps_serving(sql_cluster: Cluster, db: SqlClient) -> None:
    db.execute("CREATE TABLE bad(id INTEGER PRIMARY KEY, n INTEGER NOT NULL) STRICT")
    db.execute("INSERT INTO bad VALUES (1, 1)")
    with transport.channel(sql_cluster.compute_address(), ()) as channel:
        stub = sgrpc.SqlServiceStub(channel)

        def refused(method: str, request: object) -> tuple[str, str]:
            with pytest.raises(grpc.RpcError) as raised:
                getattr(stub, method)(request, timeout=TIMEOUT_S)
            return raised.value.code().name, raised.value.details() or ""

        cases = [
            ("Execute", spb.ExecuteRequest(sql="SELEC 1"), "INVALID_ARGUMENT", "syntax error"),
            ("Execute", spb.ExecuteRequest(sql="INSERT INTO bad VALUES (1, 2)"), "FAILED_PRECONDITION", "UNIQUE"),
            ("Execute", spb.ExecuteRequest(sql="SELECT 1 -- " + "x" * SQL_BYTES_MAX), "INVALID_ARGUMENT", "limit"),
            (
                "Execute",
                spb.ExecuteRequest(
                    sql="INSERT INTO bad VALUES (9, ?)", params=[spb.Value(blob=bytes(VALUE_BYTES_MAX + 1))]
                ),
                "INVALID_ARGUMENT",
                "limit",
            ),
            ("Execute", spb.ExecuteRequest(sql="SELECT ?", params=[spb.Value()]), "INVALID_ARGUMENT", "no type"),
            (
                "Execute",
                spb.ExecuteRequest(sql="INSERT INTO bad VALUES (9, ?)", params=[spb.Value(text="nine")]),
                "FAILED_PRECONDITION",  # a datatype mismatch in a STRICT table: a constraint, SQLite's own word
                "cannot store TEXT value in INTEGER column",
            ),
            (
                "Execute",
                spb.ExecuteRequest(sql="SELECT 1", params=[spb.Value(integer=1)] * (PARAMS_MAX + 1)),
                "INVALID_ARGUMENT",
                "999",
            ),
            ("Execute", spb.ExecuteRequest(volume_id="nosuch", sql="SELECT 1"), "NOT_FOUND", "nosuch"),
            ("Commit", spb.CommitRequest(txn_id="no-such-txn"), "NOT_FOUND", ""),
            ("Statement", spb.StatementRequest(txn_id="no-such-txn", sql="SELECT 1"), "NOT_FOUND", ""),
            ("Rollback", spb.RollbackRequest(txn_id=""), "INVALID_ARGUMENT", "txn_id"),
            (
                "Execute",
                spb.ExecuteRequest(
                    sql="WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT ?) SELECT i FROM n",
                    params=[spb.Value(integer=ROWS_PER_RESULT_MAX + 1)],
                ),
                "RESOURCE_EXHAUSTED",
                "LIMIT",
            ),
            (
                "RunTransaction",
                spb.RunTransactionRequest(statements=[spb.SqlStatement(sql="SELECT 1")] * 1001),
                "INVALID_ARGUMENT",
                "1000",
            ),
        ]
        for method, request, code, words in cases:
            got_code, details = refused(method, request)
            assert details, (method, request)
            assert code in ("", got_code) and words in details, (method, got_code, details)
            assert got_code not in ("UNKNOWN", "INTERNAL"), (method, got_code, details)
        assert stub.Execute(spb.ExecuteRequest(sql="SELECT 1"), timeout=TIMEOUT_S).result.rows[0].values[0].integer == 1
    assert db.execute("SELECT id, n FROM bad").rows == [(1, 1)]  # nothing committed changed


def test_raw_page_writes_to_a_database_volume_are_refused(sql_cluster: Cluster, db: SqlClient) -> None:
    from sixfold.compute.client import VolumeClient, VolumeError

    db.execute("CREATE TABLE IF NOT EXISTS guarded(x INTEGER)")
    db.execute("INSERT INTO guarded VALUES (42)")
    with VolumeClient(sql_cluster.compute_address()) as raw, pytest.raises(VolumeError) as refused:
        raw.write_page("vol0", 1, b"garbage")
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "holds a SQLite database" in refused.value.details
    assert db.execute("SELECT x FROM guarded").rows == [(42,)]
    assert db.execute("PRAGMA integrity_check").rows == [("ok",)]
