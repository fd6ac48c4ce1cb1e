"""The compute node's gRPC adapter for key-value: compute.v1.KvService over one SQLite table.

The table is `kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`, created on a
volume's first KV request, in the same database SqlService serves (so SQL sees it too, and a
value SQL stored as text or a number reads back as its UTF-8 bytes). Keys order as bytes, which
is how SQLite compares blobs. Each request is one SQL statement or one transaction on the
volume's engine (`SqlEngines`, shared with the SQL service); writes are acknowledged once durable.

Range arithmetic (a prefix as a key range) is pure: `prefix_end` and `scan_range`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from sixfold.compute.sql.statements import VALUE_BYTES_MAX as ENGINE_VALUE_BYTES_MAX
from sixfold.compute.sql_service import EngineLike, SqlEngines
from sixfold.compute.sql_values import SqlValue
from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.storage.errors import InvalidRequest

KEY_BYTES_MAX = 1024  # one key
ROW_HEADER_BYTES_MAX = 32  # SQLite's record header of a (key, value) row: a size varint and two type varints
# One value: the engine's limit on a value (SQLITE_LIMIT_LENGTH) bounds a whole row, key and header included.
VALUE_BYTES_MAX = ENGINE_VALUE_BYTES_MAX - KEY_BYTES_MAX - ROW_HEADER_BYTES_MAX
PAIRS_PER_BATCH_MAX = 1000  # pairs of one BatchPut (one statement each, in one transaction)
SCAN_LIMIT_MAX = 10_000  # pairs of one Scan reply
SCAN_LIMIT_DEFAULT = 1000  # when the request says 0
SCAN_BOUND_BYTES_MAX = KEY_BYTES_MAX + 1  # a scan bound may be a key plus the zero byte of `next_start`

CREATE_TABLE = "CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
PUT = "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
GET = "SELECT value FROM kv WHERE key = ?"
TABLE_EXISTS = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kv'"
DELETE = "DELETE FROM kv WHERE key = ?"
SWAP_IF_EQUAL = "UPDATE kv SET value = ? WHERE key = ? AND value = ?"
INSERT_IF_ABSENT = "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO NOTHING"


# --- pure range arithmetic -------------------------------------------------------------------------


def prefix_end(prefix: bytes) -> bytes | None:
    """The first key after every key that starts with `prefix` (None: no such key, the range is open)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def scan_range(start: bytes, end: bytes, prefix: bytes) -> tuple[bytes, bytes | None]:
    """The key range [low, high) a scan covers: [start, end) (empty end: open) within the prefix's
    range. high None = no upper bound; low >= high = an empty range."""
    low = max(start, prefix)
    high = end or None
    top = prefix_end(prefix) if prefix else None
    if top is not None and (high is None or top < high):
        high = top
    return low, high


def as_bytes(value: SqlValue) -> bytes:
    """A stored value as bytes: blobs as they are; text (or a number) SQL stored in the table as UTF-8."""
    if isinstance(value, bytes):
        return value
    return b"" if value is None else str(value).encode("utf-8")


def check_key(key: bytes, what: str = "the key") -> bytes:
    if not 1 <= len(key) <= KEY_BYTES_MAX:
        raise InvalidRequest(f"{what} is {len(key)} bytes; a key must be 1 to {KEY_BYTES_MAX} bytes")
    return key


def check_value(value: bytes, what: str = "the value") -> bytes:
    if len(value) > VALUE_BYTES_MAX:
        raise InvalidRequest(
            f"{what} is {len(value)} bytes, over the limit of {VALUE_BYTES_MAX} bytes; split it over several keys"
        )
    return value


def scan_limit(limit: int) -> int:
    if limit > SCAN_LIMIT_MAX:
        raise InvalidRequest(f"a scan returns at most {SCAN_LIMIT_MAX} pairs, asked for {limit}; page with next_start")
    return limit or SCAN_LIMIT_DEFAULT


# --- the servicer -----------------------------------------------------------------------------------


