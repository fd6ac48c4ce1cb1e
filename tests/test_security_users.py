"""User tokens on the servers, without a cluster (issue 16, item 3): the token interceptor
(storage/security/user_auth.py) over fake calls, the control plane's UserService and registry file
(user_service.py, user_files.py), a compute instance's copy of the users (user_sync.py), and the token a
client of a cluster sends (transport.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.compute.v1 import kv_service_pb2 as kpb
from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.storage.security import pki, transport, user_files
from sixfold.storage.security import tokens as tk
from sixfold.storage.security.audit import AuditLog, read
from sixfold.storage.security.audit_rpc import Auditor
from sixfold.storage.security.tokens import Role
from sixfold.storage.security.user_auth import (
    COMPUTE_TOKEN_SERVICES,
    CONTROL_PLANE_PROCESS_ROLES,
    CONTROL_PLANE_TOKEN_SERVICES,
    CURRENT_USER,
    TokenChecker,
    TokenInterceptor,
    UserLogFilter,
    UsersUnknown,
)
from sixfold.storage.security.user_service import Registry, UserServicer, version_of
from sixfold.storage.security.user_sync import RemoteUsers
from sixfold.storage.security.users import Users
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import user_service_pb2 as upb

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
SIGNING_KEY = tk.new_signing_key()
VERIFY_KEY = tk.verify_key_of(SIGNING_KEY)
SQL = "/compute.v1.SqlService"


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    """What the interceptor reads of a call: metadata, the peer's certificate, abort."""

    def __init__(self, token: str | None = None, role: str | None = None) -> None:
        self.metadata = [("authorization", f"Bearer {token}")] if token is not None else []
        self.role = role
        self.written: list[Any] = []

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self.metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        if self.role is None:
            return {}
        uri = f"{pki.ROLE_URI_PREFIX}{self.role}/peer".encode()
        return {"transport_security_type": [b"ssl"], "peer_uri": [uri]}

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, code: grpc.StatusCode, details: str, trailing: object = ()) -> None:
        raise Aborted(code, details)

    async def write(self, message: Any) -> None:
        self.written.append(message)


class Local:
    """A registry that is always ready (the control plane's kind)."""

    def __init__(self, users: Users) -> None:
        self.users = users

    def get(self, name: str) -> tk.User | None:
        return self.users.get(name)

    async def ready(self) -> None:
        return None


@pytest.fixture
def users() -> Users:
    registry = Users()
    for role in Role:
        registry.create(role.value, role, NOW - 100)
    return registry


def token(users: Users, name: str, *, now: float = NOW, ttl_s: int = 3600) -> str:
    user = users.get(name)
    assert user is not None
    return tk.issue(SIGNING_KEY, user, user.role, now, ttl_s)


def interceptor(users: Users, audit: Path | None = None, **kwargs: Any) -> TokenInterceptor:
    checker = TokenChecker(VERIFY_KEY, Local(users), clock=lambda: NOW)
    auditor = Auditor(AuditLog(audit, "test"), clock=lambda: NOW) if audit is not None else None
    kwargs.setdefault("services", COMPUTE_TOKEN_SERVICES)
    return TokenInterceptor(checker, auditor=auditor, **kwargs)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def details_of(method: str) -> Any:
    return Details(method)


def unary(check: TokenInterceptor, method: str, request: Any, context: FakeContext) -> Any:
    """Call `method` through the interceptor; the servicer answers with the user it saw."""

    async def servicer(request: Any, context: Any) -> Any:
        if method.endswith("/Begin"):
            return spb.BeginResponse(txn_id="t1")
        return CURRENT_USER.get()

    async def call() -> Any:
        handler: Any = grpc.unary_unary_rpc_method_handler(servicer)

        async def continuation(details: Any) -> Any:
            return handler

        wrapped: Any = await check.intercept_service(continuation, details_of(method))
        assert wrapped is not None and wrapped.unary_unary is not None
        return await wrapped.unary_unary(request, context)

    return asyncio.run(call())


