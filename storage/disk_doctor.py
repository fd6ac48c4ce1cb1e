"""The node's disk doctor: what a storage node does, in the background, about a disk that is not fine.

Rules (storage/lmdb_env.py says what each condition is):
1. A failed environment (corrupt) is replaced at once by a fresh one in which every segment the node
   held is created again, empty and rebuilding (SegmentStore.rebuild_in_fresh_environment); gossip
   then fills each from its peers, and the control plane creates again any segment whose metadata
   could not be saved. Nothing is served from the failed environment meanwhile (DATA_LOSS).
2. A full disk, or one whose writes failed with an I/O error, is probed every `PROBE_INTERVAL_S`
   with one tiny synced write: the first that commits clears the condition (so does any write that
   commits), and appends, gossip and coalescing resume.
3. Every action runs on the node's writer thread; a failure is logged once per condition, never as a
   traceback per round.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import lmdb

from sixfold.storage.errors import StorageError
from sixfold.storage.lmdb_env import FAILED, FULL, IO_ERROR
from sixfold.storage.tasks import cancel_and_wait

if TYPE_CHECKING:
    from sixfold.storage.node_writer import OnWriter
    from sixfold.storage.store import SegmentStore

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 0.2
PROBE_INTERVAL_S = 1.0
REBUILD_RETRY_S = 5.0  # a fresh environment that could not be made is tried again after this long


class DiskDoctor:
    def __init__(
        self,
        store: SegmentStore,
        on_writer: OnWriter,
        check_interval_s: float = CHECK_INTERVAL_S,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.store = store
        self.on_writer = on_writer
        self.check_interval_s = check_interval_s
        self.probe_interval_s = probe_interval_s
        self.rebuilds = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="disk-doctor")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_probe = 0.0
        while True:
            await asyncio.sleep(self.check_interval_s)
            state = self.store.disk.condition.state
            if state == FAILED:
                await self._rebuild()
            elif state in (FULL, IO_ERROR) and loop.time() >= next_probe:
                next_probe = loop.time() + self.probe_interval_s
                await self.on_writer(self.store.disk.probe)

    async def _rebuild(self) -> None:
        try:
            rebuilt = await self.on_writer(self.store.rebuild_in_fresh_environment)
        except (StorageError, OSError, lmdb.Error) as error:
            log.error(
                "could not make a fresh LMDB environment (%s); trying again in %.0f s",
                getattr(error, "message", error),
                REBUILD_RETRY_S,
            )
            await asyncio.sleep(REBUILD_RETRY_S)
            return
        self.rebuilds += 1
        log.warning("the failed LMDB environment was replaced; %d segments rebuild from their peers", len(rebuilt))
