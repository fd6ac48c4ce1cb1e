"""Recovery arithmetic: from what a read quorum of every PG reports, find VCL and VDL.

Pure. The writer process gathers the inputs (segment states, records) and
carries out the plan (truncate, re-replicate, allocate above). Rules:

1. The floor is the highest VDL any writer reported to any segment: every
   record at or below it met write quorum, so every read quorum of its PG
   holds it. The walk starts there.
2. Per PG, the best segment is the one with the highest SCL among those that
   answered; its records at or below its SCL are the PG's recovered chain.
3. The volume chain is walked from the floor along `prev_volume_lsn`. A record
   continues the chain only if it is in its PG's recovered chain and not void
   under a truncation range. VCL is where the walk stops; VDL is the last CPL
   passed (the floor if none).
4. Records in (floor, VDL] may sit on fewer than four segments: the new writer
   sends them to every segment of their PG again and waits until they meet
   write quorum before it serves anything.
5. Everything above VDL that any writer could have allocated is truncated with
   the new epoch. A writer allocates at most LAL past where it started, which is
   the end of its own truncation range (compute.volume_log rule 1), so the range
   is [VDL + 1, max(max(VDL, every truncation end seen) + LAL, highest LSN
   seen)]. New LSNs start above it and above every LSN ever seen. The highest
   LSN counts because it may lie above every range: a timeline a backtrack made
   starts its LSNs above an LSN floor far above its VDL; were the range to end
   below the floor, the next writer's range would not cover this one's window.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sixfold.storage.epochs import EPOCH_MAX
from sixfold.storage.errors import VolumeFull
from sixfold.storage.records import LSN_MAX, LogRecord
from sixfold.storage.truncation import TruncationRange, voided


class NewerRecovery(Exception):
    """A truncation range stamped with `epoch`, not older than this recovery's, showed up: start again."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"a writer with epoch {epoch} recovered the volume meanwhile")
        self.epoch = epoch


@dataclass(frozen=True)
class SegmentReport:
    segment_id: str
    scl: int
    highest_lsn: int
    volume_epoch: int
    vdl_hint: int
    truncation_ranges: tuple[TruncationRange, ...] = ()


@dataclass
class PgRecovered:
    """What the writer fetched for one PG: the best segment's SCL and its records above the floor."""

    best_segment_id: str
    best_scl: int
    records: list[LogRecord] = field(default_factory=list)


@dataclass
class RecoveryPlan:
    floor: int
    vcl: int
    vdl: int
    truncation: TruncationRange
    known_truncations: list[TruncationRange]
    next_lsn: int
    readopt: list[tuple[LogRecord, int]]  # (record, pg_index) in (floor, vdl], LSN order


def next_epoch(reports: list[SegmentReport], refused: int = 0) -> int:
    """One past every epoch a segment reported (or refused a raise with): strictly newer than any writer's."""
    epoch = max([refused, *(r.volume_epoch for r in reports)]) + 1
    if epoch > EPOCH_MAX:
        raise VolumeFull(f"the volume has used up its epochs: epoch {epoch} would be above the highest {EPOCH_MAX}")
    return epoch


def floor_of(reports: list[SegmentReport]) -> int:
    return max((r.vdl_hint for r in reports), default=0)


def known_truncations(reports: list[SegmentReport]) -> list[TruncationRange]:
    seen: dict[TruncationRange, None] = {}
    for report in reports:
        for r in report.truncation_ranges:
            seen[r] = None
    return sorted(seen, key=lambda r: (r.start_lsn, r.end_lsn, r.epoch))


def plan_recovery(
    reports: list[SegmentReport],
    pgs: dict[int, PgRecovered],
    epoch: int,
    lal: int,
    others: Sequence[SegmentReport] = (),
    sent: Iterable[TruncationRange] = (),
) -> RecoveryPlan:
    """`reports` are the read quorum's (whole segments); `others` any more that answered (segments that are
    not whole: their truncation ranges and highest LSNs still count, never their VDL hints or chains);
    `sent` the ranges this writer sent in earlier attempts (a failed attempt may have left its range on a
    few segments only: the next attempt must not make durable what that range voids there)."""
    floor = floor_of(reports)
    truncations = sorted(
        set(known_truncations([*reports, *others])) | set(sent), key=lambda r: (r.start_lsn, r.end_lsn, r.epoch)
    )

    def void(record: LogRecord) -> bool:
        return voided(truncations, record.lsn, record.epoch)

    successor: dict[int, tuple[LogRecord, int]] = {}
    for pg_index, recovered in pgs.items():
        for record in recovered.records:
            if floor < record.lsn <= recovered.best_scl and not void(record):
                other = successor.get(record.prev_volume_lsn)
                assert other is None or other[0].lsn == record.lsn, (
                    f"two live records follow LSN {record.prev_volume_lsn}: {other[0].lsn} and {record.lsn}"
                )
                successor[record.prev_volume_lsn] = (record, pg_index)

    vcl = vdl = floor
    chain: list[tuple[LogRecord, int]] = []
    while vcl in successor:
        record, pg_index = successor[vcl]
        chain.append((record, pg_index))
        vcl = record.lsn
        if record.cpl:
            vdl = vcl
    readopt = [(r, pg) for r, pg in chain if r.lsn <= vdl]
    newest = max((r.epoch for r in truncations), default=0)
    if epoch <= newest:
        # A writer with a newer epoch recovered the volume between this recovery's epoch raise and its read:
        # this one is fenced; it must start again with an epoch above that one.
        raise NewerRecovery(newest)
    allocation_base = max([vdl, *(r.end_lsn for r in truncations)])  # where older writers' LAL windows began
    highest = max((r.highest_lsn for r in [*reports, *others]), default=0)
    # Every LSN is at most LSN_MAX (storage refuses more), so these sums fit; the range stops at LSN_MAX.
    truncation = TruncationRange(vdl + 1, min(max(allocation_base + lal, highest), LSN_MAX), epoch)
    seen_max = max([truncation.end_lsn, *(r.end_lsn for r in truncations), highest])
    if seen_max >= LSN_MAX:
        raise VolumeFull(f"the volume has used up its LSNs: LSNs up to {seen_max} are taken, the highest is {LSN_MAX}")
    return RecoveryPlan(
        floor=floor,
        vcl=vcl,
        vdl=vdl,
        truncation=truncation,
        known_truncations=[*truncations, truncation],
        next_lsn=seen_max + 1,
        readopt=readopt,
    )
