"""A seeded fake gRPC network: real generated stubs and real servicers, fake wires.

Clients get `SimChannel`s that implement the two channel methods the generated
stubs use (`unary_unary`, `stream_stream`). Requests are serialized with the real
protobuf code and handed to the server's real generic handler (storage/serving.py),
so the simulator exercises the same decoding, error mapping and servicer code as a
real node. Faults drawn from the seeded RNG:

- latency per message (with rare spikes); messages of one stream stay in order,
  everything else may be reordered;
- a unary request or its response may be lost (the caller sees DEADLINE_EXCEEDED
  at its timeout) or the request delivered twice (the second answer is dropped);
- a stream may break (both ends see UNAVAILABLE);
- endpoints can be crashed or partitioned from each other.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

EOF_MARK = object()


@dataclass
class NetConfig:
    latency_min_s: float = 0.0002
    latency_max_s: float = 0.002
    spike_probability: float = 0.01
    spike_s: float = 0.05
    unary_drop_probability: float = 0.0
    unary_duplicate_probability: float = 0.0
    stream_break_probability: float = 0.0  # per stream message


def endpoint_of(address: str) -> str:
    host, sep, port = address.rpartition(":")
    return host if sep and port.isdigit() else address


class SimAbort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata or ())

    def error(self) -> grpc.aio.AioRpcError:
        """The error the caller sees, with the servicer's trailing metadata (the rich status)."""
        return rpc_error(self.code, self.details, self.trailing_metadata)


def rpc_error(code: grpc.StatusCode, details: str, trailing_metadata: Any = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing_metadata), details=details)


class FakeContext:
    """The slice of grpc.aio.ServicerContext that the servicers use."""

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        raise SimAbort(code, details, trailing_metadata)

    def peer(self) -> str:
        return "sim"


@dataclass(frozen=True)
class _CallDetails:
    method: str
    invocation_metadata: tuple = ()


class SimServer:
    """An endpoint: generic handlers (e.g. storage.serving.generic_handler(...)) at an address."""

    def __init__(self, address: str, handlers: list[Any]) -> None:
        self.address = address
        self.handlers = handlers

    def lookup(self, method: str) -> Any:
        for handler in self.handlers:
            found = handler.service(_CallDetails(method))
            if found is not None:
                return found
        raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, f"method {method} not found")


class SimNetwork:
    def __init__(self, rng: random.Random, config: NetConfig | None = None) -> None:
        self.rng = rng
        self.config = config or NetConfig()
        self.servers: dict[str, SimServer] = {}
        self.down: set[str] = set()  # crashed endpoints (servers or clients)
        self.cut: set[frozenset[str]] = set()  # pairs of endpoints that cannot talk
        self.messages = 0
        self.streams: dict[int, _Stream] = {}  # open streams, in the order they opened (deterministic)
        self._stream_ids = 0

    # -- topology ---------------------------------------------------------------

    def serve(self, server: SimServer) -> None:
        self.servers[server.address] = server
        self.down.discard(server.address)

    def crash(self, endpoint: str) -> None:
        """The endpoint stops: every stream touching it breaks, nothing reaches it."""
        self.down.add(endpoint)
        self.servers.pop(endpoint, None)
        self._break_streams(lambda s: endpoint in (s.src, s.dst))

    def partition(self, a: str, b: str) -> None:
        self.cut.add(frozenset((a, b)))
        self._break_streams(lambda s: frozenset((s.src, s.dst)) == frozenset((a, b)))

    def heal(self) -> None:
        self.cut.clear()

    def reachable(self, src: str, dst: str) -> bool:
        return (
            src not in self.down
            and dst not in self.down
            and dst in self.servers
            and frozenset((src, dst)) not in self.cut
        )

    def _break_streams(self, which: Callable[[_Stream], bool]) -> None:
        for stream in list(self.streams.values()):
            if which(stream):
                stream.break_(f"connection between {stream.src} and {stream.dst} lost")

    def latency(self) -> float:
        c = self.config
        self.messages += 1
        delay = self.rng.uniform(c.latency_min_s, c.latency_max_s)
        if self.rng.random() < c.spike_probability:
            delay += self.rng.uniform(0, c.spike_s)
        return delay

    def channel_factory(self, src: str) -> Callable[[str], SimChannel]:
        """Channels from endpoint `src`; an address NAME:PORT (as the control plane requires) reaches NAME."""
        return lambda dst: SimChannel(self, src, endpoint_of(dst))

    # -- unary --------------------------------------------------------------------

    async def unary(self, src: str, dst: str, method: str, request: bytes, timeout: float | None) -> bytes:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout if timeout is not None else 30.0)
        c = self.config
        await asyncio.sleep(self.latency())
        if not self.reachable(src, dst):
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, f"{dst} is unreachable from {src}")
        if self.rng.random() < c.unary_drop_probability:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded (request lost)")
        handler = self.servers[dst].lookup(method)
        duplicate = self.rng.random() < c.unary_duplicate_probability
        response = await self._handle_unary(handler, request)
        if duplicate and self.reachable(src, dst):
            await self._handle_unary(handler, request)  # delivered twice; the second answer is lost
        await asyncio.sleep(self.latency())
        if not self.reachable(src, dst) or self.rng.random() < c.unary_drop_probability:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded (response lost)")
        if loop.time() > deadline:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if isinstance(response, SimAbort):
            raise response.error()
        return response

    @staticmethod
    async def _handle_unary(handler: Any, request: bytes) -> bytes | SimAbort:
        try:
            message = handler.request_deserializer(request)
            reply = await handler.unary_unary(message, FakeContext())
            return handler.response_serializer(reply)
        except SimAbort as abort:
            return abort


