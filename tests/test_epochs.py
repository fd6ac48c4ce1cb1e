"""The epoch rules (storage/epochs.py) against a brute-force oracle, and the store carrying them out.

The oracle keeps the whole history of requests a segment accepted and derives everything from it
(the epoch held is the highest any accepted request carried, the owner is the writer of the last
accepted raise), where the rules keep only the current values. The epoch space is shrunk while a
test runs (EPOCH_MAX 12, EPOCH_STEP_MAX 4) so that the bounds are met as often as the middle.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.storage import epochs
from sixfold.storage.chain import ChainBuilder
from sixfold.storage.epochs import EPOCH_MAX, EPOCH_STEP_MAX
from sixfold.storage.errors import InvalidRequest, StaleEpoch, StaleMembershipEpoch, StaleVolumeEpoch, StorageError
from sixfold.storage.segment import AppendBatch, TruncationRange
from sixfold.storage.store import SegmentStore
from sixfold.tools.sim.memlmdb import MemDisk
from tests.depth import examples
from tests.test_store import SEG, batch, commit_ok, meta

pytestmark = pytest.mark.unit

SMALL_EPOCH_MAX = 12
SMALL_STEP_MAX = 4
WRITERS = ["", "w1", "w2"]
PEER_SETS = [[], [["b1", "127.0.0.1:1"]], [["c1", "127.0.0.1:2"]]]

# Outcomes, as a caller tells them apart (the reason code, or the status for an invalid request).
INVALID = "invalid"
STALE_VOLUME = "stale volume epoch"
STALE_MEMBERSHIP = "stale membership epoch"
TAKEN = "taken"  # a raise or an UpdateMembership that changed what the segment holds
UNCHANGED = "unchanged"  # a raise retried by its writer, the same membership again
ACCEPTED = "accepted"  # a write or a read


@contextmanager
def small_epoch_space() -> Iterator[None]:
    with mock.patch.multiple(epochs, EPOCH_MAX=SMALL_EPOCH_MAX, EPOCH_STEP_MAX=SMALL_STEP_MAX):
        yield


def outcome_of(call: Any) -> str:
    """Run `call` and name what it came to (TAKEN/UNCHANGED from its truth value, None: ACCEPTED)."""
    try:
        result = call()
    except StaleVolumeEpoch:
        return STALE_VOLUME
    except StaleMembershipEpoch:
        return STALE_MEMBERSHIP
    except InvalidRequest:
        return INVALID
    if result is None:
        return ACCEPTED
    return TAKEN if result else UNCHANGED


# -- the oracle ----------------------------------------------------------------------------------


@dataclass
class History:
    """Every request the segment accepted, oldest first: ("raise", epoch, writer), ("write", volume,
    membership) (an append), ("truncate", volume, 0), ("membership", epoch, peers); a read changes
    nothing. The segment starts with volume epoch 0 and membership epoch 1."""

    accepted: list[tuple[Any, ...]] = field(default_factory=list)

    def volume_epoch(self) -> int:
        return max([0, *(op[1] for op in self.accepted if op[0] in ("raise", "write", "truncate"))])

    def owner(self) -> str:
        raises = [op for op in self.accepted if op[0] == "raise"]
        return raises[-1][2] if raises else ""

    def membership_epoch(self) -> int:
        return max([1, *(op[1] for op in self.accepted if op[0] == "membership")])

    def peers(self) -> list[list[str]]:
        installs = [op for op in self.accepted if op[0] == "membership"]
        return installs[-1][2] if installs else []

    def decide(self, op: tuple[Any, ...]) -> str:
        """What the segment must answer to `op`, from the rules as the issue states them, naively."""
        kind, epoch, other = op
        held, held_membership = self.volume_epoch(), self.membership_epoch()

        def out_of_bounds(value: int, current: int) -> bool:
            return not 1 <= value <= SMALL_EPOCH_MAX or value > current + SMALL_STEP_MAX

        if kind == "raise":
            if out_of_bounds(epoch, held):
                return INVALID
            if epoch > held:
                return TAKEN
            if epoch == held and other != "" and other == self.owner():
                return UNCHANGED  # the same writer asking again: its reply was lost
            return STALE_VOLUME
        if kind == "membership":
            if out_of_bounds(epoch, held_membership):
                return INVALID
            if epoch < held_membership:
                return STALE_MEMBERSHIP
            return UNCHANGED if (epoch, other) == (held_membership, self.peers()) else TAKEN
        if kind == "read" and epoch == 0:
            return ACCEPTED  # a read that names no epoch is not checked
        if out_of_bounds(epoch, held):
            return INVALID
        if epoch < held:
            return STALE_VOLUME
        if kind in ("read", "truncate"):
            return ACCEPTED  # neither carries a membership epoch
        if other > SMALL_EPOCH_MAX:
            return INVALID
        if other < held_membership:
            return STALE_MEMBERSHIP
        return ACCEPTED

    def apply(self, op: tuple[Any, ...], outcome: str) -> None:
        if outcome in (TAKEN, ACCEPTED) and op[0] != "read":
            self.accepted.append(op)


ops = st.one_of(
    st.tuples(st.just("raise"), st.integers(0, SMALL_EPOCH_MAX + 2), st.sampled_from(WRITERS)),
    st.tuples(st.just("write"), st.integers(0, SMALL_EPOCH_MAX + 2), st.integers(0, SMALL_EPOCH_MAX + 2)),
    st.tuples(st.just("truncate"), st.integers(0, SMALL_EPOCH_MAX + 2), st.just(0)),
    st.tuples(st.just("read"), st.integers(0, SMALL_EPOCH_MAX + 2), st.just(0)),
    st.tuples(st.just("membership"), st.integers(0, SMALL_EPOCH_MAX + 2), st.sampled_from(PEER_SETS)),
)


# -- the rules, pure ---------------------------------------------------------------------------------


@dataclass
class EpochState:
    """A segment's epochs as the store keeps them, changed only through storage/epochs.py."""

    volume_epoch: int = 0
    owner: str = ""
    membership_epoch: int = 1
    peers: list[list[str]] = field(default_factory=list)

    def handle(self, op: tuple[Any, ...]) -> bool | None:
        kind, epoch, other = op
        if kind == "raise":
            taken = epochs.plan_raise(epoch, other, self.volume_epoch, self.owner, "s")
            if taken:
                self.volume_epoch, self.owner = epoch, other
            return taken
        if kind == "membership":
            install = epochs.plan_membership(epoch, other, self.membership_epoch, self.peers, "s")
            if install:
                self.membership_epoch, self.peers = epoch, other
            return install
        if kind == "read":
            epochs.check_read_epoch(epoch, self.volume_epoch, "s")
            return None
        if kind == "truncate":
            epochs.check_volume_epoch(epoch, self.volume_epoch, "s")
        else:
            epochs.check_request(epoch, other, self.volume_epoch, self.membership_epoch, "s")
        self.volume_epoch = epochs.adopted(self.volume_epoch, epoch)
        return None


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(ops, max_size=30))
def test_the_epoch_rules_match_the_oracle_after_every_request(requests: list[tuple[Any, ...]]) -> None:
    history, state = History(), EpochState()
    with small_epoch_space():
        for op in requests:
            expected = history.decide(op)
            assert outcome_of(lambda op=op: state.handle(op)) == expected, (op, history.accepted)
            history.apply(op, expected)
            assert (state.volume_epoch, state.owner) == (history.volume_epoch(), history.owner())
            assert (state.membership_epoch, state.peers) == (history.membership_epoch(), history.peers())


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(ops, max_size=20), st.integers(1, SMALL_EPOCH_MAX), st.sampled_from(WRITERS[1:]))
def test_a_writer_raising_the_epoch_it_took_again_changes_nothing(
    requests: list[tuple[Any, ...]], epoch: int, writer: str
) -> None:
    state = EpochState()
    with small_epoch_space():
        for op in requests:
            outcome_of(lambda op=op: state.handle(op))
        if outcome_of(lambda: state.handle(("raise", epoch, writer))) != TAKEN:
            return
        before = EpochState(state.volume_epoch, state.owner, state.membership_epoch, list(state.peers))
        assert outcome_of(lambda: state.handle(("raise", epoch, writer))) == UNCHANGED
        assert state == before


