"""User tokens on the servers (issue 16, item 3): the check of a call's bearer token and of its user's role.

`TokenInterceptor` is a grpc.aio server interceptor placed after the certificate check (`tls.RoleInterceptor`)
and before the audit record of the call (audit_rpc.py). It is installed whenever the process runs with
mutual TLS, never in plaintext (a throwaway `--insecure` cluster).

Rules:
1. A call of one of `services` (a compute instance: SqlService, KvService, VolumeService; the control plane:
   ControlPlaneService and UserService) must carry `authorization: Bearer <token>`, unless the caller's
   certificate names one of `process_roles` (the control plane's process-to-process calls: a compute writer
   creating a volume, an instance fetching the users). InstanceService and ClusterService stay
   certificate-only.
2. A missing, malformed, wrongly signed or expired token, or one whose user was deleted since (or whose
   role is now below the token's): UNAUTHENTICATED with tokens.py's sentence. A user whose role lacks the
   right (permissions.py, SQL judged by its text): PERMISSION_DENIED saying the role needed.
3. A Session stream is checked when it opens and then step by step as the unary call each step stands for;
   a refused step ends the stream with PERMISSION_DENIED (the servicer rolls back what it left open).
4. A transaction begun by one user (unary Begin) is that user's: another user's Statement, Commit or
   Rollback with its id is refused (permissions.py rule 6). At most `TXN_OWNERS_MAX` are remembered.
5. Every refusal is logged (warning) and recorded in the audit log, naming the user or the certificate and
   at most a token's fingerprint: a token is never logged, never audited and never in an error's text.
6. While a call runs, `CURRENT_USER` (auth_context.py) holds its user: `UserLogFilter` makes the process's
   log lines of that call name it.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from sixfold.storage.errors import StorageError
from sixfold.storage.security import permissions as perm
from sixfold.storage.security import tokens
from sixfold.storage.security.audit_rpc import ANONYMOUS, Auditor
from sixfold.storage.security.auth_context import CURRENT_USER
from sixfold.storage.security.pki import (
    ROLE_CLIENT_ADMIN,
    ROLE_CONTROL_PLANE,
    ROLE_READER,
    ROLE_STORAGE_NODE,
    ROLE_WRITER,
)
from sixfold.storage.security.tls import RoleInterceptor, peer_role, shown_name
from sixfold.storage.security.tokens import Claims, User
from sixfold.storage.status import abort_with

log = logging.getLogger(__name__)

COMPUTE_TOKEN_SERVICES = frozenset({perm.SQL, perm.KV, perm.VOLUME})
CONTROL_PLANE_TOKEN_SERVICES = frozenset({perm.CONTROL_PLANE, perm.USERS})
# Rule 1: on the control plane every certificate but the CLI's is a sixfold process.
CONTROL_PLANE_PROCESS_ROLES = frozenset({ROLE_WRITER, ROLE_READER, ROLE_STORAGE_NODE, ROLE_CONTROL_PLANE})
# Who may call UserService at all (the certificate check before the token's): the CLI with an admin token,
# compute instances fetching the registry.
USER_SERVICE_RPC_ROLES: dict[str, frozenset[str]] = {
    perm.method(perm.USERS, name): frozenset({ROLE_CLIENT_ADMIN})
    for name in ("CreateUser", "ListUsers", "DeleteUser", "IssueToken")
} | {perm.method(perm.USERS, "SyncUsers"): frozenset({ROLE_WRITER, ROLE_READER})}
TXN_OWNERS_MAX = 10_000
REASON_TXN_OF_ANOTHER_USER = "TXN_OF_ANOTHER_USER"


class UsersUnknown(StorageError):
    """A compute instance has not learned the cluster's users yet: a token cannot be checked."""

    status_code_name = "UNAVAILABLE"
    reason = "USERS_UNKNOWN"


class UserSource(Protocol):
    """The registry a token is checked against: the control plane's own, or a compute instance's copy."""

    def get(self, name: str) -> User | None: ...

    async def ready(self) -> None:
        """Return once `get` answers for the cluster; UsersUnknown if it cannot yet."""


