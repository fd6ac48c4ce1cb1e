"""The compute node's gRPC adapter for SQL: compute.v1.SqlService over one SQL engine per volume.

- `SqlEngines` holds one engine (sixfold.compute.sql.SqlEngine) per volume, created on first use
  over the very `Volume` the VolumeService serves (`VolumeServicer.volume`), and closes them all
  on shutdown (which aborts their open transactions). The KV service shares it.
- Every request names its volume; empty is `DEFAULT_VOLUME_ID`. Requests are checked against the
  bounds in compute/sql_values.py before they reach the engine.
- Unary methods raise `StorageError`s, which storage/serving.py turns into statuses. The Session
  stream never ends on a failed step: each request gets one reply, in order, and a failure is a
  reply carrying the status (`SessionError`). Only the stream ending or breaking rolls back a
  transaction it left open. A transaction the engine aborted stays the session's until the client
  ends it (commit or rollback): its statements fail with the reason meanwhile, and never run on
  their own by surprise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from sixfold.compute.sql_values import (
    ResultLike,
    SqlValue,
    check_sql,
    check_statement_count,
    params_from_proto,
    result_to_proto,
    statement_from_proto,
)
from sixfold.compute.v1 import sql_service_pb2 as spb

if TYPE_CHECKING:
    from sixfold.compute.sql.volume_source import SqlVolume
from sixfold.storage.errors import InvalidRequest, StorageError, Unavailable
from sixfold.storage.serving import Undecodable

log = logging.getLogger(__name__)

DEFAULT_VOLUME_ID = "vol0"


class TransactionLike(Protocol):
    """The engine's interactive transaction (sixfold.compute.sql.Transaction), as used here."""

    @property
    def txn_id(self) -> str: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def read_point(self) -> int: ...
    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> ResultLike: ...
    async def commit(self) -> int: ...
    async def rollback(self) -> None: ...


class EngineLike(Protocol):
    """The SQL engine of one volume (sixfold.compute.sql.SqlEngine), as used here."""

    async def start(self) -> None: ...
    async def close(self, why: str = "") -> None: ...
    async def execute(self, sql: str, params: Sequence[SqlValue] = ()) -> tuple[ResultLike, int]: ...
    async def run_transaction(
        self, statements: Sequence[tuple[str, Sequence[SqlValue]]]
    ) -> tuple[Sequence[ResultLike], int]: ...
    async def begin(self, read_only: bool = False) -> TransactionLike: ...
    def transaction(self, txn_id: str) -> TransactionLike: ...


class VolumeSource(Protocol):
    """Where open volumes come from: compute.service.VolumeServicer (the writer's volumes) or
    compute.replicas.ReplicaVolumes (a read replica's)."""

    async def volume(self, volume_id: str) -> SqlVolume: ...


EngineFactory = Callable[["SqlVolume"], EngineLike]


def default_engine_factory(volume: SqlVolume) -> EngineLike:
    from sixfold.compute.sql import SqlEngine

    return SqlEngine(volume)


SHUTTING_DOWN = (
    "the compute node is shutting down or changing role (a failover); retry in a moment (through an endpoint, "
    "the call reaches the instance that has the role now)"
)


class TransactionState(StorageError):
    """A session step that does not fit the session's state (begin while open, commit with none open)."""

    status_code_name = "FAILED_PRECONDITION"


