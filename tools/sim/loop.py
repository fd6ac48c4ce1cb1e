"""A deterministic asyncio event loop on virtual time.

The loop never waits for real I/O: when nothing is ready it jumps its clock to
the next timer. With seeded inputs, every run of the same seed executes the
same callbacks in the same order at the same virtual times. Executors run their
work inline (the default one too), so the storage node's writer thread becomes a step of the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import selectors
from collections.abc import Callable
from typing import Any, TypeVar, TypeVarTuple

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")


class SimDeadlock(Exception):
    """Nothing is ready and no timer is pending: every task waits for something that never comes."""


class _VirtualSelector(selectors.BaseSelector):
    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop
        self._map: dict[int, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._map[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        return self._map.pop(fd)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimDeadlock("no callback is ready and no timer is pending")
        self._loop.advance(timeout)
        return []

    def get_map(self) -> Any:
        return self._map

    def close(self) -> None:
        self._map.clear()


class SimLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual_s = 0.0
        super().__init__(selector=_VirtualSelector(self))

    def time(self) -> float:
        return self._virtual_s

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self._virtual_s += seconds

    def _write_to_self(self) -> None:  # nothing ever blocks in select: no wake-up needed
        pass

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[[*_Ts], _T], *args: *_Ts
    ) -> asyncio.Future[_T]:
        """Work for the default executor (`asyncio.to_thread`: a storage node's FindCommit) runs inline too: a
        real thread would finish at a real time, and the virtual clock would not replay."""
        return super().run_in_executor(InlineExecutor() if executor is None else executor, func, *args)


class InlineExecutor(concurrent.futures.Executor):
    """Runs submitted work at once, on the loop's thread; the result is ready when submit returns."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting coroutine
            future.set_exception(error)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        pass


def run(main: Callable[[], Any], *, deadline_s: float = 3600.0) -> Any:
    """Run coroutine function `main` on a fresh SimLoop; a run may not pass `deadline_s` of virtual time."""
    loop = SimLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(asyncio.wait_for(main(), deadline_s))
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        with contextlib.suppress(SimDeadlock):
            loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        asyncio.set_event_loop(None)