class TokenChecker:
    """Rule 2's first half: who a call's token says the caller is."""

    def __init__(self, verify_key: bytes, users: UserSource, clock: Callable[[], float] = time.time) -> None:
        self.verify_key = verify_key
        self.users = users
        self.clock = clock
        self.cache = tokens.VerifiedTokens()

    async def claims(self, metadata: Iterable[tuple[str, str | bytes]]) -> Claims:
        token = tokens.token_from_metadata(metadata)
        await self.users.ready()
        return tokens.verify(self.verify_key, token, self.clock(), users=self.users.get, cache=self.cache)


def request_sql(method: str, request: Any) -> tuple[str, list[str], bool]:
    """(the method to authorize as, its statements, whether it begins a read-only transaction): a Session
    step is its unary call (rule 3)."""
    if not isinstance(request, Message):
        return method, [], False  # undecodable: judged as the strictest case; the servicer refuses it
    request = _any(request)
    name = method.rpartition("/")[2]
    if name in ("Execute", "Statement"):
        return method, [request.sql], False
    if name == "RunTransaction":
        return method, [statement.sql for statement in request.statements], False
    if name == "Begin":
        return method, [], bool(request.read_only)
    if name == "Session":
        action = request.WhichOneof("action")
        if action == "begin":
            return perm.SESSION_BEGIN, [], bool(request.begin.read_only)
        if action == "statement":
            return perm.SESSION_STATEMENT, [request.statement.sql], False
        if action == "commit":
            return perm.SESSION_COMMIT, [], False
        if action == "rollback":
            return perm.SESSION_ROLLBACK, [], False
    return method, [], False


