"""Errors on the wire: a `StorageError` becomes a gRPC status with a `google.rpc.ErrorInfo` (its
reason and metadata) in one place, and a caller reads the reason back in one place.

The status travels as gRPC's rich error model (the `grpc-status-details-bin` trailer), so any gRPC
client can read it; `grpcurl` shows it too. Callers branch on `ErrorDetail.reason`, never on the
words of the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from sixfold.storage.errors import ERROR_DOMAIN, StorageError

DETAILS_KEY = "grpc-status-details-bin"


def status_code(error: StorageError) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.status_code_name)


def trailing_metadata_of(error: StorageError) -> tuple[tuple[str, bytes], ...]:
    """The rich-status trailer for `error` (empty when it has no reason)."""
    if not error.reason:
        return ()
    code = status_code(error)
    detail = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.add().Pack(detail)
    return tuple(rpc_status.to_status(status).trailing_metadata)


async def abort_with(context: Any, error: StorageError) -> None:
    await context.abort(status_code(error), error.message, trailing_metadata_of(error))


@dataclass(frozen=True)
class ErrorDetail:
    """What a failed call said beyond its code: the ErrorInfo reason ("" if none) and its metadata."""

    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def int_of(self, key: str, default: int = 0) -> int:
        value = self.metadata.get(key, "")
        return int(value) if value.isdigit() else default


def _trailing_pairs(error: grpc.RpcError) -> tuple[tuple[str, str | bytes], ...]:
    """A failed call's trailing metadata as (key, value) pairs. A synchronous call's items are
    namedtuples and an asyncio call's a `grpc.aio.Metadata` of tuples: both unpack as pairs, which the
    type stubs (they describe only the first, as objects with attributes) do not say."""
    trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return tuple((key, value) for key, value in trailing or ())


def detail_of(error: grpc.RpcError) -> ErrorDetail:
    """The ErrorInfo a failed call carried (domain `ERROR_DOMAIN`), or an empty one."""
    for key, value in _trailing_pairs(error):
        if key != DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # noqa: BLE001 - a malformed trailer is no reason at all
            return ErrorDetail()
        for any_detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if any_detail.Is(info.DESCRIPTOR) and any_detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                return ErrorDetail(info.reason, dict(info.metadata))
    return ErrorDetail()


def reason_of(error: grpc.RpcError) -> str:
    return detail_of(error).reason