@given(st.integers(0, 2**64 - 1), st.integers(0, 100))
def test_an_epoch_is_taken_only_when_newer_in_bounds_and_within_a_step(epoch: int, current: int) -> None:
    ok = 1 <= epoch <= EPOCH_MAX and epoch <= current + EPOCH_STEP_MAX and epoch > current
    try:
        taken = epochs.plan_raise(epoch, "w", current, "other", "s")
    except InvalidRequest:
        assert not (1 <= epoch <= EPOCH_MAX and epoch <= current + EPOCH_STEP_MAX)
        return
    except StaleEpoch as refused:
        assert epoch <= current and refused.metadata["volume_epoch"] == str(current)
        return
    assert taken and ok


def test_the_same_writer_raising_the_same_epoch_again_is_a_no_op_another_writer_is_refused() -> None:
    assert epochs.plan_raise(7, "w1", 6, "", "s") is True
    assert epochs.plan_raise(7, "w1", 7, "w1", "s") is False
    with pytest.raises(StaleEpoch, match="another writer"):
        epochs.plan_raise(7, "w2", 7, "w1", "s")
    with pytest.raises(StaleEpoch):
        epochs.plan_raise(7, "", 7, "", "s")  # no writer id: never "the same writer"


def test_a_request_older_than_the_segments_epoch_is_refused_with_the_epoch_held() -> None:
    with pytest.raises(StaleEpoch) as stale:
        epochs.check_request(3, 1, 5, 1, "s")
    assert stale.value.reason == "STALE_VOLUME_EPOCH" and stale.value.metadata["volume_epoch"] == "5"
    with pytest.raises(StaleEpoch) as stale:
        epochs.check_request(5, 1, 5, 2, "s")
    assert stale.value.reason == "STALE_MEMBERSHIP_EPOCH" and stale.value.metadata["membership_epoch"] == "2"
    with pytest.raises(InvalidRequest, match="highest epoch"):
        epochs.check_request(2**64 - 1, 1, 5, 1, "s")
    epochs.check_request(6, 2, 5, 2, "s")  # newer: accepted (adopted with the request)


