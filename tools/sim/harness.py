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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

import grpc

from sixfold.compute.errors import CommitTimeout, Fenced, NotCommitted, QuorumNotMet, Regaining
from sixfold.compute.quorum import WRITE_QUORUM
from sixfold.compute.volume import Channels, Volume
from sixfold.compute.volume_log import Patch
from sixfold.storage.errors import StorageError
from sixfold.storage.node import StorageServicer
from sixfold.storage.records import LogRecord, apply_record, peek_header
from sixfold.storage.scrub import Scrubber
from sixfold.storage.segment import SegmentMeta, TruncationRange
from sixfold.storage.serving import generic_handler
from sixfold.storage.store import SegmentStore, record_key
from sixfold.storage.truncation import voided
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.tools.sim import integrity
from sixfold.tools.sim import replacement as repl
from sixfold.tools.sim.loop import InlineExecutor, SimDeadlock, run
from sixfold.tools.sim.memlmdb import MemDisk
from sixfold.tools.sim.network import NetConfig, SimNetwork, SimServer, rpc_error

VOLUME = "simvol"
NODES = (("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c"))
PAGE_SIZE = 512
SIM_LAL = 500
GOSSIP_INTERVAL_S = 1.0
# Faulty nodes at once the random schedule allows per mode (tools/sim_cli.py FAULT_MODES lists the same modes).
# "az-plus-one" adds a stretch with one whole AZ and one more node down, "beyond" one with three then four nodes
# down; both leave the random schedule within its budget around that stretch (Simulation.faults).
FAULT_BUDGET = {"none": 0, "within": 2, "az-plus-one": 2, "beyond": 4}
OUTAGE_START_FRACTION = (0.25, 0.45)  # of the run's duration: when the deliberate outage begins
OUTAGE_HOLD_S = (2.5, 4.0)  # virtual seconds each step of the outage lasts (the faults stay put meanwhile)
OUTAGE_CRASH_PROBABILITY = 0.6  # a node the outage takes is crashed; otherwise cut off from every writer
OUTAGE_NEW_WRITER_PROBABILITY = 0.3  # beyond: with four down, the writer crashes and a new one tries to open
ROTS_PER_RUN_MAX = 3  # bytes flipped on disk per run, in records or page versions
RECORDS, VERSIONS = b"records", b"versions"  # the store's LMDB tables a rot may hit
COALESCE_CHAIN_MIN_SIM = 2  # fold short chains: the runs write few records per page
SETTLE_S = 30.0  # virtual seconds after healing for every membership change to end (replacement on)
CONVERGE_S = 15.0  # virtual seconds after healing for every segment to catch up


@dataclass
class SimConfig:
    seed: int
    clients: int = 3
    ops_per_client: int = 30
    pgs: int = 2
    pages_per_pg: int = 16
    duration_s: float = 20.0  # virtual seconds of faults and load
    faults: str = "within"  # FAULT_BUDGET: "none" | "within" (what the design survives) | "az-plus-one" | "beyond"
    mutation: str | None = None  # a deliberate protocol break (tools/sim/mutations.py)
    # Virtual seconds of history storage keeps; a short one (2.0) makes GC and hydration run under the
    # faults too (the default, as on real nodes, outlasts a run: only coalescing runs).
    history_window_s: float = 300.0
    # Segment replacement: a spare node per AZ and the real control plane healing inside the run
    # (tools/sim/replacement.py); faults add nodes that fail for good and failed nodes that return.
    replace: bool = False
    # The fault menu before the integrity faults (tools/sim/integrity.py) joined it, so that a seed found
    # then draws the same schedule again (its regression test replays the bug it was found with).
    classic_faults: bool = False
    net: NetConfig = field(
        default_factory=lambda: NetConfig(
            unary_drop_probability=0.01, unary_duplicate_probability=0.02, stream_break_probability=0.002
        )
    )


@dataclass
class SimResult:
    seed: int
    violations: list[str]
    events: list[str]
    ops: dict[str, int]
    virtual_s: float

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.events).encode()).hexdigest()[:16]


class Violation(Exception):
    pass


