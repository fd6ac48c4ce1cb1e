"""`storage.v1.UserService` on the control plane (issue 16, item 3): the cluster's users and their tokens.

Rules:
1. The control plane holds the registry (`<data dir>/users.json`, users.py) and the signing key (`sixfold up`
   makes both, storage/security/user_files.py); it serves UserService only with mutual TLS on.
2. A change is saved (mode 0600, written whole) before it is answered or takes effect: a crash never loses
   a deletion that was acknowledged.
3. CreateUser, DeleteUser and IssueToken are recorded in the audit log: who (the admin user), what, the
   outcome, and for a token its user, role, expiry and fingerprint, never the token itself.
4. SyncUsers gives compute instances the registry (name, role, serial) with a version (a digest of it), so
   a deleted user's tokens are refused on compute at the instance's next sync (every second).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from sixfold.storage.errors import InvalidRequest, StorageError
from sixfold.storage.security import tokens, transport
from sixfold.storage.security.audit import AuditLog
from sixfold.storage.security.audit_rpc import Auditor, who
from sixfold.storage.security.tokens import Role, User
from sixfold.storage.security.user_auth import (
    CONTROL_PLANE_PROCESS_ROLES,
    CONTROL_PLANE_TOKEN_SERVICES,
    CURRENT_USER,
    TokenChecker,
    TokenInterceptor,
    with_token_check,
)
from sixfold.storage.security.user_files import USERS_FILE, UserFileError, load_signing_key, load_users, save_users
from sixfold.storage.security.users import UnknownUser, Users
from sixfold.storage.status import status_code
from sixfold.storage.v1 import user_service_pb2 as pb

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 3600
ROLE_OF_PROTO: dict[int, Role] = {
    pb.USER_ROLE_READER: Role.READER,
    pb.USER_ROLE_WRITER: Role.WRITER,
    pb.USER_ROLE_ADMIN: Role.ADMIN,
}
PROTO_OF_ROLE: dict[Role, Any] = {role: number for number, role in ROLE_OF_PROTO.items()}
SERVICE = "UserService"


def user_message(user: User) -> pb.User:
    return pb.User(name=user.name, role=PROTO_OF_ROLE[user.role], created_at=user.created_at, serial=user.serial)


def user_of(message: pb.User) -> User:
    role = ROLE_OF_PROTO.get(message.role)
    if role is None:
        raise InvalidRequest(f"user {message.name} has no role")
    return User(name=message.name, role=role, created_at=message.created_at, serial=message.serial)


def role_of(number: int) -> Role:
    role = ROLE_OF_PROTO.get(number)
    if role is None:
        raise InvalidRequest("a user's role is one of admin, writer, reader")
    return role


def version_of(users: Users) -> str:
    """Rule 4: a digest of the registry's users (names, roles, serials)."""
    text = json.dumps([[u.name, u.role.value, u.serial] for u in users.list()], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Registry:
    """Rules 1-2: the control plane's registry, saved on every change (a `UserSource` for its token checks)."""

    def __init__(self, path: Path, users: Users) -> None:
        self.path = path
        self.users = users
        self.version = version_of(users)

    @classmethod
    def open(cls, data_dir: str | Path) -> Registry:
        path = Path(data_dir) / USERS_FILE
        users = load_users(path)
        if users is None:
            log.warning("no user registry in %s: no token is valid until one is made (sixfold up makes it)", path)
            users = Users()
        return cls(path, users)

    def get(self, name: str) -> User | None:
        return self.users.get(name)

    async def ready(self) -> None:
        return None

    def change(self, change: Callable[[Users], User]) -> User:
        """Apply `change` to a copy, save the copy, then make it the registry (rule 2)."""
        copy = Users.from_dict(self.users.to_dict())
        user = change(copy)
        save_users(self.path, copy)
        self.users = copy
        self.version = version_of(copy)
        return user


class UserServicer:
    """Every RPC of storage.v1.UserService."""

    def __init__(
        self, registry: Registry, signing_key: bytes, auditor: Auditor | None, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry
        self.signing_key = signing_key
        self.auditor = auditor
        self.clock = clock

    def _audit(self, context: Any, what: str, outcome: str, **details: object) -> None:
        if self.auditor is None:
            return
        user = CURRENT_USER.get()
        self.auditor.record(f"user:{user}" if user else who(context), f"{SERVICE}.{what}", outcome, **details)

    def _audited(self, context: Any, what: str, action: Callable[[], Any], **details: object) -> Any:
        """Rule 3: run `action`, recording its outcome."""
        try:
            result = action()
        except StorageError as error:
            self._audit(context, what, f"failed: {status_code(error).name}: {error.message}", **details)
            raise
        outcome_details = result[1] if isinstance(result, tuple) else {}
        self._audit(context, what, "ok", **details, **outcome_details)
        return result[0] if isinstance(result, tuple) else result

    async def CreateUser(self, request: pb.CreateUserRequest, context: Any) -> pb.CreateUserResponse:
        def create() -> User:
            role = role_of(request.role)
            return self.registry.change(lambda users: users.create(request.name, role, self.clock()))

        user = self._audited(context, "CreateUser", create, user=request.name[:64], role=_role_name(request.role))
        log.info("created user %s (role %s, serial %d)", user.name, user.role.value, user.serial)
        return pb.CreateUserResponse(user=user_message(user))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersResponse:
        return pb.ListUsersResponse(users=[user_message(user) for user in self.registry.users.list()])

    async def DeleteUser(self, request: pb.DeleteUserRequest, context: Any) -> pb.DeleteUserResponse:
        def delete() -> User:
            return self.registry.change(lambda users: users.delete(request.name))

        user = self._audited(context, "DeleteUser", delete, user=request.name[:64])
        log.info("deleted user %s (serial %d): its tokens are refused from now on", user.name, user.serial)
        return pb.DeleteUserResponse(user=user_message(user))

    async def IssueToken(self, request: pb.IssueTokenRequest, context: Any) -> pb.IssueTokenResponse:
        ttl_s = request.ttl_s or DEFAULT_TTL_S

        def issue() -> tuple[tuple[str, int], dict[str, object]]:
            user = self.registry.get(request.user)
            if user is None:
                raise UnknownUser(f"there is no user {request.user[:64]!r}; `sixfold user list` shows them")
            role = user.role if request.role == pb.USER_ROLE_UNSPECIFIED else role_of(request.role)
            if ttl_s > tokens.TTL_S_MAX:
                raise InvalidRequest(f"a token lives at most {tokens.TTL_S_MAX} seconds (30 days), not {ttl_s}")
            token = tokens.issue(self.signing_key, user, role, self.clock(), int(ttl_s))
            expires_at = int(self.clock()) + int(ttl_s)
            shown = {"role": role.value, "serial": user.serial, "expires": tokens.iso_utc(expires_at)}
            return (token, expires_at), {**shown, "fingerprint": tokens.fingerprint(token)}

        token, expires_at = self._audited(context, "IssueToken", issue, user=request.user[:64], ttl_s=ttl_s)
        fingerprint = tokens.fingerprint(token)
        log.info("issued token %s for user %s (%d s)", fingerprint, request.user, ttl_s)
        return pb.IssueTokenResponse(token=token, expires_at=expires_at, fingerprint=fingerprint)

    async def SyncUsers(self, request: pb.SyncUsersRequest, context: Any) -> pb.SyncUsersResponse:
        version = self.registry.version
        if request.known_version == version:
            return pb.SyncUsersResponse(version=version, changed=False)
        users = [user_message(user) for user in self.registry.users.list()]
        return pb.SyncUsersResponse(version=version, changed=True, users=users)


def _role_name(number: int) -> str:
    role = ROLE_OF_PROTO.get(number)
    return role.value if role is not None else str(number)


# -- the control plane process (storage/control_plane_main.py) ----------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-signing-key",
        help="the cluster's token signing key (sixfold up writes STATE_DIR/tokens/signing.key): with --tls-dir, "
        "serve UserService and check the token of every ControlPlaneService and UserService call from a client",
    )


def arguments_ok(args: argparse.Namespace, log: logging.Logger) -> bool:
    """Rule 1: a TLS control plane needs the signing key (it must never serve clients unchecked)."""
    if args.tls_dir and not args.token_signing_key:
        log.error("--tls-dir needs --token-signing-key: with mutual TLS every client call's token is checked")
        return False
    if args.token_signing_key:
        try:
            load_signing_key(args.token_signing_key)
        except UserFileError as error:
            log.error("%s", error)
            return False
    return True


def start_users(
    signing_key_path: str | None,
    data_dir: str | Path,
    audit_log: AuditLog | None,
    chain: Sequence[grpc.aio.ServerInterceptor],
) -> tuple[list[grpc.aio.ServerInterceptor], list[tuple[Any, Any, Any]]]:
    """Rule 1: `chain` with the token check, and UserService to serve; as they are without a signing key or
    without TLS (a plaintext cluster checks no token: one would travel in clear)."""
    if not signing_key_path or transport.current() is None:
        return list(chain), []
    signing_key = load_signing_key(signing_key_path)
    registry = Registry.open(data_dir)
    auditor = Auditor(audit_log) if audit_log is not None else None
    checker = TokenChecker(tokens.verify_key_of(signing_key), registry)
    check = TokenInterceptor(
        checker, CONTROL_PLANE_TOKEN_SERVICES, process_roles=CONTROL_PLANE_PROCESS_ROLES, auditor=auditor
    )
    log.info("user tokens checked on ControlPlaneService and UserService; %d users", len(registry.users))
    servicer = UserServicer(registry, signing_key, auditor)
    return with_token_check(chain, check), [(pb.DESCRIPTOR.services_by_name[SERVICE], servicer, pb)]
