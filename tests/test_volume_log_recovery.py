"""The writer's log after a recovery (compute/volume_log.py): adopted records, where allocation resumes,
and SCLs that segments report again on reconnect."""

from __future__ import annotations

import pytest

from sixfold.compute.quorum import Membership
from sixfold.compute.volume_log import LalExceeded, Patch, VolumeLog
from sixfold.storage.records import LogRecord, PayloadKind

pytestmark = pytest.mark.unit

ABCDEF = "ABCDEF"


# -- recovery: adopt() ---------------------------------------------------------------------


def recovered_log(lal: int) -> tuple[VolumeLog, list[tuple[LogRecord, int]]]:
    """As a new writer finds the volume: durable to 10, records 11..20 (CPL 20) above it in the chain,
    a truncation range above them, allocation resuming at 10 + LAL + 1."""
    log = VolumeLog(pg_of_page=lambda page_no: page_no % 3, epoch=2, lal=lal, vdl=10, next_lsn=10 + lal + 1)
    for pg in range(3):
        log.add_pg(pg, Membership.of(ABCDEF), last_lsn=max(lsn for lsn in range(1, 11) if lsn % 3 == pg))
    adopted = []
    for lsn in range(11, 21):
        page_no = lsn  # page_no % 3 == PG
        record = LogRecord(
            lsn=lsn,
            page_no=page_no,
            kind=PayloadKind.PATCH,
            offset=0,
            data=b"old",
            prev_volume_lsn=lsn - 1,
            prev_pg_lsn=lsn - 3,
            prev_page_lsn=0,
            epoch=1,
            cpl=lsn == 20,
        )
        adopted.append((record, page_no % 3))
    log.adopt(adopted, vdl_target=20)
    return log, adopted


def test_adopt_holds_vdl_until_every_adopted_record_is_durable() -> None:
    lal = 50
    log, _ = recovered_log(lal)
    assert (log.vcl, log.vdl) == (10, 10)
    # PGs 0 and 1 complete to 20; PG 2 (LSNs 11, 14, 17, 20) only to 14.
    released: list[int] = []
    for segment in "ABCD":
        released += log.on_ack(0, segment, 18)
        released += log.on_ack(1, segment, 19)
        released += log.on_ack(2, segment, 14)
    assert log.vcl == 16  # 17 (PG 2) is not complete
    assert log.vdl == 10 and released == []
    for segment in "ABC":
        released += log.on_ack(2, segment, 20)
    assert log.vdl == 10 and released == []  # 3 of 6
    released += log.on_ack(2, "F", 20)
    assert (log.vcl, log.vdl) == (20, 20)
    assert released == [20]


def test_allocation_after_recovery_counts_lal_from_the_first_lsn() -> None:
    lal = 50
    log, _ = recovered_log(lal)
    first = 10 + lal + 1
    # Before the adopted records are durable, allocation may already proceed up to first - 1 + LAL ...
    mtr = log.allocate_mtr([Patch(0, 0, b"n")] * 3)
    assert [r.lsn for r in mtr.records] == [first, first + 1, first + 2]
    assert mtr.records[0].prev_pg_lsn == 18  # the newest adopted record of PG 0
    # ... and make the adopted records durable: VDL moves to the adopted CPL, then to the new MTR's.
    released: list[int] = []
    for pg, top in [(1, 19), (2, 20), (0, first + 2)]:
        for segment in "ABCD":
            released += log.on_ack(pg, segment, top)
    assert (log.vcl, log.vdl) == (first + 2, first + 2)
    assert released == [20, first + 2]
    # The truncated gap 21..first-1 never holds VCL back: it was never allocated.

    log2, _ = recovered_log(lal)
    for pg, top in [(0, 18), (1, 19), (2, 20)]:
        for segment in "ABCD":
            log2.on_ack(pg, segment, top)
    assert (log2.vcl, log2.vdl) == (20, 20)
    bound = first - 1 + lal  # = max(VDL 20, first - 1) + LAL
    mtr = log2.allocate_mtr([Patch(1, 0, b"n")] * (bound - first + 1))
    assert mtr.cpl == bound
    with pytest.raises(LalExceeded):
        log2.allocate_mtr([Patch(1, 0, b"n")])
    assert log2.lsn_allocated == bound
    # Once VDL passes first - 1, the bound is VDL + LAL again.
    for segment in "ABCD":
        log2.on_ack(1, segment, bound)
    assert (log2.vcl, log2.vdl) == (bound, bound)
    assert log2.allocate_mtr([Patch(1, 0, b"n")] * lal).cpl == bound + lal
    with pytest.raises(LalExceeded):
        log2.allocate_mtr([Patch(1, 0, b"n")])


