"""gRPC glue for the cluster's mutual TLS and roles (issue 16, items 1 and 2).

- `server_credentials` / `channel_credentials`: every sixfold server demands a client certificate
  signed by the cluster CA, and every channel presents one and trusts only that CA. What a refused
  peer sees (grpcio 1.85, tried): a plaintext client, a client without a certificate and a client
  whose certificate another CA signed all fail with UNAVAILABLE ("failed to connect to all addresses;
  ... Socket closed"), never reaching a handler; a client that does not trust the server's CA fails
  UNAVAILABLE too ("... CERTIFICATE_VERIFY_FAILED").
- `peer_role`: the caller's (role, name) from its certificate's `sixfold://role/<role>/<name>` URI. A
  handler's `context.auth_context()` carries the verified peer certificate's SANs: every kind under
  `x509_subject_alternative_name`, URIs alone under `peer_uri` (also `peer_dns`, `peer_ip`,
  `x509_common_name`, `x509_pem_cert`, `transport_security_type` = b"ssl", `ssl_tls_version`).
- `STORAGE_RPC_ROLES` and `check_role`: who may call which storage node RPC (a pure table);
  `INSTANCE_RPC_ROLES` (a compute instance's InstanceService; its VolumeService, SqlService and KvService
  are in `COMPUTE_OPEN_SERVICES`, open to every certificate of the cluster until user tokens come) and
  `CONTROL_PLANE_RPC_ROLES` (the control plane's ControlPlaneService and ClusterService, keyed by full
  method path since the one port serves both).
- `RoleInterceptor`: a grpc.aio server interceptor enforcing such a table with PERMISSION_DENIED and a
  sentence saying which role was needed.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import grpc

from sixfold.storage.errors import StorageError
from sixfold.storage.security.pki import (
    ROLE_CLIENT_ADMIN,
    ROLE_CONTROL_PLANE,
    ROLE_READER,
    ROLE_STORAGE_NODE,
    ROLE_WRITER,
    Identity,
    parse_role_uri,
)
from sixfold.storage.status import abort_with

log = logging.getLogger(__name__)

STORAGE_SERVICE = "storage.v1.StorageService"
INSTANCE_SERVICE = "compute.v1.InstanceService"
CONTROL_PLANE_SERVICE = "storage.v1.ControlPlaneService"
CLUSTER_SERVICE = "storage.v1.ClusterService"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
# Services any peer that passed the TLS handshake may call (its certificate is the cluster CA's):
# readiness probes and schema discovery carry no data.
OPEN_SERVICES = frozenset({HEALTH_SERVICE, REFLECTION_SERVICE})
# A compute instance's user-facing services: open to any certificate of the cluster for now (the CLI, tools);
# user tokens with their own roles are the next step (issue 16, item 3; storage/security/permissions.py).
COMPUTE_OPEN_SERVICES = OPEN_SERVICES | {"compute.v1.VolumeService", "compute.v1.SqlService", "compute.v1.KvService"}

REASON_ROLE_NOT_ALLOWED = "ROLE_NOT_ALLOWED"  # metadata: rpc, needed_roles, caller_role, caller_name


class PermissionDenied(StorageError):
    """The caller's certificate role may not call this RPC."""

    status_code_name = "PERMISSION_DENIED"
    reason = REASON_ROLE_NOT_ALLOWED


# -- credentials -----------------------------------------------------------------------------------


def server_credentials(identity: Identity) -> grpc.ServerCredentials:
    """Serve as `identity`, and admit only clients with a certificate signed by the cluster CA."""
    return grpc.ssl_server_credentials(
        [(identity.key_pem, identity.cert_chain_pem)], root_certificates=identity.ca_pem, require_client_auth=True
    )


def channel_credentials(identity: Identity) -> grpc.ChannelCredentials:
    """Dial as `identity`, trusting only servers whose certificate the cluster CA signed (and which name
    the dialled host: 127.0.0.1 and localhost are in every certificate)."""
    return grpc.ssl_channel_credentials(
        root_certificates=identity.ca_pem, private_key=identity.key_pem, certificate_chain=identity.cert_chain_pem
    )


# -- the caller's role -----------------------------------------------------------------------------


