"""Read replicas in a run (`SimConfig.replicas`): readers that follow the writer's redo and serve reads.

Each reader is a real `ReplicaVolume` (compute/replica_volume.py) named `reader-SLOT.INCARNATION` on the sim
network: it reads pages from the segments through the same fake network the writer uses, from its own
endpoint. Its redo comes from the writer's real `RedoPublisher` (compute/redo_publisher.py), in process, over
a simulated link (`_link`): each message is delayed by a seeded latency (rarely a spike), the link breaks now
and then (the subscription ends; the reader subscribes again and gets a snapshot), the reader pauses for a
while (a slow or stopped process: its queue on the writer may overflow and be cut off), and a writer crashed
or cut off from the reader sends nothing more. A reader follows whichever writer the run has now (as it would
learn from the control plane): when the writer changes, it subscribes to the new one. A reader also restarts
now and then (a new incarnation, an empty cache).

Each reader has a client (`_reader_client`): a read transaction pins the reader's read point, reads a few
client pages at it, and unpins. Checked at once (`_check_reader_read`):
- the read point is at or below the highest VDL any writer of the run had reached by that moment (never
  newer than durable; `watch_vdl`);
- a reader's read points never decrease (per incarnation: a restarted reader starts from its first snapshot);
- every page is exactly the model's page at that read point (oracle.py).
After the final heal every reader catches up to the writer's VDL within READER_CATCH_UP_S and reads every
client page at its read point (`check_readers_at_end`). Promotion (a reader becoming the writer) is in
promotion.py. Not combined with time travel (a backtrack moves the volume under the readers).

The deliberate break `reader-above-vdl` (mutations.py) is done here: the link adds to each message the records
of the writer's MTRs not yet durable and a VDL at the newest of them (`ahead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

from sixfold.compute.placement import Channels
from sixfold.compute.redo_publisher import RedoPublisher
from sixfold.compute.replica_state import RedoRefused
from sixfold.compute.replica_volume import ReplicaVolume
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.volume import Volume
from sixfold.storage.errors import StorageError
from sixfold.storage.records import decode_record
from sixfold.tools.sim.config import SIM_WALL_CLOCK_START_US, VOLUME
from sixfold.tools.sim.nodes import FakeControlPlane, FollowedControlPlane
from sixfold.tools.sim.workload import Workload

LINK_LATENCY_S = (0.0005, 0.004)  # per message
LINK_SPIKE_PROBABILITY = 0.02
LINK_SPIKE_S = 0.3
LINK_DROP_PROBABILITY = 0.01  # per message: the stream breaks; the reader subscribes again (a snapshot)
LINK_PAUSE_PROBABILITY = 0.004  # per message: the reader stalls this long (a paused or very slow process)
LINK_PAUSE_S = (0.5, 3.0)
RESUBSCRIBE_S = (0.05, 0.4)  # the reader's backoff before it subscribes again
WAIT_POLL_S = 0.25  # how often a reader waiting for a message looks whether its writer changed or went away
REPORT_EVERY_S = 0.1  # a reader reports its lowest pinned read point and applied VDL this often
READER_RESTART_PROBABILITY = 0.03  # per read transaction of its client
READ_GAP_S = (0.02, 0.8)
READ_HOLD_S = (0.0, 0.3)  # a read transaction stays open (pinned) this long after its reads
READER_CATCH_UP_S = 15.0
REPLICA_COUNTERS = (
    "reader_read_ok",
    "reader_read_failed",
    "reader_subscribes",
    "reader_refusals",
    "reader_link_drops",
    "reader_pauses",
    "reader_restarts",
    "reader_lag_lsns_max",
    "promotions",
    "promotions_beside_old_writer",
    "promotions_failed",
)


@dataclass
class SimReader:
    """One incarnation of a reader: its ReplicaVolume and the link task feeding it."""

    slot: int
    name: str
    replica: Any  # ReplicaVolume
    rng: random.Random
    link: asyncio.Task[None] | None = None
    following: Volume | None = None  # the writer whose redo it follows now
    last_read_point: int = 0  # the newest read point one of its transactions pinned
    closed: bool = False
    handed: int = 0  # `reader-above-vdl`: the VDL the link handed last


def ahead(message: Any, writer: Volume, handed: int) -> Any:
    """`reader-above-vdl`: a batch with the records of every MTR the writer has not yet made durable appended,
    and a VDL at the newest of them. `handed`: the VDL the link handed the reader last (records at or below it
    went already; the VDL never goes back)."""
    if message.snapshot:
        return message
    out = ipb.FollowRedoResponse()
    out.CopyFrom(message)
    del out.records[:]
    out.records.extend(r for r in message.records if decode_record(r).lsn > handed)
    base = max(message.vdl, handed)
    pending = sorted((cpl, records) for cpl, records in writer._mtr_records.items() if cpl > base)
    out.records.extend(r.encode() for _, records in pending for r in records)
    out.vdl = max([base, *(cpl for cpl, _ in pending)])
    return out


class Readers(Workload):
    """The readers of a run, their links and clients, and the checks of what they serve."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.readers: list[SimReader] = []
        self.publishers: dict[str, Any] = {}  # writer id -> its RedoPublisher
        self.incarnations: dict[int, int] = {}  # slot -> incarnations started
        self.durable_high = 0  # the highest VDL any writer of the run reached: nothing above it is durable
        if config.replicas:
            self.ops.update(dict.fromkeys(REPLICA_COUNTERS, 0))

    # -- readers ------------------------------------------------------------------------

    def publisher_of(self, writer: Volume) -> Any:
        publisher = self.publishers.get(writer.writer_id)
        if publisher is None:
            publisher = self.publishers[writer.writer_id] = RedoPublisher(writer)
        return publisher

    def watch_vdl(self, writer: Volume) -> None:
        """Keep `durable_high` at the highest VDL the writer reaches. (Its VDL now is no measure: a regain
        restarts its log at the recovery's floor, below VDLs it released, and climbs back as it re-replicates.)"""

        def released(_: Any) -> None:
            self.durable_high = max(self.durable_high, writer.vdl)

        released(None)
        writer.release_listeners.append(released)

    async def start_reader(self, slot: int) -> SimReader:
        n = self.incarnations[slot] = self.incarnations.get(slot, 0) + 1
        name = f"reader-{slot}.{n}"
        self.network.down.discard(name)
        control_plane: Any = (
            FakeControlPlane(self.geometry) if self.control_plane is None else FollowedControlPlane(self)
        )
        loop = asyncio.get_running_loop()
        replica = ReplicaVolume(
            VOLUME,
            control_plane,
            Channels(self.network.channel_factory(name)),
            reader_id=name,
            wall_clock_us=lambda: SIM_WALL_CLOCK_START_US + int(loop.time() * 1_000_000),
        )
        reader = SimReader(slot, name, replica, random.Random(self.rng.getrandbits(64)))
        with contextlib.suppress(StorageError):  # (the geometry is loaded again on first use)
            await replica.start()
        if slot < len(self.readers):
            self.readers[slot] = reader
        else:
            self.readers.append(reader)
        reader.link = asyncio.get_running_loop().create_task(self._link(reader))
        self.event(f"{name} started")
        return reader

    async def crash_writer(self) -> None:
        """The writer's process stops: its redo publisher with it (every subscription ends)."""
        writer = self.writer
        await super().crash_writer()
        publisher = self.publishers.get(writer.writer_id) if writer is not None else None
        if publisher is not None:
            publisher.close()

    async def stop_reader(self, reader: SimReader, why: str) -> None:
        reader.closed = True
        if reader.link is not None:
            reader.link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader.link
        self.network.crash(reader.name)
        await reader.replica.close()
        self.event(f"{reader.name} stopped ({why}) at applied VDL {reader.replica.vdl}")

    async def replicas(self, rng: random.Random) -> None:
        """Start the readers and run their clients to the end."""
        for slot in range(self.config.replicas):
            await self.start_reader(slot)
        clients = [
            asyncio.create_task(self._reader_client(slot, random.Random(rng.getrandbits(64))))
            for slot in range(self.config.replicas)
        ]
        for task in clients:
            await task
        self.event("reader clients over")

    # -- the link -------------------------------------------------------------------------

    def _link_up(self, reader: SimReader, writer: Volume) -> bool:
        net = self.network
        return (
            writer.writer_id not in net.down
            and reader.name not in net.down
            and frozenset((writer.writer_id, reader.name)) not in net.cut
            and not writer.fenced
        )

    async def _link(self, reader: SimReader) -> None:
        """Follow the run's writer: subscribe, deliver each message after the link's delay, report, resubscribe."""
        rng = reader.rng
        while not reader.closed:
            writer = self.writer
            if writer is None or writer.log is None or not self._link_up(reader, writer):
                await asyncio.sleep(rng.uniform(*RESUBSCRIBE_S))
                continue
            reader.following = writer
            replica = reader.replica
            subscription = self.publisher_of(writer).subscribe(reader.name, replica.lowest_read_point())
            subscription.report(replica.lowest_read_point(), replica.vdl)
            self.ops["reader_subscribes"] += 1
            try:
                await self._follow(reader, writer, subscription, rng)
            except RedoRefused as error:
                self.ops["reader_refusals"] += 1
                self.event(f"{reader.name} refused a message from {writer.writer_id}: {error.message}")
            finally:
                subscription.close()
                replica.following = False
                replica.state.stream_lost()  # (as compute/replica_follow.py: the next stream starts with a snapshot)
            await asyncio.sleep(rng.uniform(*RESUBSCRIBE_S))

    async def _follow(self, reader: SimReader, writer: Volume, subscription: Any, rng: random.Random) -> None:
        next_message: asyncio.Task[Any] | None = None
        reported = self.now()
        try:
            while not reader.closed:
                if next_message is None:
                    next_message = asyncio.ensure_future(subscription.next())
                done, _ = await asyncio.wait({next_message}, timeout=WAIT_POLL_S)
                if self.now() - reported >= REPORT_EVERY_S:
                    subscription.report(reader.replica.lowest_read_point(), reader.replica.vdl)
                    reported = self.now()
                if self.writer is not writer or not self._link_up(reader, writer):
                    return  # a new writer (the control plane says so), or this one is gone
                if not done:
                    continue
                message, next_message = next_message.result(), None
                if message is None:
                    self.event(f"{reader.name}: {writer.writer_id} ended the stream: {subscription.closed_because}")
                    return  # the publisher ended the stream (cut off, or its writer closed)
                if self.config.mutation == "reader-above-vdl":
                    message = ahead(message, writer, reader.handed)
                    reader.handed = 0 if message.snapshot else message.vdl
                message = ipb.FollowRedoResponse.FromString(message.SerializeToString())  # over the wire
                delay = rng.uniform(*LINK_LATENCY_S)
                if rng.random() < LINK_SPIKE_PROBABILITY:
                    delay += rng.uniform(0, LINK_SPIKE_S)
                await asyncio.sleep(delay)
                if not self._link_up(reader, writer) or reader.closed:
                    return
                if rng.random() < LINK_DROP_PROBABILITY:
                    self.ops["reader_link_drops"] += 1
                    self.event(f"{reader.name}: the link to {writer.writer_id} broke")
                    return
                reader.replica.apply(message)
                reader.replica.following = True
                lag = max(0, writer.vdl - reader.replica.vdl)
                self.ops["reader_lag_lsns_max"] = max(self.ops["reader_lag_lsns_max"], lag)
                if rng.random() < LINK_PAUSE_PROBABILITY:
                    self.ops["reader_pauses"] += 1
                    pause = rng.uniform(*LINK_PAUSE_S)
                    self.event(f"{reader.name} pauses {pause:.2f} s at applied VDL {reader.replica.vdl}")
                    await asyncio.sleep(pause)
        finally:
            if next_message is not None:
                next_message.cancel()

    # -- the readers' clients ----------------------------------------------------------------

    async def _reader_client(self, slot: int, rng: random.Random) -> None:
        pages = self.client_pages()
        ops = self.config.ops_per_client
        for _ in range(ops):
            await asyncio.sleep(rng.uniform(READ_GAP_S[0], 2 * self.config.duration_s / ops))
            reader = self.readers[slot]
            if reader.closed:
                continue
            if rng.random() < READER_RESTART_PROBABILITY:
                self.ops["reader_restarts"] += 1
                await self.stop_reader(reader, "restarted")
                await self.start_reader(slot)
                continue
            await self.reader_read(reader, rng.sample(pages, rng.randint(1, 3)), rng.uniform(*READ_HOLD_S))

    async def reader_read(self, reader: SimReader, pages: list[int], hold_s: float = 0.0) -> bool:
        """One read transaction on a reader, checked: pin, read, (hold), unpin."""
        replica = reader.replica
        try:
            read_point = await replica.pin_read_point()
        except StorageError as error:
            self.ops["reader_read_failed"] += 1
            self.event(f"{reader.name} pin -> {type(error).__name__}: {error.message}")
            return False
        try:
            self._check_read_point(reader, read_point)
            try:
                images = await replica.read_at(pages, read_point)
            except StorageError as error:
                self.ops["reader_read_failed"] += 1
                self.event(f"{reader.name} read {pages} at {read_point} -> {type(error).__name__}")
                return False
            self.ops["reader_read_ok"] += 1
            self.event(f"{reader.name} read {pages} at {read_point}")
            self._check_pages(reader, read_point, pages, images)
            if hold_s:
                await asyncio.sleep(hold_s)
            return True
        finally:
            if not reader.closed:
                replica.unpin_read_point(read_point)

    def _check_read_point(self, reader: SimReader, read_point: int) -> None:
        durable = self.durable_high
        if read_point > durable:
            self.violation(
                f"{reader.name} pinned read point {read_point}, above the highest VDL any writer had ({durable}): "
                "a reader showed what is not durable"
            )
        if read_point < reader.last_read_point:
            self.violation(
                f"{reader.name} pinned read point {read_point} after {reader.last_read_point}: a reader went backwards"
            )
        reader.last_read_point = read_point

    def _check_pages(self, reader: SimReader, read_point: int, pages: list[int], images: list[bytes]) -> None:
        for page_no, data in zip(pages, images):
            expected = self.page_at(page_no, read_point)
            if data != expected:
                diff = next(i for i in range(len(expected)) if data[i] != expected[i])
                self.violation(
                    f"{reader.name}: page {page_no} read at {read_point} differs from the page at that point "
                    f"(first at byte {diff}: {data[diff : diff + 12]!r} vs {expected[diff : diff + 12]!r})"
                )

    # -- after the final heal -------------------------------------------------------------------

    async def check_readers_at_end(self, writer: Volume) -> None:
        """Every reader catches up to the writer's VDL on its own and reads every client page exactly."""
        pages = self.client_pages()
        deadline = self.now() + READER_CATCH_UP_S
        for slot in range(len(self.readers)):
            while (reader := self.readers[slot]).closed or (
                reader.replica.vdl < writer.vdl or not await self.reader_read(reader, pages)
            ):
                if self.now() > deadline:
                    self.violation(
                        f"after healing, {reader.name} did not catch up within {READER_CATCH_UP_S:g} s: applied VDL "
                        f"{reader.replica.vdl}, the writer's {writer.vdl}"
                    )
                await asyncio.sleep(0.25)
        self.event(f"every reader caught up to VDL {writer.vdl} and read every client page")
