"""One compute instance of a cluster and its role: the writer, or a reader (read replica) of the writer.

The control plane (storage/cluster_server.py) decides roles; this module carries them out. Rules:
1. Start. The instance registers (ClusterService.RegisterCompute, retried until the control plane answers);
   the answer is its role. Until then, and between roles, it serves nothing that needs a role (UNAVAILABLE,
   retryable).
2. Writer. Volumes open as writer on first use (compute/service.py: recovery at a new volume epoch); each
   open volume has a RedoPublisher (compute/redo_publisher.py) that streams its durable redo to readers.
3. Reader. Volumes are followed (compute/replicas.py); the SQL engines are read-only; opening a volume as
   writer is refused (FAILED_PRECONDITION, naming the cluster endpoint). The writer's address comes with
   every heartbeat answer; a new one (a failover) is followed at once.
4. Heartbeats every interval the control plane asks for, with the role, the generation and per-volume lag.
   A writer told READER (a newer writer was chosen while it was away or paused) steps down.
5. Promotion (InstanceService.Promote, from the control plane): the reader closes its read-only engines
   (their transactions abort with a clear status) and its replicas, then opens every volume it followed or
   was told about as writer — a recovery at a new volume epoch, which fences the old writer for good — and
   starts their SQL engines before it answers. If an open fails, it goes back to being a reader and the
   control plane tries another.
6. Stepping down (InstanceService.StepDown, or rule 4): the writer closes its engines and volumes (MTRs in
   flight get an outcome-unknown status) and follows the new writer.
7. A Promote or StepDown is carried out only after a heartbeat whose answer agrees (WRITER at exactly that
   generation; READER at that generation or newer): a single stray message changes nothing.
Role changes are serialized by one lock; a promotion or step-down for a generation already acted on
answers again without doing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import grpc

from sixfold.compute.redo_publisher import RedoPublisher
from sixfold.compute.replicas import ReplicaVolumes
from sixfold.compute.service import VolumeServicer
from sixfold.compute.sql_service import SqlEngines, default_engine_factory
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.volume import Channels, Volume
from sixfold.storage.errors import (
    REASON_NOT_WRITER,
    REASON_READ_REPLICA,
    InvalidRequest,
    StorageError,
    Unavailable,
)
from sixfold.storage.tasks import cancel_and_wait
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb

log = logging.getLogger("sixfold.compute.instance")

HEARTBEAT_INTERVAL_DEFAULT_S = 0.1
HEARTBEAT_TIMEOUT_S = 1.0
REGISTER_RETRY_S = 0.5
WRITER, READER, CHANGING = "writer", "reader", "changing"
_ROLE_OF_WIRE = {cl_pb.COMPUTE_ROLE_WRITER: WRITER, cl_pb.COMPUTE_ROLE_READER: READER}
_WIRE_OF_ROLE = {WRITER: cl_pb.COMPUTE_ROLE_WRITER, READER: cl_pb.COMPUTE_ROLE_READER}
_INSTANCE_ROLE = {
    WRITER: ipb.INSTANCE_ROLE_WRITER,
    READER: ipb.INSTANCE_ROLE_READER,
    CHANGING: ipb.INSTANCE_ROLE_CHANGING,
}


class ReadReplica(StorageError):
    """This instance is a read replica: it does not write (nor open volumes as writer)."""

    status_code_name = "FAILED_PRECONDITION"
    reason = REASON_READ_REPLICA


class RoleNotConfirmed(StorageError):
    """A Promote or StepDown that the control plane's record does not back (rule 7)."""

    status_code_name = "FAILED_PRECONDITION"


class NotWriter(StorageError):
    """A writer-only request (redo to follow, stepping down) reached an instance that is not the writer."""

    status_code_name = "FAILED_PRECONDITION"
    reason = REASON_NOT_WRITER