def refused(code: grpc.StatusCode, check: TokenInterceptor, method: str, request: Any, context: FakeContext) -> str:
    with pytest.raises(Aborted) as caught:
        unary(check, method, request, context)
    assert caught.value.code == code, caught.value
    return caught.value.details


def test_no_wrong_or_expired_token_is_unauthenticated(users: Users, tmp_path: Path) -> None:
    check = interceptor(users, tmp_path / "audit.log")
    select = spb.ExecuteRequest(sql="SELECT 1")
    details = refused(grpc.StatusCode.UNAUTHENTICATED, check, f"{SQL}/Execute", select, FakeContext())
    assert "carries no token" in details
    details = refused(grpc.StatusCode.UNAUTHENTICATED, check, f"{SQL}/Execute", select, FakeContext("garbage"))
    assert "three parts" in details
    old = token(users, "reader", now=NOW - 7200, ttl_s=60)
    details = refused(grpc.StatusCode.UNAUTHENTICATED, check, f"{SQL}/Execute", select, FakeContext(old))
    assert "expired" in details and "`sixfold token reader`" in details and old not in details
    other_key = tk.new_signing_key()
    forged = tk.issue(other_key, users.get("admin"), Role.ADMIN, NOW, 60)  # type: ignore[arg-type]
    details = refused(grpc.StatusCode.UNAUTHENTICATED, check, f"{SQL}/Execute", select, FakeContext(forged))
    assert "does not know" in details
    good = token(users, "writer")
    users.delete("writer")
    details = refused(grpc.StatusCode.UNAUTHENTICATED, check, f"{SQL}/Execute", select, FakeContext(good))
    assert "no longer valid" in details
    text = (tmp_path / "audit.log").read_text()
    assert text.count("refused: ") == 5
    assert all(secret not in text for secret in (old, forged, good, "garbage"))


def test_each_role_gets_what_it_may_and_a_refusal_names_the_role_needed(users: Users, tmp_path: Path) -> None:
    check = interceptor(users, tmp_path / "audit.log")
    reader, writer, admin = (FakeContext(token(users, role.value)) for role in (Role.READER, Role.WRITER, Role.ADMIN))
    insert = spb.ExecuteRequest(sql="INSERT INTO t VALUES (1)")
    assert unary(check, f"{SQL}/Execute", spb.ExecuteRequest(sql="SELECT * FROM t"), reader) == "reader"
    details = refused(grpc.StatusCode.PERMISSION_DENIED, check, f"{SQL}/Execute", insert, reader)
    assert details.startswith("SqlService.Execute (a statement that may write) needs role writer"), details
    sneaky = spb.RunTransactionRequest(statements=[spb.SqlStatement(sql="SELECT 1"), spb.SqlStatement(sql="DROP t")])
    refused(grpc.StatusCode.PERMISSION_DENIED, check, f"{SQL}/RunTransaction", sneaky, reader)
    refused(grpc.StatusCode.PERMISSION_DENIED, check, f"{SQL}/Begin", spb.BeginRequest(), reader)
    assert unary(check, f"{SQL}/Begin", spb.BeginRequest(read_only=True), reader).txn_id == "t1"
    assert unary(check, "/compute.v1.KvService/Get", kpb.GetRequest(key=b"k"), reader) == "reader"
    refused(grpc.StatusCode.PERMISSION_DENIED, check, "/compute.v1.KvService/Put", kpb.PutRequest(), reader)
    assert unary(check, f"{SQL}/Execute", insert, writer) == "writer"
    assert unary(check, "/compute.v1.KvService/Put", kpb.PutRequest(), writer) == "writer"
    create = vpb.CreateVolumeRequest(volume_id="v")
    details = refused(
        grpc.StatusCode.PERMISSION_DENIED, check, "/compute.v1.VolumeService/CreateVolume", create, writer
    )
    assert "needs role admin" in details and "user writer has a writer token" in details
    assert unary(check, "/compute.v1.VolumeService/CreateVolume", create, admin) == "admin"
    entries = read(tmp_path / "audit.log").entries
    assert {e.who for e in entries} == {"user:reader", "user:writer"}
    assert all(e.outcome.startswith("refused: ") for e in entries)


