"""A run's faults: the seeded schedule, the deliberate outage, and the faults they are made of.

`faults` draws an action every 0.3-2.5 virtual s for the run's duration, within the fault budget of
its mode (config.py `FAULT_BUDGET`; health.py says what counts as faulty): crashes and restarts,
partitions of an AZ from the writer and their healing, a crashed writer or a second writer opened
beside the first (the old one must never be acknowledged again), a byte rotted on disk (`_rot`), the
integrity faults of integrity.py, and with replacement on nodes that fail for good or return, nodes
cut off from the control plane and control plane restarts. In the "az-plus-one" and "beyond" modes a
deliberate outage takes one AZ and one more node, or three then four nodes, down for a stretch
(`_outage`).
"""

from __future__ import annotations

import asyncio
import random

from sixfold.compute.errors import CommitTimeout, Fenced, NotCommitted, QuorumNotMet, Regaining
from sixfold.compute.volume import Volume
from sixfold.compute.volume_log import Patch
from sixfold.tools.sim import integrity
from sixfold.tools.sim import replacement as repl
from sixfold.tools.sim.config import (
    FAULT_BUDGET,
    NODES,
    OUTAGE_CRASH_PROBABILITY,
    OUTAGE_HOLD_S,
    OUTAGE_NEW_WRITER_PROBABILITY,
    OUTAGE_START_FRACTION,
    RECORDS,
    ROTS_PER_RUN_MAX,
    VERSIONS,
)
from sixfold.tools.sim.healing import Healing
from sixfold.tools.sim.workload import Workload


