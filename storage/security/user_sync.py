"""A compute instance's copy of the cluster's users (issue 16, item 3), to check tokens against.

Rules:
1. With mutual TLS on, a compute instance checks every SQL, KV and Volume call's token (user_auth.py) with
   the cluster's verify key (`--token-verify-key`, made by `sixfold up`; a TLS instance without one does not
   start) against the users it learned from the control plane's UserService.SyncUsers.
2. It asks every `SYNC_INTERVAL_S` (1 s) with the version it holds, so a deleted user's tokens are refused
   here within about a second after the control plane acknowledged the deletion.
3. Until the first answer no token can be checked: a call waits for one sync (at most `FIRST_SYNC_WAIT_S`)
   and is then refused UNAVAILABLE, saying so. Later, while the control plane is unreachable, the last
   registry learned stays in use (users are only ever deleted on the control plane), and a warning is
   logged once per outage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Sequence

import grpc

from sixfold.storage.security import transport
from sixfold.storage.security.audit import AuditLog
from sixfold.storage.security.audit_rpc import Auditor
from sixfold.storage.security.tokens import User
from sixfold.storage.security.user_auth import (
    COMPUTE_TOKEN_SERVICES,
    TokenChecker,
    TokenInterceptor,
    UsersUnknown,
    with_token_check,
)
from sixfold.storage.security.user_files import UserFileError, load_verify_key
from sixfold.storage.security.user_service import user_of
from sixfold.storage.v1 import user_service_pb2 as pb
from sixfold.storage.v1 import user_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 1.0
SYNC_TIMEOUT_S = 5.0
FIRST_SYNC_WAIT_S = 5.0


class RemoteUsers:
    """Rules 2-3: the users the control plane last told this instance about."""

    def __init__(self, stub: pb_grpc.UserServiceStub, interval_s: float = SYNC_INTERVAL_S) -> None:
        self.stub = stub
        self.interval_s = interval_s
        self.version = ""
        self._users: dict[str, User] | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def get(self, name: str) -> User | None:
        return None if self._users is None else self._users.get(name)

    async def ready(self) -> None:
        if self._users is not None:
            return
        with contextlib.suppress(TimeoutError, grpc.aio.AioRpcError):
            await asyncio.wait_for(self.sync_once(), FIRST_SYNC_WAIT_S)
        if self._users is None:
            raise UsersUnknown(
                "this compute instance has not learned the cluster's users from the control plane yet, so it "
                "cannot check tokens; try again once the control plane is reachable"
            )

    async def sync_once(self) -> None:
        async with self._lock:
            reply = await self.stub.SyncUsers(pb.SyncUsersRequest(known_version=self.version), timeout=SYNC_TIMEOUT_S)
            if reply.changed:
                users = {message.name: user_of(message) for message in reply.users}
                if self._users is not None:
                    for name in sorted(set(self._users) - set(users)):
                        log.info("user %s is gone: its tokens are refused from now on", name)
                self._users = users
                self.version = reply.version

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="user-sync")

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
                if self._failing:
                    log.info("the control plane answers again: users in sync")
                self._failing = False
            except (grpc.aio.AioRpcError, TimeoutError) as error:
                if not self._failing:
                    code = error.code().name if isinstance(error, grpc.aio.AioRpcError) else "DEADLINE"
                    log.warning("cannot fetch the users from the control plane (%s); keeping the last ones", code)
                self._failing = True
            await asyncio.sleep(self.interval_s)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--token-verify-key",
        help="the cluster's token verify key (sixfold up writes STATE_DIR/tokens/verify.pub): with --tls-dir, "
        "every SQL, KV and Volume call must carry a user's token",
    )


def arguments_ok(args: argparse.Namespace, log: logging.Logger) -> bool:
    """Rule 1: a TLS instance needs the verify key (it must never serve users unchecked)."""
    if args.tls_dir and not args.token_verify_key:
        log.error("--tls-dir needs --token-verify-key: with mutual TLS every client call's token is checked")
        return False
    if args.token_verify_key:
        try:
            load_verify_key(args.token_verify_key)
        except UserFileError as error:
            log.error("%s", error)
            return False
    return True


def start_token_check(
    verify_key_path: str | None,
    control_plane: grpc.aio.Channel,
    audit_log: AuditLog | None,
    chain: Sequence[grpc.aio.ServerInterceptor],
) -> tuple[list[grpc.aio.ServerInterceptor], RemoteUsers | None]:
    """Rule 1: `chain` with the token check (started syncing users), or as it is without a verify key or
    without TLS (a plaintext cluster checks no token: one would travel in clear)."""
    if not verify_key_path or transport.current() is None:
        return list(chain), None
    users = RemoteUsers(pb_grpc.UserServiceStub(control_plane))
    users.start()
    checker = TokenChecker(load_verify_key(verify_key_path), users)
    auditor = Auditor(audit_log) if audit_log is not None else None
    check = TokenInterceptor(checker, COMPUTE_TOKEN_SERVICES, auditor=auditor)
    log.info("user tokens checked on SqlService, KvService and VolumeService")
    return with_token_check(chain, check), users
