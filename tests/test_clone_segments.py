"""Clone segments in a storage node's store (storage/lineage.py): real LMDB stores in temporary directories
(tests/test_clone_node.py has the node's RPCs and gossip).

Every read is checked against replaying the timeline's history (the parent's records up to the branch,
then the clone's own); randomized tests print their seed."""

from __future__ import annotations

import json
import random
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from sixfold.storage import lineage, segment_load
from sixfold.storage.errors import AlreadyExists, InvalidRequest, ReadPointOutOfRange
from sixfold.storage.lineage import LineageRefused
from sixfold.storage.records import LogRecord, PayloadKind, crc32c
from sixfold.storage.segment import SegmentMeta, TruncationRange
from sixfold.storage.store import SegmentStore
from tests.test_store import PAGE, batch, commit_ok, oracle_page

pytestmark = pytest.mark.unit

PAGES = 8
ROOT, CLONE, GRAND = "vol/pg-00000", "clone/pg-00000", "clone2/pg-00000"


def seg_meta(segment_id: str, parent: str = "", branch: int = 0, read: int = 0, page_count: int = PAGES) -> SegmentMeta:
    return SegmentMeta(
        segment_id,
        segment_id.split("/")[0],
        0,
        0,
        page_count,
        PAGE,
        membership_epoch=1,
        seg_no=0,
        parent_segment_id=parent,
        branch_lsn=branch,
        parent_read_lsn=read,
    )


@dataclass
class Timeline:
    """One segment's PG chain; LSNs come from a counter every timeline shares (they never repeat)."""

    store: SegmentStore
    segment_id: str
    lsn: list[int]  # the shared counter, in a list so every timeline moves it
    tail: int = 0  # the PG chain's last LSN (a clone's starts at its parent_read_lsn)
    parent: Timeline | None = None
    branch: int = 0
    records: list[LogRecord] = field(default_factory=list)

    def write(self, writes: list[tuple[int, bytes]], batch_id: int = 1) -> list[LogRecord]:
        out = []
        for page_no, data in writes:
            self.lsn[0] += 1
            lsn = self.lsn[0]
            out.append(LogRecord(lsn, page_no, PayloadKind.PATCH, 7 * (lsn % 50), data, self.tail, self.tail, 0, 1))
            self.tail = lsn
        b = batch(out, segment_id=self.segment_id, batch_id=batch_id)
        b.vdl_hint = self.lsn[0]
        commit_ok(self.store, b)
        self.records += out
        return out

    def clone(self, store: SegmentStore, segment_id: str, branch: int | None = None) -> Timeline:
        branch = self.lsn[0] if branch is None else branch
        read = max([r.lsn for r in self.records if r.lsn <= branch], default=self.start)
        store.create_segment(seg_meta(segment_id, self.segment_id, branch, read))
        return Timeline(store, segment_id, self.lsn, tail=read, parent=self, branch=branch)

    @property
    def start(self) -> int:
        return 0 if self.parent is None else self.store.segment(self.segment_id).meta.chain_anchor_lsn

    def history(self, read_point: int) -> list[LogRecord]:
        inherited = [] if self.parent is None else self.parent.history(min(read_point, self.branch))
        return inherited + [r for r in self.records if r.lsn <= read_point]

    def oracle(self, page_no: int, read_point: int) -> bytes:
        return oracle_page(self.history(read_point), page_no, read_point)

    def check(self, read_points: list[int]) -> None:
        for rp in read_points:
            for p in range(PAGES):
                assert self.store.read_page(self.segment_id, p, rp).data == self.oracle(p, rp), (self.segment_id, p, rp)


def gc(store: SegmentStore, segment_id: str, horizon: int) -> int:
    reached = store.raise_horizon(segment_id, horizon)
    page: int | None = 0
    while page is not None:
        page = store.collect_garbage(segment_id, page, 3)
    return reached


def coalesce(store: SegmentStore, segment_id: str, limit: int) -> int:
    pages, _, _ = store.coalesce_candidates(segment_id, 0, 1000, limit, 1)
    return store.coalesce_pages(segment_id, pages, limit, 1)


@pytest.fixture
def store(tmp_path: Path):
    s = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    yield s
    s.close()


def root(store: SegmentStore) -> Timeline:
    store.create_segment(seg_meta(ROOT))
    return Timeline(store, ROOT, [0])


# -- creation ---------------------------------------------------------------------------------