class Faults(Workload, Healing):
    """The fault schedule, the deliberate outage, and what each fault does."""

    async def faults(self, rng: random.Random) -> None:
        budget = FAULT_BUDGET[self.config.faults]
        deadline = self.now() + self.config.duration_s
        outage_at: float | None = None
        if self.config.faults in ("az-plus-one", "beyond"):
            outage_at = self.now() + rng.uniform(*OUTAGE_START_FRACTION) * self.config.duration_s
        while (self.now() < deadline or outage_at is not None) and budget:  # the outage comes, however late
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            if outage_at is not None and self.now() >= outage_at:
                outage_at = None
                await self._outage(rng)
                continue
            integrity_faults = [] if self.config.classic_faults else ["meta-rot", "hostile-epoch", "tree-rot"]
            actions = ["crash", "restart", "restart", "partition", "heal", "writer", "fence", "rot", *integrity_faults]
            if self.config.faults == "az-plus-one" and outage_at is not None:
                # a fault still outstanding would make the outage one AZ plus two
                for lasting in ("rot", *integrity_faults):
                    actions.remove(lasting)
            if self.config.replace:
                actions += ["kill", "kill", "return", "cut-control-plane", "control-plane"]
                actions += [] if self.config.classic_faults else ["drop-segment"]
            action = rng.choice(actions)
            down = [n for n in self.nodes.values() if not n.up and n.name not in self.dead]
            if action == "crash" and self.faulty() < budget:
                node = rng.choice([n for n in self.nodes.values() if n.up])
                await node.crash()
                self.event(f"crash {node.name}")
            elif action == "restart" and down:
                node = rng.choice(down)
                node.start()
                self.event(f"restart {node.name}")
            elif action == "partition" and self.faulty() == 0 and self.writer is not None:
                az = rng.choice("abc")
                for name, node_az in self.node_specs:
                    if node_az == az:
                        self.network.partition(self.writer.writer_id, name)
                self.event(f"partition AZ {az} from {self.writer.writer_id}")
            elif action == "heal" and self.network.cut:
                self.network.heal()
                self.event("heal partitions")
            elif action == "writer" and self.writer is not None and not self.backtracking:
                await self.crash_writer()
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                if not self.backtracking:  # (else the backtrack opens it, on the new timeline)
                    await self.open_writer()
            elif action == "fence" and self.writer is not None and not self.backtracking:
                old = self.writer
                new = await self.open_writer()
                if new is not None:
                    # The old writer keeps running: anything it acknowledges from now on would be lost.
                    self.event(f"{old.writer_id} left running beside {new.writer_id}")
                    asyncio.get_running_loop().create_task(self._old_writer_tries(old, rng))
            elif action == "rot" and self.ops["rot_records"] + self.ops["rot_versions"] < ROTS_PER_RUN_MAX:
                self._rot(rng, budget)
            elif action == "kill" and not self.dead and self.faulty() < budget:
                members = sorted({n for pg in range(self.config.pgs) for n in self.membership(pg)[0]})
                node = self.nodes[rng.choice([n for n in members if self.nodes[n].up])]
                await node.crash()
                self.dead.add(node.name)
                self.event(f"kill {node.name} (fails for good)")
                if rng.random() < 0.5:  # ... or comes back about when its replacement is under way
                    delay_s = rng.uniform(repl.FAILURE_TIMEOUT_MS / 1000, repl.FAILURE_TIMEOUT_MS / 1000 + 1.5)
                    asyncio.get_running_loop().create_task(self._return_later(node.name, delay_s))
            elif action == "return" and self.dead:
                name = min(self.dead)
                if self.changing(name) or rng.random() < 0.3:
                    self._return(name)
            elif action == "control-plane":
                await self.restart_control_plane()
            elif action == "meta-rot":
                await integrity.meta_rot(self, rng, budget)
            elif action == "hostile-epoch":
                await integrity.hostile_epoch(self, rng, budget)
            elif action == "tree-rot":
                integrity.tree_rot(self, rng, budget)
            elif action == "drop-segment":
                await integrity.drop_segment(self, rng, budget)
            elif action == "cut-control-plane" and self.faulty() < budget:
                node = rng.choice([n for n in self.nodes.values() if n.up])
                self.network.partition(node.name, repl.CONTROL_PLANE)
                self.event(f"partition {node.name} from the control plane")
            self.note_down()
        self.event("faults over")

    # -- the deliberate outage ----------------------------------------------------------

    async def _outage(self, rng: random.Random) -> None:
        """Every node back first, then
        az-plus-one: one whole AZ and one node of another down for a stretch; reads must succeed (Simulation.read),
            writes are refused or acknowledged only on a true write quorum (check_durable);
        beyond: three nodes down for a stretch, then a fourth for another (sometimes with the writer crashing
            and a new one trying to open); nothing may be acknowledged falsely.
        Clients keep writing and reading; a probe reads every client page from the segments in each stretch.
        Then everything heals and the random schedule goes on."""
        await self._restore("before the outage")
        self.ops["outages"] += 1
        if self.config.faults == "az-plus-one":
            az = rng.choice("abc")
            victims = [n for n, node_az in NODES if node_az == az]
            victims.append(rng.choice([n for n, node_az in NODES if node_az != az]))
            self.outage = "az-plus-one"
            for name in victims:
                await self._take_down(name, rng)
            self.event(f"outage: AZ {az} and {victims[-1]} down")
            await self._hold(rng)
        else:
            victims = rng.sample([n for n, _ in NODES], 4)
            self.outage = "beyond"
            for name in victims[:3]:
                await self._take_down(name, rng)
            self.event(f"outage: three nodes down ({', '.join(sorted(victims[:3]))})")
            await self._hold(rng)
            await self._take_down(victims[3], rng)
            self.event(f"outage: four nodes down ({', '.join(sorted(victims))})")
            if rng.random() < OUTAGE_NEW_WRITER_PROBABILITY and self.writer is not None:
                await self.crash_writer()
                opened = await self.open_writer()
                if opened is not None and self.control_plane is None:  # (replacement may swap in reachable spares)
                    self.violation(
                        f"{opened.writer_id} opened with four of six segments of every PG unreachable: "
                        f"it cannot have raised the epoch on a write quorum"
                    )
                self.note_down()
            await self._hold(rng)
        self.outage = None
        await self._restore("outage over")

    async def _take_down(self, name: str, rng: random.Random) -> None:
        node = self.nodes[name]
        if rng.random() < OUTAGE_CRASH_PROBABILITY:
            if node.up:
                await node.crash()
            self.event(f"outage: crash {name}")
        else:
            self.isolated.add(name)  # open_writer cuts it off from every writer opened later
            if self.writer is not None:
                self.network.partition(self.writer.writer_id, name)
            self.event(f"outage: cut {name} off from every writer")
        self.note_down()

    async def _hold(self, rng: random.Random) -> None:
        """Keep the outage as it is for a while; a probe reads every client page from the segments meanwhile."""
        until = self.now() + rng.uniform(*OUTAGE_HOLD_S)
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        if self.writer is not None:
            await self.read("outage probe", self.writer, self.client_pages())
        await asyncio.sleep(max(0.0, until - self.now()))

    async def _restore(self, why: str) -> None:
        """Every node up (but those failed for good), every partition healed, a writer open."""
        self.network.heal()
        self.isolated.clear()
        for node in self.nodes.values():
            if not node.up and node.name not in self.dead:
                node.start()
        for _ in range(3):  # an open that fails takes a while (its recovery retries): heal_and_check tries again
            if (self.writer is not None and not self.writer.fenced) or self.backtracking:
                break
            await asyncio.sleep(0.5)
            if self.writer is not None:
                await self.crash_writer()
            await self.open_writer()
        self.note_down()
        self.event(f"{why}: every node up, no partition")

    def _return(self, name: str) -> None:
        self.dead.discard(name)
        self.nodes[name].start()
        self.note_down()
        if self.changing(name):
            self.ops["return_mid_change"] += 1
            self.event(f"return {name} mid-change")
        else:
            self.event(f"return {name}")

    async def _return_later(self, name: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        if name in self.dead and not self.nodes[name].up:
            self._return(name)

    async def _old_writer_tries(self, old: Volume, rng: random.Random) -> None:
        for n in range(5):
            await asyncio.sleep(rng.uniform(0.01, 0.5))
            try:
                cpl = await old.write([Patch(0, 0, b"stale-%d" % n)])
            except (Fenced, QuorumNotMet, CommitTimeout, NotCommitted, Regaining):
                continue
            self.violation(f"a fenced writer (epoch {old.epoch}) was acknowledged at LSN {cpl}")
        await old.close()

    def _rot(self, rng: random.Random, budget: int) -> None:
        """Flip a byte of a stored record or page version (each half the time; a record when no node holds a
        version yet). A node with a rot still outstanding counts as faulty, so a new node is picked only while
        the budget allows; otherwise one that is faulty already."""
        faulty = self.faulty_nodes()
        nodes = [n for n in self.nodes if len(faulty) < budget or n in faulty]
        table = VERSIONS if rng.random() < 0.5 else RECORDS
        candidates = [(name, key) for name in nodes for key in self.disk.keys(name, table)]
        if not candidates and table == VERSIONS:
            table = RECORDS
            candidates = [(name, key) for name in nodes for key in self.disk.keys(name, table)]
        if not candidates:
            return
        name, key = rng.choice(candidates)
        self.disk.rot(name, table, key, rng=rng)
        rotted = self.disk.get(name, table, key)
        assert rotted is not None
        self.rotten[(name, table, key)] = rotted
        self.ops["rot_" + table.decode()] += 1
        self.event(f"rot a byte of {name} {table.decode()} key {key.hex()}")