class _HasAuthContext(Protocol):
    # Values are lists of bytes at run time; the sync context's type stub says bytes.
    def auth_context(self) -> Mapping[str, Any]: ...


def peer_role(context: _HasAuthContext) -> tuple[str, str] | None:
    """(role, name) of the caller of a sync or aio handler, from its verified certificate; None for a
    plaintext peer, a peer without a certificate, or a certificate naming no role (or several)."""
    auth = context.auth_context()
    if b"ssl" not in list(auth.get("transport_security_type", ())):
        return None
    uris = list(auth.get("peer_uri", ())) or list(auth.get("x509_subject_alternative_name", ()))
    found = {parsed for uri in uris if (parsed := parse_role_uri(uri.decode("utf-8", "replace")))}
    return found.pop() if len(found) == 1 else None


# -- who may call what -----------------------------------------------------------------------------

# Reads of segment data: compute instances read pages and records, peers gossip records and copy page
# versions, the control plane reads records and finds commits for a backtrack. Not kms (it never calls a
# storage node) and not client-admin: an operator reads data through a compute instance, with a user
# token (issue 16, item 3), never around it.
_DATA_READERS = frozenset({ROLE_STORAGE_NODE, ROLE_WRITER, ROLE_READER, ROLE_CONTROL_PLANE})
# Segment state carries no data: `sixfold status` and the chaos checks list segments and their state.
_STATE_READERS = _DATA_READERS | {ROLE_CLIENT_ADMIN}

STORAGE_RPC_ROLES: dict[str, frozenset[str]] = {
    # The writer's log: appends, and the truncation of an abandoned log tail in recovery.
    "AppendRecords": frozenset({ROLE_WRITER}),
    "TruncateSegment": frozenset({ROLE_WRITER}),
    # Fencing: a writer raises the volume epoch when it opens (or regains) a volume; the control plane
    # raises it to fence the writer out for a backtrack (storage/control_plane_backtrack.py).
    "RaiseVolumeEpoch": frozenset({ROLE_WRITER, ROLE_CONTROL_PLANE}),
    # Retention pins for snapshots and clones: the writer's read points, the control plane's clones.
    "PinLsns": frozenset({ROLE_WRITER, ROLE_CONTROL_PLANE}),
    # Placement and membership are the control plane's alone.
    "CreateSegment": frozenset({ROLE_CONTROL_PLANE}),
    "DropSegment": frozenset({ROLE_CONTROL_PLANE}),
    "UpdateMembership": frozenset({ROLE_CONTROL_PLANE}),
    "RewrapSegmentKey": frozenset({ROLE_CONTROL_PLANE}),
    "ReadPage": _DATA_READERS,
    "ReadRecords": _DATA_READERS,
    "ReadPageVersions": _DATA_READERS,
    "FindCommit": _DATA_READERS,
    "GetSegmentState": _STATE_READERS,
    "ListSegments": _STATE_READERS,
}


# A compute instance's InstanceService. Promote and StepDown are the control plane's failover orders; a read
# replica follows the writer's redo (any compute instance may be either, and a `reader` certificate is a
# compute instance kept out of failover: pki.py); status is read by the control plane, the other instances,
# `sixfold status` and the chaos and bench tools (as the cluster's client-admin).
INSTANCE_RPC_ROLES: dict[str, frozenset[str]] = {
    "Promote": frozenset({ROLE_CONTROL_PLANE}),
    "StepDown": frozenset({ROLE_CONTROL_PLANE}),
    "FollowRedo": frozenset({ROLE_WRITER, ROLE_READER}),
    "GetInstanceStatus": frozenset({ROLE_CONTROL_PLANE, ROLE_WRITER, ROLE_READER, ROLE_CLIENT_ADMIN}),
}

# Volume and cluster metadata, no data: compute instances describe and list volumes as they open and follow
# them; `sixfold status`, `sixfold endpoint list`, the SQL/KV clients' endpoint resolution and the chaos and
# bench tools read it as the cluster's client-admin.
_METADATA_READERS = frozenset({ROLE_WRITER, ROLE_READER, ROLE_CONTROL_PLANE, ROLE_CLIENT_ADMIN})
_COMPUTE_INSTANCES = frozenset({ROLE_WRITER, ROLE_READER})