def test_allocation_beyond_first_lsn_plus_lal_is_refused_before_anything_is_durable() -> None:
    lal = 7
    log, _ = recovered_log(lal)
    first = 10 + lal + 1
    with pytest.raises(LalExceeded):
        log.allocate_mtr([Patch(0, 0, b"n")] * (lal + 1))
    assert log.allocate_mtr([Patch(0, 0, b"n")] * lal).cpl == first - 1 + lal
    with pytest.raises(LalExceeded):
        log.allocate_mtr([Patch(0, 0, b"n")])


def test_first_record_after_adopt_links_to_the_adopted_chain() -> None:
    """After adopting 11..20, the next record's volume backlink should be 20 (the newest record of the
    volume chain) and its page backlink the newest adopted record of that page, just as its PG
    backlink is the newest adopted record of its PG. The constructor was given the state at VDL 10."""
    lal = 50
    log = VolumeLog(
        pg_of_page=lambda page_no: page_no % 3,
        epoch=2,
        lal=lal,
        vdl=10,
        next_lsn=10 + lal + 1,
        prev_volume_lsn=10,
        page_lsn={p: p for p in range(1, 11)},
    )
    for pg in range(3):
        log.add_pg(pg, Membership.of(ABCDEF), last_lsn=max(lsn for lsn in range(1, 11) if lsn % 3 == pg))
    log.adopt(
        [
            (LogRecord(lsn, lsn % 6, PayloadKind.PATCH, 0, b"old", lsn - 1, 0, 0, 1, lsn == 20), (lsn % 6) % 3)
            for lsn in range(11, 21)
        ],
        vdl_target=20,
    )
    record = log.allocate_mtr([Patch(page_no=5, offset=0, data=b"n")]).records[0]
    assert record.prev_pg_lsn == 20  # PG 2: adopt() did advance this one
    assert record.prev_page_lsn == 17  # page 5 was last written at LSN 17
    assert record.prev_volume_lsn == 20


def test_a_segment_reporting_a_lower_scl_on_reconnect_is_taken_at_its_word_and_pgcl_still_follows() -> None:
    """A stream that reconnects takes the segment's SCL as it is now, even lower (it lost a copy and is
    rebuilding): reads stop going there. PGCL never goes back, and an SCL that meets quorum again counts."""
    log = VolumeLog(pg_of_page=lambda page: 0, epoch=1)
    log.add_pg(0, Membership.of(["a", "b", "c", "d", "e", "f"]))
    mtr = log.allocate_mtr([Patch(0, 0, b"x")])
    for node in "abc":
        assert log.on_ack(0, node, mtr.cpl) == []
    assert log.reset_scl(0, "d", 0) == []  # a rebuilding segment says it holds nothing yet
    assert log.pgs[0].scl_of["d"] == 0
    assert log.reset_scl(0, "d", mtr.cpl) == [mtr.cpl]  # the same SCL as a reconnect reports it: counted
    log.reset_scl(0, "a", 0)
    assert log.pgs[0].pgcl == mtr.cpl and log.vdl == mtr.cpl
