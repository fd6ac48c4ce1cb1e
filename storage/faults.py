"""Node-side fault injection: a gRPC server interceptor driven by a JSON file.

`tc netem` is not available on the machines this project runs on, so delays and
partitions are injected inside the storage node's gRPC server instead. The node
watches one file (default `<data-dir>/faults.json`; `sixfold storage-node
--fault-file PATH`), re-reading it at most every `POLL_INTERVAL_S`:

    absent, or {}                          no fault
    {"delay_ms": 300}                      every unary call, and every incoming message of a
    {"delay_ms": 200, "jitter_ms": 300}      stream, waits 200..500 ms before it is handled
    {"unreachable": true}                  every new RPC is aborted with UNAVAILABLE
                                           "partitioned (fault injection)"; open streams
                                           are ended with the same status

A delayed stream is delayed message by message, in order: the handler sees the
next message only after the previous one served its delay, so a slow node is
slow in throughput as well as in latency (as an overloaded node would be).

Whoever writes the file should replace it atomically (write a temporary file,
then rename it over), so the node never reads half of one.

What this models and what not: a node that is "unreachable" refuses everything
that arrives at it (the writer, the control plane's segment calls, health
checks), but its own outgoing calls -- heartbeats to the control plane -- still
work. That is a one-way partition; it is enough to take the node out of every
quorum, which is what the chaos scenarios need.

Cost when no fault file exists: one `os.stat` every `POLL_INTERVAL_S` at most;
unary calls are handed over untouched; streams get a thin wrapper (a generator
layer per message) so that they can be cut when a partition starts later.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.2  # the fault file is re-read at most this often
UNREACHABLE_DETAILS = "partitioned (fault injection)"
DEFAULT_FILE_NAME = "faults.json"
DELAY_MS_MAX = 60_000.0


@dataclass(frozen=True)
class FaultState:
    """The fault currently in force."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    unreachable: bool = False

    @property
    def active(self) -> bool:
        return self.unreachable or self.delay_ms > 0 or self.jitter_ms > 0

    def delay_s(self, rng: random.Random) -> float:
        """Seconds to hold one request (0 without a delay fault)."""
        if self.delay_ms <= 0 and self.jitter_ms <= 0:
            return 0.0
        return (self.delay_ms + (rng.uniform(0, self.jitter_ms) if self.jitter_ms > 0 else 0.0)) / 1000

    def describe(self) -> str:
        if self.unreachable:
            return "unreachable (every RPC gets UNAVAILABLE)"
        if self.delay_ms or self.jitter_ms:
            jitter = f" + up to {self.jitter_ms:g} ms" if self.jitter_ms else ""
            return f"every request delayed {self.delay_ms:g} ms{jitter}"
        return "no fault"

    @classmethod
    def parse(cls, text: str) -> FaultState:
        """The state a fault file describes; ValueError when it is not one."""
        raw = json.loads(text) if text.strip() else {}
        if not isinstance(raw, dict):
            raise ValueError("the fault file must hold a JSON object")
        unknown = set(raw) - {"delay_ms", "jitter_ms", "unreachable"}
        if unknown:
            raise ValueError(f"unknown fault setting(s) {sorted(unknown)}; known: delay_ms, jitter_ms, unreachable")
        delay = float(raw.get("delay_ms") or 0)
        jitter = float(raw.get("jitter_ms") or 0)
        if not (0 <= delay <= DELAY_MS_MAX and 0 <= jitter <= DELAY_MS_MAX):
            raise ValueError(f"delay_ms and jitter_ms must be within 0..{DELAY_MS_MAX:g}")
        return cls(delay_ms=delay, jitter_ms=jitter, unreachable=bool(raw.get("unreachable", False)))


NO_FAULT = FaultState()