def test_another_users_transaction_is_refused(users: Users) -> None:
    check = interceptor(users)
    writer, admin = FakeContext(token(users, "writer")), FakeContext(token(users, "admin"))
    txn = unary(check, f"{SQL}/Begin", spb.BeginRequest(), writer).txn_id
    details = refused(
        grpc.StatusCode.PERMISSION_DENIED, check, f"{SQL}/Statement", spb.StatementRequest(txn_id=txn), admin
    )
    assert "begun by another user" in details
    assert unary(check, f"{SQL}/Commit", spb.CommitRequest(txn_id=txn), writer) == "writer"
    assert unary(check, f"{SQL}/Commit", spb.CommitRequest(txn_id=txn), admin) == "admin"  # ended: forgotten


def test_process_certificates_pass_on_the_control_plane_and_clients_need_a_token(users: Users) -> None:
    check = interceptor(users, services=CONTROL_PLANE_TOKEN_SERVICES, process_roles=CONTROL_PLANE_PROCESS_ROLES)
    create = "/storage.v1.ControlPlaneService/CreateVolume"
    request = cp_pb.CreateVolumeRequest(volume_id="v")
    assert unary(check, create, request, FakeContext(role=pki.ROLE_WRITER)) == ""  # a compute writer, no token
    refused(grpc.StatusCode.UNAUTHENTICATED, check, create, request, FakeContext(role=pki.ROLE_CLIENT_ADMIN))
    writer = FakeContext(token(users, "writer"), role=pki.ROLE_CLIENT_ADMIN)
    assert "needs role admin" in refused(grpc.StatusCode.PERMISSION_DENIED, check, create, request, writer)
    assert unary(check, create, request, FakeContext(token(users, "admin"), role=pki.ROLE_CLIENT_ADMIN)) == "admin"
    listing = "/storage.v1.UserService/ListUsers"
    refused(grpc.StatusCode.PERMISSION_DENIED, check, listing, upb.ListUsersRequest(), writer)
    # ClusterService stays certificate-only: not this interceptor's.
    assert unary(check, "/storage.v1.ClusterService/ListEndpoints", None, FakeContext()) == ""


def test_a_session_is_checked_step_by_step(users: Users) -> None:
    check = interceptor(users)
    steps = [
        spb.SessionRequest(begin=spb.SessionBegin(read_only=True)),
        spb.SessionRequest(statement=spb.SqlStatement(sql="SELECT 1")),
        spb.SessionRequest(commit=spb.SessionCommit()),
        spb.SessionRequest(statement=spb.SqlStatement(sql="DELETE FROM t")),
        spb.SessionRequest(statement=spb.SqlStatement(sql="SELECT 2")),
    ]
    seen: list[str] = []

    async def session(requests: AsyncIterator[Any], context: Any) -> None:
        async for request in requests:
            seen.append(f"{request.WhichOneof('action')} as {CURRENT_USER.get()}")

    async def call(context: FakeContext) -> None:
        async def requests() -> AsyncIterator[Any]:
            for step in steps:
                yield step

        handler: Any = grpc.stream_stream_rpc_method_handler(session)

        async def continuation(details: Any) -> Any:
            return handler

        wrapped: Any = await check.intercept_service(continuation, details_of(f"{SQL}/Session"))
        assert wrapped is not None and wrapped.stream_stream is not None
        await wrapped.stream_stream(requests(), context)

    with pytest.raises(Aborted) as caught:
        asyncio.run(call(FakeContext(token(users, "reader"))))
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "SqlService.Statement" in caught.value.details
    assert seen == ["begin as reader", "statement as reader", "commit as reader"]
    seen.clear()
    asyncio.run(call(FakeContext(token(users, "writer"))))
    assert len(seen) == len(steps)