class Instance:
    def __init__(
        self,
        instance_id: str,
        cluster: Any,  # ClusterServiceStub (aio)
        control_plane: Any,  # ControlPlaneServiceStub (aio)
        channels: Channels,
        servicer: VolumeServicer,
        engines: SqlEngines,
        *,
        failover_priority: int = 0,
        reader_only: bool = False,
        default_volume: str | None = None,
    ) -> None:
        self.instance_id = instance_id
        self.address = ""  # set once the server is bound
        self.cluster = cluster
        self.control_plane = control_plane
        self.channels = channels
        self.servicer = servicer
        self.engines = engines
        self.failover_priority = failover_priority
        self.reader_only = reader_only
        self.default_volume = default_volume
        self.role = CHANGING
        self.generation = 0
        self.writer_id = ""
        self.writer_address = ""
        self.heartbeat_interval_s = HEARTBEAT_INTERVAL_DEFAULT_S
        self.replicas: ReplicaVolumes | None = None
        self._publishers: dict[str, tuple[Volume, RedoPublisher]] = {}
        self._role_lock = asyncio.Lock()
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.role_changes = 0
        servicer.check_writer = self.check_writer

    # -- what the servicers ask ---------------------------------------------------------------------

    def check_writer(self) -> None:
        """Rule 3: only the writer opens volumes (page reads and writes, SQL writes)."""
        if self.role == WRITER:
            return
        if self.role == CHANGING:
            raise Unavailable(f"compute instance {self.instance_id} is changing role (a failover); retry in a moment")
        raise ReadReplica(self.replica_sentence())

    def replica_sentence(self) -> str:
        now = f", now {self.writer_id}" if self.writer_id else ""
        return (
            f"compute instance {self.instance_id} is a read replica: it runs read-only SQL and key-value reads; "
            f"send writes and page reads to the cluster endpoint (the writer{now})"
        )

    async def publisher_of(self, volume_id: str) -> RedoPublisher:
        """Rule 2: the redo publisher of an open volume (opening it as writer if needed)."""
        if self.role != WRITER:
            raise NotWriter(
                f"compute instance {self.instance_id} is not the writer; follow the writer"
                + (f" {self.writer_id} at {self.writer_address}" if self.writer_id else "")
            )
        volume = await self.servicer.volume(volume_id)
        known = self._publishers.get(volume_id)
        if known is not None and known[0] is volume:
            return known[1]
        if known is not None:  # the volume was closed and opened again (a backtrack): a new stream of redo
            known[1].close()
        publisher = RedoPublisher(volume, writer_id=self.instance_id)
        self._publishers[volume_id] = (volume, publisher)
        return publisher

    def status(self) -> ipb.GetInstanceStatusResponse:
        return ipb.GetInstanceStatusResponse(
            instance_id=self.instance_id,
            role=_INSTANCE_ROLE[self.role],
            generation=self.generation,
            volumes=self._lags(),
            failover_priority=self.failover_priority,
        )

    def _lags(self) -> list[ipb.VolumeLag]:
        if self.role == WRITER:
            return [
                ipb.VolumeLag(volume_id=v.volume_id, applied_vdl=v.vdl, writer_vdl=v.vdl, following=False)
                for v in self.servicer.volumes.values()
            ]
        if self.role == READER and self.replicas is not None:
            return list(self.replicas.lags())
        return []

    # -- start and heartbeats (rules 1 and 4) ---------------------------------------------------------

    async def start(self, address: str) -> None:
        """Register until the control plane answers, take the role it gives, then heartbeat."""
        self.address = address
        attempts = 0
        while True:
            try:
                reply = await self.cluster.RegisterCompute(
                    cl_pb.RegisterComputeRequest(
                        instance_id=self.instance_id,
                        address=address,
                        failover_priority=self.failover_priority,
                        reader_only=self.reader_only,
                    ),
                    timeout=HEARTBEAT_TIMEOUT_S * 5,
                )
                break
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:  # trying again cannot help
                    raise InvalidRequest(
                        f"the control plane refused to register this instance: {error.details()}"
                    ) from None
                attempts += 1
                if attempts == 1 or attempts % 20 == 0:
                    log.warning(
                        "registering with the control plane failed (%s: %s); trying again every %.1f s",
                        error.code().name,
                        error.details(),
                        REGISTER_RETRY_S,
                    )
                await asyncio.sleep(REGISTER_RETRY_S)
        self._heard(reply)
        async with self._role_lock:
            if _ROLE_OF_WIRE.get(reply.role) == WRITER:
                await self._become_writer(reply.generation, [])
            else:
                await self._become_reader(wait=True)
        log.info("registered as %s (generation %d)", self.role, self.generation)
        self._heartbeat_task = asyncio.create_task(self._heartbeats(), name="compute-heartbeats")

    def _heard(self, reply: Any) -> None:
        if reply.heartbeat_interval_ms:
            self.heartbeat_interval_s = min(max(reply.heartbeat_interval_ms / 1000, 0.02), 5.0)
        if reply.writer_address != self.writer_address or reply.writer_id != self.writer_id:
            self.writer_id, self.writer_address = reply.writer_id, reply.writer_address
            if self.replicas is not None and reply.writer_address and reply.writer_id != self.instance_id:
                self.replicas.set_writer(reply.writer_address)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            try:
                reply = await self.cluster.ComputeHeartbeat(self._heartbeat_request(), timeout=HEARTBEAT_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                log.debug("heartbeat failed: %s %s", error.code().name, error.details())
                continue
            self._heard(reply)
            if self.role == WRITER and _ROLE_OF_WIRE.get(reply.role) == READER and reply.generation > self.generation:
                log.warning(
                    "the control plane chose writer %s (generation %d) while this writer (generation %d) was "
                    "away; stepping down",
                    reply.writer_id,
                    reply.generation,
                    self.generation,
                )
                try:
                    await self.step_down(reply.generation)
                except Exception:
                    log.exception("stepping down failed")

    def _heartbeat_request(self) -> cl_pb.ComputeHeartbeatRequest:
        volumes = [
            cl_pb.ComputeVolumeLag(
                volume_id=lag.volume_id,
                applied_vdl=lag.applied_vdl,
                lag_lsns=lag.lag_lsns,
                lag_ms_p50=lag.lag_ms_p50,
                lag_ms_p99=lag.lag_ms_p99,
                last_heard_ms=lag.last_heard_ms,
            )
            for lag in self._lags()
        ]
        return cl_pb.ComputeHeartbeatRequest(
            instance_id=self.instance_id,
            address=self.address,
            role=_WIRE_OF_ROLE.get(self.role, cl_pb.COMPUTE_ROLE_UNSPECIFIED),
            generation=self.generation,
            volumes=volumes,
            open_volume_ids=sorted(self.servicer.volumes) if self.role == WRITER else [],
        )

    # -- role changes (rules 5 and 6) -------------------------------------------------------------------

    async def promote(self, generation: int, volume_ids: list[str]) -> ipb.PromoteResponse:
        started = time.monotonic()
        async with self._role_lock:
            if self.role == WRITER:  # already the writer (an answer that was lost, or a control plane restart)
                self.generation = max(self.generation, generation)
                return self._promoted(started)
            if self.role != READER:
                raise NotWriter(f"compute instance {self.instance_id} is {self.role}; only a reader is promoted")
            await self._confirm(WRITER, generation, "promoted")
            assert self.replicas is not None
            to_open = set(volume_ids) | set(self.replicas.volume_ids())
            if self.default_volume:
                to_open.add(self.default_volume)
            engines = self.engines.started()
            log.warning("promoted to writer (generation %d): recovering %s", generation, sorted(to_open))
            try:
                await self._become_writer(generation, sorted(to_open), engines)
            except BaseException:
                log.exception("promotion failed; staying a reader")
                await self._close_writer()
                await self._become_reader()
                raise
            return self._promoted(started)

    async def _confirm(self, role: str, generation: int, what: str) -> None:
        """Rule 7: a role change is carried out only when the control plane's own answer agrees with it: one
        message (a stray or hostile Promote, a StepDown with a made-up generation) must not fence the writer
        or leave the cluster without one."""
        try:
            reply = await self.cluster.ComputeHeartbeat(self._heartbeat_request(), timeout=HEARTBEAT_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            raise Unavailable(
                f"compute instance {self.instance_id} could not confirm with the control plane that it is {what} "
                f"({error.code().name}); nothing was changed"
            ) from None
        self._heard(reply)
        said = _ROLE_OF_WIRE.get(reply.role, "no role")
        agrees = said == role and (reply.generation == generation if role == WRITER else reply.generation >= generation)
        if not agrees:
            raise RoleNotConfirmed(
                f"compute instance {self.instance_id} is not {what} at generation {generation}: the control plane "
                f"says {said} at generation {reply.generation}; nothing was changed"
            )

    def _promoted(self, started: float) -> ipb.PromoteResponse:
        return ipb.PromoteResponse(
            role=_INSTANCE_ROLE[self.role],
            volume_epochs={v.volume_id: v.epoch for v in self.servicer.volumes.values()},
            took_ms=int((time.monotonic() - started) * 1000),
        )

    async def step_down(self, generation: int) -> ipb.StepDownResponse:
        async with self._role_lock:
            if self.role != WRITER:
                if self.role == READER:
                    return ipb.StepDownResponse(role=ipb.INSTANCE_ROLE_READER)
                raise NotWriter(f"compute instance {self.instance_id} is {self.role}; only the writer steps down")
            await self._confirm(READER, generation, "stepping down")
            vdl_of = {v.volume_id: v.vdl for v in self.servicer.volumes.values()}
            log.warning("stepping down to reader (generation %d -> %d)", self.generation, generation)
            self.generation = max(self.generation, generation)
            await self._close_writer()
            await self._become_reader()
            return ipb.StepDownResponse(role=ipb.INSTANCE_ROLE_READER, vdl_of=vdl_of)

    async def _become_writer(self, generation: int, volume_ids: list[str], engines: list[str] | None = None) -> None:
        self.role = CHANGING
        await self.engines.switch(None)
        if self.replicas is not None:
            await self.replicas.close()
            self.replicas = None
        self.generation = max(self.generation, generation)
        self.role = WRITER
        self.role_changes += 1
        for volume_id in volume_ids:
            await self.servicer.volume(volume_id)
        await self.engines.switch(self.servicer, default_engine_factory)
        for volume_id in engines or []:
            await self.engines.get(volume_id)

    async def _close_writer(self) -> None:
        self.role = CHANGING
        await self.engines.switch(None)
        for _, publisher in self._publishers.values():
            publisher.close()
        self._publishers.clear()
        await self.servicer.close()

    async def _become_reader(self, *, wait: bool = False) -> None:
        from sixfold.compute.sql import SqlEngine

        self.role = CHANGING
        replicas = ReplicaVolumes(self.control_plane, self.channels, self.instance_id, self.writer_address)
        self.replicas = replicas
        await self.engines.switch(replicas, lambda volume: SqlEngine(volume, read_only=True))
        self.role = READER
        self.role_changes += 1
        if self.default_volume:
            # Following starts now; waiting for the first snapshot is only for a reader starting up (its SERVING
            # then means it reads). A writer stepping down must answer at once: the new writer is not there yet.
            follow = asyncio.create_task(self._follow(replicas, self.default_volume))
            if wait:
                await follow
            else:
                self._background.add(follow)
                follow.add_done_callback(self._background.discard)

    async def _follow(self, replicas: ReplicaVolumes, volume_id: str) -> None:
        with contextlib.suppress(StorageError):
            await replicas.volume(volume_id)

    async def close(self) -> None:
        await cancel_and_wait(self._heartbeat_task)
        for task in list(self._background):
            await cancel_and_wait(task)
        async with self._role_lock:
            if self.role == WRITER:
                await self._close_writer()
            await self.engines.switch(None)
            if self.replicas is not None:
                await self.replicas.close()
                self.replicas = None