def write_fault_file(path: str | os.PathLike[str], state: FaultState | dict[str, Any] | None) -> None:
    """Put a fault in force (None or an empty dict: remove the file). Atomic: write, fsync, rename."""
    path = os.fspath(path)
    if state is None or state == {} or state == NO_FAULT:
        clear_fault_file(path)
        return
    if isinstance(state, FaultState):
        body: dict[str, Any] = {}
        if state.unreachable:
            body["unreachable"] = True
        if state.delay_ms:
            body["delay_ms"] = state.delay_ms
        if state.jitter_ms:
            body["jitter_ms"] = state.jitter_ms
    else:
        FaultState.parse(json.dumps(state))  # refuse what a node would refuse
        body = dict(state)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(body, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def clear_fault_file(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class FaultFile:
    """The fault file, re-read at most every `poll_interval_s` and only when it changed."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        poll_interval_s: float = POLL_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        self.poll_interval_s = poll_interval_s
        self._clock = clock
        self._checked_at = float("-inf")
        self._stat_key: tuple[int, int, int] | None = None
        self._state = NO_FAULT

    def current(self) -> FaultState:
        now = self._clock()
        if now - self._checked_at < self.poll_interval_s:
            return self._state
        self._checked_at = now
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            self._stat_key = None
            self._set(NO_FAULT)
            return self._state
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if key != self._stat_key:
            self._stat_key = key
            try:
                with open(self.path) as f:
                    self._set(FaultState.parse(f.read()))
            except FileNotFoundError:
                self._stat_key = None
                self._set(NO_FAULT)
            except (OSError, ValueError) as error:
                log.warning("fault file %s is not valid (%s); ignoring it", self.path, error)
                self._set(NO_FAULT)
        return self._state

    def _set(self, state: FaultState) -> None:
        if state != self._state:
            log.warning("fault injection (%s): %s", self.path, state.describe())
        self._state = state


class _OpenStream:
    """One streaming RPC in progress, so that a partition can end it."""

    __slots__ = ("cut", "in_handler", "task")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.in_handler = False  # True while the handler (not gRPC's send path) is running
        self.cut = False


class FaultInjector(grpc.aio.ServerInterceptor):
    """grpc.aio server interceptor applying the fault in `FaultFile` to every RPC."""

    def __init__(
        self, path: str | os.PathLike[str], poll_interval_s: float = POLL_INTERVAL_S, seed: int | None = None
    ) -> None:
        self.faults = FaultFile(path, poll_interval_s)
        self.poll_interval_s = poll_interval_s
        self._rng = random.Random(seed)
        self._streams: set[_OpenStream] = set()
        self._watcher: asyncio.Task[None] | None = None

    # -- the interceptor ---------------------------------------------------------

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler  # not a method this server serves
        if handler.request_streaming or handler.response_streaming:
            return self._wrap_streaming(handler)
        if not self.faults.current().active:
            return handler  # no fault now: the call runs untouched
        assert handler.unary_unary is not None, "a handler that streams neither way is unary-unary"
        return grpc.unary_unary_rpc_method_handler(
            self._unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    async def _refuse_or_delay(self, context: grpc.aio.ServicerContext) -> None:
        state = self.faults.current()
        if state.unreachable:
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNREACHABLE_DETAILS)
        delay = state.delay_s(self._rng)
        if delay:
            await asyncio.sleep(delay)
            if self.faults.current().unreachable:
                await context.abort(grpc.StatusCode.UNAVAILABLE, UNREACHABLE_DETAILS)

    def _unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._refuse_or_delay(context)
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result

        return handle

    # -- streams -------------------------------------------------------------------

    def _wrap_streaming(self, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming and handler.response_streaming:
            assert handler.stream_stream is not None
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(handler.stream_stream, requests_stream=True), **kwargs
            )
        if handler.response_streaming:
            assert handler.unary_stream is not None
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(handler.unary_stream, requests_stream=False), **kwargs
            )
        assert handler.stream_unary is not None
        return grpc.stream_unary_rpc_method_handler(self._stream_unary(handler.stream_unary), **kwargs)

    async def _delayed(self, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            delay = self.faults.current().delay_s(self._rng)
            if delay:
                await asyncio.sleep(delay)
            yield request

    def _open(self) -> _OpenStream:
        stream = _OpenStream(asyncio.current_task())
        self._streams.add(stream)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="fault-injection-watcher")
        return stream

    async def _watch(self) -> None:
        """While streams are open: every poll interval, cut them all if the node became unreachable."""
        while self._streams:
            await asyncio.sleep(self.poll_interval_s)
            if not self.faults.current().unreachable:
                continue
            for stream in list(self._streams):
                if stream.cut:
                    continue
                stream.cut = True
                # Cancel only while the handler itself is waiting; while gRPC is sending a
                # response the stream notices `cut` before it asks the handler for the next one.
                if stream.in_handler and stream.task is not None:
                    stream.task.cancel()

    def _streaming(self, behavior: Callable[..., Any], *, requests_stream: bool) -> Callable[..., Any]:
        injector = self

        if inspect.isasyncgenfunction(behavior):

            async def stream_gen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
                await injector._refuse_or_delay(context)
                stream = injector._open()
                source = behavior(injector._delayed(request) if requests_stream else request, context)
                cut = False
                try:
                    while not stream.cut:
                        stream.in_handler = True
                        try:
                            response = await source.__anext__()
                        except StopAsyncIteration:
                            return
                        except asyncio.CancelledError:
                            if not stream.cut:
                                raise
                            _uncancel()
                            cut = True
                            break
                        finally:
                            stream.in_handler = False
                        yield response
                    cut = True
                finally:
                    injector._streams.discard(stream)
                    await source.aclose()
                if cut:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, UNREACHABLE_DETAILS)

            return stream_gen

        async def stream_coro(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await injector._refuse_or_delay(context)
            stream = injector._open()
            stream.in_handler = True
            try:
                return await behavior(injector._delayed(request) if requests_stream else request, context)
            except asyncio.CancelledError:
                if not stream.cut:
                    raise
                _uncancel()
            finally:
                stream.in_handler = False
                injector._streams.discard(stream)
            await context.abort(grpc.StatusCode.UNAVAILABLE, UNREACHABLE_DETAILS)

        return stream_coro

    def _stream_unary(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def handle(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._refuse_or_delay(context)
            return await behavior(self._delayed(request_iterator), context)

        return handle


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()


def default_fault_file(data_dir: str) -> str:
    return os.path.join(data_dir, DEFAULT_FILE_NAME)


__all__ = [
    "NO_FAULT",
    "POLL_INTERVAL_S",
    "UNREACHABLE_DETAILS",
    "FaultFile",
    "FaultInjector",
    "FaultState",
    "clear_fault_file",
    "default_fault_file",
    "write_fault_file",
]