def test_a_log_line_during_a_call_names_the_user(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "opened %s", ("t1",), None)
    reset = CURRENT_USER.set("alice")
    try:
        UserLogFilter().filter(record)
    finally:
        CURRENT_USER.reset(reset)
    assert record.getMessage() == "[user alice] opened t1"


# -- the control plane's registry and UserService --------------------------------------------------------


def call(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_bootstrap_files_and_the_user_service(tmp_path: Path) -> None:
    state_dir, data_dir = tmp_path / "state", tmp_path / "state" / "data" / "control-plane"
    signing_path, verify_path = user_files.bootstrap(state_dir, data_dir / user_files.USERS_FILE, NOW)
    secrets = [signing_path, user_files.admin_token_path(state_dir), data_dir / user_files.USERS_FILE]
    assert all(stat.S_IMODE(os.stat(path).st_mode) == 0o600 for path in secrets)
    assert stat.S_IMODE(os.stat(signing_path.parent).st_mode) == 0o700
    signing_key = user_files.load_signing_key(signing_path)
    assert user_files.load_verify_key(verify_path) == tk.verify_key_of(signing_key)
    admin_token = user_files.admin_token_path(state_dir).read_text().strip()

    registry = Registry.open(data_dir)
    claims = tk.verify(tk.verify_key_of(signing_key), admin_token, NOW + 1, users=registry.get)
    assert (claims.user, claims.role) == ("admin", Role.ADMIN)
    audit = tmp_path / "audit.log"
    service = UserServicer(registry, signing_key, Auditor(AuditLog(audit, "cp")), clock=lambda: NOW)
    context = FakeContext(role=pki.ROLE_CLIENT_ADMIN)
    reset = CURRENT_USER.set("admin")
    try:
        call(service.CreateUser(upb.CreateUserRequest(name="rita", role=upb.USER_ROLE_READER), context))
        issued = call(service.IssueToken(upb.IssueTokenRequest(user="rita", ttl_s=60), context))
        with pytest.raises(tk.StorageError):
            call(service.CreateUser(upb.CreateUserRequest(name="rita", role=upb.USER_ROLE_WRITER), context))
        with pytest.raises(tk.StorageError):
            call(service.IssueToken(upb.IssueTokenRequest(user="rita", role=upb.USER_ROLE_ADMIN), context))
    finally:
        CURRENT_USER.reset(reset)
    assert issued.fingerprint == tk.fingerprint(issued.token) and issued.expires_at == NOW + 60
    assert tk.verify(tk.verify_key_of(signing_key), issued.token, NOW, users=registry.get).role == Role.READER
    assert Registry.open(data_dir).get("rita") is not None  # saved
    listed = call(service.ListUsers(upb.ListUsersRequest(), context)).users
    assert [(u.name, u.role) for u in listed] == [("admin", upb.USER_ROLE_ADMIN), ("rita", upb.USER_ROLE_READER)]

    synced = call(service.SyncUsers(upb.SyncUsersRequest(), context))
    assert synced.changed and len(synced.users) == 2 and synced.version == version_of(registry.users)
    again = call(service.SyncUsers(upb.SyncUsersRequest(known_version=synced.version), context))
    assert not again.changed and not again.users
    call(service.DeleteUser(upb.DeleteUserRequest(name="rita"), context))
    assert Registry.open(data_dir).get("rita") is None
    assert call(service.SyncUsers(upb.SyncUsersRequest(known_version=synced.version), context)).changed

    entries = read(audit).entries
    assert [(e.who, e.what, e.outcome.split(":")[0]) for e in entries] == [
        ("user:admin", "UserService.CreateUser", "ok"),
        ("user:admin", "UserService.IssueToken", "ok"),
        ("user:admin", "UserService.CreateUser", "failed"),
        ("user:admin", "UserService.IssueToken", "failed"),
        ("cert:client-admin/peer", "UserService.DeleteUser", "ok"),
    ]
    assert entries[1].details["fingerprint"] == issued.fingerprint
    assert issued.token not in audit.read_text()
    json.loads((data_dir / user_files.USERS_FILE).read_text())


def test_the_admin_token_is_issued_again_a_week_before_it_ends(tmp_path: Path) -> None:
    state_dir, users_path = tmp_path / "state", tmp_path / "users.json"
    user_files.bootstrap(state_dir, users_path, NOW)
    path = user_files.admin_token_path(state_dir)
    first = path.read_text()
    assert not user_files.renew_admin_token(state_dir, users_path, NOW + 86400)
    later = NOW + user_files.ADMIN_TOKEN_TTL_S - user_files.RENEW_BEFORE_S + 1
    assert user_files.renew_admin_token(state_dir, users_path, later)
    assert path.read_text() != first and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert user_files.token_expiry(path.read_text().strip()) == int(later) + user_files.ADMIN_TOKEN_TTL_S
    registry = Registry.open(tmp_path)
    registry.change(lambda users: users.delete("admin"))
    assert not user_files.renew_admin_token(state_dir, users_path, later + user_files.ADMIN_TOKEN_TTL_S)


class FakeUserStub:
    def __init__(self, service: UserServicer) -> None:
        self.service = service
        self.calls = 0
        self.down = False

    async def SyncUsers(self, request: upb.SyncUsersRequest, timeout: float) -> upb.SyncUsersResponse:
        self.calls += 1
        if self.down:
            raise TimeoutError
        result: upb.SyncUsersResponse = await self.service.SyncUsers(request, FakeContext())
        return result


def test_a_compute_instance_learns_deletions_and_keeps_the_last_users_through_an_outage(tmp_path: Path) -> None:
    users = Users()
    users.create("rita", Role.READER, NOW)
    registry = Registry(tmp_path / "users.json", users)
    stub = FakeUserStub(UserServicer(registry, SIGNING_KEY, None))
    remote = RemoteUsers(stub)  # type: ignore[arg-type]

    async def scenario() -> None:
        stub.down = True
        with pytest.raises(UsersUnknown):
            await remote.ready()
        stub.down = False
        await remote.ready()
        assert remote.get("rita") is not None
        registry.change(lambda u: u.delete("rita"))
        await remote.sync_once()
        assert remote.get("rita") is None
        stub.down = True
        with pytest.raises(TimeoutError):
            await remote.sync_once()
        await remote.ready()  # the last registry stays

    asyncio.run(scenario())


# -- the client's token ------------------------------------------------------------------------------------


@pytest.fixture
def cluster_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv(user_files.TOKEN_ENV, raising=False)
    state_dir = tmp_path / "state"
    tls_dir = transport.cluster_tls_dir(state_dir)
    pki.create_ca(tls_dir)
    pki.issue(tls_dir, transport.CLIENT_NAME, pki.ROLE_CLIENT_ADMIN)
    try:
        yield state_dir
    finally:
        transport.use(None)


def test_a_client_sends_sixfold_token_else_the_admin_token(
    cluster_files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert transport.use_cluster_client(cluster_files) and transport.current_token() is None
    user_files.write_secret(user_files.admin_token_path(cluster_files), b"sf1.admin.x\n")
    transport.use_cluster_client(cluster_files)
    assert transport.current_token() == "sf1.admin.x"
    monkeypatch.setenv(user_files.TOKEN_ENV, "sf1.mine.y")
    transport.use_cluster_client(cluster_files)
    assert transport.current_token() == "sf1.mine.y"
    transport.use(None, "sf1.never.z")
    assert transport.current_token() is None  # a token never travels without TLS
