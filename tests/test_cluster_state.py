"""The compute cluster's pure state (storage/cluster_state.py): roles, heartbeats, failure detection,
promotion choice, manual failover refusals, endpoints; and a Hypothesis state machine checking random
sequences against a brute-force model."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sixfold.storage.cluster_limits import (
    FAILOVER_LAG_MAX_MS,
    RESTART_GRACE_MS,
    WRITER_TIMEOUT_MS,
    ClusterFull,
    EndpointExists,
    FailoverRefused,
    UnknownEndpoint,
    UnknownInstance,
    VolumeLag,
)
from sixfold.storage.cluster_state import ClusterState, Promotion, Role
from sixfold.storage.cluster_state_file import cluster_from_dict, cluster_to_dict
from sixfold.storage.errors import InvalidRequest, StorageError, Unavailable
from tests.depth import examples

pytestmark = pytest.mark.unit

IDS = ["compute", "replica1", "replica2", "replica3"]
T0 = RESTART_GRACE_MS  # past the start grace


def addr(instance_id: str) -> str:
    return f"127.0.0.1:{7000 + IDS.index(instance_id) if instance_id in IDS else 7999}"


def beat(s: ClusterState, i: str, now: float, role: Role = Role.READER, gen: int | None = None, vdl: int = 0) -> Role:
    generation = s.generation if gen is None else gen
    lags = [VolumeLag("vol0", vdl)] if vdl else []
    opened = ["vol0"] if role == Role.WRITER else []
    return s.heartbeat(i, addr(i), role, generation, lags, opened, now).role


def cluster(now: float = T0) -> ClusterState:
    s = ClusterState(0)
    assert s.register("compute", addr("compute"), 0, False, now).role == Role.WRITER
    for i in IDS[1:]:
        assert s.register(i, addr(i), 1, True, now).role == Role.READER
    return s


def test_roles_at_registration_and_a_fast_restarting_writer_keeps_its_role() -> None:
    s = cluster()
    assert (s.writer_id, s.generation) == ("compute", 1)
    again = s.register("compute", addr("compute"), 0, False, T0 + 10)
    assert (again.role, again.generation) == (Role.WRITER, 1)
    # A reader never takes over by registering while a writer is recorded, live or not.
    assert s.register("replica1", addr("replica1"), 1, False, T0 + 5000).role == Role.READER
    with pytest.raises(InvalidRequest, match="failover priority 16"):
        s.register("replica1", addr("replica1"), 16, False, T0)
    with pytest.raises(InvalidRequest, match="HOST:PORT"):
        s.register("replica1", "nowhere", 1, False, T0)
    with pytest.raises(InvalidRequest, match="instance id"):
        s.register("bad id", addr("compute"), 1, False, T0)


def test_detection_waits_for_the_timeout_and_the_restart_grace() -> None:
    s = cluster(now=0)
    for t in range(0, int(RESTART_GRACE_MS), 100):
        for i in IDS[1:]:
            beat(s, i, t)
    assert not s.writer_gone(RESTART_GRACE_MS - 1)  # silent for long, but within the grace after start
    s2 = cluster()
    beat(s2, "compute", T0, Role.WRITER, 1)
    assert not s2.writer_gone(T0 + WRITER_TIMEOUT_MS)
    assert s2.writer_gone(T0 + WRITER_TIMEOUT_MS + 1)


def test_promotion_choice_tier_then_caught_up_then_id() -> None:
    s = cluster()
    now = T0 + 1000
    beat(s, "replica1", now, vdl=100)
    beat(s, "replica2", now, vdl=200)
    beat(s, "replica3", now, vdl=200)
    assert s.writer_gone(now)
    assert s.choose_promotion(now) == "replica2"
    s.register("replica3", addr("replica3"), 0, True, now)  # a lower tier wins over being caught up
    assert s.choose_promotion(now) == "replica3"
    assert s.choose_promotion(now, {"replica3"}) == "replica2"
    p = s.begin_promotion("replica3", now)
    assert (p.generation, p.volume_ids, p.old_writer_id, p.step_down) == (2, (), "compute", False)
    assert not s.writer_gone(now) and s.writer_id is None
    with pytest.raises(Unavailable, match="a failover is under way"):
        s.resolve("cluster", now)
    # The promoted instance is answered WRITER by its heartbeats; the old writer coming back is a reader.
    assert beat(s, "replica3", now + 10) == Role.WRITER
    assert beat(s, "compute", now + 10, Role.WRITER, 1) == Role.READER
    s.fail_promotion(p)
    assert s.choose_promotion(now + 10, {"replica3"}) == "compute"  # back, as a reader of tier 0
    assert s.choose_promotion(now + 10, {"replica3", "compute"}) == "replica2"
    p2 = s.begin_promotion("replica2", now + 10)
    assert p2.generation == 3 and s.complete_promotion(p2, now + 20)
    assert s.resolve("cluster", now + 20).instance_ids == ("replica2",)
    # replica3 was promoted at generation 2 and its answer lost: its claim at 2 is refused now.
    assert beat(s, "replica3", now + 30, Role.WRITER, 2) == Role.READER


def test_manual_failover_refusals_change_nothing() -> None:
    s = cluster()
    now = T0 + 100
    beat(s, "compute", now, Role.WRITER, 1)
    beat(s, "replica1", now, vdl=10)
    s.instances["replica1"].volumes = (VolumeLag("vol0", 10, lag_ms_p99=FAILOVER_LAG_MAX_MS + 1),)
    beat(s, "replica2", now - 5000, vdl=10)  # silent since
    before = cluster_to_dict(s)
    cases: list[tuple[str, type[StorageError], str]] = [
        ("ghost", UnknownInstance, "no compute instance ghost in the cluster"),
        ("compute", FailoverRefused, "compute is already the writer"),
        ("replica2", FailoverRefused, r"replica2 is not a live reader \(silent for 5000 ms\)"),
        ("replica3", FailoverRefused, "replica3 is lagging .it does not follow volume vol0"),
        ("replica1", FailoverRefused, "replica1 is lagging .volume vol0 lag p99 2001 ms"),
        ("", FailoverRefused, "every live reader is lagging"),
        ("no such!", InvalidRequest, "instance id"),
    ]
    for to, error, sentence in cases:
        with pytest.raises(error, match=sentence):
            s.plan_failover(to, now)
        assert cluster_to_dict(s) == before
    beat(s, "replica3", now, vdl=5)
    assert s.plan_failover("", now) == "replica3"
    p = s.begin_promotion("replica3", now)
    assert p.step_down and p.old_writer_id == "compute" and p.volume_ids == ("vol0",)
    with pytest.raises(FailoverRefused, match="already under way"):
        s.plan_failover("replica1", now)
    lone = ClusterState(0)
    lone.register("compute", addr("compute"), 0, False, 0)
    with pytest.raises(FailoverRefused, match="no live reader"):
        lone.plan_failover("", 0)


def test_endpoints_resolve_and_refuse() -> None:
    s = cluster()
    now = T0 + 100
    for i in IDS:
        beat(s, i, now, Role.WRITER if i == "compute" else Role.READER, 1)
    assert s.resolve("cluster", now).addresses == (addr("compute"),)
    seen = {s.resolve("reader", now).instance_ids[0] for _ in range(3)}
    assert seen == {"replica1", "replica2", "replica3"}
    assert s.create_endpoint("analytics", ["replica2", "replica3", "replica2"]) == ("replica2", "replica3")
    assert s.create_endpoint("analytics", ["replica2", "replica3"]) == ("replica2", "replica3")  # idempotent
    with pytest.raises(EndpointExists):
        s.create_endpoint("analytics", ["replica1"])
    with pytest.raises(InvalidRequest, match="reserved"):
        s.create_endpoint("reader", ["replica1"])
    with pytest.raises(InvalidRequest, match="no instances"):
        s.create_endpoint("empty", [])
    with pytest.raises(InvalidRequest, match="does not have: ghost"):
        s.create_endpoint("bad", ["replica1", "ghost"])
    with pytest.raises(InvalidRequest, match="not valid"):
        s.create_endpoint("Bad_Name", ["replica1"])
    assert [e[0] for e in s.list_endpoints()] == ["cluster", "reader", "analytics"]
    later = now + WRITER_TIMEOUT_MS + 1
    beat(s, "replica2", later)
    assert s.resolve("analytics", later).instance_ids == ("replica2",)
    assert s.resolve("reader", later).instance_ids == ("replica2",)
    with pytest.raises(Unavailable, match="no writer right now"):
        s.resolve("cluster", later)
    with pytest.raises(Unavailable, match="none of endpoint analytics's instances"):
        s.resolve("analytics", later + WRITER_TIMEOUT_MS + 1)
    with pytest.raises(UnknownEndpoint):
        s.resolve("nope", later)
    with pytest.raises(UnknownEndpoint):
        s.delete_endpoint("nope")
    with pytest.raises(InvalidRequest, match="built in"):
        s.delete_endpoint("cluster")
    s.delete_endpoint("analytics")
    assert len(s.list_endpoints()) == 2


def test_removal_and_the_instance_bound() -> None:
    s = cluster()
    beat(s, "compute", T0, Role.WRITER, 1)
    with pytest.raises(FailoverRefused, match="live writer; fail over first"):
        s.remove("compute", T0)
    with pytest.raises(UnknownInstance):
        s.remove("ghost", T0)
    s.remove("replica3", T0)
    assert "replica3" not in s.instances
    s.remove("compute", T0 + 5000)  # a dead writer may go: there is no writer then
    assert s.writer_id is None and s.writer_gone(T0 + 5000)
    for n in range(64 - len(s.instances)):
        s.register(f"r{n}", "127.0.0.1:1", 0, True, T0)
    with pytest.raises(ClusterFull):
        s.register("one-more", "127.0.0.1:1", 0, True, T0)


def test_the_state_file_round_trip_keeps_roles_and_forgets_heard_times() -> None:
    s = cluster()
    beat(s, "compute", T0, Role.WRITER, 1)
    s.create_endpoint("e1", ["replica1"])
    data = cluster_to_dict(s)
    again = cluster_from_dict(data, started_ms=50_000)
    assert cluster_to_dict(again) == data
    assert again.writer_id == "compute" and not again.alive("compute", 50_000)
    assert not again.writer_gone(50_000 + RESTART_GRACE_MS - 1)
    assert beat(again, "compute", 50_100, Role.WRITER, 1) == Role.WRITER


# -- random sequences against a brute-force model ----------------------------------------------------

NAMES = ["cluster", "reader", "e1", "e2"]
LAG = st.builds(
    VolumeLag,
    st.sampled_from(["vol0", "vol1"]),
    st.integers(0, 5),
    st.integers(0, 3),
    st.just(0.0),
    st.sampled_from([0.0, 10.0, FAILOVER_LAG_MAX_MS + 1.0]),
)


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = ClusterState(0)
        self.now = 0.0
        self.started = 0.0
        self.heard: dict[str, float] = {}
        self.vols: dict[str, tuple[VolumeLag, ...]] = {}
        self.prio: dict[str, int] = {}
        self.writer: str | None = None
        self.promoting: str | None = None
        self.gen = 0
        self.gen_writer = ""
        self.writer_vols: tuple[str, ...] = ()
        self.endpoints: dict[str, tuple[str, ...]] = {}
        self.pending: Promotion | None = None
        self.writer_at: dict[int, str] = {}  # generation -> the one instance ever told WRITER at it
        self.last_gen = 0

    def alive(self, i: str) -> bool:
        return i in self.heard and self.now - self.heard[i] <= WRITER_TIMEOUT_MS

    def live_readers(self) -> list[str]:
        return [i for i in sorted(self.heard) if self.alive(i) and i not in (self.writer, self.promoting)]

    def best(self, readers: list[str]) -> str | None:
        def key(i: str) -> tuple[int, int, int, float, str]:
            v = self.vols.get(i, ())
            lsns = sum(x.lag_lsns for x in v)
            return (self.prio[i], -sum(x.applied_vdl for x in v), lsns, max((x.lag_ms_p99 for x in v), default=0), i)

        return min(readers, key=key) if readers else None

    def lagging(self, i: str) -> bool:
        v = {x.volume_id: x for x in self.vols.get(i, ())}
        if self.writer is not None and self.alive(self.writer) and any(w not in v for w in self.writer_vols):
            return True
        return any(x.lag_ms_p99 > FAILOVER_LAG_MAX_MS or x.last_heard_ms > FAILOVER_LAG_MAX_MS for x in v.values())

    def told_writer(self, gen: int, i: str) -> None:
        assert self.writer_at.setdefault(gen, i) == i, f"two writers at generation {gen}: {self.writer_at[gen]}, {i}"

    @rule(dt=st.sampled_from([0, 50, 100, 300, 700, 701, 1500, 2500]))
    def advance(self, dt: int) -> None:
        self.now += dt

    @rule(i=st.sampled_from(IDS), prio=st.sampled_from([0, 1, 15, 16]), reader_only=st.booleans())
    def register(self, i: str, prio: int, reader_only: bool) -> None:
        if prio > 15:
            before = cluster_to_dict(self.s)
            with pytest.raises(InvalidRequest):
                self.s.register(i, addr(i), prio, reader_only, self.now)
            assert cluster_to_dict(self.s) == before
            return
        a = self.s.register(i, addr(i), prio, reader_only, self.now)
        self.heard[i], self.prio[i] = self.now, prio
        if self.writer is None and self.promoting is None and not reader_only:
            self.gen += 1
            self.writer = self.gen_writer = i
        assert a.role == (Role.WRITER if i == self.writer else Role.READER)
        assert a.generation == self.gen
        if a.role == Role.WRITER:
            self.told_writer(a.generation, i)

    @rule(
        i=st.sampled_from(IDS),
        claim=st.sampled_from([Role.READER, Role.WRITER, None]),
        dgen=st.sampled_from([-1, 0, 1]),
        lags=st.lists(LAG, max_size=2),
        opened=st.sampled_from([[], ["vol0"], ["vol0", "vol1"]]),
    )
    def heartbeat(self, i: str, claim: Role | None, dgen: int, lags: list[VolumeLag], opened: list[str]) -> None:
        gen = max(0, self.gen + dgen)
        a = self.s.heartbeat(i, addr(i), claim, gen, lags, opened, self.now)
        self.heard[i] = self.now
        self.prio.setdefault(i, 0)
        self.vols[i] = tuple({x.volume_id: x for x in lags}.values())
        fits = gen > self.gen or (gen == self.gen >= 1 and self.gen_writer in ("", i))
        if claim == Role.WRITER and self.writer is None and self.promoting is None and fits:
            self.writer, self.gen, self.gen_writer = i, gen, i
        if i == self.writer and claim == Role.WRITER and opened:
            self.writer_vols = tuple(opened)
        assert a.role == (Role.WRITER if i in (self.writer, self.promoting) else Role.READER)
        if a.role == Role.WRITER:
            self.told_writer(a.generation, i)

    @precondition(lambda self: self.pending is None)
    @rule()
    def detect(self) -> None:
        writer_live = self.writer is not None and self.alive(self.writer)
        expected = self.promoting is None and self.now - self.started >= RESTART_GRACE_MS and not writer_live
        assert self.s.writer_gone(self.now) == expected
        if not expected:
            return
        target = self.s.choose_promotion(self.now)
        assert target == self.best(self.live_readers())
        if target is not None:
            self.begin(target)

    def begin(self, target: str) -> None:
        assert target in self.live_readers(), "only a live reader is promoted"
        old_live = self.writer is not None and self.alive(self.writer)
        p = self.s.begin_promotion(target, self.now)
        self.gen += 1
        self.writer, self.promoting, self.gen_writer = None, target, target
        assert (p.generation, p.volume_ids, p.step_down) == (self.gen, self.writer_vols, old_live)
        self.told_writer(p.generation, target)
        self.pending = p

    @precondition(lambda self: self.pending is not None)
    @rule(ok=st.booleans(), opened=st.sampled_from([(), ("vol1",)]))
    def finish(self, ok: bool, opened: tuple[str, ...]) -> None:
        p, self.pending = self.pending, None
        assert p is not None
        if ok:
            assert self.s.complete_promotion(p, self.now, opened)
            self.writer, self.heard[p.instance_id] = p.instance_id, self.now
            self.writer_vols = opened or p.volume_ids
        else:
            self.s.fail_promotion(p)
        self.promoting = None

    @rule(to=st.sampled_from(["", "ghost", "bad id", *IDS]))
    def failover(self, to: str) -> None:
        before = (cluster_to_dict(self.s), {i: x.last_heard_ms for i, x in self.s.instances.items()})
        expected: type[StorageError] | str
        readers = self.live_readers()
        if self.promoting is not None:
            expected = FailoverRefused
        elif to == "bad id":
            expected = InvalidRequest
        elif to == "ghost" or (to and to not in self.s.instances):
            expected = UnknownInstance
        elif to:
            expected = FailoverRefused if to not in readers or self.lagging(to) else to
        else:
            expected = self.best([r for r in readers if not self.lagging(r)]) or FailoverRefused
        if isinstance(expected, str):
            assert self.s.plan_failover(to, self.now) == expected
            self.begin(expected)
            return
        with pytest.raises(expected):
            self.s.plan_failover(to, self.now)
        assert (cluster_to_dict(self.s), {i: x.last_heard_ms for i, x in self.s.instances.items()}) == before

    @rule(i=st.sampled_from(IDS))
    def remove(self, i: str) -> None:
        refused = i not in self.s.instances or i == self.promoting or (i == self.writer and self.alive(i))
        if refused:
            before = cluster_to_dict(self.s)
            with pytest.raises(StorageError):
                self.s.remove(i, self.now)
            assert cluster_to_dict(self.s) == before
            return
        self.s.remove(i, self.now)
        self.heard.pop(i, None)
        self.vols.pop(i, None)
        self.prio.pop(i, None)  # a heartbeat records it again at tier 0
        if i == self.writer:
            self.writer = None

    @rule(name=st.sampled_from(["e1", "e2", "reader"]), members=st.lists(st.sampled_from([*IDS, "ghost"])))
    def create_endpoint(self, name: str, members: list[str]) -> None:
        ok = name != "reader" and members and set(members) <= set(self.s.instances)
        members_t = tuple(dict.fromkeys(members))
        if ok and self.endpoints.get(name, members_t) == members_t:
            assert self.s.create_endpoint(name, members) == members_t
            self.endpoints[name] = members_t
            return
        before = cluster_to_dict(self.s)
        with pytest.raises(StorageError):
            self.s.create_endpoint(name, members)
        assert cluster_to_dict(self.s) == before

    @rule(name=st.sampled_from(NAMES))
    def delete_endpoint(self, name: str) -> None:
        if name in self.endpoints:
            self.s.delete_endpoint(name)
            del self.endpoints[name]
        else:
            with pytest.raises((UnknownEndpoint, InvalidRequest)):
                self.s.delete_endpoint(name)

    @rule(name=st.sampled_from(NAMES))
    def resolve(self, name: str) -> None:
        writer = [self.writer] if self.writer is not None and self.alive(self.writer) else []
        if name == "cluster":
            expected = writer
        elif name == "reader":
            expected = self.live_readers() or writer
        elif name in self.endpoints:
            expected = [m for m in self.endpoints[name] if self.alive(m) and m != self.promoting]
        else:
            with pytest.raises(UnknownEndpoint):
                self.s.resolve(name, self.now)
            return
        if not expected:
            with pytest.raises(Unavailable):
                self.s.resolve(name, self.now)
            return
        r = self.s.resolve(name, self.now)
        assert sorted(r.instance_ids) == sorted(expected)
        assert all(self.alive(i) for i in r.instance_ids), "resolve returned an instance that is not live"
        assert list(r.addresses) == [addr(i) for i in r.instance_ids]

    @rule()
    def restart(self) -> None:
        """The control plane restarts: the persisted part survives, a promotion under way does not."""
        self.s = cluster_from_dict(cluster_to_dict(self.s), self.now)
        self.started, self.heard, self.vols, self.pending, self.promoting = self.now, {}, {}, None, None

    @invariant()
    def agrees_with_the_model(self) -> None:
        s = self.s
        assert (s.writer_id, s.promoting_id, s.generation) == (self.writer, self.promoting, self.gen)
        assert s.generation >= self.last_gen, "the generation went backwards"
        self.last_gen = s.generation
        assert s.writer_volume_ids == self.writer_vols
        assert s.endpoints == self.endpoints
        assert s.writer_id is None or s.writer_id in s.instances


ClusterMachine.TestCase.settings = settings(max_examples=examples(300), stateful_step_count=40, deadline=None)
TestClusterMachine = ClusterMachine.TestCase