class _DiskExecutor(InlineExecutor):
    """Runs an LMDB write at once (it is durable when it returns); its result arrives after a seeded fsync delay."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        import concurrent.futures

        done = super().submit(fn, *args, **kwargs)
        later: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop = asyncio.get_running_loop()

        def finish() -> None:
            if done.exception() is not None:
                later.set_exception(done.exception())
            else:
                later.set_result(done.result())

        loop.call_later(self.rng.uniform(0.0002, 0.003), finish)
        return later


class SimNode:
    def __init__(self, name: str, az: str, sim: Simulation) -> None:
        self.name, self.az, self.sim = name, az, sim
        self.up = False
        self.store: SegmentStore | None = None
        self.servicer: StorageServicer | None = None
        self.heartbeats: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.store = SegmentStore(self.name, open_env=self.sim.disk.open, discard_env=self.sim.disk.wipe)
        self.servicer = StorageServicer(
            self.store,
            self.name,
            self.az,
            writer=_DiskExecutor(self.sim.rng),
            peer_channel=self.sim.network.channel_factory(self.name),
            gossip_interval_s=GOSSIP_INTERVAL_S,
            history_window_s=self.sim.config.history_window_s,
        )
        if self.servicer.coalescer is not None:
            self.servicer.coalescer.chain_min = COALESCE_CHAIN_MIN_SIM
        self.servicer.start()
        handler = generic_handler(pb.DESCRIPTOR.services_by_name["StorageService"], self.servicer, pb)
        self.sim.network.serve(SimServer(self.name, [handler]))
        self.up = True
        if self.sim.config.replace:
            self.heartbeats = asyncio.get_running_loop().create_task(
                repl.heartbeat_loop(
                    self.name, self.sim.network.channel_factory(self.name), self.servicer.heartbeat_report
                )
            )

    async def crash(self) -> None:
        self.sim.network.crash(self.name)
        if self.heartbeats is not None:
            self.heartbeats.cancel()
            self.heartbeats = None
        if self.servicer is not None:
            await self.servicer.stop()  # its background work (group commit, gossip, scrub) dies with it
        self.sim.disk.crash(self.name)  # whatever was not committed is gone
        self.store = self.servicer = None
        self.up = False


class FakeControlPlane:
    """DescribeVolume from a fixed geometry; the simulated volume does not grow."""

    def __init__(self, geometry: cp_pb.VolumeGeometry) -> None:
        self.geometry = geometry

    async def DescribeVolume(self, request: Any, timeout: float | None = None) -> Any:
        return cp_pb.DescribeVolumeResponse(geometry=self.geometry)

    async def GrowVolume(self, request: Any, timeout: float | None = None) -> Any:
        raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the simulated volume does not grow")


class FollowedControlPlane:
    """DescribeVolume and GrowVolume answered by the simulated control plane (segment replacement on)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim  # its control plane may restart

    async def DescribeVolume(self, request: Any, timeout: float | None = None) -> Any:
        assert self.sim.control_plane is not None
        try:
            return await self.sim.control_plane.DescribeVolume(request, None)
        except StorageError as error:
            raise rpc_error(getattr(grpc.StatusCode, error.status_code_name), error.message) from None

    async def GrowVolume(self, request: Any, timeout: float | None = None) -> Any:
        raise rpc_error(grpc.StatusCode.UNAVAILABLE, "the simulated volume does not grow")