def qualified(service: str, table: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """`table` keyed by full method path (/package.Service/Method), for a server of several services."""
    return {f"/{service}/{name}": roles for name, roles in table.items()}


CONTROL_PLANE_SERVICE_RPC_ROLES: dict[str, frozenset[str]] = {
    # Storage node membership: only storage nodes register and report their segments.
    "RegisterNode": frozenset({ROLE_STORAGE_NODE}),
    "Heartbeat": frozenset({ROLE_STORAGE_NODE}),
    # A volume is created by the compute writer (its default volume, VolumeService.CreateVolume) and, as the
    # cluster's client-admin, by the bench and chaos tools, which make their volumes straight on the control plane.
    "CreateVolume": frozenset({ROLE_WRITER, ROLE_CLIENT_ADMIN}),
    # The rest of a volume's life is ordered by the compute writer, which knows the VDL and chain tails a
    # clone, restore, backtrack or delete needs; an operator goes through VolumeService on the writer.
    "GrowVolume": frozenset({ROLE_WRITER}),
    "CloneVolume": frozenset({ROLE_WRITER}),
    "RestoreSnapshot": frozenset({ROLE_WRITER}),
    "DeleteVolume": frozenset({ROLE_WRITER}),
    "DeleteSnapshot": frozenset({ROLE_WRITER}),
    "Backtrack": frozenset({ROLE_WRITER}),
    # Encryption at rest: the operator rotates a volume's key (`sixfold volume rotate-key`).
    "RotateVolumeKey": frozenset({ROLE_CLIENT_ADMIN}),
    "ListNodes": _METADATA_READERS,
    "DescribeVolume": _METADATA_READERS,
    "ListVolumes": _METADATA_READERS,
    "ListSnapshots": _METADATA_READERS,
    "VolumeHistory": _METADATA_READERS,
    "FindVolumeCommit": _METADATA_READERS,
}

CLUSTER_SERVICE_RPC_ROLES: dict[str, frozenset[str]] = {
    # Compute instances register and heartbeat (the answer tells each its role and the writer).
    "RegisterCompute": _COMPUTE_INSTANCES,
    "ComputeHeartbeat": _COMPUTE_INSTANCES,
    # Changes to the cluster are the operator's (`sixfold failover|replica remove|endpoint create|delete`).
    "Failover": frozenset({ROLE_CLIENT_ADMIN}),
    "RemoveCompute": frozenset({ROLE_CLIENT_ADMIN}),
    "CreateEndpoint": frozenset({ROLE_CLIENT_ADMIN}),
    "DeleteEndpoint": frozenset({ROLE_CLIENT_ADMIN}),
    "ListComputeInstances": _METADATA_READERS,
    "ListEndpoints": _METADATA_READERS,
    "ResolveEndpoint": _METADATA_READERS,
}

# The control plane's one port serves both services: its RoleInterceptor takes full method paths (service None).
CONTROL_PLANE_RPC_ROLES: dict[str, frozenset[str]] = {
    **qualified(CONTROL_PLANE_SERVICE, CONTROL_PLANE_SERVICE_RPC_ROLES),
    **qualified(CLUSTER_SERVICE, CLUSTER_SERVICE_RPC_ROLES),
}


def _caller(role: str | None, name: str) -> str:
    if not role:
        return "a peer without a sixfold role certificate"
    return f"{role} {name}" if name else role


def check_role(
    rpc: str,
    role: str | None,
    name: str = "",
    *,
    table: Mapping[str, frozenset[str]] = STORAGE_RPC_ROLES,
    shown: str = "",
) -> None:
    """Return if `role` may call `rpc` under `table`, else raise PermissionDenied saying which role(s)
    were needed (naming the RPC `shown`, else `rpc`). An RPC missing from the table (or listed with no role)
    is refused to every caller. `role` None: the caller showed no role (plaintext, or a certificate without
    one)."""
    needed = table.get(rpc, frozenset())
    if role is not None and role in needed:
        return
    metadata = {
        "rpc": rpc,
        "needed_roles": ",".join(sorted(needed)),
        "caller_role": role or "",
        "caller_name": name,
    }
    who = _caller(role, name)
    rpc = shown or rpc
    if not needed:
        message = f"{rpc} is in no role's permissions on this server, so it is refused to every caller ({who})"
    elif len(needed) == 1:
        message = f"{rpc} needs the {next(iter(needed))} role; this caller is {who}"
    else:
        message = f"{rpc} needs one of the roles {', '.join(sorted(needed))}; this caller is {who}"
    raise PermissionDenied(message, metadata)


def shown_name(rpc: str) -> str:
    """How a refusal names an RPC: a short name as it is, a full path as Service.Method
    (/storage.v1.ClusterService/Failover is ClusterService.Failover)."""
    if not rpc.startswith("/"):
        return rpc
    service, _, name = rpc.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}.{name}" if service else name


