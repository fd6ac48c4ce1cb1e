"""The writer's log (compute/volume_log.py) against a deliberately naive oracle.

The oracle keeps every allocated record and, per PG, each segment's highest
reported SCL, and recomputes everything from scratch after every step:
- a record is complete once, under its PG's membership, 4 members of every set
  have reported an SCL >= its LSN (once complete it stays complete: a later
  membership change does not undo durability);
- VCL = the highest allocated LSN L such that every allocated record <= L is
  complete (0 if none);
- VDL = the highest CPL <= VCL (0 if none).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from sixfold.compute.quorum import Membership
from sixfold.compute.volume_log import LalExceeded, Patch, VolumeLog
from sixfold.storage.records import LogRecord, PayloadKind
from tests.depth import examples

pytestmark = pytest.mark.unit

ABCDEF = "ABCDEF"
ABCDEG = "ABCDEG"
NEWCOMERS = "GHIJKLMNOPQRSTUVWXYZ"


# -- the oracle -------------------------------------------------------------------------


@dataclass
class OracleRecord:
    lsn: int
    pg: int
    page_no: int
    cpl: bool
    complete: bool = False


@dataclass
class Oracle:
    sets_of: dict[int, list[frozenset[str]]]  # PG -> its current quorum sets
    records: list[OracleRecord] = field(default_factory=list)
    scl_max: dict[int, dict[str, int]] = field(default_factory=dict)  # PG -> segment -> highest SCL reported

    def ack(self, pg: int, segment: str, scl: int) -> None:
        seen = self.scl_max.setdefault(pg, {})
        seen[segment] = max(seen.get(segment, 0), scl)

    def leave(self, pg: int, members: frozenset[str]) -> None:
        """A segment no quorum set holds any more is forgotten: if its node joins again, it is a new
        segment whose SCL starts from nothing."""
        seen = self.scl_max.get(pg, {})
        for segment in set(seen) - members:
            del seen[segment]

    def refresh(self) -> None:
        for record in self.records:
            if record.complete:
                continue
            seen = self.scl_max.get(record.pg, {})
            record.complete = all(
                sum(1 for member in s if seen.get(member, 0) >= record.lsn) >= 4 for s in self.sets_of[record.pg]
            )

    def vcl(self) -> int:
        best = 0
        for candidate in self.records:  # every allocated LSN is a candidate
            if all(r.complete for r in self.records if r.lsn <= candidate.lsn):
                best = max(best, candidate.lsn)
        return best

    def vdl(self) -> int:
        vcl = self.vcl()
        return max((r.lsn for r in self.records if r.cpl and r.lsn <= vcl), default=0)

    def highest_lsn(self, pg: int | None = None) -> int:
        return max((r.lsn for r in self.records if pg is None or r.pg == pg), default=0)


def check_against_oracle(log: VolumeLog, oracle: Oracle) -> None:
    oracle.refresh()
    assert log.vcl == oracle.vcl()
    vdl = oracle.vdl()
    assert log.vdl == vdl
    assert log.vdl <= log.vcl <= log.lsn_allocated
    for pg in oracle.sets_of:  # a PG's read point: its newest record at or below VDL
        assert log.read_point(pg) == max((r.lsn for r in oracle.records if r.pg == pg and r.lsn <= vdl), default=0)


def check_backlinks(mtr_records: list[LogRecord], pgs: list[int], before: list[OracleRecord]) -> None:
    """Backlinks computed naively from the list of every record allocated before."""
    history = list(before)
    for i, (record, pg) in enumerate(zip(mtr_records, pgs)):
        assert record.prev_volume_lsn == max((r.lsn for r in history), default=0)
        assert record.prev_pg_lsn == max((r.lsn for r in history if r.pg == pg), default=0)
        assert record.prev_page_lsn == max((r.lsn for r in history if r.page_no == record.page_no), default=0)
        assert record.cpl == (i == len(mtr_records) - 1)
        history.append(OracleRecord(record.lsn, pg, record.page_no, record.cpl))


def transition(sets: list[frozenset[str]], newcomer: str, leaving: str) -> list[frozenset[str]]:
    """One step of [P18] §4.1: S -> (S and S') -> S' (or back to S)."""
    if len(sets) == 1:
        (only,) = sets
        return [only, (only - {leaving}) | {newcomer}]
    return [sets[0]] if newcomer == "back" else [sets[1]]


# -- the random run -------------------------------------------------------------------------


@settings(max_examples=examples(150), deadline=None)
@given(st.data())
def test_random_run_matches_oracle(data: st.DataObject) -> None:
    n_pgs = data.draw(st.integers(min_value=1, max_value=3), label="n_pgs")
    lal = data.draw(st.integers(min_value=2, max_value=25), label="lal")
    n_pages = data.draw(st.integers(min_value=1, max_value=8), label="n_pages")
    by_modulo = data.draw(st.booleans(), label="pg_of_page by modulo")
    pages_per_pg = max(1, -(-n_pages // n_pgs))

    def pg_of_page(page_no: int) -> int:
        return page_no % n_pgs if by_modulo else min(page_no // pages_per_pg, n_pgs - 1)

    log = VolumeLog(pg_of_page=pg_of_page, epoch=3, lal=lal)
    sets_of: dict[int, list[frozenset[str]]] = {}
    for pg in range(n_pgs):
        sets = [frozenset(ABCDEF)]
        if data.draw(st.booleans(), label=f"pg {pg} starts in a membership change"):
            sets = transition(sets, "G", data.draw(st.sampled_from(ABCDEF)))
        sets_of[pg] = sets
        log.add_pg(pg, Membership.of(*sets))
    oracle = Oracle(sets_of)
    released: list[int] = []
    vdl_before = 0
    check_against_oracle(log, oracle)

    steps = data.draw(st.integers(min_value=8, max_value=45), label="steps")
    for _ in range(steps):
        op = data.draw(st.sampled_from(["allocate", "ack", "ack", "ack", "membership"]), label="op")
        step_released: list[int] = []
        vdl_start = vdl_before
        if op == "allocate":
            pages = data.draw(st.lists(st.integers(0, n_pages - 1), min_size=1, max_size=4), label="pages")
            patches = [Patch(p, offset=i, data=bytes([i])) for i, p in enumerate(pages)]
            first = oracle.highest_lsn() + 1
            last = first + len(patches) - 1
            if last > oracle.vdl() + lal:
                with pytest.raises(LalExceeded):
                    log.allocate_mtr(patches)
                event("LalExceeded raised")
            else:
                mtr = log.allocate_mtr(patches)
                assert [r.lsn for r in mtr.records] == list(range(first, last + 1))
                assert mtr.cpl == last
                assert mtr.pg_of_record == [pg_of_page(p) for p in pages]
                assert [r.page_no for r in mtr.records] == pages
                assert all(r.epoch == 3 and r.kind == PayloadKind.PATCH for r in mtr.records)
                assert [(r.offset, r.data) for r in mtr.records] == [(p.offset, p.data) for p in patches]
                check_backlinks(mtr.records, mtr.pg_of_record, oracle.records)
                for record, pg in zip(mtr.records, mtr.pg_of_record):
                    oracle.records.append(OracleRecord(record.lsn, pg, record.page_no, record.cpl))
        elif op == "ack":
            # One SCL from 1-4 segments of one PG (a batch reaching several of them), checked after each ack.
            pg = data.draw(st.integers(0, n_pgs - 1), label="ack pg")
            highest = oracle.highest_lsn(pg)
            scl = data.draw(st.one_of(st.just(highest), st.integers(0, highest)), label="scl")
            members = sorted(frozenset().union(*sets_of[pg]))
            pool = members + [s for s in "FGZ" if s not in members]  # a departed or unknown segment may still ack
            segments = data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=5, unique=True), label="segments")
            for segment in segments:
                oracle.ack(pg, segment, scl)
                acked = log.on_ack(pg, segment, scl)
                step_released += acked
                check_against_oracle(log, oracle)
                assert log.vdl >= vdl_before
                assert acked == [r.lsn for r in oracle.records if r.cpl and vdl_before < r.lsn <= log.vdl]
                vdl_before = log.vdl
        else:
            pg = data.draw(st.integers(0, n_pgs - 1), label="membership pg")
            sets = sets_of[pg]
            if len(sets) == 1:
                newcomer = next(c for c in NEWCOMERS if all(c not in s for s in sets))
                sets = transition(sets, newcomer, data.draw(st.sampled_from(sorted(sets[0]))))
            else:
                sets = transition(sets, data.draw(st.sampled_from(["back", "forward"])), "")
            sets_of[pg] = sets
            oracle.leave(pg, frozenset().union(*sets))
            step_released = log.set_membership(pg, Membership.of(*sets))  # releases what the change completes
            assert log.advance() == []
        released.extend(step_released)
        check_against_oracle(log, oracle)
        assert log.vdl >= vdl_start
        cpls = [r.lsn for r in oracle.records if r.cpl]
        assert step_released == [c for c in cpls if vdl_start < c <= log.vdl]
        vdl_before = log.vdl

    # Drain: every member of every PG reports everything; the whole log becomes durable.
    for pg in range(n_pgs):
        for segment in sorted(frozenset().union(*sets_of[pg])):
            oracle.ack(pg, segment, oracle.highest_lsn(pg))
            released.extend(log.on_ack(pg, segment, oracle.highest_lsn(pg)))
            check_against_oracle(log, oracle)
    assert log.vcl == oracle.highest_lsn()
    assert log.vdl == max((r.lsn for r in oracle.records if r.cpl), default=0)
    assert log.records_pending == 0

    cpls = [r.lsn for r in oracle.records if r.cpl]
    assert released == [c for c in cpls if c <= log.vdl]
    assert all(a < b for a, b in itertools.pairwise(released))
    event(f"VDL before the drain > 0: {vdl_before > 0}")


@settings(max_examples=examples(100), deadline=None)
@given(st.integers(1, 20), st.lists(st.integers(1, 6), min_size=1, max_size=30))
def test_lal_raises_exactly_past_vdl_plus_lal(lal: int, sizes: list[int]) -> None:
    """With no acks VDL stays 0: MTRs are allocated until one would end above LAL, and never after."""
    log = VolumeLog(pg_of_page=lambda page_no: 0, epoch=1, lal=lal)
    log.add_pg(0, Membership.of(ABCDEF))
    next_lsn = 1
    for size in sizes:
        last = next_lsn + size - 1
        if last > lal:
            with pytest.raises(LalExceeded):
                log.allocate_mtr([Patch(0, 0, b"x")] * size)
            assert log.lsn_allocated == next_lsn - 1  # a refused MTR allocates nothing
        else:
            assert log.allocate_mtr([Patch(0, 0, b"x")] * size).cpl == last
            next_lsn = last + 1


# -- explicit cases -------------------------------------------------------------------------


def one_record_mtrs(log: VolumeLog, lsns: range) -> None:
    for lsn in lsns:
        assert log.allocate_mtr([Patch(page_no=lsn, offset=0, data=b"p")]).cpl == lsn


def test_paper_case_vcl_104() -> None:
    """[P18] §2: odd LSNs in PG1 complete to 103, even LSNs in PG2 complete to 104 -> VCL = 104."""
    log = VolumeLog(pg_of_page=lambda page_no: 1 if page_no % 2 else 2, epoch=1)
    log.add_pg(1, Membership.of(ABCDEF))
    log.add_pg(2, Membership.of(ABCDEF))
    one_record_mtrs(log, range(1, 111))  # page_no == LSN, so odd LSNs go to PG1
    released: list[int] = []
    for segment in "ABCD":
        released += log.on_ack(2, segment, 104)
    assert (log.vcl, log.vdl, released) == (0, 0, [])  # LSN 1 (PG1) is not complete yet
    for segment in "ABC":
        released += log.on_ack(1, segment, 103)
    assert (log.vcl, log.vdl, released) == (0, 0, [])  # 3 of 6 is not a write quorum
    released += log.on_ack(1, "E", 103)
    assert log.vcl == 104
    assert log.vdl == 104
    assert released == list(range(1, 105))
    # A fifth segment or a stale lower SCL changes nothing; 105 (PG1) holds VCL at 104.
    assert log.on_ack(1, "F", 103) == [] and log.on_ack(2, "E", 50) == []
    assert (log.vcl, log.vdl) == (104, 104)
    for segment in "ABCD":
        released += log.on_ack(1, segment, 109)
    assert (log.vcl, log.vdl) == (105, 105)  # 107, 109 complete too, but 106 (PG2) is not
    for segment in "ABCD":
        released += log.on_ack(2, segment, 110)
    assert (log.vcl, log.vdl) == (110, 110)
    assert released == list(range(1, 111))


def transitional_log(n_records: int = 5) -> VolumeLog:
    log = VolumeLog(pg_of_page=lambda page_no: 0, epoch=1)
    log.add_pg(0, Membership.of(ABCDEF, ABCDEG))
    one_record_mtrs(log, range(1, n_records + 1))
    return log


@pytest.mark.parametrize(
    "acks, vcl",
    [
        ("ABCF", 0),  # 4/6 of ABCDEF, 3/6 of ABCDEG
        ("ABCG", 0),  # 3/6 of ABCDEF, 4/6 of ABCDEG
        ("ABFG", 0),  # 3/6 of each
        ("ABCFG", 5),  # 4/6 of each
        ("ABEFG", 5),
        ("ABCD", 5),  # the four shared members are 4/6 of both
        ("DEFG", 0),
        ("ABCDEFG", 5),
    ],
)
def test_transition_needs_four_of_both_sets(acks: str, vcl: int) -> None:
    log = transitional_log()
    released: list[int] = []
    for segment in acks:
        released += log.on_ack(0, segment, 5)
    assert (log.vcl, log.vdl) == (vcl, vcl)
    assert released == list(range(1, vcl + 1))


def test_transition_pgcl_is_the_lower_of_both_sets() -> None:
    log = transitional_log()
    for segment, scl in [("A", 5), ("B", 5), ("C", 5), ("F", 5)]:
        log.on_ack(0, segment, scl)
    assert log.vcl == 0  # ABCDEG has only 3 members at 5
    assert log.on_ack(0, "G", 3) == [1, 2, 3]  # now ABCDEG's 4th highest is 3, ABCDEF's is 5
    assert (log.vcl, log.vdl) == (3, 3)
    assert log.on_ack(0, "G", 5) == [4, 5]


def test_membership_change_keeps_durability_and_demands_both_sets() -> None:
    log = VolumeLog(pg_of_page=lambda page_no: 0, epoch=1)
    log.add_pg(0, Membership.of(ABCDEF))
    one_record_mtrs(log, range(1, 6))
    for segment in "ABCF":
        log.on_ack(0, segment, 2)
    assert (log.vcl, log.vdl) == (2, 2)
    # F is being replaced by G: records already durable stay durable ...
    log.set_membership(0, Membership.of(ABCDEF, ABCDEG))
    assert log.advance() == [] and (log.vcl, log.vdl) == (2, 2)
    # ... and new progress needs 4/6 of ABCDEG too.
    for segment in "ABCF":
        log.on_ack(0, segment, 5)
    assert (log.vcl, log.vdl) == (2, 2)
    assert log.on_ack(0, "G", 5) == [3, 4, 5]
    # Completing the change to ABCDEG keeps everything.
    log.set_membership(0, Membership.of(ABCDEG))
    assert log.advance() == [] and (log.vcl, log.vdl) == (5, 5)


def test_durability_survives_a_membership_change_while_another_pg_holds_vcl_back() -> None:
    """PG 0's record 2 met 4/6 of ABCDEF (with F) while PG 1's record 1 held VCL at 0. Replacing F must not
    make record 2 incomplete again: once PG 1 catches up, VCL and VDL pass 2 without further PG 0 acks."""
    log = VolumeLog(pg_of_page=lambda page_no: page_no, epoch=1)
    log.add_pg(0, Membership.of(ABCDEF))
    log.add_pg(1, Membership.of(ABCDEF))
    assert log.allocate_mtr([Patch(1, 0, b"a")]).cpl == 1  # PG 1
    assert log.allocate_mtr([Patch(0, 0, b"b")]).cpl == 2  # PG 0
    for segment in "ABCF":
        assert log.on_ack(0, segment, 2) == []
    assert log.vcl == 0
    log.set_membership(0, Membership.of(ABCDEF, ABCDEG))
    assert log.advance() == []
    assert log.allocate_mtr([Patch(0, 0, b"c")]).cpl == 3  # PG 0
    assert log.on_ack(0, "A", 3) == []  # an ack under the new membership must not undo it either
    for segment in "ABCD":
        log.on_ack(1, segment, 1)
    assert (log.vcl, log.vdl) == (2, 2)  # 3 has not met 4/6 of both sets


def test_finishing_a_membership_change_can_complete_records() -> None:
    """During ABCDEF -> ABCDEG, A B C G hold everything but F is gone; dropping ABCDEF completes the records.

    set_membership() returns the commits the change released."""
    log = transitional_log()
    for segment in "ABCG":
        log.on_ack(0, segment, 5)
    assert log.vcl == 0
    assert log.set_membership(0, Membership.of(ABCDEG)) == [1, 2, 3, 4, 5]
    assert (log.vcl, log.vdl) == (5, 5)


def test_each_mtr_carries_its_commit_time_on_its_cpl_and_times_never_go_back() -> None:
    log = VolumeLog(pg_of_page=lambda page_no: 0, epoch=1)
    log.add_pg(0, Membership.of(ABCDEF))
    first = log.allocate_mtr([Patch(1, 0, b"a"), Patch(2, 0, b"b")], commit_time_us=5_000)
    assert [r.commit_time_us for r in first.records] == [0, 5_000]
    second = log.allocate_mtr([Patch(1, 0, b"c")], commit_time_us=4_000)  # the wall clock stepped back
    assert second.records[-1].commit_time_us == 5_000
    third = log.allocate_mtr([Patch(1, 0, b"d")])
    assert third.records[-1].commit_time_us == 0