class SqlEngines:
    """One SQL engine per volume, started on first use and closed (all of them) by `close`."""

    def __init__(self, volumes: VolumeSource, factory: EngineFactory = default_engine_factory) -> None:
        self._volumes = volumes
        self._factory = factory
        self._engines: dict[str, EngineLike] = {}
        self._starting: dict[str, asyncio.Task[EngineLike]] = {}
        self._closed = False

    async def get(self, volume_id: str) -> EngineLike:
        volume_id = volume_id or DEFAULT_VOLUME_ID
        engine = self._engines.get(volume_id)
        if engine is not None:
            return engine
        if self._closed:
            raise Unavailable(SHUTTING_DOWN)
        task = self._starting.get(volume_id)
        if task is None:
            task = self._starting[volume_id] = asyncio.create_task(self._start(volume_id))
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._starting.pop(volume_id, None)

    async def _start(self, volume_id: str) -> EngineLike:
        volume = await self._volumes.volume(volume_id)
        volume.holds_database = True  # from now on raw page writes to it are refused (compute/service.py)
        engine = self._factory(volume)
        try:
            await engine.start()
        except BaseException:
            await engine.close()
            raise
        if self._closed:
            await engine.close()
            raise Unavailable(SHUTTING_DOWN)
        self._engines[volume_id] = engine
        log.info("SQL engine started on volume %s", volume_id)
        return engine

    async def drop(self, volume_id: str, why: str = "is being deleted") -> None:
        """Close the engine of a volume being deleted or backtracked (`why`: what happens to it, e.g. "is being
        deleted"); its open transactions are aborted with a sentence saying so."""
        task = self._starting.pop(volume_id, None)
        if task is not None:
            task.cancel()
        engine = self._engines.pop(volume_id, None)
        if engine is not None:
            await engine.close(f"volume {volume_id} {why}")
            log.info("SQL engine of volume %s closed: the volume %s", volume_id, why)

    async def switch(self, volumes: VolumeSource | None, factory: EngineFactory = default_engine_factory) -> None:
        """A role change of the compute instance (compute/instance.py): close every engine (their open
        transactions are aborted), then start new ones over `volumes` on first use; None: none start until the
        next switch (the instance is between roles)."""
        await self.close()
        if volumes is not None:
            self._volumes, self._factory, self._closed = volumes, factory, False

    def started(self) -> list[str]:
        """The volumes whose engine is running."""
        return sorted(self._engines)

    async def close(self) -> None:
        """Close every engine (their open transactions are aborted); no new one starts after this."""
        self._closed = True
        for task in list(self._starting.values()):
            task.cancel()
        for volume_id, engine in list(self._engines.items()):
            try:
                await engine.close()
            except Exception:
                log.exception("closing the SQL engine of volume %s failed", volume_id)
        self._engines.clear()


def session_error(error: StorageError) -> spb.SessionError:
    code = getattr(grpc.StatusCode, error.status_code_name)
    return spb.SessionError(code=code.value[0], message=error.message, reason=error.reason)


class SqlServicer:
    """compute.v1.SqlService: statements, transactions and sessions on the volumes' engines."""

    def __init__(self, engines: SqlEngines) -> None:
        self.engines = engines

    async def Execute(self, request: spb.ExecuteRequest, context: Any) -> spb.ExecuteResponse:
        sql, params = check_sql(request.sql), params_from_proto(request.params)
        engine = await self.engines.get(request.volume_id)
        result, lsn = await engine.execute(sql, params)
        return spb.ExecuteResponse(result=result_to_proto(result, lsn), commit_lsn=lsn)

    async def RunTransaction(self, request: spb.RunTransactionRequest, context: Any) -> spb.RunTransactionResponse:
        check_statement_count(len(request.statements))
        statements = [statement_from_proto(statement) for statement in request.statements]
        engine = await self.engines.get(request.volume_id)
        results, lsn = await engine.run_transaction(statements)
        return spb.RunTransactionResponse(results=[result_to_proto(r, lsn) for r in results], commit_lsn=lsn)

    async def Begin(self, request: spb.BeginRequest, context: Any) -> spb.BeginResponse:
        engine = await self.engines.get(request.volume_id)
        txn = await engine.begin(read_only=request.read_only)
        return spb.BeginResponse(txn_id=txn.txn_id, read_only=txn.read_only, read_point=txn.read_point)

    async def _transaction(self, volume_id: str, txn_id: str) -> TransactionLike:
        if not txn_id:
            raise InvalidRequest("the request names no txn_id (Begin returns one)")
        engine = await self.engines.get(volume_id)
        return engine.transaction(txn_id)

    async def Statement(self, request: spb.StatementRequest, context: Any) -> spb.StatementResponse:
        sql, params = check_sql(request.sql), params_from_proto(request.params)
        txn = await self._transaction(request.volume_id, request.txn_id)
        return spb.StatementResponse(result=result_to_proto(await txn.execute(sql, params)))

    async def Commit(self, request: spb.CommitRequest, context: Any) -> spb.CommitResponse:
        txn = await self._transaction(request.volume_id, request.txn_id)
        return spb.CommitResponse(commit_lsn=await txn.commit())

    async def Rollback(self, request: spb.RollbackRequest, context: Any) -> spb.RollbackResponse:
        txn = await self._transaction(request.volume_id, request.txn_id)
        await txn.rollback()
        return spb.RollbackResponse()

    async def Session(self, requests: AsyncIterator[Any], context: Any) -> None:
        """One reply per request, in order; the stream's end rolls back what it left open."""
        session = SqlSession(self.engines)
        try:
            async for request in requests:
                await context.write(await session.step(request))
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(session.end())