def test_a_clone_starts_at_its_parents_read_lsn_and_neither_sees_the_others_writes(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(p, b"root%d" % p) for p in range(PAGES)])  # LSNs 1..8
    clone = parent.clone(store, CLONE)
    m = store.segment(CLONE).meta
    assert (m.scl, m.retention_horizon_lsn, m.chain_anchor_lsn, m.scl_high_water) == (8, 8, 8, 8)
    assert (m.vdl_hint, m.highest_lsn, m.rebuilding, store.segment(CLONE).whole) == (8, 8, False, True)
    assert store.child_segment_ids(ROOT) == [CLONE] and store.keep_points_of(ROOT) == [8]
    parent.write([(1, b"parent-only")])
    clone.write([(2, b"clone-only"), (1, b"c")])
    clone.check([8, clone.tail])
    parent.check([8, parent.tail])
    assert store.read_page(CLONE, 3, clone.tail).page_lsn == 4  # fell through to the parent's record 4
    assert b"clone-only" not in store.read_page(ROOT, 2, parent.tail).data
    with pytest.raises(ReadPointOutOfRange, match="retention horizon"):
        store.read_page(CLONE, 0, 7)  # the clone starts at 8


def test_a_clone_of_a_quiet_pg_reads_its_parent_below_the_branch(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(0, b"a"), (1, b"b")])  # LSNs 1, 2
    parent.lsn[0] = 40  # other PGs of the volume wrote up to 40: this PG has no record in (2, 40]
    clone = parent.clone(store, CLONE, branch=40)
    assert store.segment(CLONE).meta.lineage == (ROOT, 40, 2)
    clone.write([(0, b"x")])  # LSN 41, linked to 2
    assert store.segment(CLONE).tracker.scl == 41
    clone.check([2, 30, 41])


REFUSALS = {
    "parent_missing": "this node does not hold vol/pg-00000; create it on the parent's nodes",
    "parent_shape": "vol/pg-00000 holds pages 0+8 of 4096 bytes, not pages 0+4 of 4096 bytes",
    "parent_not_whole": "vol/pg-00000 is not whole now (rebuilding a lost copy, hydrating or catching up); "
    "retry once it is",
    "parent_behind": "vol/pg-00000 is complete only to LSN 4, below parent_read_lsn 6; retry once it has caught up",
    "below_gc_floor": "vol/pg-00000 no longer keeps its pages at LSN 2: its GC floor is 4; clone at a later LSN",
    "tail_mismatch": "vol/pg-00000's chain tail at or below LSN 4 is 4, not parent_read_lsn 3",
}


@pytest.mark.parametrize("condition", sorted(REFUSALS))
def test_a_clone_is_refused_unless_its_parent_can_serve_it(tmp_path: Path, condition: str) -> None:
    store = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 25)
    try:
        if condition != "parent_missing":
            store.create_segment(seg_meta(ROOT), rebuild=condition == "parent_not_whole")
            parent = Timeline(store, ROOT, [0])
            parent.write([(p % PAGES, b"r") for p in range(4)])  # LSNs 1..4
        request = {
            "parent_missing": seg_meta(CLONE, ROOT, 4, 4),
            "parent_shape": seg_meta(CLONE, ROOT, 4, 4, page_count=4),
            "parent_not_whole": seg_meta(CLONE, ROOT, 4, 4),
            "parent_behind": seg_meta(CLONE, ROOT, 6, 6),
            "below_gc_floor": seg_meta(CLONE, ROOT, 2, 2),
            "tail_mismatch": seg_meta(CLONE, ROOT, 4, 3),
        }[condition]
        if condition == "below_gc_floor":
            assert gc(store, ROOT, 4) == 4
        with pytest.raises(LineageRefused) as refused:
            store.create_segment(request)
        assert refused.value.message == (
            f"segment {CLONE} cannot be created as a clone of segment {ROOT}: {REFUSALS[condition]}"
        )
        assert refused.value.status_code_name == "FAILED_PRECONDITION"
        assert refused.value.reason == lineage.REASON_LINEAGE_REFUSED
        assert refused.value.metadata == {"segment_id": CLONE, "parent_segment_id": ROOT, "condition": condition}
        assert CLONE not in store.segments and not store.child_segment_ids(ROOT)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("request_meta", "rebuild", "words"),
    [
        (seg_meta(CLONE, ROOT, 4, 4), True, "is created to rebuild a lost copy, so it has no parent"),
        (seg_meta(CLONE, ROOT, 4, 5), False, "parent_read_lsn 5 is above branch_lsn 4"),
        (seg_meta(CLONE, ROOT, 0, 0), False, "needs a branch_lsn of at least 1"),
        (seg_meta(CLONE, CLONE, 4, 4), False, "cannot be its own parent"),
        (seg_meta(CLONE, "", 4, 4), False, "branch_lsn and parent_read_lsn are set but parent_segment_id is not"),
    ],
)
def test_a_bad_clone_request_is_an_invalid_argument(
    store: SegmentStore, request_meta: SegmentMeta, rebuild: bool, words: str
) -> None:
    root(store).write([(0, b"r")] * 4)
    with pytest.raises(InvalidRequest, match=words):
        store.create_segment(request_meta, rebuild=rebuild)
    assert CLONE not in store.segments