def test_a_new_segment_starts_at_membership_epoch_one_and_gossip_copies_are_never_stale() -> None:
    assert epochs.initial_membership_epoch(0) == 1 and epochs.initial_membership_epoch(4) == 4
    with pytest.raises(InvalidRequest, match="above the highest epoch"):
        epochs.initial_membership_epoch(EPOCH_MAX + 1)
    assert epochs.peer_copy_epoch(3, []) == 3 and epochs.peer_copy_epoch(3, [1, 5, 2]) == 5


# -- the store carries the rules out ---------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SegmentStore]:
    s = SegmentStore(str(tmp_path / "lmdb"), map_size_bytes=1 << 24)
    s.create_segment(meta())
    yield s
    s.close()


def store_handle(store: SegmentStore, op: tuple[Any, ...], n: int) -> bool | None:
    """`op` as the servicer hands it to the store (the `n`th request: a fresh truncation range each)."""
    kind, epoch, other = op
    if kind == "raise":
        before = store.segment(SEG).meta.copy()
        assert store.raise_volume_epoch(SEG, epoch, other) == epoch
        return store.segment(SEG).meta != before
    if kind == "membership":
        before = store.segment(SEG).meta.copy()
        assert store.update_membership(SEG, epoch, other) == epoch
        return store.segment(SEG).meta != before
    if kind == "read":
        store.segment(SEG).check_read_epoch(epoch)
        return None
    if kind == "truncate":  # a fresh range each time (a range known already changes nothing)
        store.truncate(SEG, epoch, TruncationRange(1000 + n, 1000 + n, 1))
        return None
    (result,) = store.commit_appends([AppendBatch(SEG, epoch, other, n, [])])  # a batch with no records
    if isinstance(result, StorageError):
        raise result
    return None


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(ops, max_size=20))
def test_the_store_answers_every_epoch_request_as_the_oracle_does(requests: list[tuple[Any, ...]]) -> None:
    store = SegmentStore("node", open_env=MemDisk().open)
    store.create_segment(meta())
    history = History()
    with small_epoch_space():
        for n, op in enumerate(requests):
            expected = history.decide(op)
            assert outcome_of(lambda op=op, n=n: store_handle(store, op, n)) == expected, (op, history.accepted)
            history.apply(op, expected)
            m = store.segment(SEG).meta
            assert (m.volume_epoch, m.volume_epoch_owner) == (history.volume_epoch(), history.owner())
            assert (m.membership_epoch, m.peers) == (history.membership_epoch(), history.peers())