class Simulation:
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
        self.supervisor = integrity.WriterSupervisor(self)
        self.ops = {
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

    def _create_segments(self) -> None:
        for node in self.nodes.values():
            node.start()
            if (node.name, node.az) not in NODES:
                continue  # a spare
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
                    )
                )

    # -- the oracle ---------------------------------------------------------------

    def truncated(self, record: LogRecord) -> bool:
        return voided(self.truncations, record.lsn, record.epoch)

    def page_at(self, page_no: int, read_point: int) -> bytes:
        page = bytearray(PAGE_SIZE)
        for lsn in sorted(self.records):
            if lsn > read_point:
                break
            record = self.records[lsn]
            if record.page_no == page_no and not self.truncated(record):
                apply_record(page, record)
        return bytes(page)

    def pg_of(self, page_no: int) -> int:
        return page_no // self.config.pages_per_pg

    def membership(self, pg_index: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(base set, every node holding a segment) of a PG as the control plane has decided it now."""
        if self.cp_state is None:
            names = tuple(n for n, _ in NODES)
            return names, names
        pg = self.cp_state.pg(VOLUME, pg_index)
        return pg.node_ids, pg.all_node_ids

    def holders(self, record: LogRecord) -> list[str]:
        """Nodes whose committed (on-disk) segment holds `record` (a copy rotted on purpose counts:
        it was durable; the rot is a disk fault, not a protocol one; so does a record at or below the
        segment's GC floor: it lives on in the page versions kept there)."""
        segment_id = f"{VOLUME}/pg-{self.pg_of(record.page_no):05d}".encode()
        out = []
        for name in self.nodes:
            meta = integrity.meta_on_disk(self, name, segment_id.decode())
            if meta is None:
                continue
            key = record_key(meta.seg_no, record.lsn)
            raw = self.disk.get(name, RECORDS, key)
            if raw is not None and (raw == record.encode() or (name, RECORDS, key) in self.rotten):
                out.append(name)
            elif record.lsn <= meta.retention_horizon_lsn <= meta.scl:
                out.append(name)  # folded into the page versions kept at the GC floor (reads check them)
        return out

    def mtr_records(self, cpl: int) -> list[LogRecord]:
        """The records of the MTR whose CPL is `cpl`: consecutive LSNs back to the previous CPL."""
        out = [self.records[cpl]]
        lsn = cpl - 1
        while lsn in self.records and not self.records[lsn].cpl:
            out.append(self.records[lsn])
            lsn -= 1
        return out

    # -- checks -------------------------------------------------------------------

    def check_durable(self, cpl: int, where: str) -> None:
        """Invariant 2: every record of the MTR is on a write quorum of its PG."""
        for record in self.mtr_records(cpl):
            # The base set: every change that completed made its new segment part of it (so this is the
            # safety property of the change's target); a change in flight still needs the old set.
            base, _ = self.membership(self.pg_of(record.page_no))
            holders = [n for n in self.holders(record) if n in base]
            if len(holders) < WRITE_QUORUM_REAL:
                self.violation(
                    f"{where}: record LSN {record.lsn} of acknowledged MTR {cpl} is on only "
                    f"{len(holders)} segments ({', '.join(holders) or 'none'}) of the base set "
                    f"{','.join(base)}; a write quorum is {WRITE_QUORUM_REAL}"
                )

    def check_quorum_sets(self, cpl: int, writer: Volume, epochs: dict[int, int], where: str) -> None:
        """During a change: every record of an acknowledged MTR is on a write quorum of every quorum set the
        writer held for its PG (both sets while a segment is being replaced); checked where the PG's
        membership epoch was the same when the write began as now, so those are the sets it was acked under."""
        for record in self.mtr_records(cpl):
            pg = writer.pgs.get(self.pg_of(record.page_no))
            if pg is None or epochs.get(pg.pg_index) != pg.membership_epoch:
                continue
            holders = set(self.holders(record))
            for quorum_set in pg.membership.sets:
                if len(holders & quorum_set.members) < WRITE_QUORUM_REAL:
                    self.violation(
                        f"{where}: record LSN {record.lsn} of acknowledged MTR {cpl} is on "
                        f"{sorted(holders & quorum_set.members)} of quorum set "
                        f"{sorted(quorum_set.members)} (membership epoch {pg.membership_epoch})"
                    )

    def check_read(self, writer: Volume, read_point: int, pages: list[tuple[int, bytes, int]]) -> None:
        """Invariants 3 and 6."""
        if read_point > writer.vdl:
            self.violation(f"read point {read_point} is above the writer's VDL {writer.vdl}")
        for page_no, data, _ in pages:
            expected = self.page_at(page_no, read_point)
            if data != expected:
                diff = next(i for i in range(PAGE_SIZE) if data[i] != expected[i])
                self.violation(
                    f"page {page_no} read at {read_point} differs from the page at that point "
                    f"(first at byte {diff}: {data[diff : diff + 12]!r} vs {expected[diff : diff + 12]!r})"
                )

    def check_truncations(self) -> None:
        """Invariant 4 on every node's committed state: a segment holds no record that a truncation range it
        holds voids (it deletes them when it learns the range, and refuses them after)."""
        for name in self.nodes:
            for pg in self.geometry.protection_groups:
                meta = integrity.meta_on_disk(self, name, f"{VOLUME}/pg-{pg.pg_index:05d}")
                if meta is None or not meta.truncation_ranges:
                    continue
                prefix = meta.seg_no.to_bytes(4, "big")
                for key, raw in self.disk.items(name, RECORDS):
                    if not key.startswith(prefix) or (name, RECORDS, key) in self.rotten:
                        continue
                    lsn, _, _, epoch = peek_header(raw)
                    if voided(meta.truncation_ranges, lsn, epoch):
                        self.violation(
                            f"{name} {meta.segment_id} still holds LSN {lsn} of epoch {epoch}, which a "
                            "truncation range it holds voids"
                        )

    # -- writers --------------------------------------------------------------------

    async def open_writer(self) -> Volume | None:
        self.writers += 1
        name = f"writer-{self.writers}"
        self.network.down.discard(name)
        for node in sorted(self.isolated):
            self.network.partition(name, node)
        control_plane: Any = (
            FakeControlPlane(self.geometry) if self.control_plane is None else FollowedControlPlane(self)
        )
        volume = Volume(
            VOLUME,
            control_plane,
            Channels(self.network.channel_factory(name)),
            lal=SIM_LAL,
            commit_timeout_s=3.0,
            writer_id=name,
        )
        volume.sim_name = name  # type: ignore[attr-defined]

        def truncating(ranges: list[TruncationRange]) -> None:
            for r in ranges:
                if r not in self.truncations:
                    self.truncations.append(r)

        volume.on_truncating = truncating
        integrity.watch_fencing(self, volume)
        began = self.over_two_serial, self.over_two
        self.opening = True
        try:
            await volume.open()
        except StorageError as error:
            self.ops["open_failed_over_2_down" if self.overlapped_over_two(began) else "open_failed"] += 1
            self.event(f"{name} could not open: {error.message}")
            await volume.close()
            return None
        finally:
            self.opening = False
        assert volume.log is not None

        def allocated(mtr: Any) -> None:
            for record in mtr.records:
                assert record.lsn not in self.records, f"LSN {record.lsn} allocated twice"
                self.records[record.lsn] = record

        volume.on_allocate = allocated
        self.event(f"{name} open: epoch {volume.epoch} VDL {volume.log.vdl} next LSN {volume.log.next_lsn}")
        self.writer = volume
        self.supervisor.note()
        return volume

    async def crash_writer(self) -> None:
        volume = self.writer
        if volume is None:
            return
        self.writer = None
        self.network.crash(volume.sim_name)  # type: ignore[attr-defined]
        await volume.close()
        self.event(f"{volume.sim_name} crashed")  # type: ignore[attr-defined]
        self.supervisor.note()

    # -- clients ------------------------------------------------------------------

    async def client(self, index: int, rng: random.Random) -> None:
        pages = self.client_pages()
        for n in range(self.config.ops_per_client):
            await asyncio.sleep(rng.uniform(0.01, 2 * self.config.duration_s / self.config.ops_per_client))
            writer = self.writer
            if writer is None:
                continue
            if rng.random() < 0.6:
                token = f"c{index}n{n}e{writer.epoch}".encode()
                chosen = rng.sample(pages, rng.randint(1, 3))
                patches = [Patch(p, rng.randrange(PAGE_SIZE - len(token)), token) for p in chosen]
                epochs = {i: pg.membership_epoch for i, pg in writer.pgs.items()}
                began = self.over_two_serial, self.over_two
                try:
                    cpl = await writer.write(patches)
                except (Fenced, QuorumNotMet, CommitTimeout, NotCommitted, Regaining) as error:
                    kind = "write_unknown" if isinstance(error, CommitTimeout) else "write_failed"
                    self.ops[kind] += 1
                    if kind == "write_failed":
                        self.refused.append(token)
                    if self.overlapped_over_two(began):
                        self.ops[
                            "write_unknown_over_2_down" if kind == "write_unknown" else "write_refused_over_2_down"
                        ] += 1
                    self.event(f"client {index} write {token.decode()} -> {type(error).__name__}")
                    continue
                self.ops["write_ok"] += 1
                if self.overlapped_over_two(began):
                    self.ops["write_ok_over_2_down"] += 1  # check_durable below: only on a true write quorum
                self.acked[cpl] = (token.decode(), patches, writer.epoch)
                self.event(f"client {index} write {token.decode()} -> LSN {cpl}")
                self.check_durable(cpl, f"client {index} acknowledged")
                if self.config.replace:
                    self.check_quorum_sets(cpl, writer, epochs, f"client {index} acknowledged")
            else:
                await self.read(f"client {index}", writer, rng.sample(pages, rng.randint(1, 3)))

    def client_pages(self) -> list[int]:
        return [pg * self.config.pages_per_pg + p for pg in range(self.config.pgs) for p in range(4)]

    async def read(self, who: str, writer: Volume, pages: list[int]) -> None:
        """One read, checked against the model. While more than two nodes are down it reads every page from the
        segments (not the writer's cache), so the outage is what the read meets. With only one AZ and one more
        node down (the az-plus-one outage) from start to end, a read must succeed: the design says so."""
        began = self.over_two_serial, self.over_two
        outage = self.outage
        try:
            read_point, images = await writer.read(pages, from_storage=self.over_two)
        except (Fenced, QuorumNotMet, Regaining) as error:
            self.ops["read_failed"] += 1
            self.event(f"{who} read {pages} -> {type(error).__name__}")
            if self.overlapped_over_two(began):
                self.ops["read_failed_over_2_down"] += 1
            if outage == "az-plus-one" and self.outage == outage and began == (self.over_two_serial, True):
                self.violation(
                    f"{who}: a read failed with only one AZ and one more node down "
                    f"({', '.join(sorted(self.down_nodes()))}): {error.message}"
                )
            return
        self.ops["read_ok"] += 1
        if self.overlapped_over_two(began):
            self.ops["read_ok_over_2_down"] += 1
        self.event(f"{who} read {pages} at {read_point}")
        self.check_read(writer, read_point, images)

    # -- faults -------------------------------------------------------------------

    def faulty(self) -> int:
        return len(self.faulty_nodes())

    def down_nodes(self) -> set[str]:
        """Nodes crashed or cut off from the current writer (with replacement on: that hold a segment)."""
        down = {n for n, node in self.nodes.items() if not node.up} | self.isolated
        if self.writer is not None:
            down |= {n for n in self.nodes if frozenset((n, self.writer.sim_name)) in self.network.cut}  # type: ignore[attr-defined]
        if self.cp_state is not None:
            down &= {n for pg in range(self.config.pgs) for n in self.membership(pg)[1]}
        return down

    def note_down(self) -> None:
        """After every fault: record the most nodes down at once and when more than two are."""
        down = self.down_nodes()
        self.ops["nodes_down_max"] = max(self.ops["nodes_down_max"], len(down))
        if len(down) > 2 and not self.over_two:
            self.over_two = True
            self.over_two_serial += 1
            self.event(f"more than two nodes down: {', '.join(sorted(down))}")
        elif len(down) <= 2 and self.over_two:
            self.over_two = False
            self.event(f"two or fewer nodes down again ({', '.join(sorted(down)) or 'none'})")

    def overlapped_over_two(self, began: tuple[int, bool]) -> bool:
        """Whether more than two nodes were down at some time since `began` = (over_two_serial, over_two)."""
        return began[1] or self.over_two or began[0] != self.over_two_serial

    def faulty_nodes(self) -> set[str]:
        cut = {n for pair in self.network.cut for n in pair if n in self.nodes}
        rotten_nodes = {
            n for (n, table, key), rotted in self.rotten.items() if self.rot_outstanding(n, table, key, rotted)
        }
        down = {n for n, node in self.nodes.items() if not node.up}
        if self.cp_state is not None:
            # A node down (or dead for good) counts while a PG's quorum sets hold it: once replaced,
            # it no longer weakens any PG; a spare holding nothing never did.
            members = {n for pg in range(self.config.pgs) for n in self.membership(pg)[1]}
            down &= members
        return down | cut | rotten_nodes | integrity.impaired_nodes(self)

    def rot_outstanding(self, name: str, table: bytes, key: bytes, rotted: bytes) -> bool:
        """Whether a rot still weakens its node: the rotten bytes are still stored, or the node has not yet got
        back past the copy's LSN since the copy was quarantined (SCL fell to the hole, or below the GC floor
        when it was the page's only copy there; gossip refills, hydration restores)."""
        if self.disk.get(name, table, key) == rotted:
            return True
        seg_no = int.from_bytes(key[:4], "big")
        lsn = int.from_bytes(key[-8:], "big")  # records: (seg_no, lsn); page versions: (seg_no, page_no, lsn)
        for key_id, _ in self.disk.items(name, b"segments"):
            meta = integrity.meta_on_disk(self, name, key_id.decode())
            if meta is not None and meta.seg_no == seg_no:
                return meta.scl < lsn
        return False  # the segment was dropped

    def changing(self, node: str) -> bool:
        """Whether a change in flight is replacing `node`."""
        return any(c.old_node_id == node for _, _, c in self.cp_state.changes_in_flight()) if self.cp_state else False

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
                        self.network.partition(self.writer.sim_name, name)  # type: ignore[attr-defined]
                self.event(f"partition AZ {az} from {self.writer.sim_name}")  # type: ignore[attr-defined]
            elif action == "heal" and self.network.cut:
                self.network.heal()
                self.event("heal partitions")
            elif action == "writer" and self.writer is not None:
                await self.crash_writer()
                await asyncio.sleep(rng.uniform(0.0, 0.5))
                await self.open_writer()
            elif action == "fence" and self.writer is not None:
                old = self.writer
                new = await self.open_writer()
                if new is not None:
                    # The old writer keeps running: anything it acknowledges from now on would be lost.
                    self.event(f"{old.sim_name} left running beside {new.sim_name}")  # type: ignore[attr-defined]
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
                        f"{opened.sim_name} opened with four of six segments of every PG unreachable: "  # type: ignore[attr-defined]
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
                self.network.partition(self.writer.sim_name, name)  # type: ignore[attr-defined]
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
            if self.writer is not None and not self.writer.fenced:
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

    # -- the run ------------------------------------------------------------------

    async def main(self) -> None:
        if self.config.replace:
            self._start_control_plane()
        self._create_segments()
        if await self.open_writer() is None:
            self.violation("the first writer could not open a healthy volume")
        try:
            tasks = [
                asyncio.create_task(self.client(i, random.Random(self.rng.getrandbits(64))))
                for i in range(self.config.clients)
            ]
            tasks.append(asyncio.create_task(self.faults(random.Random(self.rng.getrandbits(64)))))
            checker = asyncio.create_task(self._periodic_checks())
            supervising = asyncio.create_task(self.supervisor.run())
            if self.control_plane is not None:
                self.healing = asyncio.create_task(self._heal_loop())  # runs on through the final heal
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            checker.cancel()
            supervising.cancel()
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
            await self.heal_and_check()
        finally:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

    # -- segment replacement ------------------------------------------------------------

    async def restart_control_plane(self) -> None:
        """The control plane crashes (mid-round, perhaps) and restarts from what it last persisted: heartbeat
        times are lost, so every node is unhealthy until heard from again (control_plane.py rule 2)."""
        assert self.control_plane is not None and self.healing is not None
        self.healing.cancel()
        with contextlib.suppress(asyncio.CancelledError, Violation):
            await self.healing
        self.network.crash(repl.CONTROL_PLANE)
        saved = self.control_plane.saved
        self.cp_state = repl.cp.ControlPlane.from_dict(
            saved, repl.HEARTBEAT_TIMEOUT_MS, repl.FAILURE_TIMEOUT_MS, self.now() * 1000.0
        )
        self._start_control_plane()
        self.event("control plane restarted from its persisted state")
        if self._round is not None:
            self._note_changes(*self._round)  # what the cut round persisted before the crash
            self._round = None
        self.healing = asyncio.get_running_loop().create_task(self._heal_loop())

    def _start_control_plane(self) -> None:
        assert self.cp_state is not None
        loop = asyncio.get_running_loop()
        self.control_plane = repl.SimControlPlane(
            self.cp_state,
            repl.SimSegmentClient(self.network.channel_factory(repl.CONTROL_PLANE)),
            clock_ms=lambda: loop.time() * 1000.0,
        )
        handler = generic_handler(cp_pb.DESCRIPTOR.services_by_name["ControlPlaneService"], self.control_plane, cp_pb)
        self.network.serve(SimServer(repl.CONTROL_PLANE, [handler]))

    async def _heal_loop(self) -> None:
        """`ControlPlaneServicer.heal_once` every HEAL_INTERVAL_S; a round that raises is a bug (the real
        loop would only log it)."""
        assert self.control_plane is not None and self.cp_state is not None
        while True:
            await asyncio.sleep(repl.HEAL_INTERVAL_S)
            before = [self.cp_state.pg(VOLUME, i) for i in range(self.config.pgs)]
            acked_max = self.acked_lsn_max()  # acknowledged before any target this round measures
            self._round = (before, acked_max)  # for a restart that cuts the round short
            try:
                await self.control_plane.heal_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - reported as a violation
                self.violation(f"a control plane healing round raised {error!r}")
            self._round = None
            self._note_changes(before, acked_max)

    def acked_lsn_max(self) -> dict[int, int]:
        """Per PG, the highest LSN of its records in an acknowledged MTR."""
        out: dict[int, int] = {}
        for cpl in self.acked:
            for record in self.mtr_records(cpl):
                pg = self.pg_of(record.page_no)
                out[pg] = max(out.get(pg, 0), record.lsn)
        return out

    def _note_changes(self, before: list[Any], acked_max: dict[int, int]) -> None:
        """Count and log membership changes; check each change's target as it is set and when it completes."""
        assert self.cp_state is not None
        completed = False
        for old in before:
            new = self.cp_state.pg(VOLUME, old.pg_index)
            measured = {c.new_node_id for c in old.changes if c.target_lsn is not None}
            for c in new.changes:
                if (
                    c.target_lsn is not None
                    and c.new_node_id not in measured
                    and c.target_lsn < acked_max.get(new.pg_index, 0)
                ):
                    # The target is the highest SCL of >= 3 base segments holding the new epoch: any 3 meet
                    # the 4 whose SCLs acknowledged an MTR, so it is at least every acknowledged CPL.
                    self.violation(
                        f"PG {new.pg_index}: the target {c.target_lsn} for {c.new_node_id} replacing "
                        f"{c.old_node_id} is below LSN {acked_max[new.pg_index]} of an acknowledged MTR"
                    )
            if new.membership_epoch == old.membership_epoch:
                continue
            for c in new.changes:
                if c.new_node_id not in {o.new_node_id for o in old.changes}:
                    self.ops["replace_begun"] += 1
                    self.event(
                        f"PG {new.pg_index}: replacing {c.old_node_id} with {c.new_node_id} "
                        f"(membership epoch {new.membership_epoch})"
                    )
            for c in old.changes:
                if c.new_node_id in {n.new_node_id for n in new.changes}:
                    continue
                if c.new_node_id in new.node_ids:
                    completed = True
                    assert c.target_lsn is not None
                    for cpl in sorted(self.acked):
                        if cpl > c.target_lsn:
                            break
                        for record in self.mtr_records(cpl):
                            if self.pg_of(record.page_no) != new.pg_index or c.new_node_id in self.holders(record):
                                continue
                            self.violation(
                                f"PG {new.pg_index}: {c.new_node_id} replaced {c.old_node_id} at target "
                                f"{c.target_lsn} without holding LSN {record.lsn} of acknowledged MTR {cpl}"
                            )
                    self.ops["replace_completed"] += 1
                    self.event(
                        f"PG {new.pg_index}: {c.new_node_id} replaced {c.old_node_id} "
                        f"(membership epoch {new.membership_epoch})"
                    )
                else:
                    self.ops["replace_rolled_back"] += 1
                    self.event(
                        f"PG {new.pg_index}: rolled back {c.old_node_id} -> {c.new_node_id} "
                        f"(membership epoch {new.membership_epoch})"
                    )
        if completed:
            # The target's safety property: the new base set holds a write quorum of every acknowledged MTR.
            for cpl in sorted(self.acked):
                self.check_durable(cpl, "when a replacement completed")

    async def _settle_membership(self, writer: Volume) -> None:
        """Healed, every change ends (completes or rolls back), orphans go and the writer follows."""
        assert self.cp_state is not None
        deadline = self.now() + SETTLE_S
        while True:
            pending = [
                f"PG {pg.pg_index} changes {[(c.old_node_id, c.new_node_id) for c in pg.changes]}"
                for _, pg, _ in self.cp_state.changes_in_flight()
            ]
            pending += [f"orphan {o.segment_id} on {o.node_id}" for o in self.cp_state.orphans()]
            for i in range(self.config.pgs):
                epoch = self.cp_state.pg(VOLUME, i).membership_epoch
                if writer.pgs[i].membership_epoch != epoch:
                    pending.append(f"writer at PG {i} membership epoch {writer.pgs[i].membership_epoch} < {epoch}")
            if not pending:
                break
            if self.now() > deadline:
                self.violation(f"membership did not settle {SETTLE_S:g} s after healing: {'; '.join(pending[:4])}")
            await asyncio.sleep(0.5)
        for i in range(self.config.pgs):
            base, everyone = self.membership(i)
            azs = sorted(self.nodes[n].az for n in base)
            if len(set(base)) != 6 or base != everyone or azs != ["a", "a", "b", "b", "c", "c"]:
                self.violation(f"after healing PG {i} is held by {everyone} (base {base}), not six segments two per AZ")
        self.event(
            "membership settled: "
            + "; ".join(
                f"PG {i} {','.join(self.membership(i)[0])} epoch {self.cp_state.pg(VOLUME, i).membership_epoch}"
                for i in range(self.config.pgs)
            )
        )

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
            await self._settle_membership(writer)
        self.check_truncations()
        for cpl, (token, _, _) in sorted(self.acked.items()):
            if cpl > writer.vdl:
                self.violation(f"acknowledged MTR {token} (CPL {cpl}) is above the final VDL {writer.vdl}: lost")
            if any(self.truncated(r) for r in self.mtr_records(cpl)):
                self.violation(f"acknowledged MTR {token} (CPL {cpl}) was truncated")
            self.check_durable(cpl, "after healing")
        pages = sorted({p.page_no for _, patches, _ in self.acked.values() for p in patches} | {0})
        try:
            read_point, images = await writer.read(pages)
        except StorageError as error:
            self.violation(f"after healing, the final read failed: {error.message}")
        self.check_read(writer, read_point, images)
        await self.scrub_everything()
        await self.check_convergence(writer)
        integrity.check_scl_truth(self)
        self.check_agreement()
        for token in self.refused:
            for lsn, record in self.records.items():
                if record.data == token and lsn <= writer.vdl and not self.truncated(record):
                    self.violation(
                        f"write {token.decode()} was refused as definitely not done, yet its record "
                        f"LSN {lsn} is durable at or below VDL {writer.vdl}"
                    )
        self.event(f"final VDL {writer.vdl}, {len(self.acked)} acknowledged MTRs readable")

    async def scrub_everything(self) -> None:
        """Healed, a full scrub pass over every node (a fresh `Scrubber`, so from each segment's start) finds
        every rotten copy still stored: the detection half of invariant 6 (`check_read` is the never-served
        half). What it quarantines, gossip and hydration then restore (checked by the convergence after)."""
        left = [k for k, rotted in self.rotten.items() if self.disk.get(*k) == rotted]
        for node in self.nodes.values():
            assert node.store is not None and node.servicer is not None
            await Scrubber(node.store, node.servicer._on_writer).scrub_pass()
        for name, table, key in left:
            if self.disk.get(name, table, key) == self.rotten[(name, table, key)]:
                self.violation(
                    f"a full scrub pass after healing left the rotten {table.decode()} copy under key "
                    f"{key.hex()} on {name}"
                )
        self.ops["rot_found_by_final_scrub"] = len(left)
        if left:
            self.event(f"final scrub quarantined {len(left)} rotten copies")

    async def check_convergence(self, writer: Volume) -> None:
        """Healed, every segment catches up (writer resends, gossip) to its PG's read point."""
        assert writer.log is not None
        deadline = self.now() + CONVERGE_S
        while True:
            behind = []
            for pg in self.geometry.protection_groups:
                target = writer.log.read_point(pg.pg_index)
                for name in self.membership(pg.pg_index)[1]:
                    node = self.nodes[name]
                    seg = node.store.segments.get(f"{VOLUME}/pg-{pg.pg_index:05d}") if node.store else None
                    if seg is None or seg.tracker.scl < target or not seg.whole:
                        behind.append(
                            f"{name} PG {pg.pg_index} SCL {seg.tracker.scl if seg else '-'} < {target}"
                            if seg is None or seg.tracker.scl < target
                            else f"{name} PG {pg.pg_index} not whole (SCL {seg.tracker.scl}, high water "
                            f"{seg.meta.scl_high_water}, rebuilding {seg.meta.rebuilding})"
                        )
            if not behind:
                self.event("every segment caught up")
                return
            if self.now() > deadline:
                self.violation(f"segments did not converge {CONVERGE_S:g} s after healing: {'; '.join(behind[:4])}")
            await asyncio.sleep(0.5)

    def check_agreement(self) -> None:
        """Segments agree on every LSN two of them hold (a rotten copy aside)."""
        for pg in self.geometry.protection_groups:
            seen: dict[int, tuple[str, bytes]] = {}
            for name in self.nodes:
                meta = integrity.meta_on_disk(self, name, f"{VOLUME}/pg-{pg.pg_index:05d}")
                if meta is None:
                    continue
                prefix = meta.seg_no.to_bytes(4, "big")
                for key in self.disk.keys(name, RECORDS):
                    if not key.startswith(prefix) or (name, RECORDS, key) in self.rotten:
                        continue
                    lsn = int.from_bytes(key[4:], "big")
                    raw = self.disk.get(name, RECORDS, key)
                    other = seen.setdefault(lsn, (name, raw))
                    if other[1] != raw:
                        self.violation(f"PG {pg.pg_index}: {name} and {other[0]} hold different records at LSN {lsn}")


WRITE_QUORUM_REAL = WRITE_QUORUM  # what the design needs, whatever a mutation does to the writer


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
