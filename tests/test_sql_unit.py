"""SqlService, KvService and their client in this process, over a fake engine (a local SQLite
file, tests/sql_fakes.py): the wire conversions and bounds, the Session stream's rules, the KV
layer's range arithmetic and operations. The same services over the real engine on a cluster:
tests/test_sql_service.py and tests/test_kv.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sixfold.compute.kv_service import prefix_end, scan_range
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.compute.sql_values import (
    PARAMS_MAX,
    ROWS_PER_RESULT_MAX,
    SQL_BYTES_MAX,
    VALUE_BYTES_MAX,
    value_from_proto,
    value_to_proto,
)
from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.compute.v1 import sql_service_pb2_grpc as sgrpc
from sixfold.storage.errors import InvalidRequest
from tests.sql_fakes import fake_compute

pytestmark = pytest.mark.unit


@pytest.fixture
def address(tmp_path: Path) -> Iterator[str]:
    with fake_compute(tmp_path) as served:
        yield served


def code_of(raised: pytest.ExceptionInfo[SqlError]) -> str:
    return raised.value.code.name


def test_the_protos_follow_the_style() -> None:
    """buf style, as tests/test_protos.py checks for the other services: one request/response per RPC."""
    from sixfold.compute.v1 import kv_service_pb2, sql_service_pb2

    for module in (sql_service_pb2, kv_service_pb2):
        assert module.DESCRIPTOR.package == "compute.v1"
        for service in module.DESCRIPTOR.services_by_name.values():
            assert service.name.endswith("Service")
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"


# --- values and ranges --------------------------------------------------------------------------


def test_values_round_trip_and_refuse_what_sqlite_cannot_hold() -> None:
    for value in (None, 0, -1, (1 << 63) - 1, -(1 << 63), 1.5, float("inf"), "", "héllo", b"", b"\x00\xff"):
        assert value_from_proto(value_to_proto(value)) == value
    assert value_to_proto(True).integer == 1
    with pytest.raises(InvalidRequest, match="64-bit"):
        value_to_proto(1 << 63)
    with pytest.raises(InvalidRequest, match="type list"):
        value_to_proto([1])  # type: ignore[arg-type]  # the point: a type the wire has no kind for
    with pytest.raises(InvalidRequest, match="parameter 2 has no type"):
        value_from_proto(spb.Value(), "parameter 2")


def test_prefix_ranges() -> None:
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") is None and prefix_end(b"") is None
    assert scan_range(b"", b"", b"") == (b"", None)
    assert scan_range(b"", b"", b"user:") == (b"user:", b"user;")
    assert scan_range(b"user:5", b"", b"user:") == (b"user:5", b"user;")
    assert scan_range(b"a", b"user:3", b"user:") == (b"user:", b"user:3")
    low, high = scan_range(b"z", b"", b"user:")
    assert high is not None and low >= high  # empty


# --- SQL through the service ----------------------------------------------------------------------


def test_execute_and_transactions(address: str) -> None:
    with SqlClient(address, timeout_s=5) as db:
        created = db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB)")
        assert created.commit_lsn > 0 and created.columns == []
        row = (7, -(1 << 63), 2.5, "héllo", b"\x00\x01")
        inserted = db.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?)", row)
        assert (inserted.rows_affected, inserted.last_row_id) == (1, 7) and inserted.commit_lsn > created.commit_lsn
        db.execute("INSERT INTO t(id) VALUES (8)")
        got = db.execute("SELECT * FROM t ORDER BY id")
        assert got.columns == ["id", "i", "r", "s", "b"] and got.commit_lsn == 0
        assert got.rows == [row, (8, None, None, None, None)]

        with pytest.raises(SqlError) as raised:
            db.run_transaction(["UPDATE t SET s = 'changed'", ("INSERT INTO t(id) VALUES (?)", [7])])
        assert code_of(raised) == "FAILED_PRECONDITION" and "UNIQUE" in raised.value.details
        assert db.execute("SELECT count(*) FROM t WHERE s = 'changed'").rows == [(0,)]  # all or nothing
        results, lsn = db.run_transaction(["UPDATE t SET s = 'x'", "SELECT count(*) FROM t"])
        assert lsn > 0 and results[0].rows_affected == 2 and results[1].rows == [(2,)]

        txn = db.begin()
        txn.execute("DELETE FROM t WHERE id = 8")
        assert txn.commit() > lsn
        with pytest.raises(SqlError) as raised:
            txn.commit()
        assert code_of(raised) == "NOT_FOUND" and "does not exist" in raised.value.details


def test_bad_input_is_refused_and_the_service_keeps_serving(address: str) -> None:
    with SqlClient(address, timeout_s=5) as db, grpc.insecure_channel(address) as channel:
        stub = sgrpc.SqlServiceStub(channel)

        def status(request: spb.ExecuteRequest) -> tuple[grpc.StatusCode, str]:
            with pytest.raises(grpc.RpcError) as raised:
                stub.Execute(request, timeout=5)
            return raised.value.code(), raised.value.details() or ""

        db.execute("CREATE TABLE t(x INTEGER NOT NULL) STRICT")
        with pytest.raises(SqlError) as raised:
            db.execute("SELEC 1")
        assert code_of(raised) == "INVALID_ARGUMENT" and "syntax error" in raised.value.details
        with pytest.raises(SqlError) as raised:
            db.execute("INSERT INTO t VALUES (NULL)")
        assert code_of(raised) == "FAILED_PRECONDITION"
        with pytest.raises(SqlError) as raised:
            db.execute("SELECT 1", ["x" * (VALUE_BYTES_MAX + 1)])  # refused before any call
        assert code_of(raised) == "INVALID_ARGUMENT" and "over the limit" in raised.value.details
        code, details = status(spb.ExecuteRequest(sql="SELECT 1 -- " + "x" * SQL_BYTES_MAX))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "over the limit" in details
        code, details = status(spb.ExecuteRequest(sql="SELECT ?", params=[spb.Value(blob=bytes(VALUE_BYTES_MAX + 1))]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "blob" in details
        code, details = status(spb.ExecuteRequest(sql="SELECT ?", params=[spb.Value()]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "parameter 1 has no type" in details
        code, details = status(spb.ExecuteRequest(sql="SELECT 1", params=[spb.Value(null=True)] * (PARAMS_MAX + 1)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and str(PARAMS_MAX) in details
        code, details = status(spb.ExecuteRequest(volume_id="nosuch", sql="SELECT 1"))
        assert code == grpc.StatusCode.NOT_FOUND and "nosuch" in details
        code, details = status(
            spb.ExecuteRequest(
                sql=f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                f"LIMIT {ROWS_PER_RESULT_MAX + 1}) SELECT i FROM n"
            )
        )
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "LIMIT" in details
        with pytest.raises(grpc.RpcError) as rpc_raised:
            stub.Commit(spb.CommitRequest(txn_id="txn-nope"), timeout=5)
        assert rpc_raised.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as rpc_raised:
            stub.RunTransaction(spb.RunTransactionRequest(), timeout=5)
        assert rpc_raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert db.execute("SELECT count(*) FROM t").rows == [(0,)]  # still serving, nothing changed


def test_a_session_goes_on_after_a_failed_step(address: str) -> None:
    with SqlClient(address, timeout_s=5) as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        with db.session() as s:
            with pytest.raises(SqlError) as raised:
                s.commit()
            assert code_of(raised) == "FAILED_PRECONDITION" and "no transaction" in raised.value.details
            s.begin()
            assert s.transaction_open and s.txn_id
            s.execute("INSERT INTO t VALUES (1)")
            with pytest.raises(SqlError) as raised:
                s.execute("INSERT INTO t VALUES (1)")
            assert code_of(raised) == "FAILED_PRECONDITION" and s.transaction_open
            with pytest.raises(SqlError) as raised:
                s.execute("SELEC")
            assert code_of(raised) == "INVALID_ARGUMENT"
            with pytest.raises(SqlError) as raised:
                s.begin()
            assert code_of(raised) == "FAILED_PRECONDITION" and "already open" in raised.value.details
            s.execute("INSERT INTO t VALUES (2)")
            assert s.commit() > 0 and not s.transaction_open
            assert s.execute("INSERT INTO t VALUES (3)").commit_lsn > 0  # autocommit outside a transaction
        assert db.execute("SELECT id FROM t ORDER BY id").rows == [(1,), (2,), (3,)]

        with db.session() as s:  # the stream ending rolls back what it left open
            s.begin()
            s.execute("DELETE FROM t")
        assert db.execute("SELECT count(*) FROM t").rows == [(3,)]

        with pytest.raises(RuntimeError), db.transaction() as txn:  # an exception rolls back
            txn.execute("DELETE FROM t")
            raise RuntimeError("changed my mind")
        with db.transaction() as txn:
            txn.execute("DELETE FROM t WHERE id = 3")
        assert txn.commit_lsn > 0 and db.execute("SELECT count(*) FROM t").rows == [(2,)]


def test_a_read_only_session_keeps_its_snapshot(address: str) -> None:
    with SqlClient(address, timeout_s=5) as db:
        db.execute("CREATE TABLE t(x)")
        db.execute("INSERT INTO t VALUES (1)")
        with db.session() as reader:
            reader.begin(read_only=True)
            db.execute("INSERT INTO t VALUES (2)")
            assert reader.execute("SELECT count(*) FROM t").rows == [(1,)]
            reader.rollback()
            assert reader.execute("SELECT count(*) FROM t").rows == [(2,)]
        with db.session() as other:
            with pytest.raises(SqlError) as raised:
                other.execute("SELECT 1")  # the first message fixes the session's volume...
                other.volume_id = "vol1"
                other.execute("SELECT 1")
            assert code_of(raised) == "INVALID_ARGUMENT" and "vol0" in raised.value.details
        with SqlClient(address, volume_id="nosuch", timeout_s=5) as lost, lost.session() as s:
            with pytest.raises(SqlError) as raised:
                s.begin()
            assert code_of(raised) == "NOT_FOUND"


# --- key-value --------------------------------------------------------------------------------------


def test_key_value(address: str) -> None:
    with SqlClient(address, timeout_s=5) as kv:
        assert kv.get("a") is None
        lsn = kv.put("a", "1")
        assert lsn > 0 and kv.get("a") == b"1"
        assert kv.batch_put([(f"user:{i}", f"u{i}") for i in range(5)] + [("b", b"\xff")]) > lsn
        assert kv.delete("a")[0] and kv.delete("a") == (False, 0)
        page = kv.scan(prefix="user:", limit=3)
        assert [k for k, _ in page.pairs] == [b"user:0", b"user:1", b"user:2"] and page.more
        rest = kv.scan(start=page.next_start, prefix="user:")
        assert [k for k, _ in rest.pairs] == [b"user:3", b"user:4"] and not rest.more
        assert [k for k, _ in kv.scan(start="b", end="user:1").pairs] == [b"b", b"user:0"]
        missed = kv.cas("c", b"x", "y")
        assert (missed.swapped, missed.current, missed.commit_lsn) == (False, None, 0)
        made = kv.cas("c", None, "y")
        assert made.swapped and made.current == b"y" and made.commit_lsn > 0
        assert kv.cas("c", None, "z").current == b"y"
        assert kv.cas("c", "y", "z").swapped and kv.get("c") == b"z"
        for bad in (lambda: kv.put("", "v"), lambda: kv.put("k" * 1025, "v"), lambda: kv.scan(limit=10_001)):
            with pytest.raises(SqlError) as raised:
                bad()
            assert code_of(raised) == "INVALID_ARGUMENT"
        assert kv.execute("SELECT count(*) FROM kv").rows == [(7,)]  # the same database as SQL
