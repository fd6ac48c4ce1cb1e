"""compute.v1.InstanceService over the compute instance (compute/instance.py): the writer's redo to
readers (FollowRedo, compute/redo_rpc.py), promotion and stepping down (called by the control plane), and
the instance's status."""

from __future__ import annotations

from typing import Any

from sixfold.compute.instance import Instance
from sixfold.compute.redo_publisher import RedoPublisher
from sixfold.compute.redo_rpc import RedoRpcs
from sixfold.compute.v1 import instance_service_pb2 as ipb
from sixfold.storage.errors import InvalidRequest

VOLUMES_PER_PROMOTION_MAX = 1024


class InstanceServicer(RedoRpcs):
    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    async def publisher_of(self, volume_id: str) -> RedoPublisher:
        return await self.instance.publisher_of(volume_id)

    async def Promote(self, request: ipb.PromoteRequest, context: Any) -> ipb.PromoteResponse:
        if request.generation == 0:
            raise InvalidRequest("a promotion names the failover generation it is for (generation 0 is none)")
        if len(request.volume_ids) > VOLUMES_PER_PROMOTION_MAX:
            raise InvalidRequest(f"{len(request.volume_ids)} volumes; at most {VOLUMES_PER_PROMOTION_MAX}")
        return await self.instance.promote(request.generation, list(request.volume_ids))

    async def StepDown(self, request: ipb.StepDownRequest, context: Any) -> ipb.StepDownResponse:
        return await self.instance.step_down(request.generation)

    async def GetInstanceStatus(
        self, request: ipb.GetInstanceStatusRequest, context: Any
    ) -> ipb.GetInstanceStatusResponse:
        return self.instance.status()
