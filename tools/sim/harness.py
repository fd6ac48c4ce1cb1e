"""One simulated run: six storage nodes, writers and clients, seeded faults, invariant checks.

Everything real that can be: `SegmentStore` (on an in-memory LMDB stand-in that
survives crashes exactly as far as it was committed), `StorageServicer` and the
server plumbing of storage/serving.py, the writer's `Volume` with its streams,
recovery and reads. Fake: the network (tools/sim/network.py), the disk
(tools/sim/memlmdb.py) and the clock (tools/sim/loop.py). One seed drives every
choice, so a seed replays a run exactly.

Checked as the run goes (DESIGN.md invariants):
2. an acknowledged MTR's records are on at least four segments of their PG when
   the client hears of it, and still are at the end;
3. a read's point never exceeds the writer's VDL and every page it returns is
   exactly the page at that point (applied from the records the writers
   allocated, minus truncated ones) — which also proves 6, nothing rotten served;
4. once a segment holds a newer writer's truncation range and has moved past that
   writer's recovered VDL, it holds none of the older records that range voids;
5. an older writer is never acknowledged once a newer one has opened (its
   acknowledged MTRs would be truncated: caught by 2 and the final check).
At the end everything heals; every acknowledged MTR must then be durable (at or
below VDL) and readable, a full scrub pass must find every rotten copy (records
and page versions; up to ROTS_PER_RUN_MAX a run) still stored, and segments must
agree on every LSN they both hold.

With `SimConfig.replace` (tools/sim/replacement.py) a spare node per AZ joins and the real
`ControlPlaneServicer` heals inside the run; faults add nodes that fail for good, failed nodes that
return (often mid-change), nodes cut off from the control plane and control plane restarts. Then
"a write quorum" means of the PG's base set as the control plane has decided it (a completed change
put its new segment there), and also checked: each change's target is at least every acknowledged
LSN of its PG when measured; a completed new segment holds every acknowledged record up to its
target; after the final heal every change has ended, orphans are dropped, the writer follows, and
every PG is six segments, two per AZ.

The run is assembled from layers, one module each (lowest first): config.py (settings, result),
nodes.py (storage nodes, the writer's control plane view), state.py (`SimState`: what a run knows,
its event log and violations), oracle.py (what must be stored), checks.py (the invariants), health.py
(what is down or faulty), workload.py (writers, clients, the writer supervisor), healing.py (the
control plane inside the run), faults.py (the fault schedule and outages), volumes.py and time_travel.py
(with `SimConfig.time_travel`: clones, snapshots, restores and backtracks through the real control plane,
every read of every volume checked against its line, lines.py), and here `Simulation` (setup, the run,
the final heal and checks) and `simulate`. With `SimConfig.replicas`, readers (real ReplicaVolumes fed
from the writer's RedoPublisher) serve read transactions checked as they go (never above durable, never
backwards, exact pages: replicas.py), and a new writer is a promoted reader (promotion.py).
"""

from __future__ import annotations

import asyncio
import random

from sixfold.compute.volume import Volume
from sixfold.storage.errors import StorageError
from sixfold.storage.segment import SegmentMeta
from sixfold.tools.sim import integrity
from sixfold.tools.sim.config import (
    FAULT_BUDGET,
    NODES,
    PAGE_SIZE,
    SETTLE_S,
    VOLUME,
    SimConfig,
    SimResult,
    Violation,
)
from sixfold.tools.sim.faults import Faults
from sixfold.tools.sim.loop import SimDeadlock, run
from sixfold.tools.sim.promotion import Promotion
from sixfold.tools.sim.time_travel import TimeTravel

__all__ = ["FAULT_BUDGET", "SimConfig", "SimResult", "Simulation", "Violation", "simulate"]


