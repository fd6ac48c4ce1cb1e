"""The node-writer handle: the one narrow thing background tasks hold of the node's single LMDB writer.

Gossip (storage/gossip.py), scrubbing (storage/scrub.py), coalescing (storage/coalesce.py) and the disk
doctor (storage/disk_doctor.py) change the store only through it, never through the gRPC servicer
(storage/node.py, which owns the writer thread and group commit and hands the handle out):

- `handle(fn, *args)` runs `fn(*args)` on the writer thread (every LMDB write transaction runs there)
  and returns what it returned; this much is `OnWriter`, all scrubbing, coalescing and the doctor need;
- `handle.submit(batch)` commits an append batch through group commit, checked and fsynced like any
  writer's batch (gossip's pulled records go this way).

Protocols only: this module imports nothing of the store or the servicer, so none of them imports the
other through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from sixfold.storage.segment import AppendBatch
    from sixfold.storage.store.appends import BatchResult

T = TypeVar("T")


class OnWriter(Protocol):
    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        """Run `fn(*args)` on the node's writer thread; its result (or exception) when it is done."""
        ...


class NodeWriter(OnWriter, Protocol):
    def submit(self, batch: AppendBatch) -> Awaitable[BatchResult]:
        """Commit `batch` through group commit; its result once it is durable (a refusal raises)."""
        ...
