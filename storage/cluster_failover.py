"""The control plane's failure detector and failover: carrying out storage/cluster_state.py's promotions
by calling compute.v1.InstanceService (Promote, StepDown) on compute instances.

1. Every DETECT_INTERVAL_S the detector asks the state whether the writer is gone (no heartbeat for
   WRITER_TIMEOUT_MS, never within RESTART_GRACE_MS of the control plane's start). If so it promotes the
   reader the state chooses: the generation is bumped and persisted first, then Promote(generation,
   the old writer's open volumes) is called with a PROMOTE_TIMEOUT_S deadline; once it answers, the
   instance is recorded as the writer. If it fails, the next candidate is tried; when none is left the
   detector waits FAILED_ROUND_BACKOFF_S before it tries again.
2. While a promotion runs, ResolveEndpoint('cluster') is UNAVAILABLE with a retryable sentence and
   heartbeats answer no writer.
3. Failover by request (`sixfold failover`): refused with nothing changed when the state says so; else
   the live writer is asked to StepDown (generation + 1) first, then the target is promoted. A writer
   that does not answer StepDown is told READER by its next heartbeat, and the new writer's recovery at a
   new volume epoch fences it anyway.
Only one failover runs at a time (`_failover_lock`); state changes run under the servicer's lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.compute.v1 import instance_service_pb2_grpc
from sixfold.storage.cluster_limits import INSTANCE_COUNT_MAX, FailoverRefused
from sixfold.storage.cluster_state import ClusterState, Promotion
from sixfold.storage.control_plane_calls import describe_failure
from sixfold.storage.errors import Unavailable
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import cluster_service_pb2 as cl_pb2

log = logging.getLogger("sixfold.control_plane.cluster")

DETECT_INTERVAL_S = 0.05
PROMOTE_TIMEOUT_S = 10.0
STEP_DOWN_TIMEOUT_S = 5.0
FAILED_ROUND_BACKOFF_S = 1.0
CHANNELS_MAX = 2 * INSTANCE_COUNT_MAX


class InstanceClient(Protocol):
    """How the control plane reaches compute instances (tests may stand in their own)."""

    async def promote(
        self, address: str, generation: int, volume_ids: tuple[str, ...], timeout_s: float
    ) -> ipb.PromoteResponse: ...

    async def step_down(
        self, address: str, generation: int, new_writer_id: str, timeout_s: float
    ) -> ipb.StepDownResponse: ...

    async def close(self) -> None: ...


class GrpcInstanceClient:
    """InstanceService over one cached channel per address (a failover must not wait for a connection
    set up from scratch more than it has to)."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, address: str) -> instance_service_pb2_grpc.InstanceServiceStub:
        channel = self._channels.get(address)
        if channel is None:
            if len(self._channels) >= CHANNELS_MAX:
                oldest = next(iter(self._channels))
                asyncio.get_running_loop().create_task(self._channels.pop(oldest).close())
            channel = self._channels[address] = transport.aio_channel(address, CHANNEL_OPTIONS)
        return instance_service_pb2_grpc.InstanceServiceStub(channel)

    async def promote(
        self, address: str, generation: int, volume_ids: tuple[str, ...], timeout_s: float
    ) -> ipb.PromoteResponse:
        request = ipb.PromoteRequest(generation=generation, volume_ids=list(volume_ids))
        reply: ipb.PromoteResponse = await self._stub(address).Promote(request, timeout=timeout_s)
        return reply

    async def step_down(
        self, address: str, generation: int, new_writer_id: str, timeout_s: float
    ) -> ipb.StepDownResponse:
        request = ipb.StepDownRequest(generation=generation, new_writer_id=new_writer_id)
        reply: ipb.StepDownResponse = await self._stub(address).StepDown(request, timeout=timeout_s)
        return reply

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        await asyncio.gather(*(c.close() for c in channels), return_exceptions=True)


