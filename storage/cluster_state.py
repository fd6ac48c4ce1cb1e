"""The compute side of a cluster as the control plane keeps it: instances (one writer, readers), their
heartbeats, the failure detector's judgement, the choice of the reader to promote, and endpoints.

Pure: no gRPC, no clock, no file. The caller passes the time (`now_ms`, any monotonic clock) and carries
out the effects (Promote/StepDown calls, persisting `to_dict()`): storage/cluster_server.py.

Rules
1. An instance is live when it has been heard from (registered or heartbeat) since this control plane
   started and at most `writer_timeout_ms` ago. Heard-times are never persisted.
2. Roles. The writer is `writer_id` (None when there is none). Each writer gets its own generation:
   the generation is bumped when an instance is made writer by registration and when a promotion
   begins, and never decreases. A promotion in progress is `promoting_id`; while it runs there is no
   writer.
3. RegisterCompute answers WRITER when the instance is the recorded writer (a writer restarting fast,
   before it was declared gone: it re-opens its volumes anyway, a recovery at a new volume epoch, so
   giving it the role back is safe), or when there is no writer, no promotion under way and the
   instance did not ask to be a reader only. Anyone else is a READER (when the recorded writer is
   silent, the failure detector promotes a reader, possibly this one, with the old writer's volumes).
4. ComputeHeartbeat answers the role the instance must have: the recorded writer and the instance
   being promoted are WRITER; an instance claiming WRITER is accepted as the writer only when no writer
   is recorded, no promotion runs and its generation is newer than the current one, or is the current
   one and no other instance was made writer at it (a control plane that lost its record, or a
   promotion whose answer was lost: at most one writer per generation); everyone else is READER (a
   writer told READER steps down: a newer one was chosen). A heartbeat from an unknown instance
   records it again (after a control plane restart instances come back by heartbeating). An instance
   never makes itself writer on a heartbeat answer: only Promote does.
5. The writer is gone (`writer_gone`) when, at least `restart_grace_ms` after start and with no
   promotion under way, there is no writer or the writer is not live.
6. Promotion target (`choose_promotion`): a live reader, the lowest failover tier first, then the most
   caught up (highest applied VDL summed over its volumes, then lowest summed LSN lag, then lowest lag
   p99), then the instance id.
7. A manual failover (`plan_failover`) is refused, changing nothing: an unknown instance (NOT_FOUND),
   the writer itself, an instance that is not a live reader, a lagging one (its lag p99 or the age of
   its last word from the writer above FAILOVER_LAG_MAX_MS, or it does not follow a volume the writer
   has open), no reader at all, or a failover already under way (FAILED_PRECONDITION).
8. Endpoints: `cluster` resolves to the live writer (UNAVAILABLE while there is none: a failover is
   under way), `reader` to the live readers rotated per resolve (the live writer when there is none),
   a custom endpoint to its live members rotated (UNAVAILABLE when none is). Resolve never returns an
   instance that is not live. Custom endpoints name instances known at creation; removing an instance
   later leaves the name (it resolves again if the instance comes back).
9. Removal: the live writer and the instance being promoted cannot be removed (fail over first).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum

from sixfold.storage.cluster_limits import (
    CLUSTER_ENDPOINT,
    ENDPOINT_COUNT_MAX,
    FAILOVER_LAG_MAX_MS,
    INSTANCE_COUNT_MAX,
    KIND_CUSTOM,
    READER_ENDPOINT,
    RESERVED_ENDPOINTS,
    RESTART_GRACE_MS,
    WRITER_TIMEOUT_MS,
    ClusterFull,
    EndpointExists,
    FailoverRefused,
    UnknownEndpoint,
    UnknownInstance,
    VolumeLag,
    validate_address,
    validate_endpoint_name,
    validate_instance_id,
    validate_lags,
    validate_new_endpoint,
    validate_priority,
    validate_volume_ids,
)
from sixfold.storage.errors import InvalidRequest, Unavailable

NO_WRITER_SENTENCE = "no writer right now (a failover is under way); retry in a moment"


class Role(IntEnum):
    """The values are storage.v1.ComputeRole's."""

    WRITER = 1
    READER = 2


@dataclass
class Instance:
    instance_id: str
    address: str
    failover_priority: int = 0
    reader_only: bool = False
    generation: int = 0  # the generation it last acted under
    last_heard_ms: float | None = None  # None: not heard from since this control plane started
    volumes: tuple[VolumeLag, ...] = ()

    def age_ms(self, now_ms: float) -> float | None:
        return None if self.last_heard_ms is None else max(0.0, now_ms - self.last_heard_ms)

    def caught_up_key(self) -> tuple[int, int, float]:
        return (
            -sum(v.applied_vdl for v in self.volumes),
            sum(v.lag_lsns for v in self.volumes),
            max((v.lag_ms_p99 for v in self.volumes), default=0.0),
        )