class KvServicer:
    """compute.v1.KvService: keys and values in the `kv` table of each volume's database."""

    def __init__(self, engines: SqlEngines) -> None:
        self.engines = engines
        self._ready: weakref.WeakSet[EngineLike] = weakref.WeakSet()  # engines whose table exists
        self._lock = asyncio.Lock()

    async def _engine(self, volume_id: str) -> EngineLike:
        engine = await self.engines.get(volume_id)
        if engine not in self._ready:
            async with self._lock:
                if engine not in self._ready:
                    await engine.execute(CREATE_TABLE)
                    self._ready.add(engine)
        return engine

    async def _reading(self, volume_id: str) -> EngineLike | None:
        """The engine for a read; None when it is a read replica's (it creates nothing) and the volume has no
        `kv` table yet: every key is absent."""
        engine = await self.engines.get(volume_id)
        if not getattr(engine, "read_only", False) or engine in self._ready:
            return await self._engine(volume_id)
        result, _ = await engine.execute(TABLE_EXISTS)
        if not result.rows:
            return None  # asked again next time: the writer may create it meanwhile
        self._ready.add(engine)
        return engine

    async def Put(self, request: kpb.PutRequest, context: Any) -> kpb.PutResponse:
        key, value = check_key(request.key), check_value(request.value)
        engine = await self._engine(request.volume_id)
        _, lsn = await engine.execute(PUT, (key, value))
        return kpb.PutResponse(commit_lsn=lsn)

    async def Get(self, request: kpb.GetRequest, context: Any) -> kpb.GetResponse:
        key = check_key(request.key)
        engine = await self._reading(request.volume_id)
        if engine is None:
            return kpb.GetResponse(found=False)
        result, _ = await engine.execute(GET, (key,))
        if not result.rows:
            return kpb.GetResponse(found=False)
        return kpb.GetResponse(found=True, value=as_bytes(result.rows[0][0]))

    async def Delete(self, request: kpb.DeleteRequest, context: Any) -> kpb.DeleteResponse:
        key = check_key(request.key)
        engine = await self._engine(request.volume_id)
        result, lsn = await engine.execute(DELETE, (key,))
        return kpb.DeleteResponse(existed=result.rows_affected > 0, commit_lsn=lsn)

    async def BatchPut(self, request: kpb.BatchPutRequest, context: Any) -> kpb.BatchPutResponse:
        if not request.pairs:
            raise InvalidRequest("the batch has no pairs")
        if len(request.pairs) > PAIRS_PER_BATCH_MAX:
            raise InvalidRequest(
                f"{len(request.pairs)} pairs in one batch; at most {PAIRS_PER_BATCH_MAX} (send several batches)"
            )
        statements: list[tuple[str, Sequence[SqlValue]]] = [
            (PUT, (check_key(pair.key, f"key {i}"), check_value(pair.value, f"value {i}")))
            for i, pair in enumerate(request.pairs, start=1)
        ]
        engine = await self._engine(request.volume_id)
        _, lsn = await engine.run_transaction(statements)
        return kpb.BatchPutResponse(commit_lsn=lsn)

    async def Scan(self, request: kpb.ScanRequest, context: Any) -> kpb.ScanResponse:
        for what, bound in (("start", request.start), ("end", request.end), ("prefix", request.prefix)):
            if len(bound) > SCAN_BOUND_BYTES_MAX:
                raise InvalidRequest(f"the scan's {what} is {len(bound)} bytes; at most {SCAN_BOUND_BYTES_MAX}")
        limit = scan_limit(request.limit)
        low, high = scan_range(request.start, request.end, request.prefix)
        if high is not None and low >= high:
            return kpb.ScanResponse()
        engine = await self._reading(request.volume_id)
        if engine is None:
            return kpb.ScanResponse()
        if high is None:
            sql = "SELECT key, value FROM kv WHERE key >= ? ORDER BY key LIMIT ?"
            params: tuple[SqlValue, ...] = (low, limit + 1)
        else:
            sql = "SELECT key, value FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT ?"
            params = (low, high, limit + 1)
        result, _ = await engine.execute(sql, params)
        rows = result.rows[:limit]
        pairs = [kpb.KeyValue(key=as_bytes(key), value=as_bytes(value)) for key, value in rows]
        more = len(result.rows) > limit
        return kpb.ScanResponse(pairs=pairs, more=more, next_start=pairs[-1].key + b"\0" if more else b"")

    async def CompareAndSet(self, request: kpb.CompareAndSetRequest, context: Any) -> kpb.CompareAndSetResponse:
        key, value = check_key(request.key), check_value(request.value)
        swap: tuple[str, Sequence[SqlValue]]
        if request.HasField("expected"):
            swap = (SWAP_IF_EQUAL, (value, key, check_value(request.expected, "the expected value")))
        else:
            swap = (INSERT_IF_ABSENT, (key, value))
        engine = await self._engine(request.volume_id)
        (swapped, current), lsn = await engine.run_transaction([swap, (GET, (key,))])
        found = bool(current.rows)
        return kpb.CompareAndSetResponse(
            swapped=swapped.rows_affected > 0,
            found=found,
            current=as_bytes(current.rows[0][0]) if found else b"",
            commit_lsn=lsn,
        )
