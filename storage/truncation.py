"""Truncation ranges: what a recovery declares void. Pure.

A recovery at epoch E that found VDL v writes the range [v + 1, end] stamped E, first to a write quorum
of every PG, then with every batch the writer sends; gossip spreads it and every segment keeps it for
ever (storage/segment.py).

Rules (this module owns them):
1. A range r voids a record (LSN L, epoch e) when r.start_lsn <= L <= r.end_lsn and e < r.epoch: such a
   record never became durable and must never come back (invariant 4). A newer writer's records (epoch
   at or above r's) are never void by r.
2. Bounds (storage/epochs.py, storage/records.py): 1 <= start <= end <= LSN_MAX, the span below
   TRUNCATION_SPAN_MAX, the epoch 1..EPOCH_MAX.
3. A recovery knows every range a read quorum holds and every range it sent itself in an earlier attempt
   (compute/opening.py), so its own attempts never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sixfold.storage.epochs import EPOCH_MAX
from sixfold.storage.errors import InvalidRequest
from sixfold.storage.records import LSN_MAX

# A truncation range never spans more than this many LSNs: a recovery truncates LAL past the highest
# end it has seen, so spans grow by LAL per failed recovery; far larger is not one a writer made.
TRUNCATION_SPAN_MAX = 2**40


@dataclass(frozen=True)
class TruncationRange:
    """A recovery's declaration (rule 1): records in [start_lsn, end_lsn] older than `epoch` are void."""

    start_lsn: int
    end_lsn: int
    epoch: int

    def validate(self) -> None:
        if not (1 <= self.start_lsn <= self.end_lsn <= LSN_MAX):
            raise InvalidRequest(
                f"truncation range [{self.start_lsn}, {self.end_lsn}] is empty, starts at 0 or ends past the "
                f"highest LSN; it must satisfy 1 <= start_lsn <= end_lsn <= {LSN_MAX}"
            )
        if self.end_lsn - self.start_lsn >= TRUNCATION_SPAN_MAX:
            raise InvalidRequest(
                f"truncation range [{self.start_lsn}, {self.end_lsn}] spans more than {TRUNCATION_SPAN_MAX} LSNs; "
                "a recovery truncates LAL past what it has seen, never that far"
            )
        if self.epoch == 0:
            raise InvalidRequest("a truncation range must carry the epoch of the writer that made it (not 0)")
        if self.epoch > EPOCH_MAX:
            raise InvalidRequest(f"truncation range epoch {self.epoch} is above the highest epoch {EPOCH_MAX}")

    def covers(self, lsn: int, record_epoch: int) -> bool:
        """Rule 1 for this range alone."""
        return self.start_lsn <= lsn <= self.end_lsn and record_epoch < self.epoch


def voided(ranges: Iterable[TruncationRange], lsn: int, epoch: int) -> bool:
    """Rule 1: some range voids the record."""
    return any(r.covers(lsn, epoch) for r in ranges)