@dataclass(frozen=True)
class Assignment:
    """What RegisterCompute and ComputeHeartbeat answer."""

    role: Role
    generation: int
    writer_id: str
    writer_address: str


@dataclass(frozen=True)
class Promotion:
    """A promotion begun: Promote(generation, volume_ids) goes to `instance_id`; with `step_down`, the
    old writer is asked to StepDown first (a manual failover while it is live)."""

    instance_id: str
    address: str
    generation: int
    volume_ids: tuple[str, ...]
    old_writer_id: str = ""
    old_writer_address: str = ""
    step_down: bool = False


@dataclass(frozen=True)
class Resolution:
    instance_ids: tuple[str, ...]
    addresses: tuple[str, ...]
    generation: int


@dataclass
class ClusterState:
    started_ms: float
    writer_timeout_ms: float = WRITER_TIMEOUT_MS
    restart_grace_ms: float = RESTART_GRACE_MS
    instances: dict[str, Instance] = field(default_factory=dict)
    writer_id: str | None = None
    promoting_id: str | None = None
    generation: int = 0
    writer_volume_ids: tuple[str, ...] = ()  # the volumes the writer has open (what a promotion opens)
    generation_writer_id: str = ""  # the instance made writer (or being promoted) at `generation`
    endpoints: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _rotation: int = 0

    # -- liveness -----------------------------------------------------------------

    def alive(self, instance_id: str, now_ms: float) -> bool:
        instance = self.instances.get(instance_id)
        if instance is None or instance.last_heard_ms is None:
            return False
        return now_ms - instance.last_heard_ms <= self.writer_timeout_ms

    def live_writer(self, now_ms: float) -> Instance | None:
        if self.writer_id is None or not self.alive(self.writer_id, now_ms):
            return None
        return self.instances[self.writer_id]

    def live_readers(self, now_ms: float) -> list[Instance]:
        return [
            i
            for i in sorted(self.instances.values(), key=lambda i: i.instance_id)
            if i.instance_id not in (self.writer_id, self.promoting_id) and self.alive(i.instance_id, now_ms)
        ]

    def writer_gone(self, now_ms: float) -> bool:
        """Rule 5: whether the failure detector should promote a reader now."""
        if self.promoting_id is not None or now_ms - self.started_ms < self.restart_grace_ms:
            return False
        return self.live_writer(now_ms) is None

    def writer_silence_ms(self, now_ms: float) -> float | None:
        """How long the recorded writer has been silent (None: no writer, or not heard since start)."""
        writer = self.instances.get(self.writer_id or "")
        return None if writer is None else writer.age_ms(now_ms)

    # -- registration and heartbeats ------------------------------------------------

    def register(
        self, instance_id: str, address: str, failover_priority: int, reader_only: bool, now_ms: float
    ) -> Assignment:
        """Rule 3."""
        validate_instance_id(instance_id)
        validate_address(instance_id, address)
        validate_priority(instance_id, failover_priority)
        instance = self._instance(instance_id, address)
        instance.address, instance.failover_priority, instance.reader_only = address, failover_priority, reader_only
        instance.last_heard_ms = now_ms
        if self.writer_id is None and self.promoting_id is None and not reader_only:
            self.generation += 1
            self.writer_id = self.generation_writer_id = instance_id
        instance.generation = self.generation
        assignment = self._assignment(instance_id)
        if instance_id == self.promoting_id:  # it restarted while being promoted: its Promote call fails
            return replace(assignment, role=Role.READER)
        return assignment

    def heartbeat(
        self,
        instance_id: str,
        address: str,
        role: Role | None,
        generation: int,
        volumes: list[VolumeLag],
        open_volume_ids: list[str],
        now_ms: float,
    ) -> Assignment:
        """Rule 4. `role` is the role the instance believes it has (None: unspecified)."""
        validate_instance_id(instance_id)
        validate_address(instance_id, address)
        lags = validate_lags(instance_id, volumes)
        open_ids = validate_volume_ids(instance_id, open_volume_ids)
        instance = self._instance(instance_id, address)
        instance.address, instance.last_heard_ms, instance.volumes = address, now_ms, lags
        instance.generation = generation
        if (
            role == Role.WRITER
            and self.writer_id is None
            and self.promoting_id is None
            and self._claim_fits(instance_id, generation)
        ):
            self.writer_id, self.generation, self.generation_writer_id = instance_id, generation, instance_id
        if instance_id == self.writer_id and role == Role.WRITER and open_ids:
            self.writer_volume_ids = open_ids
        return self._assignment(instance_id)

    def _claim_fits(self, instance_id: str, generation: int) -> bool:
        if generation > self.generation:
            return True
        return generation == self.generation >= 1 and self.generation_writer_id in ("", instance_id)

    def _instance(self, instance_id: str, address: str) -> Instance:
        instance = self.instances.get(instance_id)
        if instance is None:
            if len(self.instances) >= INSTANCE_COUNT_MAX:
                raise ClusterFull(
                    f"the cluster already has {INSTANCE_COUNT_MAX} compute instances; remove one "
                    f"(`sixfold replica remove`) before adding {instance_id}"
                )
            instance = self.instances[instance_id] = Instance(instance_id, address)
        return instance

    def _assignment(self, instance_id: str) -> Assignment:
        is_writer = instance_id in (self.writer_id, self.promoting_id)
        writer = self.instances.get(self.writer_id or "")
        return Assignment(
            Role.WRITER if is_writer else Role.READER,
            self.generation,
            writer.instance_id if writer else "",
            writer.address if writer else "",
        )

    # -- promotion ------------------------------------------------------------------

    def choose_promotion(self, now_ms: float, exclude: frozenset[str] | set[str] = frozenset()) -> str | None:
        """Rule 6: the reader to promote, or None when there is no live reader left to try."""
        candidates = [i for i in self.live_readers(now_ms) if i.instance_id not in exclude]
        if not candidates:
            return None
        best = min(candidates, key=lambda i: (i.failover_priority, *i.caught_up_key(), i.instance_id))
        return best.instance_id

    def begin_promotion(self, instance_id: str, now_ms: float) -> Promotion:
        """Promote `instance_id`, a live reader: a new generation, no writer until it completes."""
        assert self.promoting_id is None, self.promoting_id
        assert instance_id in {i.instance_id for i in self.live_readers(now_ms)}, instance_id
        old = self.instances.get(self.writer_id or "")
        old_alive = old is not None and self.alive(old.instance_id, now_ms)
        self.generation += 1
        self.promoting_id, self.writer_id, self.generation_writer_id = instance_id, None, instance_id
        target = self.instances[instance_id]
        return Promotion(
            instance_id,
            target.address,
            self.generation,
            self.writer_volume_ids,
            old.instance_id if old else "",
            old.address if old else "",
            old_alive,
        )

    def complete_promotion(self, promotion: Promotion, now_ms: float, volume_ids: tuple[str, ...] = ()) -> bool:
        """Promote answered: the instance is the writer (False: the state moved on meanwhile)."""
        if self.promoting_id != promotion.instance_id or self.generation != promotion.generation:
            return False
        instance = self.instances[promotion.instance_id]
        self.promoting_id, self.writer_id = None, promotion.instance_id
        instance.last_heard_ms, instance.generation = now_ms, promotion.generation
        self.writer_volume_ids = volume_ids or promotion.volume_ids
        return True

    def fail_promotion(self, promotion: Promotion) -> None:
        """Promote failed: no writer; the next candidate may be tried (the instance stays a reader)."""
        if self.promoting_id == promotion.instance_id and self.generation == promotion.generation:
            self.promoting_id = None

    def plan_failover(self, to_instance_id: str, now_ms: float) -> str:
        """Rule 7: the instance a manual failover promotes; raises (changing nothing) when refused."""
        if self.promoting_id is not None:
            raise FailoverRefused(
                f"a failover is already under way (promoting {self.promoting_id}); retry once it is done"
            )
        readers = self.live_readers(now_ms)
        if to_instance_id:
            validate_instance_id(to_instance_id)
            if to_instance_id not in self.instances:
                raise UnknownInstance(
                    f"no compute instance {to_instance_id} in the cluster; `sixfold status` lists the instances"
                )
            if to_instance_id == self.writer_id:
                raise FailoverRefused(f"{to_instance_id} is already the writer; name a reader to fail over to")
            if to_instance_id not in {r.instance_id for r in readers}:
                age = self.instances[to_instance_id].age_ms(now_ms)
                heard = "not heard from since the control plane started" if age is None else f"silent for {age:.0f} ms"
                raise FailoverRefused(f"{to_instance_id} is not a live reader ({heard}); nothing was changed")
            lagging = self.lagging_reason(to_instance_id, now_ms)
            if lagging:
                raise FailoverRefused(f"{to_instance_id} is lagging ({lagging}); nothing was changed")
            return to_instance_id
        if not readers:
            raise FailoverRefused("the cluster has no live reader to fail over to; add one with `sixfold replica add`")
        lagging_ids = {r.instance_id for r in readers if self.lagging_reason(r.instance_id, now_ms)}
        chosen = self.choose_promotion(now_ms, lagging_ids)
        if chosen is None:
            reasons = "; ".join(f"{i}: {self.lagging_reason(i, now_ms)}" for i in sorted(lagging_ids))
            raise FailoverRefused(f"every live reader is lagging ({reasons}); nothing was changed")
        return chosen

    def lagging_reason(self, instance_id: str, now_ms: float) -> str:
        """Why a reader is too far behind to be made writer by hand ("" when it is not)."""
        reader = self.instances[instance_id]
        lags = {v.volume_id: v for v in reader.volumes}
        if self.live_writer(now_ms) is not None:
            missing = [v for v in self.writer_volume_ids if v not in lags]
            if missing:
                return f"it does not follow volume {missing[0]} that the writer has open"
        for lag in reader.volumes:
            if lag.lag_ms_p99 > FAILOVER_LAG_MAX_MS:
                return f"volume {lag.volume_id} lag p99 {lag.lag_ms_p99:.0f} ms, above {FAILOVER_LAG_MAX_MS} ms"
            if lag.last_heard_ms > FAILOVER_LAG_MAX_MS:
                return (
                    f"volume {lag.volume_id} last heard from the writer {lag.last_heard_ms} ms ago, "
                    f"above {FAILOVER_LAG_MAX_MS} ms"
                )
        return ""

    def remove(self, instance_id: str, now_ms: float) -> None:
        validate_instance_id(instance_id)
        if instance_id not in self.instances:
            raise UnknownInstance(f"no compute instance {instance_id} in the cluster; nothing to remove")
        if instance_id == self.promoting_id:
            raise FailoverRefused(f"{instance_id} is being promoted to writer; remove it once the failover is done")
        if instance_id == self.writer_id:
            if self.alive(instance_id, now_ms):
                raise FailoverRefused(
                    f"{instance_id} is the live writer; fail over first (`sixfold failover`), then remove it"
                )
            self.writer_id = None
        del self.instances[instance_id]

    # -- endpoints --------------------------------------------------------------------

    def create_endpoint(self, name: str, instance_ids: list[str]) -> tuple[str, ...]:
        members = validate_new_endpoint(name, instance_ids, set(self.instances))
        existing = self.endpoints.get(name)
        if existing is not None:
            if existing == members:
                return members
            raise EndpointExists(
                f"endpoint {name} already exists over {', '.join(existing)}; delete it first to change its instances"
            )
        if len(self.endpoints) >= ENDPOINT_COUNT_MAX:
            raise ClusterFull(f"the cluster already has {ENDPOINT_COUNT_MAX} custom endpoints; delete one first")
        self.endpoints[name] = members
        return members

    def delete_endpoint(self, name: str) -> None:
        validate_endpoint_name(name)
        if name in RESERVED_ENDPOINTS:
            raise InvalidRequest(f"endpoint {name} is built in and cannot be deleted")
        if name not in self.endpoints:
            raise UnknownEndpoint(f"no endpoint {name}; `sixfold endpoint list` lists them")
        del self.endpoints[name]

    def list_endpoints(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, kind, instance ids): the built-in ones first, then the custom ones by name."""
        builtin = [(CLUSTER_ENDPOINT, CLUSTER_ENDPOINT, ()), (READER_ENDPOINT, READER_ENDPOINT, ())]
        return builtin + [(n, KIND_CUSTOM, m) for n, m in sorted(self.endpoints.items())]

    def resolve(self, name: str, now_ms: float) -> Resolution:
        """Rule 8."""
        validate_endpoint_name(name)
        writer = self.live_writer(now_ms)
        if name == CLUSTER_ENDPOINT:
            if writer is None:
                raise Unavailable(NO_WRITER_SENTENCE)
            return self._resolution([writer], rotate=False)
        if name == READER_ENDPOINT:
            readers = self.live_readers(now_ms)
            if readers:
                return self._resolution(readers, rotate=True)
            if writer is None:
                raise Unavailable(f"no live instance behind the reader endpoint ({NO_WRITER_SENTENCE})")
            return self._resolution([writer], rotate=False)
        members = self.endpoints.get(name)
        if members is None:
            raise UnknownEndpoint(f"no endpoint {name}; `sixfold endpoint list` lists them")
        live = [self.instances[m] for m in members if m != self.promoting_id and self.alive(m, now_ms)]
        if not live:
            raise Unavailable(f"none of endpoint {name}'s instances ({', '.join(members)}) is live; retry in a moment")
        return self._resolution(live, rotate=True)

    def _resolution(self, instances: list[Instance], rotate: bool) -> Resolution:
        if rotate:
            self._rotation += 1
            k = self._rotation % len(instances)
            instances = instances[k:] + instances[:k]
        return Resolution(tuple(i.instance_id for i in instances), tuple(i.address for i in instances), self.generation)

    def view(self, instance_id: str) -> Instance:
        """A copy of one instance's record (for listing)."""
        return replace(self.instances[instance_id])
