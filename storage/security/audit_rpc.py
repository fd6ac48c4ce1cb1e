"""The audit log of a sixfold server process (issue 16, item 5): who called which admin RPC and how it ended,
and every permission refusal, in `<data dir>/audit.log` (storage/security/audit.py writes and reads it).

Rules:
1. Every process the launcher starts keeps its audit log, with mutual TLS or without: an admin operation is
   worth a record on any cluster. `who` is the caller's certificate, "cert:<role>/<name>"
   (`tls.peer_role`); a plaintext peer proves nothing, so it is "anonymous" (with its address in `peer`).
2. Under TLS, every refusal of the process's `RoleInterceptor` is recorded: who, the RPC, "refused: <the
   sentence the caller got>", and the roles that were needed.
3. The RPCs of the process's audited set (`STORAGE_AUDITED`, `CONTROL_PLANE_AUDITED`, `COMPUTE_AUDITED`)
   are recorded when they end: who, "<Service>.<Method>", "ok" or "failed: <CODE>: <details>", and the
   request's identifying fields (`request_details`: its set scalar fields, enum names, lists of scalars;
   never bytes and never a nested message, of which only the count is given). Only unary-unary RPCs are
   audited; every audited RPC is one. audit.py bounds every text and redacts anything like a token.
4. Writing a record never fails the call: a full or broken disk is logged as an error and the RPC goes on
   (failing RaiseVolumeEpoch over the audit log would stop the writer from opening its volume).
5. The check runs before the record: a refused call is recorded once, as refused (rule 2), never as failed.
6. Besides RPCs, the control plane records each failover its failure detector carries out on its own (who
   "control-plane (failure detector)", control_plane_main.py); the instance it promoted records the Promote.
   Segment replacements are seen on the storage nodes, as the control plane's CreateSegment and
   UpdateMembership calls.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from sixfold.storage.security import transport
from sixfold.storage.security.audit import OUTCOME_OK, AuditLog
from sixfold.storage.security.auth_context import CURRENT_USER
from sixfold.storage.security.tls import (
    CLUSTER_SERVICE,
    CONTROL_PLANE_SERVICE,
    INSTANCE_SERVICE,
    OPEN_SERVICES,
    STORAGE_SERVICE,
    PermissionDenied,
    RoleInterceptor,
    peer_role,
    shown_name,
)

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.log"
ANONYMOUS = "anonymous"
VOLUME_SERVICE = "compute.v1.VolumeService"
LIST_ITEMS_MAX = 16  # items of a repeated scalar field shown in a record's details


def _paths(service: str, *names: str) -> frozenset[str]:
    return frozenset(f"/{service}/{name}" for name in names)


# Rule 3: what each process records. A storage node: placement, membership and fencing.
STORAGE_AUDITED = _paths(
    STORAGE_SERVICE, "CreateSegment", "DropSegment", "UpdateMembership", "RaiseVolumeEpoch", "RewrapSegmentKey"
)
# The control plane: volume metadata changes (a snapshot is a CloneVolume of kind SNAPSHOT), nodes and compute
# instances joining, failover, removal and endpoints.
CONTROL_PLANE_AUDITED = _paths(
    CONTROL_PLANE_SERVICE,
    "RegisterNode",
    "CreateVolume",
    "GrowVolume",
    "CloneVolume",
    "RestoreSnapshot",
    "DeleteVolume",
    "DeleteSnapshot",
    "Backtrack",
) | _paths(CLUSTER_SERVICE, "RegisterCompute", "RemoveCompute", "Failover", "CreateEndpoint", "DeleteEndpoint")
# A compute instance: the admin operations as the operator asked for them (the control plane sees them come
# from the writer's certificate), and the role changes the control plane orders.
COMPUTE_AUDITED = _paths(
    VOLUME_SERVICE,
    "CreateVolume",
    "CloneVolume",
    "DeleteVolume",
    "CreateSnapshot",
    "DeleteSnapshot",
    "RestoreSnapshot",
    "Backtrack",
) | _paths(INSTANCE_SERVICE, "Promote", "StepDown")


def open_audit_log(data_dir: str | Path | None, process: str) -> AuditLog | None:
    """Rule 1: the process's audit log in its data dir (made if missing); None without a data dir."""
    if not data_dir:
        return None
    directory = Path(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return AuditLog(directory / AUDIT_FILE, process)


def who(context: Any) -> str:
    """Rule 1: "user:<name> cert:<role>/<name>" when a token proved the call's user (auth_context.py), else
    "cert:<role>/<name>" of a TLS caller, else "anonymous"."""
    peer = peer_role(context)
    cert = ANONYMOUS if peer is None else f"cert:{peer[0]}/{peer[1]}"
    user = CURRENT_USER.get()
    return f"user:{user} {cert}" if user else cert


def request_details(request: Any) -> dict[str, object]:
    """Rule 3: the fields a request sets, as audit details."""
    if not isinstance(request, Message):
        return {}
    details: dict[str, object] = {}
    for field, value in request.ListFields():
        if field.type == FieldDescriptor.TYPE_BYTES:
            continue
        repeated = field.is_repeated
        if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            details[f"{field.name}_count" if repeated else f"has_{field.name}"] = len(value) if repeated else True
            continue
        items = list(value) if repeated else [value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            items = [_enum_name(field, item) for item in items]
        if not repeated:
            details[field.name] = items[0]
        else:
            shown = ",".join(str(item) for item in items[:LIST_ITEMS_MAX])
            details[field.name] = shown + (f",… ({len(items)} in all)" if len(items) > LIST_ITEMS_MAX else "")
    return details


def _enum_name(field: FieldDescriptor, number: int) -> str:
    value = field.enum_type.values_by_number.get(number) if field.enum_type is not None else None
    return value.name if value is not None else str(number)


class Auditor:
    """Writes one process's records (rules 2 and 4)."""

    def __init__(self, audit_log: AuditLog, clock: Callable[[], float] = time.time) -> None:
        self.log = audit_log
        self.clock = clock

    def record(self, who: str, what: str, outcome: str, **details: object) -> None:
        try:
            self.log.record(who, what, outcome, self.clock(), **details)
        except (OSError, ValueError) as error:
            log.error("could not write the audit record %s %s %s: %s", who, what, outcome, error)

    def refusals(self, service: str | None) -> Callable[[PermissionDenied], None]:
        """Rule 2: a RoleInterceptor's `on_refusal` (`service`: the one its table names by short names)."""

        def refused(error: PermissionDenied) -> None:
            role, name = error.metadata.get("caller_role", ""), error.metadata.get("caller_name", "")
            rpc = error.metadata.get("rpc", "")
            path = rpc if rpc.startswith("/") or service is None else f"/{service}/{rpc}"
            self.record(
                f"cert:{role}/{name}" if role else ANONYMOUS,
                shown_name(path),
                f"refused: {error.message}",
                needed_roles=error.metadata.get("needed_roles", ""),
            )

        return refused


class AuditInterceptor(grpc.aio.ServerInterceptor):
    """Rule 3: records each call of the methods in `audited` (full paths) when it ends."""

    def __init__(self, auditor: Auditor, audited: Iterable[str]) -> None:
        self.auditor = auditor
        self.audited = frozenset(audited)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: Any = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        if handler is None or method not in self.audited or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._recorded(handler.unary_unary, shown_name(method)),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _recorded(self, behavior: Callable[..., Any], name: str) -> Callable[..., Any]:
        async def handle(request: Any, context: Any) -> Any:
            outcome = "failed: CANCELLED: the call ended before an answer"
            try:
                response = behavior(request, context)
                if inspect.isawaitable(response):
                    response = await response
                outcome = OUTCOME_OK
                return response
            except grpc.aio.AbortError:
                code = context.code()
                code_name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                outcome = f"failed: {code_name}: {context.details() or ''}"
                raise
            except Exception as error:
                outcome = f"failed: {type(error).__name__}: {error}"
                raise
            finally:
                details = request_details(request)
                caller = who(context)
                if caller == ANONYMOUS:
                    details["peer"] = context.peer()
                self.auditor.record(caller, name, outcome, **details)

        return handle


def server_interceptors(
    audit_log: AuditLog | None,
    audited: Iterable[str],
    table: Mapping[str, frozenset[str]],
    *,
    service: str | None,
    open_services: Iterable[str] = OPEN_SERVICES,
) -> list[grpc.aio.ServerInterceptor]:
    """A server's checks in order: under TLS (this process has an identity) the role check of `table`, its
    refusals audited (rule 2); then the record of the audited calls (rule 3). Without an audit log only the
    check, and without TLS only the records."""
    auditor = Auditor(audit_log) if audit_log is not None else None
    chain: list[grpc.aio.ServerInterceptor] = []
    if transport.current() is not None:
        on_refusal = auditor.refusals(service) if auditor is not None else None
        chain.append(RoleInterceptor(table, service=service, open_services=open_services, on_refusal=on_refusal))
    if auditor is not None:
        chain.append(AuditInterceptor(auditor, audited))
    return chain