class TxnOwners:
    """Rule 4: which user began each open transaction (oldest forgotten first past `entries_max`)."""

    def __init__(self, entries_max: int = TXN_OWNERS_MAX) -> None:
        self.entries_max = entries_max
        self._owners: dict[str, str] = {}

    def begun(self, txn_id: str, user: str) -> None:
        while len(self._owners) >= self.entries_max:
            self._owners.pop(next(iter(self._owners)), None)
        self._owners[txn_id] = user

    def check(self, txn_id: str, user: str) -> None:
        owner = self._owners.get(txn_id)
        if owner is not None and owner != user:
            raise tokens.PermissionDenied(
                REASON_TXN_OF_ANOTHER_USER,
                f"transaction {txn_id[:64]} was begun by another user; user {user} may not use it",
            )

    def ended(self, txn_id: str) -> None:
        self._owners.pop(txn_id, None)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rules 1 to 6 for the calls of `services` (package.Service names)."""

    def __init__(
        self,
        checker: TokenChecker,
        services: Iterable[str],
        *,
        process_roles: Iterable[str] = (),
        auditor: Auditor | None = None,
    ) -> None:
        self.checker = checker
        self.services = frozenset(services)
        self.process_roles = frozenset(process_roles)
        self.auditor = auditor
        self.owners = TxnOwners()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: Any = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        if method.lstrip("/").rpartition("/")[0] not in self.services:
            return handler
        kwargs: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), **kwargs)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(self._stream(handler.stream_stream, method), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, method), **kwargs)
        assert handler.stream_unary is not None, "a method handler has one of the four shapes"
        return grpc.stream_unary_rpc_method_handler(self._unary(handler.stream_unary, method), **kwargs)

    # -- the checks ---------------------------------------------------------------------------------------

    async def caller(self, context: Any, method: str) -> Claims | None:
        """Rules 1-2: the token's claims; None for a sixfold process's certificate. Aborts the call if the
        token is not good."""
        peer = peer_role(context)
        if peer is not None and peer[0] in self.process_roles:
            return None
        try:
            return await self.checker.claims(context.invocation_metadata() or ())
        except (tokens.Unauthenticated, UsersUnknown) as error:
            await self.refuse(context, method, _certificate(peer), error)
            raise AssertionError("unreachable: abort raises") from None

    async def authorize(self, context: Any, method: str, claims: Claims, request: Any) -> None:
        """Rule 2's second half and rule 4, for one request (a unary call or one step of a stream)."""
        name, sql, read_only_transaction = request_sql(method, request)
        try:
            perm.authorize(claims, name, sql=sql, read_only_transaction=read_only_transaction)
            if method in (perm.SESSION_STATEMENT, perm.SESSION_COMMIT, perm.SESSION_ROLLBACK) and isinstance(
                request, Message
            ):
                self.owners.check(_text(request, "txn_id"), claims.user)  # a unary call naming a transaction
        except tokens.PermissionDenied as error:
            await self.refuse(context, name, f"user:{claims.user}", error)

    async def refuse(self, context: Any, method: str, who: str, error: StorageError) -> None:
        """Rule 5, then the call ends with `error`."""
        reason = getattr(error, "reason", "")
        log.warning("refused %s from %s (%s): %s", method, who, context.peer(), error.message)
        if self.auditor is not None:
            self.auditor.record(who, shown_name(method), f"refused: {error.message}", reason=reason)
        await abort_with(context, error)

    # -- the handlers -------------------------------------------------------------------------------------

    def _unary(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        async def handle(request: Any, context: Any) -> Any:
            claims = await self.caller(context, method)
            if claims is None:
                return await _result(behavior(request, context))
            await self.authorize(context, method, claims, request)
            user = CURRENT_USER.set(claims.user)
            try:
                response = await _result(behavior(request, context))
            finally:
                CURRENT_USER.reset(user)
            self._track(method, claims.user, request, response)
            return response

        return handle

    def _track(self, method: str, user: str, request: Any, response: Any) -> None:
        """Rule 4: remember who began a unary transaction, forget it when it ends."""
        if method == perm.SESSION_BEGIN and _text(response, "txn_id"):
            self.owners.begun(_text(response, "txn_id"), user)
        elif method in (perm.SESSION_COMMIT, perm.SESSION_ROLLBACK) and _text(request, "txn_id"):
            self.owners.ended(_text(request, "txn_id"))

    def _stream(self, behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
        """A stream of responses (a coroutine writing with `context.write`, or an async generator); a stream of
        requests is checked message by message (rule 3)."""

        async def checked_requests(requests: Any, context: Any, claims: Claims) -> AsyncIterator[Any]:
            async for request in requests:
                await self.authorize(context, method, claims, request)
                yield request

        async def prepare(requests: Any, context: Any) -> tuple[Any, contextvars.Token[str] | None]:
            claims = await self.caller(context, method)
            if claims is None:
                return requests, None
            if hasattr(requests, "__aiter__"):  # a stream of requests: the method's own rule to open it
                await self.authorize(context, method, claims, None)
                if method == perm.method(perm.SQL, "Session"):
                    requests = checked_requests(requests, context, claims)
            else:
                await self.authorize(context, method, claims, requests)
            return requests, CURRENT_USER.set(claims.user)

        if inspect.iscoroutinefunction(behavior):

            async def write_responses(requests: Any, context: Any) -> None:
                requests, user = await prepare(requests, context)
                try:
                    await behavior(requests, context)
                finally:
                    if user is not None:
                        CURRENT_USER.reset(user)

            return write_responses

        async def yield_responses(requests: Any, context: Any) -> AsyncIterator[Any]:
            requests, user = await prepare(requests, context)
            try:
                responses = behavior(requests, context)
                if hasattr(responses, "__aiter__"):
                    async for response in responses:
                        yield response
                else:
                    for response in responses:
                        yield response
            finally:
                if user is not None:
                    CURRENT_USER.reset(user)

        return yield_responses


def _any(value: object) -> Any:
    return value


def _text(message: object, field: str) -> str:
    value = getattr(message, field, None)
    return value if isinstance(value, str) else ""


async def _result(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _certificate(peer: tuple[str, str] | None) -> str:
    return ANONYMOUS if peer is None else f"cert:{peer[0]}/{peer[1]}"


def with_token_check(
    chain: Sequence[grpc.aio.ServerInterceptor], check: TokenInterceptor
) -> list[grpc.aio.ServerInterceptor]:
    """`chain` (audit_rpc.server_interceptors) with `check` right after the certificate check: a refused token
    is recorded once, as refused, never as a failed call."""
    result = list(chain)
    at = next((i + 1 for i, item in enumerate(result) if isinstance(item, RoleInterceptor)), 0)
    result.insert(at, check)
    return result


class UserLogFilter(logging.Filter):
    """Rule 6: a log line written while a user's call runs names the user (never the token)."""

    def filter(self, record: logging.LogRecord) -> bool:
        user = CURRENT_USER.get()
        if user and not getattr(record, "sixfold_user", ""):
            record.sixfold_user = user
            record.msg = f"[user {user}] {record.msg}"
        return True


def install_user_log_filter() -> None:
    """Rule 6 for every handler of the root logger (call after logging.basicConfig)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(item, UserLogFilter) for item in handler.filters):
            handler.addFilter(UserLogFilter())
