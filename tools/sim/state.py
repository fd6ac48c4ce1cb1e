"""The state of one simulated run, and the bookkeeping every layer of it uses.

`SimState` holds what a run knows: its settings and seeded randomness, the fake network and disk, the
nodes, the model of what the writers did (records allocated, truncations, acknowledged and refused
writes, bytes rotted on purpose), the writer now, what is down, and the control plane (replacement on).
It logs events, records violations (`violation` ends the run), and answers the questions about layout
every check asks: a page's PG and a PG's membership as the control plane has decided it.

A run is this state plus its layers, each a module (lowest first): oracle.py (what must be stored),
checks.py (the invariants), health.py (what is down or faulty), workload.py (writers and clients),
healing.py (the control plane inside the run), faults.py (the fault schedule and outages), and
harness.py (`Simulation`: the run itself).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sixfold.compute.volume import Volume
from sixfold.compute.volume_log import Patch
from sixfold.storage.records import LogRecord
from sixfold.storage.segment import TruncationRange
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.tools.sim import integrity
from sixfold.tools.sim import replacement as repl
from sixfold.tools.sim.config import NODES, PAGE_SIZE, VOLUME, SimConfig, Violation
from sixfold.tools.sim.memlmdb import MemDisk
from sixfold.tools.sim.network import SimNetwork
from sixfold.tools.sim.nodes import SimNode


class SimState:
    """A run's state and bookkeeping (the layers above add its behaviour; tools/sim/harness.py assembles them)."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.network = SimNetwork(random.Random(self.rng.getrandbits(64)), config.net)
        self.disk = MemDisk()
        self.node_specs = NODES + (repl.SPARES if config.replace else ())
        self.nodes = {name: SimNode(name, az, self) for name, az in self.node_specs}
        self.events: list[str] = []
        self.violations: list[str] = []
        self.records: dict[int, LogRecord] = {}  # every record any writer allocated, by LSN
        self.truncations: list[TruncationRange] = []
        self.acked: dict[int, tuple[str, list[Patch], int]] = {}  # CPL -> (token, patches, writer epoch)
        self.refused: list[bytes] = []  # tokens of writes refused definitely: they must never take effect
        # (node, table, key) -> the bytes a rot left there: records and page versions flipped on purpose
        self.rotten: dict[tuple[str, bytes, bytes], bytes] = {}
        self.writer: Volume | None = None
        self.writers = 0
        self.opening = False  # a writer is being opened (the supervisor opens none meanwhile)
        self.ops: dict[str, int] = {
            "write_ok": 0,
            "write_failed": 0,
            "write_unknown": 0,
            "read_ok": 0,
            "read_failed": 0,
            "rot_records": 0,
            "rot_versions": 0,
            "rot_found_by_final_scrub": 0,
            # most nodes down at once (crashed, or cut off from the writer), and what the clients got while
            # more than two were (an operation counts if that was so at any time while it ran)
            "nodes_down_max": 0,
            "write_ok_over_2_down": 0,
            "write_refused_over_2_down": 0,
            "write_unknown_over_2_down": 0,
            "read_ok_over_2_down": 0,
            "read_failed_over_2_down": 0,
            "open_failed": 0,
            "open_failed_over_2_down": 0,
            "outages": 0,
            **integrity.counters(),
        }
        self.isolated: set[str] = set()  # nodes an outage cut off from every writer (including ones opened later)
        self.over_two = False  # more than two nodes down now
        self.over_two_serial = 0  # how many times more than two went down: an operation that saw it change overlapped
        self.outage: str | None = None  # the deliberate outage in place: "az-plus-one" or "beyond"
        self.geometry = self._geometry()
        self.control_plane: repl.SimControlPlane | None = None  # with config.replace, made in main()
        self.healing: asyncio.Task[None] | None = None
        self._round: tuple[list[Any], dict[int, int]] | None = None
        self.dead: set[str] = set()  # nodes failed for good (until the final heal)
        self.cp_state: repl.cp.ControlPlane | None = None
        if config.replace:
            self.cp_state = repl.initial_state(
                VOLUME, PAGE_SIZE, config.pages_per_pg, config.pgs, NODES, repl.SPARES, 0.0
            )
            from sixfold.storage.control_plane_server import geometry_to_proto

            self.geometry = geometry_to_proto(self.cp_state.describe_volume(VOLUME))
            assert [[s.node_id for s in pg.segments] for pg in self.geometry.protection_groups] == [
                [n for n, _ in NODES]
            ] * config.pgs, self.geometry
            self.ops.update(
                {"replace_begun": 0, "replace_completed": 0, "replace_rolled_back": 0, "return_mid_change": 0}
            )

    # -- bookkeeping ------------------------------------------------------------

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def event(self, text: str) -> None:
        self.events.append(f"{self.now():10.4f} {text}")

    def violation(self, text: str) -> None:
        self.event(f"VIOLATION {text}")
        self.violations.append(f"t={self.now():.4f}s: {text}")
        raise Violation(text)

    def _geometry(self) -> cp_pb.VolumeGeometry:
        pgs = []
        for i in range(self.config.pgs):
            pgs.append(
                cp_pb.ProtectionGroup(
                    pg_index=i,
                    first_page=i * self.config.pages_per_pg,
                    page_count=self.config.pages_per_pg,
                    membership_epoch=1,
                    segments=[
                        cp_pb.SegmentPlacement(segment_id=f"{VOLUME}/pg-{i:05d}", node_id=n, az=az, address=n)
                        for n, az in NODES
                    ],
                )
            )
        return cp_pb.VolumeGeometry(
            volume_id=VOLUME,
            page_size=PAGE_SIZE,
            segment_size_bytes=self.config.pages_per_pg * PAGE_SIZE,
            geometry_epoch=1,
            protection_groups=pgs,
        )

    # -- layout -----------------------------------------------------------------

    def pg_of(self, page_no: int) -> int:
        return page_no // self.config.pages_per_pg

    def membership(self, pg_index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(base set, every node holding a segment) of a PG as the control plane has decided it now."""
        if self.cp_state is None:
            names = tuple(n for n, _ in NODES)
            return names, names
        pg = self.cp_state.pg(VOLUME, pg_index)
        return pg.node_ids, pg.all_node_ids
