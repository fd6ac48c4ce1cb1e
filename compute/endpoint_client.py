"""Reaching a compute instance by endpoint: the control plane's ResolveEndpoint, a cached address, and
a fresh resolve after a failure that says the instance is gone or no longer the right one.

    target = Endpoint("127.0.0.1:7000")             # the cluster endpoint (the writer) of that control plane
    target = Endpoint("127.0.0.1:7000", "reader")   # the readers (the writer when there is none), or a custom one
    with SqlClient(target) as db: ...               # compute/sql_client.py and compute/client.py take either
    with SqlClient("127.0.0.1:PORT") as db: ...     #   an Endpoint or a fixed address

`Channels(target)` holds one channel per address it has used and the address calls go to now:
- `address()` resolves the endpoint the first time and after a failure that asked for it (a fixed
  address is never resolved);
- `failed(address, error)` is told of every failed call: UNAVAILABLE (the instance is gone, restarting or
  changing role), DEADLINE_EXCEEDED (it may be paused past a failover), and a refusal whose ErrorInfo
  reason (storage/errors.py) says the instance is a read replica (READ_REPLICA), not the writer
  (NOT_WRITER), or fenced (FENCED), drop the cached address, so the next call resolves again and
  reaches the endpoint's instance now (after a failover: the new writer). The failed call itself is
  not repeated (its outcome may be unknown): the caller sees its status, which for an instance that
  died mid-call is UNAVAILABLE, retryable;
- `retry_safe(error)`: whether a call may be sent again at once, because it never reached an instance
  that could act on it (it could not connect, or a read replica or non-writer refused it by reason). A
  failure to connect is gRPC core's own UNAVAILABLE, which carries no ErrorInfo: it alone is told by its
  words. The clients do that once, and only when the endpoint now resolves to another address.

A resolve that fails raises `ResolveError`, a grpc.RpcError with the control plane's code and sentence
(an endpoint with no live member: UNAVAILABLE; an unknown one: NOT_FOUND), so the clients report it like
any failed call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from sixfold.storage.errors import REASON_FENCED, REASON_NOT_WRITER, REASON_READ_REPLICA
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.status import reason_of
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
from sixfold.storage.v1 import cluster_service_pb2_grpc as cl_grpc

CLUSTER_ENDPOINT = "cluster"  # built in: the writer
READER_ENDPOINT = "reader"  # built in: the live readers, rotated (the writer when there is none)
RESOLVE_TIMEOUT_S = 5.0
# Failures after which the endpoint is resolved again before the next call.
RE_RESOLVE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Reasons of an instance that is not (or no longer) the one the endpoint means.
NOT_THE_ONE = frozenset({REASON_READ_REPLICA, REASON_NOT_WRITER, REASON_FENCED})
# Reasons of a refusal given before anything was done (safe to send again elsewhere).
REFUSED_UNDONE = frozenset({REASON_READ_REPLICA, REASON_NOT_WRITER})
# gRPC core's UNAVAILABLE sentences of a call that never reached a server (no ErrorInfo: the client's own).
NOT_CONNECTED = ("failed to connect", "connection refused", "connect failed", "no connection")
_S = TypeVar("_S")


@dataclass(frozen=True)
class Endpoint:
    """An endpoint of a cluster: the control plane that resolves it and its name."""

    control_plane: str
    name: str = CLUSTER_ENDPOINT

    def __str__(self) -> str:
        return f"endpoint {self.name} (control plane {self.control_plane})"


class ResolveError(grpc.RpcError):
    """ResolveEndpoint failed: `code()` and `details()` as a failed call's."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


def _details(error: grpc.RpcError) -> str:
    return (error.details() if hasattr(error, "details") else "") or ""


def _code(error: grpc.RpcError) -> grpc.StatusCode:
    return (error.code() if hasattr(error, "code") else None) or grpc.StatusCode.UNKNOWN


def asks_to_re_resolve(code: grpc.StatusCode, reason: str = "") -> bool:
    """The instance is gone, paused, changing role (the code), a read replica, not the writer, or fenced
    (the reason)."""
    return code in RE_RESOLVE_CODES or reason in NOT_THE_ONE