class SqlSession:
    """The state of one Session stream: its volume's engine and the transaction it has open."""

    def __init__(self, engines: SqlEngines) -> None:
        self._engines = engines
        self.volume_id: str | None = None
        self.engine: EngineLike | None = None
        self.txn: TransactionLike | None = None

    async def step(self, request: spb.SessionRequest | Undecodable) -> spb.SessionResponse:
        """Carry out one request; a failure becomes the reply's `error` (the session goes on)."""
        try:
            response = await self._step(request)
        except StorageError as error:
            response = spb.SessionResponse(error=session_error(error))
            self._forget_if_finished()
        except Exception as error:
            log.exception("a SQL session step failed")
            response = spb.SessionResponse(
                error=spb.SessionError(
                    code=grpc.StatusCode.INTERNAL.value[0],
                    message=f"the step failed inside the server ({type(error).__name__}: {error}); the server log "
                    "has the details",
                )
            )
            self._forget_if_finished()
        response.transaction_open = self.txn is not None
        return response

    async def _engine(self, volume_id: str) -> EngineLike:
        if self.engine is not None and self.volume_id is not None:
            if volume_id and volume_id != self.volume_id:
                raise InvalidRequest(
                    f"this session works on volume {self.volume_id!r}; open another session for {volume_id!r}"
                )
            return self.engine
        self.engine = await self._engines.get(volume_id)
        self.volume_id = volume_id or DEFAULT_VOLUME_ID
        return self.engine

    async def _step(self, request: spb.SessionRequest | Undecodable) -> spb.SessionResponse:
        if isinstance(request, Undecodable):
            raise InvalidRequest(request.sentence())
        action = request.WhichOneof("action")
        if action is None:
            raise InvalidRequest("the message sets no action: set begin, statement, commit or rollback")
        if action == "statement":
            sql, params = statement_from_proto(request.statement)
            engine = await self._engine(request.volume_id)
            if self.txn is not None:
                result = await self.txn.execute(sql, params)
                return spb.SessionResponse(executed=spb.ExecuteResponse(result=result_to_proto(result)))
            result, lsn = await engine.execute(sql, params)
            return spb.SessionResponse(
                executed=spb.ExecuteResponse(result=result_to_proto(result, lsn), commit_lsn=lsn)
            )
        engine = await self._engine(request.volume_id)
        if action == "begin":
            if self.txn is not None:
                raise TransactionState(
                    f"a transaction is already open ({self.txn.txn_id}); commit or roll it back before beginning "
                    "another"
                )
            self.txn = txn = await engine.begin(read_only=request.begin.read_only)
            return spb.SessionResponse(
                begun=spb.SessionBegun(txn_id=txn.txn_id, read_only=txn.read_only, read_point=txn.read_point)
            )
        if self.txn is None:
            raise TransactionState(f"no transaction is open to {action}; begin one first")
        txn = self.txn
        if action == "commit":
            self.txn = None  # a commit ends the transaction, whether it succeeds or not
            try:
                lsn = await txn.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await txn.rollback()  # the engine forgets a transaction it aborted once it is rolled back
                raise
            return spb.SessionResponse(committed=spb.SessionCommitted(commit_lsn=lsn))
        try:
            await txn.rollback()
        except StorageError as error:
            if error.status_code_name != "NOT_FOUND":  # already ended (timed out, aborted): rolled back anyway
                raise
        self.txn = None
        return spb.SessionResponse(rolled_back=spb.SessionRolledBack())

    def _forget_if_finished(self) -> None:
        """After a failure: drop the transaction if the engine no longer knows it. One the engine aborted
        (idle too long, storage failed under it) is kept: its statements keep failing with the reason
        until the client commits or rolls back, so no later statement runs outside it unnoticed."""
        if self.txn is None or self.engine is None:
            return
        try:
            self.engine.transaction(self.txn.txn_id)
        except StorageError:
            self.txn = None

    async def end(self) -> None:
        """The stream ended: roll back the transaction it left open."""
        txn, self.txn = self.txn, None
        if txn is None:
            return
        try:
            await txn.rollback()
        except StorageError as error:
            log.info("rolling back session transaction %s at the stream's end: %s", txn.txn_id, error.message)
        except Exception:
            log.exception("rolling back session transaction %s at the stream's end failed", txn.txn_id)
