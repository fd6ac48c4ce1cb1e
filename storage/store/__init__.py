"""The storage node's segments in its LMDB environment: log records, page versions, segment metadata.

`SegmentStore` is put together from one part per concern, each a module of this package:

- base.py: the state (environment, segments in memory), both metadata copies, publishing after a commit;
- rows.py: cursor walks inside a transaction, and a page materialized from its version and records;
- lifecycle.py: start-up, a failed disk replaced by a fresh environment, segments created and dropped;
- meta_updates.py: epochs, membership, rebuild target and pins (the epoch rules: storage/epochs.py);
- appends.py and truncate.py: group commit's write transaction, and truncation ranges;
- reads.py: pages, records and chain tails for writers and peers;
- commits.py: the newest commit at or before a time (FindCommit);
- scrubbing.py and quarantine.py: what the scrubber (storage/scrub.py) reads and what a bad copy becomes;
- coalescing.py and dirty.py: folding records into page versions, the GC horizon, GC;
- hydration.py: copying a peer's pages when the records it lacks were garbage-collected;
- sealing.py: encryption at rest, each record and page version sealed under its volume's data key.

The environment itself (opening, the one writer, readers, map growth, what a failing disk becomes) is
storage/lmdb_env.py; what is trusted at start is storage/segment_load.py; row keys are storage/keys.py.

Threading: every write transaction runs on one thread (the node's writer); reads may run on any
thread. A read takes the segment's metadata inside its read transaction, so a segment recreated
meanwhile (a new seg_no) is never read under an old one.

Durability: each write transaction is fsynced when it commits; `commit_appends` writes a whole group
of batches (from any number of streams) in one transaction: one sync per group. Segment metadata is
written twice in the same transaction (tables `segments` and `segments_copy`), each copy with its
CRC-32C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lmdb

from sixfold.storage.keys import page_key, record_key
from sixfold.storage.lmdb_env import MAP_SIZE_DEFAULT_BYTES
from sixfold.storage.store.appends import Appends, BatchResult
from sixfold.storage.store.coalescing import Coalescing
from sixfold.storage.store.commits import FIND_COMMIT_RECORDS_MAX, Commits, FoundCommit
from sixfold.storage.store.dirty import LOOK_AGAIN
from sixfold.storage.store.hydration import Hydration
from sixfold.storage.store.lifecycle import DELETE_ROWS_PER_TXN_MAX, Lifecycle
from sixfold.storage.store.meta_updates import MetaUpdates
from sixfold.storage.store.quarantine import Quarantine
from sixfold.storage.store.reads import READ_BYTES_MAX, READ_RECORDS_MAX, PageRead, Reads
from sixfold.storage.store.scrubbing import Scrubbing
from sixfold.storage.store.sealing import DataKeys

__all__ = [
    "DELETE_ROWS_PER_TXN_MAX",
    "FIND_COMMIT_RECORDS_MAX",
    "LOOK_AGAIN",
    "READ_BYTES_MAX",
    "READ_RECORDS_MAX",
    "BatchResult",
    "FoundCommit",
    "PageRead",
    "SegmentStore",
    "page_key",
    "record_key",
]


class SegmentStore(Lifecycle, MetaUpdates, Appends, Reads, Commits, Scrubbing, Quarantine, Coalescing, Hydration):
    def __init__(
        self,
        path: str,
        map_size_bytes: int = MAP_SIZE_DEFAULT_BYTES,
        open_env: Callable[..., Any] = lmdb.open,
        discard_env: Callable[[str], None] | None = None,
        keys: DataKeys | None = None,
    ) -> None:
        """Open (or create) the environment at `path` and load the segments it holds. `open_env` is
        `lmdb.open`; the simulator passes an in-memory stand-in with the same API, and `discard_env(path)`
        to throw a failed environment away (default: move it aside). `keys`: the data keys of segments
        encrypted at rest (storage/store/sealing.py); KeyUnavailable if one is not at hand at start."""
        super().__init__(path, map_size_bytes, open_env, discard_env, keys)
        self._load()