def test_creating_a_clone_again_is_idempotent_and_another_parent_is_refused(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(0, b"a"), (1, b"b")])
    store.create_segment(seg_meta("other/pg-00000"))
    first, created = store.create_segment(seg_meta(CLONE, ROOT, 2, 2))
    again, created_again = store.create_segment(seg_meta(CLONE, ROOT, 2, 2))
    assert created and not created_again and again.seg_no == first.seg_no
    _, plain = store.create_segment(seg_meta(CLONE))  # a request without the link names the same segment
    assert not plain
    with pytest.raises(AlreadyExists, match="already exists on this node as a clone of vol/pg-00000 at branch LSN 2"):
        store.create_segment(seg_meta(CLONE, "other/pg-00000", 2, 0))


def test_the_gc_floor_is_the_one_the_create_transaction_sees(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(0, b"a"), (0, b"b"), (1, b"c")])  # 1, 2, 3
    parent.lsn[0] = 10
    parent.write([(0, b"d"), (1, b"e")])  # 11, 12
    store.pin_lsns(ROOT, [6])
    assert gc(store, ROOT, 6) == 6  # the floor stops between two records: the chain anchor is 3
    assert store.segment(ROOT).meta.chain_anchor_lsn == 3
    # A clone at 5 reads the parent at 3, below the floor but at its anchor: nothing it needs was collected.
    clone = parent.clone(store, CLONE, branch=5)
    assert store.segment(CLONE).meta.parent_read_lsn == 3
    clone.check([3])
    store.pin_lsns(ROOT, [])
    coalesce(store, ROOT, 12)
    assert gc(store, ROOT, 12) == 12
    assert store.segment(ROOT).meta.records_collected == 2  # 11 and 12; the keep point held 1, 2 and 3
    clone.check([3])
    with pytest.raises(LineageRefused, match="its GC floor is 12"):
        store.create_segment(seg_meta(GRAND, ROOT, 5, 3))


def test_a_parent_with_children_is_not_dropped(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(0, b"a")])
    parent.clone(store, CLONE)
    with pytest.raises(LineageRefused, match="segment vol/pg-00000 cannot be dropped: segment clone/pg-00000 on"):
        store.drop_segment(ROOT)
    store.drop_segment(CLONE)
    assert not store.child_segment_ids(ROOT) and store.keep_points_of(ROOT) == []
    store.drop_segment(ROOT)


# -- reads, coalescing and GC through a lineage, against the oracle ---------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_reads_through_three_levels_survive_coalescing_and_gc(store: SegmentStore, seed: int) -> None:
    print(f"seed {seed}")
    rng = random.Random(seed)

    def some(n: int) -> list[tuple[int, bytes]]:
        return [(rng.randrange(PAGES), bytes([rng.randrange(256)]) * rng.randrange(1, 30)) for _ in range(n)]

    timelines = [root(store)]
    timelines[0].write(some(40))
    for name in (CLONE, GRAND):
        for _ in range(3):
            rng.choice(timelines).write(some(rng.randrange(1, 20)))
        last = timelines[-1]
        timelines.append(last.clone(store, name, branch=rng.randrange(max(last.start, 1), last.lsn[0] + 1)))
    seen: dict[str, list[int]] = {t.segment_id: [] for t in timelines}
    for step in range(12):
        t = rng.choice(timelines)
        action = rng.choice(["write", "write", "coalesce", "gc"])
        if action == "write":
            t.write(some(rng.randrange(1, 15)), batch_id=step)
        elif action == "coalesce":
            coalesce(store, t.segment_id, t.lsn[0])
        else:
            meta = store.segment(t.segment_id).meta
            gc(store, t.segment_id, rng.randrange(meta.retention_horizon_lsn, t.lsn[0] + 1))
        for x in timelines:
            horizon = store.segment(x.segment_id).meta.retention_horizon_lsn
            points = sorted({horizon, x.tail, rng.randrange(horizon, max(horizon, x.tail) + 1)})
            x.check([p for p in points if p <= store.segment(x.segment_id).tracker.scl])
            seen[x.segment_id] += points
    collected = sum(store.segment(t.segment_id).meta.records_collected for t in timelines)
    print(f"seed {seed}: read points checked {seen}; records collected {collected}")


