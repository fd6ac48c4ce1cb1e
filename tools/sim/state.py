"""The state of one simulated run, and the bookkeeping every layer of it uses.

`SimState` holds what a run knows: its settings and seeded randomness, the fake network and disk, the
nodes, the model of what the writers did, one line per volume record (lines.py: records allocated,
truncations, acknowledged and refused writes; `line` is the one the volume's name points at now, learned
from the control plane as clones, snapshots and backtracks make records: `learn_lines`), bytes rotted on
purpose, the writer now, what is down, and the control plane (replacement or time travel on). It logs
events, records violations (`violation` ends the run), and answers the questions about layout every check
asks: a page's PG, a PG's membership as the control plane has decided it, a segment id, a writer's line.

A run is this state plus its layers, each a module (lowest first): oracle.py (what must be stored),
checks.py (the invariants), health.py (what is down or faulty), workload.py (writers and clients),
healing.py (the control plane inside the run), faults.py (the fault schedule and outages), volumes.py
and time_travel.py (clones, snapshots, backtracks), and harness.py (`Simulation`: the run itself).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sixfold.compute.volume import Volume
from sixfold.compute.volume_log import Patch
from sixfold.storage.control_plane_keys import VolumeKeys
from sixfold.storage.control_plane_values import KIND_SNAPSHOT
from sixfold.storage.records import LogRecord
from sixfold.storage.segment import TruncationRange
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.tools.sim import integrity
from sixfold.tools.sim import replacement as repl
from sixfold.tools.sim.config import NODES, PAGE_SIZE, VOLUME, SimConfig, Violation
from sixfold.tools.sim.keys import SimKeys, wrapped_volume_key
from sixfold.tools.sim.lines import CLONE, ROOT, SNAPSHOT, TIMELINE, Line, prefix_of_segment
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
        # Encryption at rest (tools/sim/keys.py): the nodes' data keys, and the first volume's wrapped key.
        self.keys = None if config.clear_at_rest else SimKeys()
        self.volume_key = b"" if config.clear_at_rest else wrapped_volume_key(VOLUME)
        self.control_plane_keys: VolumeKeys | None = None  # the control plane's, kept across its restarts
        self.node_specs = NODES + (repl.SPARES if config.replace else ())
        self.nodes = {name: SimNode(name, az, self) for name, az in self.node_specs}
        self.events: list[str] = []
        self.violations: list[str] = []
        # The model, one line per volume record (tools/sim/lines.py); `line` is the one the volume's name
        # points at now (its records, truncations, acknowledged and refused writes are the properties below).
        self.line = Line(VOLUME, VOLUME)
        self.lines: dict[str, Line] = {VOLUME: self.line}
        # (node, table, key) -> the bytes a rot left there: records and page versions flipped on purpose
        self.rotten: dict[tuple[str, bytes, bytes], bytes] = {}
        self.writer: Volume | None = None
        self.writers = 0
        self.opening = False  # a writer is being opened (the supervisor opens none meanwhile)
        self.backtracking = False  # a backtrack closed the writer and opens it on the new timeline itself
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
        self._round: tuple[list[Any], dict[int, int], str] | None = None  # (PGs, acknowledged max, timeline)
        self.dead: set[str] = set()  # nodes failed for good (until the final heal)
        self.cp_state: repl.cp.ControlPlane | None = None
        if config.control_plane:
            spares = repl.SPARES if config.replace else ()
            self.cp_state = repl.initial_state(
                VOLUME, PAGE_SIZE, config.pages_per_pg, config.pgs, NODES, spares, 0.0, config.backtrack_window_s
            )
            from sixfold.storage.control_plane_server import geometry_to_proto

            self.geometry = geometry_to_proto(self.cp_state.describe_volume(VOLUME))
            assert [[s.node_id for s in pg.segments] for pg in self.geometry.protection_groups] == [
                [n for n, _ in NODES]
            ] * config.pgs, self.geometry
            self.ops.update(
                {"replace_begun": 0, "replace_completed": 0, "replace_rolled_back": 0, "return_mid_change": 0}
            )

    # -- the model of the line the volume shows now (tools/sim/lines.py) ------------

    @property
    def records(self) -> dict[int, LogRecord]:
        """Every record a writer of the current line allocated, by LSN."""
        return self.line.records

    @property
    def truncations(self) -> list[TruncationRange]:
        return self.line.truncations

    @property
    def acked(self) -> dict[int, tuple[str, list[Patch], int]]:
        """CPL -> (token, patches, writer epoch) of the current line's acknowledged writes."""
        return self.line.acked

    @property
    def refused(self) -> list[bytes]:
        """Tokens of the current line's writes refused definitely: they must never take effect."""
        return self.line.refused

    def line_of(self, volume: Volume) -> Line:
        """The line a writer writes: the volume record whose segments it holds streams to."""
        if not self.config.time_travel or not volume.pgs:
            return self.line
        pg = volume.pgs[min(volume.pgs)]
        return self.line_for(prefix_of_segment(next(iter(pg.streams.values())).segment_id))

    def line_for(self, prefix: str) -> Line:
        """The line of a segment-id prefix, learning the control plane's volume records first if need be."""
        if prefix not in self.lines:
            self.learn_lines()
        return self.lines[prefix]

    def learn_lines(self) -> None:
        """Add a line for every volume record the control plane holds that the model lacks (a clone, snapshot,
        restore or backtrack made; whether its caller heard of it or not), and follow renames (a timeline left)."""
        if self.cp_state is None:
            return
        geometries = {g.volume_id: g for g in self.cp_state.geometries()}
        floors = {t.timeline_id: t.lsn_floor for t in self.cp_state.own_timelines(VOLUME, 0)}

        def learn(volume_id: str) -> Line:
            g = geometries[volume_id]
            prefix = prefix_of_segment(g.protection_groups[0].segments[0].segment_id)
            line = self.lines.get(prefix)
            if line is None:
                parent = learn(g.parent_volume_id) if g.parent_volume_id else None
                kind = SNAPSHOT if g.kind == KIND_SNAPSHOT else CLONE if parent is not None else ROOT
                line = Line(prefix, volume_id, kind, parent, g.branch_lsn, g.branch_lsn)
                if parent is not None and volume_id in floors:
                    line.kind = TIMELINE  # a backtrack's new timeline: its floor is above every LSN the volume used
                    line.lsn_floor = floors[volume_id]
                self.lines[prefix] = line
            line.volume_id = volume_id
            return line

        for volume_id in sorted(geometries):
            learn(volume_id)

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

    def membership(self, pg_index: int, line: Line | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(base set, every node holding a segment) of a PG of a line (the current one unless given) as the
        control plane has decided it now."""
        if self.cp_state is None:
            names = tuple(n for n, _ in NODES)
            return names, names
        pg = self.cp_state.pg(VOLUME if line is None else line.volume_id, pg_index)
        return pg.node_ids, pg.all_node_ids

    def segment_id(self, pg_index: int) -> str:
        """The segment id of a PG of the line the volume shows now."""
        return self.line.segment_id(pg_index)
