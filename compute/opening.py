"""Opening a volume: the recovery that fences older writers and finds where the volume ends, carried out.

compute/recovery_steps.py decides the sequence (which segments to ask, for what, when to ask again, when
an attempt fails and when to try another); compute/recovery.py does the arithmetic. This module makes the
calls the step machine asks for, tells it what came back, and, once an attempt recovered the volume,
builds the writer's log from the plan, re-replicates what the plan adopted and starts the streams. The
volume serves once every adopted record met write quorum again (`_wait_replicated`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable

import grpc

from sixfold.compute.cache import BufferCache
from sixfold.compute.errors import QuorumNotMet
from sixfold.compute.following import MembershipFollowing
from sixfold.compute.recovery import SegmentReport
from sixfold.compute.recovery_steps import (
    QUORUM_RETRY_PAUSE_S,
    Action,
    Ask,
    Failed,
    FetchRecords,
    GiveUp,
    GiveWay,
    NewerEpochSeen,
    OpenAttempts,
    PgSegments,
    ReadTail,
    Recovered,
    RecoverySteps,
    Step,
    TakeEpoch,
    Truncating,
    ask_again,
)
from sixfold.compute.segment_stream import SegmentStream
from sixfold.compute.volume_base import RPC_TIMEOUT_S, T, loop_time
from sixfold.compute.volume_log import VolumeLog
from sixfold.storage.records import LogRecord
from sixfold.storage.segment import TruncationRange
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.wire import record_from_proto, record_to_proto, truncation_to_proto

log = logging.getLogger("sixfold.compute.volume")  # every part of the volume logs under one name

RECOVERY_REPLICATION_TIMEOUT_S = 30.0
REPLICATION_CHECK_S = 0.5  # while re-replicating, how long VDL may stand still before the writer asks for SCLs
READ_RECORDS_BATCH = 5_000
# A segment deletes what the range voids (at most LAL's worth of records) before it answers; a lost
# request is asked again within the step's QUORUM_STEP_TIMEOUT_S (applying a range twice is harmless).
TRUNCATE_TIMEOUT_S = 2.0


class Superseded(Exception):
    """A regain gives way: another writer raised a newer epoch or finished a recovery meanwhile."""


def report_of(state: pb.SegmentState) -> SegmentReport:
    return SegmentReport(
        segment_id=state.segment_id,
        scl=state.scl,
        highest_lsn=state.highest_lsn,
        volume_epoch=state.volume_epoch,
        vdl_hint=state.vdl_hint,
        truncation_ranges=tuple(TruncationRange(r.start_lsn, r.end_lsn, r.epoch) for r in state.truncation_ranges),
    )


class Opening(MembershipFollowing):
    async def open(self) -> None:
        reply = await self.control_plane.DescribeVolume(
            cp_pb.DescribeVolumeRequest(volume_id=self.volume_id), timeout=RPC_TIMEOUT_S * 5
        )
        self._apply_geometry(reply.geometry)
        self.cache = BufferCache(self.page_size)
        target_vdl = await self._recover_until_open()
        # The streams run from here on: no second attempt, which would fence them.
        self._start_following()
        await self._wait_replicated(target_vdl)
        assert self.log is not None
        self.running_epoch = self.epoch
        log.info(
            "volume %s open: epoch %d, VDL %d, next LSN %d, %d PGs",
            self.volume_id,
            self.epoch,
            self.log.vdl,
            self.log.next_lsn,
            len(self.pgs),
        )

    async def _recover_until_open(self, regain: bool = False) -> int:
        """Recovery attempts, each with a newer epoch, until one succeeds or OPEN_DEADLINE_S passed. A regain
        (`regain`) gives way instead (`Superseded`) when another writer raised an epoch at least as new as
        its attempt's or finished a recovery since this writer's last open: two writers must not take the
        volume from each other in turn."""
        attempts = OpenAttempts(self.volume_id, loop_time(), regain)
        while attempts.next_attempt():
            try:
                return await self._recover(regain)
            except QuorumNotMet as error:
                log.warning("recovery of %s, attempt %d: %s", self.volume_id, attempts.attempt, error.message)
                outcome = attempts.failed(loop_time(), str(error), self.refused_epoch, self.epoch)
            if isinstance(outcome, GiveWay):
                raise Superseded(outcome.reason)
            if isinstance(outcome, GiveUp):
                break
            await asyncio.sleep(outcome.seconds)
        raise QuorumNotMet(attempts.give_up().reason)

    async def _recover(self, regain: bool = False) -> int:
        """One attempt: fence older writers, find VCL and VDL, truncate above VDL, start the streams, as the
        step machine says. Returns the VDL that re-replicated records must reach before the volume serves."""
        steps = RecoverySteps(
            self.volume_id,
            {i: PgSegments(tuple(pg.streams), pg.membership) for i, pg in self.pgs.items()},
            lal=self.lal,
            running_epoch=self.running_epoch,
            regain=regain,
            sent=self._sent_truncations,
            refused_epoch=self.refused_epoch,
        )
        actions = steps.start(loop_time())
        while True:
            *effects, request = actions
            for effect in effects:
                self._take_effect(effect)
            match request:
                case Ask():
                    await self._ask(steps, request)
                    actions = steps.round_over(loop_time(), self.fenced, self.refused_epoch)
                case FetchRecords():
                    actions = await self._fetch(steps, request)
                case ReadTail():
                    actions = await self._read_tail(steps, request)
                case Failed(reason=reason, superseded=True):
                    raise Superseded(reason)
                case Failed(reason=reason):
                    raise QuorumNotMet(reason)
                case Recovered():
                    return self._serve_recovered(request)
                case _:
                    raise AssertionError(f"a recovery attempt ended its actions with {request}")

    def _take_effect(self, effect: Action) -> None:
        match effect:
            case TakeEpoch(epoch=epoch):
                self.epoch = epoch
            case NewerEpochSeen(epoch=epoch):
                self.refused_epoch = max(self.refused_epoch, epoch)
            case Truncating(plan=plan):
                log.info(
                    "recovery of %s: floor %d, VCL %d, VDL %d, truncating [%d, %d] with epoch %d, %d records to "
                    "re-replicate",
                    self.volume_id,
                    plan.floor,
                    plan.vcl,
                    plan.vdl,
                    plan.truncation.start_lsn,
                    plan.truncation.end_lsn,
                    self.epoch,
                    len(plan.readopt),
                )
                self.truncations = plan.known_truncations
                self.truncation_protos = [truncation_to_proto(r) for r in self.truncations]
                self._sent_truncations.update(self.truncations)
                if self.on_truncating is not None:
                    self.on_truncating(self.truncations)
            case _:
                raise AssertionError(f"{effect} is a request, not an effect")

    async def _ask(self, steps: RecoverySteps, ask: Ask) -> None:
        """One round of a quorum step: every answer goes to the step machine as it arrives."""
        if ask.pause_s:
            await asyncio.sleep(ask.pause_s)
        streams = self.pgs[ask.pg_index].streams
        calls = {node: self._step_call(steps, ask.step, streams[node]) for node in ask.nodes}
        await self._gather(calls, enough=lambda _: steps.enough())

    def _step_call(self, steps: RecoverySteps, step: Step, stream: SegmentStream) -> Callable[[], Awaitable[None]]:
        node = stream.node_id

        async def read_state() -> None:
            reply = await stream.stub.GetSegmentState(
                pb.GetSegmentStateRequest(segment_id=stream.segment_id), timeout=RPC_TIMEOUT_S
            )
            steps.state_answered(node, report_of(reply.state), reply.state.whole)

        async def raise_epoch() -> None:
            await stream.stub.RaiseVolumeEpoch(
                pb.RaiseVolumeEpochRequest(
                    segment_id=stream.segment_id, volume_epoch=self.epoch, writer_id=self.writer_id
                ),
                timeout=RPC_TIMEOUT_S,
            )
            steps.epoch_taken(node)

        async def truncate() -> None:
            assert steps.plan is not None
            reply = await stream.stub.TruncateSegment(
                pb.TruncateSegmentRequest(
                    segment_id=stream.segment_id,
                    volume_epoch=self.epoch,
                    range=truncation_to_proto(steps.plan.truncation),
                ),
                timeout=TRUNCATE_TIMEOUT_S,
            )
            steps.truncation_taken(node, reply.state.scl)

        if step is Step.RAISE_EPOCH:
            return raise_epoch
        if step is Step.TRUNCATE:
            return truncate
        return read_state

    async def _fetch(self, steps: RecoverySteps, fetch: FetchRecords) -> list[Action]:
        stream = self.pgs[fetch.pg_index].streams[fetch.node]
        try:
            records = await self._fetch_records(stream, fetch.from_lsn, fetch.to_lsn)
        except grpc.aio.AioRpcError as error:
            return steps.records_failed(
                f"PG {fetch.pg_index}: reading records {fetch.from_lsn}..{fetch.to_lsn} from {fetch.node} failed: "
                f"{error.code().name} {error.details()}"
            )
        except QuorumNotMet as error:  # what it sent cannot be planned on
            return steps.records_failed(error.message)
        return steps.records_fetched(loop_time(), records)

    async def _read_tail(self, steps: RecoverySteps, tail: ReadTail) -> list[Action]:
        stream = self.pgs[tail.pg_index].streams[tail.node]
        request = pb.GetSegmentStateRequest(segment_id=stream.segment_id, tail_at_or_below_lsn=tail.at_or_below_lsn)
        try:
            reply = await self._call_again(
                functools.partial(stream.stub.GetSegmentState, request, timeout=RPC_TIMEOUT_S)
            )
        except grpc.aio.AioRpcError as error:
            return steps.tail_failed(
                f"PG {tail.pg_index}: the chain tail on {tail.node} could not be read: "
                f"{error.code().name} {error.details()}"
            )
        return steps.tail_read(loop_time(), reply.state.whole, reply.state.scl, reply.tail_lsn)

    def _serve_recovered(self, recovered: Recovered) -> int:
        """Build the writer's log from the plan, send the adopted records to every segment of their PG
        again, start the streams. Returns the VDL the adopted records must reach again."""
        plan = recovered.plan
        volume_log = VolumeLog(
            pg_of_page=self.pg_of_page,
            epoch=self.epoch,
            lal=self.lal,
            vdl=plan.floor,
            next_lsn=plan.next_lsn,
            prev_volume_lsn=plan.vdl,
        )
        for pg in self.pgs.values():
            volume_log.add_pg(pg.pg_index, pg.membership, last_lsn=recovered.tails[pg.pg_index])
        volume_log.adopt(plan.readopt, plan.vdl)
        self.log = volume_log
        for pg_index, scls in recovered.scl_after.items():
            for node, scl in scls.items():
                volume_log.on_ack(pg_index, node, scl)
        by_pg: dict[int, list[tuple[int, pb.LogRecord]]] = {}
        for record, pg_index in plan.readopt:
            by_pg.setdefault(pg_index, []).append((record.lsn, record_to_proto(record)))
        for pg in self.pgs.values():
            for stream in pg.streams.values():
                stream.enqueue(by_pg.get(pg.pg_index, []))
                stream.start()
        self._release(volume_log.advance())
        return plan.vdl

    async def _wait_replicated(self, target_vdl: int) -> None:
        assert self.log is not None
        deadline = loop_time() + RECOVERY_REPLICATION_TIMEOUT_S
        while self.log.vdl < target_vdl:
            if loop_time() > deadline:
                raise QuorumNotMet(
                    f"records up to VDL {target_vdl} did not reach write quorum again in "
                    f"{RECOVERY_REPLICATION_TIMEOUT_S:.0f} s"
                )
            self._vdl_advanced.clear()
            try:
                await asyncio.wait_for(self._vdl_advanced.wait(), REPLICATION_CHECK_S)
            except TimeoutError:
                await self._refresh_scls()

    async def _refresh_scls(self) -> None:
        """Ask every segment for its SCL, as a stream does when it connects. A segment that caught up
        through gossip acknowledges nothing new (the records it lacked were never sent to it again), so
        without asking, recovery would not count it towards the write quorum it waits for."""
        for pg in list(self.pgs.values()):
            for node, reply in (await self._gather(self._state_calls(pg))).items():
                stream = pg.streams.get(node)  # a membership change may have closed it meanwhile
                if stream is not None and self.state_counts(f"segment {stream.segment_id} on {node}", reply.state):
                    stream.on_scl(reply.state.scl)

    @staticmethod
    async def _call_again(call: Callable[[], Awaitable[T]]) -> T:
        """One recovery call, asked again (recovery_steps rule 5) when it timed out or its node was
        unreachable: a lost message must not hold recovery up for a long deadline."""
        tries = 0
        while True:
            tries += 1
            try:
                return await call()
            except grpc.aio.AioRpcError as error:
                retryable = error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
                if not ask_again(tries, retryable):
                    raise
            await asyncio.sleep(QUORUM_RETRY_PAUSE_S)

    async def _fetch_records(self, stream: SegmentStream, floor: int, to_lsn: int) -> list[LogRecord]:
        records: list[LogRecord] = []
        cursor = floor
        while cursor < to_lsn:
            request = pb.ReadRecordsRequest(
                segment_id=stream.segment_id, from_lsn=cursor, to_lsn=to_lsn, max_records=READ_RECORDS_BATCH
            )
            reply = await self._call_again(functools.partial(stream.stub.ReadRecords, request, timeout=RPC_TIMEOUT_S))
            if reply.scl < to_lsn:
                # The copy changed since its state was read (it lost records, or its disk failed and it is being
                # rebuilt): what it returns may stop short of records that met quorum. Never plan on that.
                raise QuorumNotMet(
                    f"segment on {stream.node_id} no longer holds the chain to LSN {to_lsn} "
                    f"(its SCL is {reply.scl}); reading again"
                )
            batch = [record_from_proto(r) for r in reply.records]
            for record, crc in batch:
                if record.crc() != crc:
                    raise QuorumNotMet(f"record LSN {record.lsn} from {stream.node_id} failed its CRC-32C check")
            records.extend(r for r, _ in batch)
            if not reply.more or not batch:
                break
            cursor = batch[-1][0].lsn
        return records