def test_a_fall_through_is_refused_while_the_parent_cannot_serve_it(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(0, b"a"), (1, b"b")])
    clone = parent.clone(store, CLONE)
    clone.write([(0, b"own")])
    assert coalesce(store, CLONE, clone.tail) == 1  # page 0 gets a version of the clone's own
    store.segments[ROOT].meta.rebuilding = True  # as if it were rebuilding a lost copy
    with pytest.raises(ReadPointOutOfRange, match="which is not whole now"):
        store.read_page(CLONE, 1, clone.tail)
    assert coalesce(store, CLONE, clone.tail) == 0
    assert store.read_page(CLONE, 0, clone.tail).data == clone.oracle(0, clone.tail)  # no fall-through needed
    store.segments[ROOT].meta.rebuilding = False
    store.read_page(CLONE, 1, clone.tail)


# -- the link lost, restarts, and hydration of a clone's segment --------------------------------------


def test_a_parent_hydrating_above_a_childs_read_lsn_takes_the_childs_link(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(p, b"p") for p in range(4)])  # 1..4
    low = parent.clone(store, CLONE, branch=2)  # reads at 2
    parent.clone(store, GRAND, branch=4)  # reads at 4
    low.write([(0, b"own")])
    store.begin_hydration(ROOT, 3)  # its pages at or below 3 are replaced
    lost, kept = store.segment(CLONE), store.segment(GRAND)
    assert lost.meta.lineage == ("", 0, 0) and lost.meta.rebuilding and not lost.whole
    assert lost.tracker.scl == 0 < lost.meta.retention_horizon_lsn
    assert kept.meta.lineage == (ROOT, 4, 4) and store.child_segment_ids(ROOT) == [GRAND]
    with pytest.raises(ReadPointOutOfRange, match="hydrated again"):
        store.read_page(CLONE, 0, 2)
    with pytest.raises(ReadPointOutOfRange, match="which is not whole now"):
        store.read_page(GRAND, 1, 4)
    path = store.path
    store.close()
    reopened = SegmentStore(path, map_size_bytes=1 << 25)
    try:
        assert reopened.segment(CLONE).meta.lineage == ("", 0, 0) and not reopened.segment(CLONE).whole
        assert reopened.child_segment_ids(ROOT) == [GRAND]
    finally:
        reopened.close()


def test_links_and_keep_points_survive_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 25)
    parent = root(store)
    parent.write([(p, b"v%d" % p) for p in range(PAGES)])
    clone = parent.clone(store, CLONE)
    parent.write([(p, b"w%d" % p) for p in range(PAGES)] * 2)
    clone.write([(1, b"own")])
    store.close()
    store = SegmentStore(path, map_size_bytes=1 << 25)
    parent.store = clone.store = store
    assert store.child_segment_ids(ROOT) == [CLONE] and store.keep_points_of(ROOT) == [8]
    assert store.segment(CLONE).meta.highest_lsn == clone.tail and store.segment(CLONE).tracker.scl == clone.tail
    coalesce(store, ROOT, parent.tail)
    gc(store, ROOT, parent.tail)
    assert store.segment(ROOT).meta.records_collected > 0
    clone.check([8, clone.tail])
    parent.check([parent.tail])
    store.close()


def test_a_clone_whose_parent_was_lost_at_start_loses_its_link(tmp_path: Path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 25)
    parent = root(store)
    parent.write([(0, b"a"), (1, b"b")])
    parent.clone(store, CLONE).write([(0, b"own")])
    for table in (b"segments", b"segments_copy"):  # the parent's metadata rots in both copies
        store.disk.write(lambda txn, t=table: txn.put(ROOT.encode(), b"rot", db=store.disk.dbs[t]))
    store.close()
    store = SegmentStore(path, map_size_bytes=1 << 25)
    try:
        assert ROOT in store.lost and store.segment(CLONE).meta.lineage == ("", 0, 0)
        assert store.segment(CLONE).meta.rebuilding and store.segment(CLONE).tracker.scl == 0
        with pytest.raises(ReadPointOutOfRange):
            store.read_page(CLONE, 0, 2)
    finally:
        store.close()