class Simulation(Promotion, TimeTravel, Faults):
    """One run: six storage nodes (and spares), writers, clients and faults, from one seed (and with time
    travel on, clones, snapshots and backtracks: tools/sim/time_travel.py; with replicas, readers and
    promotion: tools/sim/replicas.py, tools/sim/promotion.py)."""

    def _create_segments(self) -> None:
        for node in self.nodes.values():
            node.start()
            if (node.name, node.az) not in NODES:
                continue  # a spare
            assert node.store is not None  # started just now
            for pg in self.geometry.protection_groups:
                node.store.create_segment(
                    SegmentMeta(
                        segment_id=f"{VOLUME}/pg-{pg.pg_index:05d}",
                        volume_id=VOLUME,
                        pg_index=pg.pg_index,
                        first_page=pg.first_page,
                        page_count=pg.page_count,
                        page_size=PAGE_SIZE,
                        membership_epoch=1,
                        seg_no=0,
                        peers=[[n, n] for n, _ in NODES if n != node.name],
                        wrapped_data_key=self.volume_key.hex(),
                        backtrack_window_s=self.config.backtrack_window_s,
                    )
                )

    # -- the run ------------------------------------------------------------------

    async def main(self) -> None:
        if self.config.control_plane:
            self.start_control_plane()
        self._create_segments()
        if await self.open_writer() is None:
            self.violation("the first writer could not open a healthy volume")
        try:
            tasks = [
                asyncio.create_task(self.client(i, random.Random(self.rng.getrandbits(64))))
                for i in range(self.config.clients)
            ]
            tasks.append(asyncio.create_task(self.faults(random.Random(self.rng.getrandbits(64)))))
            if self.config.time_travel:
                tasks.append(asyncio.create_task(self.time_travel(random.Random(self.rng.getrandbits(64)))))
            if self.config.replicas:
                tasks.append(asyncio.create_task(self.replicas(random.Random(self.rng.getrandbits(64)))))
            checker = asyncio.create_task(self._periodic_checks())
            supervising = asyncio.create_task(self.supervisor.run())
            if self.control_plane is not None:
                self.healing = asyncio.create_task(self.heal_loop())  # runs on through the final heal
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            checker.cancel()
            supervising.cancel()
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
            await self.heal_and_check()
        finally:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    async def _periodic_checks(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(0.5)
            ticks += 1
            self.supervisor.note()
            if ticks % 4 == 0:
                self.check_truncations()
                integrity.check_scl_truth(self)

    async def _settled_writer(self) -> Volume:
        """Healed: the writer open now (a regain in progress is waited for; one fenced for good is replaced)."""
        deadline = self.now() + SETTLE_S
        while self.now() < deadline:
            writer = self.writer
            if writer is not None and writer.regaining:
                await asyncio.sleep(0.5)
                continue
            if writer is not None and not writer.fenced:
                return writer
            await self.open_writer()
        self.violation(f"after healing, no writer was open within {SETTLE_S:g} virtual s")
        raise AssertionError("unreachable")

    async def heal_and_check(self) -> None:
        self.network.heal()
        self.isolated.clear()
        self.outage = None
        self.dead.clear()
        for node in self.nodes.values():
            if not node.up:
                node.start()
        self.note_down()
        self.event("healed")
        writer = await self._settled_writer()
        await asyncio.sleep(5.0)  # let the streams reconnect and resend
        writer = await self._settled_writer()
        if self.control_plane is not None:
            await self.settle_membership(writer)
        self.check_truncations()
        for cpl, (token, _, _) in sorted(self.acked.items()):
            if cpl > writer.vdl:
                self.violation(f"acknowledged MTR {token} (CPL {cpl}) is above the final VDL {writer.vdl}: lost")
            if any(self.truncated(r) for r in self.mtr_records(cpl)):
                self.violation(f"acknowledged MTR {token} (CPL {cpl}) was truncated")
            self.check_durable(cpl, "after healing")
        pages = sorted({p.page_no for _, patches, _ in self.acked.values() for p in patches} | {0})
        if self.config.time_travel:
            pages = self.client_pages()  # (pages its ancestors wrote too)
        try:
            read_point, images = await writer.read(pages)
        except StorageError as error:
            self.violation(f"after healing, the final read failed: {error.message}")
        self.check_read(writer, read_point, images)
        await self.scrub_everything()
        await self.check_convergence(writer)
        integrity.check_scl_truth(self)
        self.check_agreement()
        for refused in self.refused:
            for lsn, record in self.records.items():
                if record.data == refused and lsn <= writer.vdl and not self.truncated(record):
                    self.violation(
                        f"write {refused.decode()} was refused as definitely not done, yet its record "
                        f"LSN {lsn} is durable at or below VDL {writer.vdl}"
                    )
        if self.config.time_travel:
            await self.check_volumes_at_end()
        if self.config.replicas:
            await self.check_readers_at_end(writer)
        self.event(f"final VDL {writer.vdl}, {len(self.acked)} acknowledged MTRs readable")


def simulate(config: SimConfig) -> SimResult:
    from sixfold.tools.sim.mutations import applied

    sim = Simulation(config)
    virtual = [0.0]

    async def main() -> None:
        try:
            await sim.main()
        except Violation:
            pass
        except SimDeadlock as error:
            sim.violations.append(f"deadlock: {error}")
        except AssertionError as error:
            sim.violations.append(f"assertion failed in the system under test: {error!r}")
        finally:
            virtual[0] = asyncio.get_running_loop().time()

    with applied(config.mutation):
        try:
            run(main, deadline_s=config.duration_s * 20 + 120)
        except TimeoutError:
            sim.violations.append("the run did not finish in its virtual time budget (liveness)")
        except SimDeadlock as error:
            sim.violations.append(f"deadlock: {error}")
    return SimResult(config.seed, sim.violations, sim.events, dict(sim.ops), virtual[0])
