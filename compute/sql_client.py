"""A small synchronous client of the compute node's SQL and key-value services
(`compute.v1.SqlService`, `compute.v1.KvService`).

    with SqlClient("127.0.0.1:50051") as db:                      # volume "vol0"; or SqlClient(Endpoint(CP))
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        r = db.execute("INSERT INTO t(name, data) VALUES (?, ?)", ["ann", b"\\x00\\x01"])
        r.last_row_id, r.commit_lsn                              # durable on return
        db.execute("SELECT * FROM t").rows                       # [(1, 'ann', b'\\x00\\x01')]
        results, lsn = db.run_transaction(["DELETE FROM t", ("INSERT INTO t(name) VALUES (?)", ["bo"])])
        with db.transaction() as txn:                            # commits on leaving, rolls back on an exception
            balance = txn.execute("SELECT balance FROM account WHERE id = ?", [1]).rows[0][0]
            txn.execute("UPDATE account SET balance = ? WHERE id = ?", [balance - 10, 1])
        with db.session() as s:                                  # the interactive stream, step by step
            s.begin(read_only=True); s.execute("SELECT count(*) FROM t"); s.rollback()
        db.put("k", "v"); db.get("k")                            # b"v"  (str is sent as UTF-8)
        db.scan(prefix="k", limit=10).pairs; db.cas("k", expected=b"v", value=b"w").swapped

The client reaches a fixed address or the instance an endpoint means now (`Endpoint(control_plane,
"cluster" | "reader" | NAME)`, compute/endpoint_client.py): after a failure that says the instance is
gone or not the right one (UNAVAILABLE, a read replica refusing a write, a fenced writer) the next call
resolves the endpoint again and reaches, after a failover, the new writer. The failed call is not
repeated unless it never reached an instance able to act on it.

Values are None, int, float, str and bytes (SQLite's storage classes). A failed call raises
`SqlError` (a `compute.client.VolumeError`: `.code`, `.details`, `.reason`, "CODE: details"):
INVALID_ARGUMENT for a syntax error or bad input, FAILED_PRECONDITION for a constraint, ABORTED
for busy/locked (retry), NOT_FOUND for an unknown volume or transaction, RESOURCE_EXHAUSTED for a
result over 10,000 rows (add a LIMIT). In a session a failed statement raises too, but the
session goes on (`.transaction_open` says whether its transaction still is). Every step waits at
most the client's timeout for its reply; a session whose step timed out is closed.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import grpc

from sixfold.compute.client import DEFAULT_TIMEOUT_S, VolumeError, checked_timeout
from sixfold.compute.endpoint_client import Channels, Endpoint
from sixfold.compute.sql_values import SqlValue, rows_from_proto, statement_to_proto
from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.compute.v1 import kv_service_pb2_grpc as kgrpc
from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.compute.v1 import sql_service_pb2_grpc as sgrpc
from sixfold.storage.errors import StorageError

DEFAULT_VOLUME_ID = "vol0"
SESSION_CLOSE_WAIT_S = 5.0  # how long closing a session waits for the server to end the stream
_CODES = {code.value[0]: code for code in grpc.StatusCode}
_T = TypeVar("_T")

Statement = str | tuple[str, Sequence[SqlValue]]  # text alone, or (text, parameters)
Key = bytes | str  # a str is sent as its UTF-8 bytes


class SqlError(VolumeError):
    """A SqlService or KvService call (or session step) failed: `.code`, `.details`, `.reason`."""


@dataclass(frozen=True)
class SqlResult:
    """What one statement returned; `commit_lsn` > 0 once a write it made is durable."""

    columns: list[str]
    rows: list[tuple[SqlValue, ...]]
    rows_affected: int
    last_row_id: int
    commit_lsn: int = 0


@dataclass(frozen=True)
class ScanPage:
    """A scan's pairs, ascending by key; `more`: keys follow, scan again from `next_start`."""

    pairs: list[tuple[bytes, bytes]]
    more: bool
    next_start: bytes


