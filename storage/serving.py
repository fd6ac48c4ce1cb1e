"""gRPC server plumbing shared by the storage node and the control plane.

- Every server also serves the standard health and reflection services.
- Requests that are not valid protobuf do not reach a handler as an exception:
  the handler sees `Undecodable` and answers INVALID_ARGUMENT with a sentence.
- `StorageError`s become a gRPC status in one place (`abort_with`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sixfold.storage.errors import StorageError
from sixfold.storage.security import transport
from sixfold.storage.status import abort_with

log = logging.getLogger(__name__)

# gRPC's own limit on one message; a batch is further bounded by the node's limits.
MESSAGE_BYTES_MAX = 64 * 1024 * 1024

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    ("grpc.so_reuseport", 0),
]
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    # A node that comes back is found within a second (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # gRPC core also takes this as the deadline of each connection attempt (its MIN_CONNECT_TIMEOUT; grpc/grpc
    # #12830, #33423), not only as a backoff: at 100 ms a TLS handshake with a busy node timed out ("connection
    # attempt timed out before receiving SETTINGS frame") and volume creation failed. The retry delays above
    # stay short; an attempt may take up to 5 s.
    ("grpc.min_reconnect_backoff_ms", 5000),
]


@dataclass(frozen=True)
class Undecodable:
    """Stands in for a request whose bytes did not parse as its message type."""

    type_name: str
    reason: str

    def sentence(self) -> str:
        return f"request is not a valid {self.type_name} message: {self.reason}"


def _safe_deserializer(message_cls: Any) -> Callable[[bytes], Any]:
    type_name = message_cls.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return message_cls.FromString(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a bad request
            return Undecodable(type_name, str(exc) or type(exc).__name__)

    return deserialize


def generic_handler(service_descriptor: Any, servicer: Any, messages_module: Any) -> grpc.GenericRpcHandler:
    """Build handlers for every method of `service_descriptor` from `servicer`'s coroutines.

    Unary methods get a wrapper that turns `Undecodable` and `StorageError` into a
    status; streaming methods receive `Undecodable` items and handle them themselves.
    """
    handlers = {}
    for method in service_descriptor.methods:
        request_cls = getattr(messages_module, method.input_type.name)
        response_cls = getattr(messages_module, method.output_type.name)
        impl = getattr(servicer, method.name)
        deserializer = _safe_deserializer(request_cls)
        serializer = response_cls.SerializeToString
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(
                impl, request_deserializer=deserializer, response_serializer=serializer
            )
        elif not method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _wrap_unary(impl), request_deserializer=deserializer, response_serializer=serializer
            )
        else:  # pragma: no cover - no such methods in our protocol
            raise AssertionError(f"unsupported method shape: {method.full_name}")
    return grpc.method_handlers_generic_handler(service_descriptor.full_name, handlers)


def _wrap_unary(impl: Callable[..., Any]) -> Callable[..., Any]:
    assert inspect.iscoroutinefunction(impl), impl

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.sentence())
        try:
            return await impl(request, context)
        except StorageError as error:
            await abort_with(context, error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as error:
            log.exception("%s failed", impl.__name__)
            await context.abort(
                grpc.StatusCode.INTERNAL,
                f"{impl.__name__} failed inside the server ({type(error).__name__}: {error}); the server log has "
                "the details",
            )

    return handle


async def start_server(
    host: str,
    port: int,
    services: list[tuple[Any, Any, Any]],
    *,
    serving: bool = True,
    fault_file: str | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Start an aio server serving `services` = [(descriptor, servicer, pb2 module)], plus health
    and reflection. Returns the server, the bound port and the health servicer (SERVING unless
    `serving` is False: the caller then sets it once it is ready). With `fault_file`, every RPC
    goes through the fault injector driven by that file (storage/faults.py), after `interceptors` (e.g. the
    storage node's role check under mutual TLS). The port is plaintext or mutual TLS as this process's
    identity says (storage/security/transport.py)."""
    chain: list[grpc.aio.ServerInterceptor] = list(interceptors)
    if fault_file:
        from sixfold.storage.faults import FaultInjector

        chain.append(FaultInjector(fault_file))
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=chain or None)
    names = []
    for descriptor, servicer, module in services:
        server.add_generic_rpc_handlers((generic_handler(descriptor, servicer, module),))
        names.append(descriptor.full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    bound = transport.bind(server, f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    await server.start()
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    await health_servicer.set("", status)
    for name in names[: len(services)]:
        await health_servicer.set(name, status)
    return server, bound, health_servicer


def write_port_file(path: str | None, port: int) -> None:
    """Publish the bound port atomically so a launcher never reads half a file."""
    if not path:
        return
    import os

    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
