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
   the new epoch. A writer allocates at most LAL past max(VDL, the end of its
   own truncation range) (compute.volume_log rule 1), so the range is
   [VDL + 1, max(VDL, every truncation end seen) + LAL]. New LSNs start above
   it and above every LSN ever seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.records import LogRecord
from storage.segment import TruncationRange


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


def next_epoch(reports: list[SegmentReport]) -> int:
    return max((r.volume_epoch for r in reports), default=0) + 1


def floor_of(reports: list[SegmentReport]) -> int:
    return max((r.vdl_hint for r in reports), default=0)


def known_truncations(reports: list[SegmentReport]) -> list[TruncationRange]:
    seen: dict[TruncationRange, None] = {}
    for report in reports:
        for r in report.truncation_ranges:
            seen[r] = None
    return sorted(seen, key=lambda r: (r.start_lsn, r.end_lsn, r.epoch))


def plan_recovery(
    reports: list[SegmentReport], pgs: dict[int, PgRecovered], epoch: int, lal: int
) -> RecoveryPlan:
    floor = floor_of(reports)
    truncations = known_truncations(reports)

    def void(record: LogRecord) -> bool:
        return any(r.covers(record.lsn, record.epoch) for r in truncations)

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
    assert epoch > max((r.epoch for r in truncations), default=0)
    allocation_base = max([vdl, *(r.end_lsn for r in truncations)])  # where older writers' LAL windows began
    truncation = TruncationRange(vdl + 1, allocation_base + lal, epoch)
    seen_max = max(
        [truncation.end_lsn, *(r.end_lsn for r in truncations), *(r.highest_lsn for r in reports)]
    )
    return RecoveryPlan(
        floor=floor, vcl=vcl, vdl=vdl, truncation=truncation,
        known_truncations=[*truncations, truncation], next_lsn=seen_max + 1, readopt=readopt,
    )