@dataclass(frozen=True)
class CasOutcome:
    """Whether the compare-and-set swapped, the key's value now (None: absent) and the commit LSN."""

    swapped: bool
    current: bytes | None
    commit_lsn: int


def _result(result: spb.StatementResult, commit_lsn: int = 0) -> SqlResult:
    return SqlResult(
        list(result.columns), rows_from_proto(result), int(result.rows_affected), int(result.last_row_id), commit_lsn
    )


def _checked(make: Callable[[], _T]) -> _T:
    """Build a request, turning a value the wire cannot carry into SqlError(INVALID_ARGUMENT)."""
    try:
        return make()
    except StorageError as error:
        raise SqlError(error.status_code_name, error.message) from None


def _statement(statement: Statement) -> spb.SqlStatement:
    sql, params = (statement, ()) if isinstance(statement, str) else statement
    return _checked(lambda: statement_to_proto(sql, params))


def _key(key: Key) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else bytes(key)


class SqlClient:
    """Calls to a compute instance (an address, or an Endpoint), working on one volume; a context manager
    that closes its channels."""

    def __init__(
        self, target: str | Endpoint, volume_id: str = DEFAULT_VOLUME_ID, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> None:
        self.target = target
        self.volume_id = volume_id
        self.timeout_s = checked_timeout(timeout_s)
        self._channels = Channels(target)
        self._sql = sgrpc.SqlServiceStub
        self._kv = kgrpc.KvServiceStub

    @property
    def address(self) -> str:
        """The address calls go to now (resolving the endpoint if it is not known)."""
        try:
            return self._channels.address()
        except grpc.RpcError as error:
            raise SqlError.from_rpc_error(error) from error

    def __enter__(self) -> SqlClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channels.close()

    def _call(self, stub_class: type, method: str, request: object) -> Any:
        try:
            return self._channels.call(stub_class, method, request, self.timeout_s)
        except grpc.RpcError as error:
            raise SqlError.from_rpc_error(error) from error

    # --- SQL -------------------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> SqlResult:
        """One statement, autocommit; its writes are durable on return (`.commit_lsn`)."""
        statement = _statement((sql, params))
        request = spb.ExecuteRequest(volume_id=self.volume_id, sql=statement.sql, params=statement.params)
        reply = self._call(self._sql, "Execute", request)
        return _result(reply.result, int(reply.commit_lsn))

    def run_transaction(self, statements: Iterable[Statement]) -> tuple[list[SqlResult], int]:
        """The statements as one transaction (all or nothing): their results and the commit LSN."""
        request = spb.RunTransactionRequest(volume_id=self.volume_id, statements=[_statement(s) for s in statements])
        reply = self._call(self._sql, "RunTransaction", request)
        return [_result(r) for r in reply.results], int(reply.commit_lsn)

    def begin(self, read_only: bool = False) -> UnaryTransaction:
        """An interactive transaction over unary calls (for when a stream is not wanted)."""
        reply = self._call(self._sql, "Begin", spb.BeginRequest(volume_id=self.volume_id, read_only=read_only))
        return UnaryTransaction(self, str(reply.txn_id), bool(reply.read_only), int(reply.read_point))

    def session(self) -> SqlSession:
        """An interactive session over one stream; closing it rolls back a transaction left open."""
        try:
            address, stub = self._channels.stub(sgrpc.SqlServiceStub)
        except grpc.RpcError as error:
            raise SqlError.from_rpc_error(error) from error

        def failed(error: SqlError) -> None:
            self._channels.failed_with(address, error.code, error.reason)

        return SqlSession(stub, self.volume_id, self.timeout_s, failed)

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[SqlSession]:
        """A session with a transaction begun: committed when the block ends, rolled back if it raises.
        The commit's LSN is the session's `.commit_lsn` afterwards."""
        with self.session() as session:
            session.begin(read_only=read_only)
            try:
                yield session
            except BaseException:
                if session.transaction_open:
                    with suppress(SqlError):  # the stream's end rolls it back anyway
                        session.rollback()
                raise
            if session.transaction_open:
                session.commit()

    # --- key-value -------------------------------------------------------------------------------

    def put(self, key: Key, value: Key) -> int:
        """Set one key; the commit LSN (durable)."""
        reply = self._call(self._kv, "Put", kpb.PutRequest(volume_id=self.volume_id, key=_key(key), value=_key(value)))
        return int(reply.commit_lsn)

    def get(self, key: Key) -> bytes | None:
        reply = self._call(self._kv, "Get", kpb.GetRequest(volume_id=self.volume_id, key=_key(key)))
        return bytes(reply.value) if reply.found else None

    def delete(self, key: Key) -> tuple[bool, int]:
        """(whether the key existed, the commit LSN: 0 if it did not)."""
        reply = self._call(self._kv, "Delete", kpb.DeleteRequest(volume_id=self.volume_id, key=_key(key)))
        return bool(reply.existed), int(reply.commit_lsn)

    def batch_put(self, pairs: Iterable[tuple[Key, Key]]) -> int:
        """Set many keys as one transaction; the commit LSN."""
        request = kpb.BatchPutRequest(
            volume_id=self.volume_id, pairs=[kpb.KeyValue(key=_key(k), value=_key(v)) for k, v in pairs]
        )
        return int(self._call(self._kv, "BatchPut", request).commit_lsn)

    def scan(self, start: Key = b"", end: Key = b"", prefix: Key = b"", limit: int = 0) -> ScanPage:
        """Pairs with start <= key < end (empty: open) that start with `prefix`, ascending; at most
        `limit` (0 = the server's default, 1,000; at most 10,000)."""
        request = kpb.ScanRequest(
            volume_id=self.volume_id, start=_key(start), end=_key(end), prefix=_key(prefix), limit=limit
        )
        reply = self._call(self._kv, "Scan", request)
        pairs = [(bytes(p.key), bytes(p.value)) for p in reply.pairs]
        return ScanPage(pairs, bool(reply.more), bytes(reply.next_start))

    def cas(self, key: Key, expected: Key | None, value: Key) -> CasOutcome:
        """Set `key` to `value` if it holds `expected` (None: if it is absent), atomically."""
        request = kpb.CompareAndSetRequest(volume_id=self.volume_id, key=_key(key), value=_key(value))
        if expected is not None:
            request.expected = _key(expected)
        reply = self._call(self._kv, "CompareAndSet", request)
        return CasOutcome(bool(reply.swapped), bytes(reply.current) if reply.found else None, int(reply.commit_lsn))


class UnaryTransaction:
    """A transaction begun with `SqlClient.begin`: each step is one unary call naming its txn_id."""

    def __init__(self, client: SqlClient, txn_id: str, read_only: bool, read_point: int) -> None:
        self.client = client
        self.txn_id = txn_id
        self.read_only = read_only
        self.read_point = read_point

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> SqlResult:
        statement = _statement((sql, params))
        request = spb.StatementRequest(
            volume_id=self.client.volume_id, txn_id=self.txn_id, sql=statement.sql, params=statement.params
        )
        return _result(self.client._call(self.client._sql, "Statement", request).result)

    def commit(self) -> int:
        request = spb.CommitRequest(volume_id=self.client.volume_id, txn_id=self.txn_id)
        return int(self.client._call(self.client._sql, "Commit", request).commit_lsn)

    def rollback(self) -> None:
        request = spb.RollbackRequest(volume_id=self.client.volume_id, txn_id=self.txn_id)
        self.client._call(self.client._sql, "Rollback", request)


_END = object()  # the server ended the stream


class SqlSession:
    """One Session stream: steps are sent one at a time and each waits for its reply. A reader
    thread takes the replies off the stream, so a step can give up after the timeout."""

    def __init__(
        self,
        stub: sgrpc.SqlServiceStub,
        volume_id: str,
        timeout_s: float,
        on_failure: Callable[[SqlError], object] = lambda error: None,
    ) -> None:
        self.volume_id = volume_id
        self._on_failure = on_failure  # told of the stream's failure (the endpoint is resolved again)
        self.timeout_s = timeout_s
        self.transaction_open = False
        self.txn_id = ""
        self.read_point = 0
        self.commit_lsn = 0  # of the last commit
        self._closed = False
        self._requests: queue.Queue[spb.SessionRequest | None] = queue.Queue()
        self._replies: queue.Queue[Any] = queue.Queue()
        self._call: Any = stub.Session(iter(self._requests.get, None))
        self._reader = threading.Thread(target=self._read, name="sql-session-reader", daemon=True)
        self._reader.start()

    def __enter__(self) -> SqlSession:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """The stream is over (closed here, ended by the server, or broken): open another session."""
        return self._closed

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._replies.put(reply)
            self._replies.put(_END)
        except grpc.RpcError as error:
            self._replies.put(error)

    def close(self) -> None:
        """End the stream (the server rolls back a transaction still open) and wait for its end."""
        if self._closed:
            return
        self._closed = True
        self._requests.put(None)
        self._reader.join(SESSION_CLOSE_WAIT_S)
        if self._reader.is_alive():
            self._call.cancel()
        self.transaction_open = False

    def _abandon(self) -> None:
        """Give the stream up mid-step (its reply would come to the next step): the server rolls back."""
        self._closed = True
        self._call.cancel()
        self.transaction_open = False

    def _step(self, request: spb.SessionRequest) -> spb.SessionResponse:
        if self._closed:
            raise SqlError("FAILED_PRECONDITION", "the session is closed; open another one")
        self._requests.put(request)
        try:
            reply = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            self._abandon()
            raise SqlError(
                "DEADLINE_EXCEEDED",
                f"no reply within {self.timeout_s:g} s; the session is closed (a transaction it had open rolls back, "
                "a commit in flight may still have committed)",
            ) from None
        except BaseException:  # interrupted (Ctrl-C) while waiting
            self._abandon()
            raise
        if isinstance(reply, grpc.RpcError):
            self._closed = True
            self.transaction_open = False
            error = SqlError.from_rpc_error(reply)
            self._on_failure(error)
            raise error from reply
        if reply is _END:
            self._closed = True
            self.transaction_open = False
            raise SqlError("UNAVAILABLE", "the server ended the session")
        self.transaction_open = bool(reply.transaction_open)
        if reply.WhichOneof("outcome") == "error":
            code = _CODES.get(reply.error.code, grpc.StatusCode.UNKNOWN)
            error = SqlError(code, reply.error.message or "(no details)", reason=reply.error.reason)
            self._on_failure(error)
            raise error
        return reply

    def begin(self, read_only: bool = False) -> str:
        """Begin a transaction; its txn_id (`.read_point` is the VDL it reads at)."""
        reply = self._step(
            spb.SessionRequest(volume_id=self.volume_id, begin=spb.SessionBegin(read_only=read_only))
        ).begun
        self.txn_id, self.read_point = str(reply.txn_id), int(reply.read_point)
        return self.txn_id

    def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> SqlResult:
        """A statement: in the open transaction, else on its own (autocommit, `.commit_lsn` set)."""
        statement = _statement((sql, params))
        executed = self._step(spb.SessionRequest(volume_id=self.volume_id, statement=statement)).executed
        return _result(executed.result, int(executed.commit_lsn))

    def commit(self) -> int:
        """Commit the open transaction; its LSN (durable)."""
        reply = self._step(spb.SessionRequest(volume_id=self.volume_id, commit=spb.SessionCommit()))
        self.commit_lsn = int(reply.committed.commit_lsn)
        return self.commit_lsn

    def rollback(self) -> None:
        self._step(spb.SessionRequest(volume_id=self.volume_id, rollback=spb.SessionRollback()))