def retry_safe(error: grpc.RpcError) -> bool:
    """The call never reached an instance that could act on it: it could not connect, or a read replica
    (or an instance that is not the writer) refused it before doing anything."""
    code = _code(error)
    if code == grpc.StatusCode.UNAVAILABLE and not reason_of(error):
        details = _details(error).lower()
        return any(words in details for words in NOT_CONNECTED)
    return reason_of(error) in REFUSED_UNDONE


def resolve(endpoint: Endpoint, timeout_s: float = RESOLVE_TIMEOUT_S) -> cl_pb.ResolveEndpointResponse:
    """One ResolveEndpoint call; ResolveError with a sentence naming the endpoint when it fails."""
    with transport.channel(endpoint.control_plane, CHANNEL_OPTIONS) as channel:
        stub = cl_grpc.ClusterServiceStub(channel)
        try:
            reply = stub.ResolveEndpoint(cl_pb.ResolveEndpointRequest(name=endpoint.name), timeout=timeout_s)
        except grpc.RpcError as error:
            code, details = _code(error), _details(error)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) and "connect" in details:
                details = f"the control plane did not answer at {endpoint.control_plane} ({details})"
            raise ResolveError(code, f"resolving endpoint {endpoint.name!r}: {details}") from error
    if not reply.addresses:
        raise ResolveError(grpc.StatusCode.UNAVAILABLE, f"endpoint {endpoint.name!r} has no live instance now")
    return reply


class Channels:
    """The channels behind one target (an Endpoint or a fixed address): see the module docstring."""

    def __init__(self, target: str | Endpoint, resolve_timeout_s: float = RESOLVE_TIMEOUT_S) -> None:
        self.target = target
        self.resolve_timeout_s = resolve_timeout_s
        self._lock = threading.Lock()
        self._current = target if isinstance(target, str) else ""
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[tuple[str, type], Any] = {}
        self.resolves = 0  # how many times the endpoint was resolved

    @property
    def endpoint(self) -> Endpoint | None:
        return self.target if isinstance(self.target, Endpoint) else None

    def address(self) -> str:
        """Where calls go now (resolving the endpoint if nothing is cached)."""
        with self._lock:
            if self._current:
                return self._current
        assert isinstance(self.target, Endpoint)
        reply = resolve(self.target, self.resolve_timeout_s)
        with self._lock:
            self.resolves += 1
            self._current = str(reply.addresses[0])
            return self._current

    def channel(self, address: str) -> grpc.Channel:
        with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                channel = self._channels[address] = transport.channel(address, CHANNEL_OPTIONS)
            return channel

    def stub(self, stub_class: type[_S]) -> tuple[str, _S]:
        """(the address calls go to now, a stub of `stub_class` on its channel)."""
        address = self.address()
        key = (address, stub_class)
        with self._lock:
            stub = self._stubs.get(key)
        if stub is None:
            stub = stub_class(self.channel(address))  # type: ignore[call-arg]
            with self._lock:
                self._stubs[key] = stub
        return address, stub

    def failed(self, address: str, error: grpc.RpcError) -> bool:
        """A call to `address` failed with `error`: forget the address if the error asks for a new resolve
        (an endpoint only). True if it was forgotten."""
        return self.failed_with(address, _code(error), reason_of(error))

    def failed_with(self, address: str, code: grpc.StatusCode, reason: str = "") -> bool:
        """`failed` for a status that came in a reply (a session step's error)."""
        if self.endpoint is None or not asks_to_re_resolve(code, reason):
            return False
        with self._lock:
            if self._current == address:
                self._current = ""
        return True

    def call(self, stub_class: type[Any], method: str, request: object, timeout_s: float) -> Any:
        """One unary call; after a failure that asks for it the endpoint is resolved again, and a call that
        never reached an instance able to act on it is sent once more if the endpoint now means another
        address. Raises the call's grpc.RpcError (or a ResolveError)."""
        stub: Any
        address, stub = self.stub(stub_class)
        try:
            return getattr(stub, method)(request, timeout=timeout_s)
        except grpc.RpcError as error:
            if not (self.failed(address, error) and retry_safe(error)):
                raise
            first = error
        try:
            again, stub = self.stub(stub_class)
        except ResolveError:
            raise first from None
        if again == address:
            raise first
        try:
            return getattr(stub, method)(request, timeout=timeout_s)
        except grpc.RpcError as error:
            self.failed(again, error)
            raise

    def close(self) -> None:
        with self._lock:
            channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            channel.close()
