"""Background asyncio tasks: the one way every loop in the project (gossip, scrubbing,
coalescing, healing, the writer's streams and membership polling) is stopped."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and wait until it has finished; whatever it ended with is dropped (it is being stopped)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
