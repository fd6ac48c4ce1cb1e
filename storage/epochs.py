"""Volume and membership epochs: the rules every segment applies. Pure.

This module owns them; `storage/segment.py` and `storage/store.py` call these
functions and carry out what they decide:

1. Bounds. An epoch is 1..EPOCH_MAX. A request may move a segment's epoch at
   most EPOCH_STEP_MAX past the one it holds: a writer picks one more than the
   highest it read from a quorum, so a legitimate step is small; a value near
   the top of uint64 (which would leave no epoch for the next writer, and whose
   successor does not fit the wire) is refused with INVALID_ARGUMENT.
2. A request carrying a volume epoch older than the one the segment has
   durably seen is refused (`StaleVolumeEpoch`, with the segment's epoch in its
   metadata, so the caller knows how far behind it is). Equal or newer is
   accepted; newer is adopted durably together with what the request changes.
3. A request carrying a membership epoch older than the segment's is refused
   (`StaleMembershipEpoch`): the caller refreshes the volume's geometry.
4. RaiseVolumeEpoch(E, writer) takes E when E is newer than the segment's
   epoch, remembering which writer raised it. Raising the same E again is
   idempotent for that same writer (its reply was lost) and refused for any
   other: two writers that picked the same epoch cannot both win a quorum.
5. A record or a truncation range never carries an epoch above the request's
   volume epoch (a writer only writes with its own epoch or older ones).
"""

from __future__ import annotations

from sixfold.storage.errors import InvalidRequest, StaleMembershipEpoch, StaleVolumeEpoch

# The highest epoch (volume or membership) a segment accepts; far below 2**64 so that every
# successor a writer computes still fits a uint64 on the wire.
EPOCH_MAX = 2**62
# The most a single request may move a segment's epoch forward (rule 1).
EPOCH_STEP_MAX = 2**32
WRITER_ID_BYTES_MAX = 128


def check_epoch_value(what: str, epoch: int) -> None:
    """Rule 1, the bound: 1..EPOCH_MAX."""
    if epoch == 0:
        raise InvalidRequest(f"{what} 0 is not an epoch; epochs start at 1")
    if epoch > EPOCH_MAX:
        raise InvalidRequest(f"{what} {epoch} is above the highest epoch {EPOCH_MAX}; no writer ever picks one so high")


def check_step(what: str, epoch: int, current: int, segment_id: str) -> None:
    """Rule 1, the step: a request moves an epoch at most EPOCH_STEP_MAX forward."""
    check_epoch_value(what, epoch)
    if epoch > current + EPOCH_STEP_MAX:
        raise InvalidRequest(
            f"{what} {epoch} is more than {EPOCH_STEP_MAX} past epoch {current} of segment {segment_id}; "
            "a writer moves an epoch one past the highest it read, so this is not one a writer picked"
        )


def stale_volume_epoch(volume_epoch: int, current: int, segment_id: str, what: str) -> StaleVolumeEpoch:
    return StaleVolumeEpoch(
        f"volume epoch {volume_epoch} is older than epoch {current} segment {segment_id} has durably seen: {what}",
        {"volume_epoch": str(current), "segment_id": segment_id},
    )


def check_request(
    volume_epoch: int, membership_epoch: int, current_volume_epoch: int, current_membership_epoch: int, segment_id: str
) -> None:
    """Rules 1-3 for a request that reads or changes a segment on a writer's behalf."""
    if volume_epoch == 0:
        raise InvalidRequest("the request carries volume epoch 0; every write names the writer's volume epoch")
    check_step("volume epoch", volume_epoch, current_volume_epoch, segment_id)
    if volume_epoch < current_volume_epoch:
        raise stale_volume_epoch(
            volume_epoch,
            current_volume_epoch,
            segment_id,
            "a newer writer has opened the volume (this writer is fenced)",
        )
    if membership_epoch > EPOCH_MAX:
        raise InvalidRequest(f"membership epoch {membership_epoch} is above the highest epoch {EPOCH_MAX}")
    if membership_epoch < current_membership_epoch:
        raise StaleMembershipEpoch(
            f"membership epoch {membership_epoch} is older than epoch {current_membership_epoch} of segment "
            f"{segment_id}: refresh the volume's geometry",
            {"membership_epoch": str(current_membership_epoch), "segment_id": segment_id},
        )


def plan_raise(epoch: int, writer_id: str, current: int, current_writer_id: str, segment_id: str) -> bool:
    """Rule 4: True when the segment takes `epoch` (store it with `writer_id`), False when it already
    holds it from the same writer (nothing to do); raises otherwise."""
    check_step("volume epoch", epoch, current, segment_id)
    if len(writer_id.encode()) > WRITER_ID_BYTES_MAX:
        raise InvalidRequest(f"writer id is longer than {WRITER_ID_BYTES_MAX} bytes")
    if epoch > current:
        return True
    if epoch == current and writer_id and writer_id == current_writer_id:
        return False
    if epoch < current:
        raise stale_volume_epoch(epoch, current, segment_id, "an epoch only moves forward (pick a higher one)")
    raise StaleVolumeEpoch(
        f"volume epoch {epoch} of segment {segment_id} was raised by another writer; two writers cannot take "
        "the same epoch (pick a higher one)",
        {"volume_epoch": str(current), "segment_id": segment_id},
    )


def check_membership_raise(membership_epoch: int, current: int, segment_id: str) -> None:
    """Rule 1 and 3 for UpdateMembership: 1..EPOCH_MAX, never backwards (equal is idempotent)."""
    check_step("membership epoch", membership_epoch, current, segment_id)
    if membership_epoch < current:
        raise StaleMembershipEpoch(
            f"membership epoch {membership_epoch} is older than epoch {current} of segment {segment_id}; "
            "a membership epoch only moves forward",
            {"membership_epoch": str(current), "segment_id": segment_id},
        )


def check_carried(what: str, epoch: int, volume_epoch: int) -> None:
    """Rule 5: a record or truncation range carries the request's epoch or an older one."""
    if epoch == 0:
        raise InvalidRequest(f"{what} has epoch 0; epochs start at 1")
    if epoch > volume_epoch:
        raise InvalidRequest(
            f"{what} has epoch {epoch}, newer than the request's volume epoch {volume_epoch}; "
            "a writer only writes with its own epoch or older ones"
        )