class FailoverRpcs:
    """The detector task and the Failover RPC; the servicer supplies the state, its lock and persistence."""

    state: ClusterState
    clock_ms: Callable[[], float]
    instance_client: InstanceClient
    _lock: asyncio.Lock
    _persist: Callable[[], Awaitable[None]]

    def _init_failover(self) -> None:
        self._failover_lock = asyncio.Lock()
        self._detector: asyncio.Task[None] | None = None
        self._warned_no_reader = False
        self.failovers: list[dict[str, Any]] = []  # the last few, for tests and logs

    def start_detector(self) -> None:
        assert self._detector is None
        self._detector = asyncio.get_running_loop().create_task(self._detect(), name="cluster-failure-detector")

    async def stop_detector(self) -> None:
        task, self._detector = self._detector, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.instance_client.close()

    async def _detect(self) -> None:
        while True:
            await asyncio.sleep(DETECT_INTERVAL_S)
            try:
                if self.state.writer_gone(self.clock_ms()) and not await self._failover_round():
                    await asyncio.sleep(FAILED_ROUND_BACKOFF_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a failure detector round failed")

    async def _failover_round(self) -> bool:
        """Rule 1: promote the best reader, then the next. False when nothing could be promoted."""
        async with self._failover_lock:
            detected_ms = self.clock_ms()
            if not self.state.writer_gone(detected_ms):
                return True
            old_writer = self.state.writer_id or ""
            silence = self.state.writer_silence_ms(detected_ms)
            tried: set[str] = set()
            while True:
                async with self._lock:
                    target = self.state.choose_promotion(self.clock_ms(), tried)
                    if target is None:
                        break
                    promotion = self.state.begin_promotion(target, self.clock_ms())
                    await self._persist()
                self._warned_no_reader = False
                tried.add(target)
                if await self._promote(promotion) is None:
                    promoted_ms = self.clock_ms() - detected_ms
                    log.warning(
                        "failover: writer %s gone (no heartbeat for %s); promoted %s to writer at generation %d "
                        "in %.0f ms after detection",
                        old_writer or "(none)",
                        "ever since the control plane started" if silence is None else f"{silence:.0f} ms",
                        target,
                        promotion.generation,
                        promoted_ms,
                    )
                    self._record(old_writer, promotion, silence, promoted_ms, "detector")
                    return True
            if not tried and not self._warned_no_reader and self.state.instances:  # none yet: nothing to say
                log.warning("the cluster has no live writer and no live reader to promote; waiting for one")
                self._warned_no_reader = True
            return not tried

    async def _promote(self, promotion: Promotion) -> str | None:
        """Promote and record the outcome; None when it is the writer now, else what went wrong."""
        started = self.clock_ms()
        try:
            reply = await self.instance_client.promote(
                promotion.address, promotion.generation, promotion.volume_ids, PROMOTE_TIMEOUT_S
            )
        except (TimeoutError, grpc.RpcError, OSError) as error:
            failure = describe_failure(error)
            async with self._lock:
                self.state.fail_promotion(promotion)
            log.warning(
                "promoting %s at generation %d failed after %.0f ms: %s",
                promotion.instance_id,
                promotion.generation,
                self.clock_ms() - started,
                failure,
            )
            return failure
        async with self._lock:
            opened = tuple(sorted(reply.volume_epochs))
            if not self.state.complete_promotion(promotion, self.clock_ms(), opened):
                return "the cluster changed while it was being promoted"
            await self._persist()
        return None

    def _record(self, old: str, promotion: Promotion, silence: float | None, took_ms: float, by: str) -> None:
        self.failovers = self.failovers[-15:] + [
            {
                "by": by,
                "old_writer_id": old,
                "new_writer_id": promotion.instance_id,
                "generation": promotion.generation,
                "detected_after_ms": silence,
                "took_ms": took_ms,
            }
        ]

    async def Failover(self, request: cl_pb2.FailoverRequest, context: Any) -> cl_pb2.FailoverResponse:
        """Rule 3."""
        if self._failover_lock.locked():
            raise FailoverRefused("a failover is already under way; retry once it is done")
        async with self._failover_lock:
            started = self.clock_ms()
            async with self._lock:
                target = self.state.plan_failover(request.to_instance_id, started)
                promotion = self.state.begin_promotion(target, started)
                await self._persist()
            step_down_ms = 0.0
            if promotion.step_down:
                step_down_ms = await self._step_down(promotion)
            failure = await self._promote(promotion)
            if failure is not None:
                raise Unavailable(
                    f"could not promote {target}: {failure}; the cluster has no writer now and the failure "
                    "detector promotes another reader within a second; retry the failover once it has"
                )
            took_ms = self.clock_ms() - started
        log.warning(
            "failover by request: %s -> %s at generation %d in %.0f ms (step down %.0f ms, promote %.0f ms)",
            promotion.old_writer_id or "(none)",
            target,
            promotion.generation,
            took_ms,
            step_down_ms,
            took_ms - step_down_ms,
        )
        self._record(promotion.old_writer_id, promotion, None, took_ms, "request")
        return cl_pb2.FailoverResponse(
            old_writer_id=promotion.old_writer_id,
            new_writer_id=target,
            generation=promotion.generation,
            took_ms=round(took_ms),
        )

    async def _step_down(self, promotion: Promotion) -> float:
        started = self.clock_ms()
        try:
            await self.instance_client.step_down(
                promotion.old_writer_address, promotion.generation, promotion.instance_id, STEP_DOWN_TIMEOUT_S
            )
        except (TimeoutError, grpc.RpcError, OSError) as error:
            log.warning(
                "writer %s did not step down (%s); promoting %s anyway: its next heartbeat tells it to, and the "
                "new writer's recovery fences it",
                promotion.old_writer_id,
                describe_failure(error),
                promotion.instance_id,
            )
        return self.clock_ms() - started
