"""The pure lineage rules (storage/lineage.py) and GC with keep points (storage/retention.py rule 6) against
brute-force oracles: every read through any tree of clones equals replaying the full history of its
timeline path, after any coalescing and garbage collection per level.

Hypothesis draws the histories; it prints the falsifying example (and its seed on a flaky one)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage.lineage import LINEAGE_DEPTH_MAX, Level, resolve
from sixfold.storage.retention import plan_page_gc
from tests.depth import examples
from tests.test_retention import content

pytestmark = pytest.mark.unit

PAGES = 3
DEPTH_MAX = 4  # levels of clones below the root in the drawn trees


# -- retention rule 6: GC with keep points ------------------------------------------------------


@settings(max_examples=examples(500), deadline=None)
@given(st.sets(st.integers(1, 60), max_size=25), st.data())
def test_gc_with_keep_points_keeps_every_read_at_or_above_the_horizon_and_at_each_keep_point(
    universe: set[int], data: st.DataObject
) -> None:
    versions = data.draw(st.sets(st.sampled_from(sorted(universe)), max_size=8)) if universe else set()
    horizon = data.draw(st.integers(0, 70))
    keep = data.draw(st.sets(st.integers(0, 70), max_size=4))
    plan = plan_page_gc(3, horizon, sorted(versions), sorted(universe), sorted(keep))
    kept_versions = versions - set(plan.versions_to_delete)
    kept_records = universe - set(plan.records_to_delete)
    assert set(plan.versions_to_delete) <= versions and set(plan.records_to_delete) <= universe
    for read_point in [*range(horizon, 72), *keep]:
        assert content(kept_versions, kept_records, read_point, universe) == content(
            versions, universe, read_point, universe
        ), (read_point, plan)
    # Not everything above the lowest keep point: at most one version per keep point below the horizon.
    below = [k for k in keep if k < horizon]
    assert len([v for v in kept_versions if v <= horizon]) <= 1 + len(below)
    if not below:
        assert plan == plan_page_gc(3, horizon, sorted(versions), sorted(universe))


def test_gc_keeps_one_version_per_keep_point_not_the_history_between() -> None:
    # Versions at 10, 20, 30, 40; records at every LSN 1..50; horizon 45; a child reads at 22.
    plan = plan_page_gc(0, 45, [10, 20, 30, 40], list(range(1, 51)), [22])
    assert plan.base_lsn == 40
    assert plan.versions_to_delete == (10, 30)  # 20 is the keep point's start, 40 the base
    assert plan.records_to_delete == tuple(r for r in range(1, 41) if not 20 < r <= 22)


# -- lineage rule 2 against replaying the timeline's history --------------------------------------


@dataclass
class Timeline:
    parent: int | None
    branch_lsn: int = 0
    read_lsn: int = 0  # parent_read_lsn: the parent's chain tail at or below the branch
    depth: int = 0
    universe: dict[int, list[int]] = field(default_factory=lambda: {p: [] for p in range(PAGES)})  # every write
    records: dict[int, set[int]] = field(default_factory=lambda: {p: set() for p in range(PAGES)})  # kept
    versions: dict[int, dict[int, tuple[int, ...]]] = field(default_factory=lambda: {p: {} for p in range(PAGES)})
    horizon: int = 0

    def tail_at_or_below(self, lsn: int) -> int:
        """The chain tail: its newest write at or below `lsn`, or where its chain starts (its read LSN)."""
        own = [r for lsns in self.universe.values() for r in lsns if r <= lsn]
        return max([*own, self.read_lsn if self.read_lsn <= lsn else 0])


class World:
    """Timelines in a tree; one LSN counter for all (a volume's LSNs never repeat across timelines)."""

    def __init__(self) -> None:
        self.timelines = [Timeline(parent=None)]
        self.lsn = 0

    def children(self, t: int) -> list[int]:
        return [i for i, x in enumerate(self.timelines) if x.parent == t]

    def chain(self, t: int, page: int) -> list[Level]:
        out = []
        while True:
            x = self.timelines[t]
            out.append(
                Level(
                    tuple(sorted(x.versions[page])),
                    tuple(sorted(x.records[page])),
                    None if x.parent is None else x.read_lsn,
                )
            )
            if x.parent is None:
                return out
            t = x.parent

    def read(self, t: int, page: int, read_point: int) -> tuple[int, ...]:
        """The page through the lineage (rule 2): its content as the LSNs applied, in order."""
        resolution = resolve(self.chain(t, page), read_point)
        path = [t]
        while (up := self.timelines[path[-1]].parent) is not None:
            path.append(up)
        start: tuple[int, ...] = ()
        if resolution.base_lsn:
            start = self.timelines[path[resolution.base_level]].versions[page][resolution.base_lsn]
        return start + tuple(r for _, lsns in resolution.applied for r in lsns)

    def oracle(self, t: int, page: int, read_point: int) -> tuple[int, ...]:
        """Replay: the parent's history up to min(read point, branch), then this timeline's own writes."""
        x = self.timelines[t]
        inherited = () if x.parent is None else self.oracle(x.parent, page, min(read_point, x.branch_lsn))
        return inherited + tuple(r for r in sorted(x.universe[page]) if r <= read_point)

    # -- events ------------------------------------------------------------------

    def write(self, t: int, page: int) -> None:
        self.lsn += 1
        self.timelines[t].universe[page].append(self.lsn)
        self.timelines[t].records[page].add(self.lsn)

    def clone(self, t: int, branch_lsn: int) -> bool:
        """Lineage rule 6 in the model: refused (False) when the parent no longer keeps its pages there."""
        x = self.timelines[t]
        read_lsn = x.tail_at_or_below(branch_lsn)
        anchor = x.tail_at_or_below(x.horizon)
        if x.depth >= DEPTH_MAX or (read_lsn < x.horizon and read_lsn != anchor):
            return False
        self.timelines.append(Timeline(parent=t, branch_lsn=branch_lsn, read_lsn=read_lsn, depth=x.depth + 1))
        self.timelines[-1].horizon = read_lsn  # a clone starts as if hydrated at its read LSN
        return True

    def coalesce(self, t: int, page: int) -> None:
        """Fold the page's records into a version at its newest record (what the store's coalescing does)."""
        x = self.timelines[t]
        newest = max(x.versions[page], default=0)
        above = [r for r in x.records[page] if r > newest]
        if above:
            target = max(above)
            x.versions[page][target] = self.read(t, page, target)

    def collect(self, t: int, horizon: int) -> None:
        x = self.timelines[t]
        x.horizon = max(x.horizon, horizon)
        keep = sorted({self.timelines[c].read_lsn for c in self.children(t)})
        for page in range(PAGES):
            plan = plan_page_gc(
                page,
                x.horizon,
                sorted(v for v in x.versions[page] if v <= x.horizon),
                sorted(r for r in x.records[page] if r <= x.horizon),
                keep,
            )
            for v in plan.versions_to_delete:
                del x.versions[page][v]
            x.records[page] -= set(plan.records_to_delete)

    def check_every_read(self) -> None:
        for t, x in enumerate(self.timelines):
            points = {*range(x.horizon, self.lsn + 1), *(self.timelines[c].read_lsn for c in self.children(t))}
            for page in range(PAGES):
                for r in sorted(points):
                    assert self.read(t, page, r) == self.oracle(t, page, r), (t, page, r)


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_every_read_through_a_tree_of_clones_equals_replaying_its_timeline(data: st.DataObject) -> None:
    world = World()
    for _ in range(data.draw(st.integers(5, 60), label="events")):
        t = data.draw(st.integers(0, len(world.timelines) - 1), label="timeline")
        kind = data.draw(st.sampled_from(["write", "write", "write", "clone", "coalesce", "gc"]), label="event")
        if kind == "write":
            world.write(t, data.draw(st.integers(0, PAGES - 1), label="page"))
        elif kind == "clone":
            world.clone(t, data.draw(st.integers(0, world.lsn), label="branch_lsn"))
        elif kind == "coalesce":
            world.coalesce(t, data.draw(st.integers(0, PAGES - 1), label="page"))
        else:
            world.collect(t, data.draw(st.integers(0, world.lsn), label="horizon"))
            world.check_every_read()  # what each GC left, before later writes move the reads on
    world.check_every_read()


def test_a_clone_of_a_clone_reads_each_ancestor_at_its_own_branch() -> None:
    world = World()
    for page in (0, 1, 2):
        world.write(0, page)  # LSNs 1, 2, 3 on the root
    assert world.clone(0, 3)  # timeline 1 branches at 3
    world.write(0, 0)  # 4: the root only
    world.write(1, 1)  # 5: timeline 1 only
    assert world.clone(1, 5)  # timeline 2 branches at 5, reading timeline 1 at 5
    world.write(2, 2)  # 6
    world.collect(0, 4)  # the root's horizon passes timeline 1's read LSN 3: a keep point holds it
    assert world.read(2, 0, 6) == (1,) and world.read(2, 1, 6) == (2, 5) and world.read(2, 2, 6) == (3, 6)
    assert world.read(0, 0, 6) == (1, 4) and world.read(1, 2, 6) == (3,)
    resolution = resolve(world.chain(2, 0), 6)
    assert resolution.base_level == 2 and resolution.page_lsn == 1
    world.check_every_read()


def test_a_lineage_that_runs_too_deep_is_refused() -> None:
    deep = [Level((), (), 0) for _ in range(LINEAGE_DEPTH_MAX + 2)]
    with pytest.raises(ValueError, match="lineage runs past"):
        resolve(deep, 5)


def test_a_branch_tail_comes_only_from_a_whole_segment_whose_chain_reaches_past_the_branch() -> None:
    from sixfold.storage.lineage import branch_tail

    assert branch_tail([(True, 120, 90), (True, 80, 80), (False, 200, 95)], 100) == 90
    assert branch_tail([(True, 99, 99), (False, 150, 95)], 100) is None
    assert branch_tail([], 100) is None


def test_a_branch_must_not_split_a_transaction() -> None:
    from types import SimpleNamespace

    from sixfold.storage.errors import InvalidRequest
    from sixfold.storage.lineage import ends_an_mtr

    cpl, inside = SimpleNamespace(lsn=7, cpl=True), SimpleNamespace(lsn=6, cpl=False)
    assert ends_an_mtr([inside, cpl], 7, 7) is cpl
    assert ends_an_mtr([cpl], 8, 8) is None
    with pytest.raises(InvalidRequest, match=r"LSN 6 falls inside a transaction of volume v \(its newest record"):
        ends_an_mtr([inside], 6, 6, " of volume v")