# -- the interceptor -------------------------------------------------------------------------------


class RoleInterceptor(grpc.aio.ServerInterceptor):
    """Refuses, with PERMISSION_DENIED, every call whose caller's certificate role `table` does not allow.

    `table` maps the method names of `service` (short names: "DropSegment") to the roles allowed; a
    method of another service (of every service, when `service` is None) is looked up by its full path
    ("/pkg.Service/Method"). The methods of `open_services` (health, reflection; a compute instance's
    user-facing services) are open to any peer that passed the TLS handshake. Everything else, a method
    missing from the table included, is refused: the safe default for an RPC added later without a
    decision. `on_refusal` (e.g. the audit log) hears every refusal; each is also logged.

    The check runs when the handler starts (the interceptor itself does not see the caller), once per
    call: a stream is checked once, before its first message is read. Handlers are expected to be
    coroutines or async generators, as on every sixfold server.
    """

    def __init__(
        self,
        table: Mapping[str, frozenset[str]],
        *,
        service: str | None = STORAGE_SERVICE,
        open_services: Iterable[str] = OPEN_SERVICES,
        on_refusal: Callable[[PermissionDenied], None] | None = None,
    ) -> None:
        self.table = dict(table)
        self.service = service
        self.open_services = frozenset(open_services)
        self.on_refusal = on_refusal

    def rpc_name(self, method: str) -> str:
        """The table key for a full method path."""
        service, _, name = method.lstrip("/").rpartition("/")
        return name if self.service is not None and service == self.service else method

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # not served here: UNIMPLEMENTED, as without the interceptor
        method: Any = handler_call_details.method
        if isinstance(method, bytes):
            method = method.decode("utf-8", "replace")
        if method.lstrip("/").rpartition("/")[0] in self.open_services:
            return handler
        return self._guarded(handler, self.rpc_name(method))

    async def _authorize(self, rpc: str, context: Any) -> None:
        peer = peer_role(context)
        role, name = peer or (None, "")
        try:
            check_role(rpc, role, name, table=self.table, shown=shown_name(rpc))
        except PermissionDenied as error:
            log.warning("refused %s from %s: %s", rpc, context.peer(), error.message)
            if self.on_refusal is not None:
                self.on_refusal(error)
            await abort_with(context, error)

    def _guarded(self, handler: grpc.RpcMethodHandler[Any, Any], rpc: str) -> grpc.RpcMethodHandler[Any, Any]:
        kwargs: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._single(handler.unary_unary, rpc), **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(self._single(handler.stream_unary, rpc), **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._streaming(handler.unary_stream, rpc), **kwargs)
        assert handler.stream_stream is not None, "a method handler has one of the four shapes"
        return grpc.stream_stream_rpc_method_handler(self._streaming(handler.stream_stream, rpc), **kwargs)

    def _single(self, behavior: Callable[..., Any], rpc: str) -> Callable[..., Any]:
        """A handler with one response (unary-unary or stream-unary)."""

        async def handle(request: Any, context: Any) -> Any:
            await self._authorize(rpc, context)
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

        return handle

    def _streaming(self, behavior: Callable[..., Any], rpc: str) -> Callable[..., Any]:
        """A handler with a stream of responses: an async generator, or a coroutine writing with
        `context.write`."""
        if inspect.iscoroutinefunction(behavior):

            async def write_responses(request: Any, context: Any) -> None:
                await self._authorize(rpc, context)
                await behavior(request, context)

            return write_responses

        async def yield_responses(request: Any, context: Any) -> AsyncIterator[Any]:
            await self._authorize(rpc, context)
            responses = behavior(request, context)
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response

        return yield_responses