def test_a_repeated_raise_of_the_same_epoch_succeeds_and_changes_nothing(
    store: SegmentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer whose RaiseVolumeEpoch reply was lost asks again: the same answer, nothing written."""
    assert store.raise_volume_epoch(SEG, 5, "writer-a") == 5
    before = store.segment(SEG)
    with store.disk.read() as txn:
        stored = bytes(txn.get(SEG.encode(), db=store.disk.dbs[b"segments"]))
    writes: list[Any] = []
    real_write = store.disk.write

    def counted(fn: Any, *args: Any) -> Any:
        writes.append(fn)
        return real_write(fn, *args)

    monkeypatch.setattr(store.disk, "write", counted)
    assert store.raise_volume_epoch(SEG, 5, "writer-a") == 5
    assert writes == [] and store.segment(SEG) is before
    with store.disk.read() as txn:
        assert bytes(txn.get(SEG.encode(), db=store.disk.dbs[b"segments"])) == stored


def test_raising_the_volume_epoch_must_be_strictly_newer(store: SegmentStore) -> None:
    assert store.raise_volume_epoch(SEG, 4) == 4
    with pytest.raises(StaleEpoch, match="raised by another writer"):
        store.raise_volume_epoch(SEG, 4)  # no writer id: never the same writer
    with pytest.raises(StaleEpoch):
        store.raise_volume_epoch(SEG, 3)
    (error,) = store.commit_appends([batch([ChainBuilder(epoch=3).patch(1, b"a")], epoch=3)])
    assert isinstance(error, StaleEpoch) and "fenced" in error.message


def test_raising_the_same_epoch_again_is_idempotent_for_the_same_writer_only(store: SegmentStore) -> None:
    """A lost reply is rescued by asking again; two writers that picked the same epoch still cannot both win."""
    assert store.raise_volume_epoch(SEG, 5, "writer-a") == 5
    assert store.raise_volume_epoch(SEG, 5, "writer-a") == 5
    with pytest.raises(StaleEpoch, match="raised by another writer") as refused:
        store.raise_volume_epoch(SEG, 5, "writer-b")
    assert refused.value.metadata["volume_epoch"] == "5"
    assert store.raise_volume_epoch(SEG, 6, "writer-b") == 6
    with pytest.raises(StaleEpoch, match="older than epoch 6"):
        store.raise_volume_epoch(SEG, 5, "writer-a")


def test_epochs_near_the_top_of_uint64_are_refused(store: SegmentStore) -> None:
    """An epoch whose successor no writer could pick, or one far past the segment's, is not one a writer picked."""
    for epoch in (2**64 - 1, EPOCH_MAX + 1, EPOCH_STEP_MAX + 1):
        with pytest.raises(InvalidRequest):
            store.raise_volume_epoch(SEG, epoch, "w")
    assert store.segment(SEG).meta.volume_epoch == 0
    (error,) = store.commit_appends([batch([ChainBuilder(epoch=1).patch(1, b"a")], epoch=EPOCH_MAX + 1)])
    assert isinstance(error, InvalidRequest) and "highest epoch" in error.message


def test_membership_epoch_moves_forward_durably_and_fences_older_appends(tmp_path: Path) -> None:
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path)
    store.create_segment(meta())
    chain = ChainBuilder()
    commit_ok(store, batch([chain.patch(1, b"before")]))
    assert store.update_membership(SEG, 3, [["b1", "127.0.0.1:1"], ["g1", "127.0.0.1:2"]]) == 3
    assert store.update_membership(SEG, 3, [["b1", "127.0.0.1:1"], ["g1", "127.0.0.1:2"]]) == 3  # idempotent
    with pytest.raises(StaleEpoch, match="membership epoch 2 is older than epoch 3"):
        store.update_membership(SEG, 2, [])
    [refused] = store.commit_appends([batch([chain.patch(1, b"after")])])  # the batch carries membership epoch 1
    assert isinstance(refused, StaleEpoch) and "refresh the volume's geometry" in str(refused)
    store.close()
    store = SegmentStore(path)
    assert store.segment(SEG).meta.membership_epoch == 3
    assert store.segment(SEG).meta.peers == [["b1", "127.0.0.1:1"], ["g1", "127.0.0.1:2"]]
    assert store.segment(SEG).tracker.scl == 1
    store.close()