class _Stream:
    """One bidirectional call: client -> server messages and server -> client messages, each FIFO."""

    def __init__(self, network: SimNetwork, src: str, dst: str, method: str) -> None:
        self.network, self.src, self.dst, self.method = network, src, dst, method
        self.to_server: asyncio.Queue[Any] = asyncio.Queue()
        self.to_client: asyncio.Queue[Any] = asyncio.Queue()
        self._last_c2s = 0.0
        self._last_s2c = 0.0
        self.broken: str | None = None
        self.server_task: asyncio.Task[None] | None = None
        network._stream_ids += 1
        self.stream_id = network._stream_ids
        network.streams[self.stream_id] = self

    def _deliver_at(self, last: float) -> float:
        loop = asyncio.get_running_loop()
        return max(loop.time() + self.network.latency(), last)

    def send_to_server(self, item: Any) -> None:
        when = self._deliver_at(self._last_c2s)
        self._last_c2s = when
        asyncio.get_running_loop().call_at(when, self._put_server, item)

    def _put_server(self, item: Any) -> None:
        if not self.broken:
            self.to_server.put_nowait(item)

    def send_to_client(self, item: Any) -> None:
        when = self._deliver_at(self._last_s2c)
        self._last_s2c = when
        asyncio.get_running_loop().call_at(when, self._put_client, item)

    def _put_client(self, item: Any) -> None:
        if not self.broken or isinstance(item, grpc.aio.AioRpcError):
            self.to_client.put_nowait(item)

    def break_(self, reason: str) -> None:
        if self.broken:
            return
        self.broken = reason
        self.to_client.put_nowait(rpc_error(grpc.StatusCode.UNAVAILABLE, reason))
        self.to_server.put_nowait(EOF_MARK)
        if self.server_task is not None:
            self.server_task.cancel()
        self.close()

    def close(self) -> None:
        self.network.streams.pop(self.stream_id, None)


class SimStreamCall:
    """The client's side of a stream, as grpc.aio.StreamStreamCall offers it."""

    def __init__(self, network: SimNetwork, src: str, dst: str, method: str, serialize: Any, deserialize: Any) -> None:
        self._network = network
        self._serialize = serialize
        self._deserialize = deserialize
        self._stream = _Stream(network, src, dst, method)
        self._done = False
        if not network.reachable(src, dst):
            self._stream.break_(f"{dst} is unreachable from {src}")
            return
        handler = network.servers[dst].lookup(method)
        self._stream.server_task = asyncio.create_task(self._serve(handler))

    async def _serve(self, handler: Any) -> None:
        stream = self._stream

        async def requests() -> Any:
            while True:
                item = await stream.to_server.get()
                if item is EOF_MARK:
                    return
                yield handler.request_deserializer(item)

        try:
            async for reply in handler.stream_stream(requests(), FakeContext()):
                stream.send_to_client(handler.response_serializer(reply))
            stream.send_to_client(EOF_MARK)
        except SimAbort as abort:
            stream.send_to_client(abort.error())
        except asyncio.CancelledError:
            pass

    async def write(self, request: Any) -> None:
        if self._stream.broken:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, self._stream.broken)
        if self._done:
            raise rpc_error(grpc.StatusCode.INTERNAL, "the call is finished")
        if self._network.rng.random() < self._network.config.stream_break_probability:
            self._stream.break_("connection reset (fault injection)")
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset (fault injection)")
        self._stream.send_to_server(self._serialize(request))

    async def done_writing(self) -> None:
        self._stream.send_to_server(EOF_MARK)

    async def read(self) -> Any:
        item = await self._stream.to_client.get()
        if item is EOF_MARK:
            self._done = True
            self._stream.close()
            return grpc.aio.EOF
        if isinstance(item, grpc.aio.AioRpcError):
            self._done = True
            self._stream.close()
            raise item
        return self._deserialize(item)

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        while True:
            item = await self.read()
            if item is grpc.aio.EOF:
                return
            yield item

    def cancel(self) -> bool:
        if self._stream.broken or self._done:
            return False
        self._stream.broken = "cancelled by the client"
        self._stream.to_server.put_nowait(EOF_MARK)
        if self._stream.server_task is not None:
            self._stream.server_task.cancel()
        self._stream.close()
        return True


class SimChannel:
    """What grpc.aio.insecure_channel returns, for the methods generated stubs call."""

    def __init__(self, network: SimNetwork, src: str, dst: str) -> None:
        self.network, self.src, self.dst = network, src, dst

    def unary_unary(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any
    ) -> Callable[..., Any]:
        async def call(request: Any, timeout: float | None = None, **__: Any) -> Any:
            reply = await self.network.unary(self.src, self.dst, method, request_serializer(request), timeout)
            return response_deserializer(reply)

        return call

    def stream_stream(
        self, method: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any
    ) -> Callable[..., SimStreamCall]:
        def call(*_args: Any, **__: Any) -> SimStreamCall:
            return SimStreamCall(self.network, self.src, self.dst, method, request_serializer, response_deserializer)

        return call

    async def close(self) -> None:
        pass