def test_metadata_stored_before_clones_existed_still_loads() -> None:
    meta = replace(seg_meta(ROOT), seg_no=1)
    body = json.loads(meta.to_bytes()[8:])
    for name in ("parent_segment_id", "branch_lsn", "parent_read_lsn"):
        del body[name]
    raw = json.dumps(body, separators=(",", ":")).encode()
    old = SegmentMeta.from_bytes(struct.pack(">4sI", b"SFM1", crc32c(raw)) + raw)
    assert old == meta and old.lineage == ("", 0, 0)


def test_two_metadata_copies_that_name_different_parents_are_not_merged() -> None:
    a = replace(seg_meta(CLONE, ROOT, 4, 4), seg_no=1)
    assert segment_load.merge_copies(a, replace(a, scl=3)) is not None
    assert segment_load.merge_copies(a, replace(a, parent_read_lsn=3)) is None
    assert segment_load.merge_copies(a, replace(a, parent_segment_id="", branch_lsn=0, parent_read_lsn=0)) is None


def test_a_fresh_environment_brings_clones_back_as_flattened_copies(store: SegmentStore) -> None:
    parent = root(store)
    parent.write([(0, b"a")])
    parent.clone(store, CLONE)
    store.rebuild_in_fresh_environment()
    assert store.segment(CLONE).meta.lineage == ("", 0, 0) and store.segment(CLONE).meta.rebuilding
    assert not store.child_segment_ids(ROOT)


def test_a_flattened_copy_hydrated_from_a_clone_reads_the_same(tmp_path: Path) -> None:
    source = SegmentStore(str(tmp_path / "a"), map_size_bytes=1 << 25)
    target = SegmentStore(str(tmp_path / "b"), map_size_bytes=1 << 25)
    try:
        parent = root(source)
        parent.write([(p, b"p%d" % p) for p in range(PAGES - 2)])  # pages 6 and 7 never written
        child = parent.clone(source, CLONE)
        parent.write([(0, b"after the branch")])
        child.write([(1, b"clone")] * 3)
        grand = child.clone(source, GRAND)
        grand.write([(2, b"grand")])
        at = source.segment(GRAND).meta.retention_horizon_lsn
        target.create_segment(seg_meta(GRAND), rebuild=True)
        target.begin_hydration(GRAND, at)
        start: int | None = 0
        tail = 0
        pages = []
        while start is not None:
            versions, next_page, tail = source.read_page_versions(GRAND, at, start, 2 * PAGE, 100)
            pages += [p for p, _, _ in versions]
            target.hydrate_pages(GRAND, at, start, next_page, versions)
            start = next_page
        assert pages == list(range(PAGES - 2)) and tail == at
        assert target.finish_hydration(GRAND, at, tail) == at
        got, _ = source.read_records(GRAND, at, 0, 100, 0)
        b = batch(got, segment_id=GRAND)
        commit_ok(target, b)
        for rp in (at, grand.tail):
            for p in range(PAGES):
                assert target.read_page(GRAND, p, rp).data == grand.oracle(p, rp) == source.read_page(GRAND, p, rp).data
    finally:
        source.close()
        target.close()


def test_a_truncation_range_reaching_below_the_branch_voids_only_the_clones_own_records(store: SegmentStore) -> None:
    """A stale writer (one a backtrack left behind) may send a clone's segment a range it made for the old
    timeline, starting below the branch. What lies at or below the chain anchor is durable and not the clone's:
    the range is cut to start above it, so SCL never drops below the branch (it used to drop to 0, and every copy
    with it: the volume could not open)."""
    parent = root(store)
    parent.write([(p, b"root%d" % p) for p in range(PAGES)])  # LSNs 1..8
    clone = parent.clone(store, CLONE)
    clone.write([(1, b"c1"), (2, b"c2")])  # 9, 10
    removed = store.truncate(CLONE, 2, TruncationRange(3, 50, 2))  # epoch 2 voids the clone's epoch-1 records
    m = store.segment(CLONE).meta
    assert removed == 2 and m.scl == 8 and m.chain_anchor_lsn == 8
    assert m.truncation_ranges == [TruncationRange(9, 50, 2)]
    assert store.truncate(CLONE, 2, TruncationRange(1, 5, 2)) == 0  # wholly at or below the anchor: nothing
    assert store.segment(CLONE).meta.truncation_ranges == [TruncationRange(9, 50, 2)]
    clone.records.clear()
    clone.check([8])
