"""The event loop the hot-path processes (storage nodes, the compute node) run on: uvloop by default.

Measured A/B (issue 14's note): on uvloop the writer and the nodes spend 14-20% less CPU per commit at
concurrency 1, where every commit is a dozen gRPC messages' callbacks. `SIXFOLD_EVENT_LOOP=asyncio` runs
the standard loop instead (to compare, or where uvloop misbehaves); the control plane and key service,
off the write path, always do.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "SIXFOLD_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def chosen() -> str:
    """`uvloop` unless $SIXFOLD_EVENT_LOOP says `asyncio`; anything else is refused with a sentence."""
    name = os.environ.get(ENV, "").strip().lower() or "uvloop"
    if name not in CHOICES:
        raise SystemExit(f"${ENV} is {name!r}; it must be one of {', '.join(CHOICES)}")
    return name


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    try:
        name = chosen()
    except SystemExit:
        main.close()  # never started: no "coroutine was never awaited" warning on the way out
        raise
    if name == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
