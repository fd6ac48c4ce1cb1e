"""Volume and membership epochs: the rules every segment applies. Pure.

This module owns them: every decision on whether a segment accepts an epoch, and what it then holds,
is one of these functions; `storage/segment.py`, the store (storage/store/) and the servicer
(storage/node.py) call them and carry out what they decide.

1. Bounds. An epoch is 1..EPOCH_MAX. A request may move a segment's epoch at
   most EPOCH_STEP_MAX past the one it holds: a writer picks one more than the
   highest it read from a quorum, so a legitimate step is small; a value near
   the top of uint64 (which would leave no epoch for the next writer, and whose
   successor does not fit the wire) is refused with INVALID_ARGUMENT. A segment
   is created with membership epoch 1 when the request names none (0).
2. A request carrying a volume epoch older than the one the segment has
   durably seen is refused (`StaleVolumeEpoch`, with the segment's epoch in its
   metadata, so the caller knows how far behind it is). Equal or newer is
   accepted; newer is adopted durably together with what the request changes
   (`adopted`). A write names its epoch (0 is refused); a read may name none
   (0: not checked; gossip and tools read without one).
3. A request carrying a membership epoch older than the segment's is refused
   (`StaleMembershipEpoch`): the caller refreshes the volume's geometry.
   UpdateMembership installs an epoch equal to or newer than the segment's
   with its peers; the same epoch with the same peers again changes nothing.
4. RaiseVolumeEpoch(E, writer) takes E when E is newer than the segment's
   epoch, remembering which writer raised it. Raising the same E again is
   idempotent for that same writer (its reply was lost: it is answered as a
   success and changes nothing) and refused for any other, or for a raise that
   names no writer: two writers that picked the same epoch cannot both win a
   quorum.
5. A record or a truncation range never carries an epoch above the request's
   volume epoch (a writer only writes with its own epoch or older ones).
6. Gossip stores what a peer holds (records, truncation ranges) as a request of
   its own whose volume epoch is the segment's or the newest one the copy
   carries, whichever is newer (`peer_copy_epoch`): a peer's copy is never
   refused as stale (rule 2) and never carries an epoch above its request
   (rule 5).
"""

from __future__ import annotations

from collections.abc import Iterable

from sixfold.storage.errors import InvalidRequest, StaleMembershipEpoch, StaleVolumeEpoch

# The highest epoch (volume or membership) a segment accepts; far below 2**64 so that every
# successor a writer computes still fits a uint64 on the wire.
EPOCH_MAX = 2**62
# The most a single request may move a segment's epoch forward (rule 1).
EPOCH_STEP_MAX = 2**32
WRITER_ID_BYTES_MAX = 128


# -- rule 1: bounds ---------------------------------------------------------------------


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


def check_membership_bound(membership_epoch: int) -> None:
    """Rule 1 for a membership epoch a request carries (0 passes: it names none)."""
    if membership_epoch > EPOCH_MAX:
        raise InvalidRequest(f"membership epoch {membership_epoch} is above the highest epoch {EPOCH_MAX}")


def initial_membership_epoch(requested: int) -> int:
    """Rule 1 for CreateSegment: the membership epoch a new segment starts with."""
    check_membership_bound(requested)
    return max(requested, 1)


def stored_epochs_valid(volume_epoch: int, membership_epoch: int) -> bool:
    """Rule 1 for a stored metadata copy: a segment holds volume epoch 0 (none yet) or 1..EPOCH_MAX and
    membership epoch 1..EPOCH_MAX."""
    return 1 <= membership_epoch <= EPOCH_MAX and volume_epoch <= EPOCH_MAX


# -- rules 2 and 3: requests --------------------------------------------------------------


def stale_volume_epoch(volume_epoch: int, current: int, segment_id: str, what: str) -> StaleVolumeEpoch:
    return StaleVolumeEpoch(
        f"volume epoch {volume_epoch} is older than epoch {current} segment {segment_id} has durably seen: {what}",
        {"volume_epoch": str(current), "segment_id": segment_id},
    )


def stale_membership_epoch(membership_epoch: int, current: int, segment_id: str, what: str) -> StaleMembershipEpoch:
    return StaleMembershipEpoch(
        f"membership epoch {membership_epoch} is older than epoch {current} of segment {segment_id}{what}",
        {"membership_epoch": str(current), "segment_id": segment_id},
    )


def check_volume_epoch(volume_epoch: int, current: int, segment_id: str) -> None:
    """Rules 1 and 2 for a request that changes a segment on a writer's behalf."""
    if volume_epoch == 0:
        raise InvalidRequest("the request carries volume epoch 0; every write names the writer's volume epoch")
    check_step("volume epoch", volume_epoch, current, segment_id)
    if volume_epoch < current:
        raise stale_volume_epoch(
            volume_epoch, current, segment_id, "a newer writer has opened the volume (this writer is fenced)"
        )


def check_read_epoch(volume_epoch: int, current: int, segment_id: str) -> None:
    """Rule 2 for a read: checked as a write's when it names an epoch; 0 names none."""
    if volume_epoch:
        check_volume_epoch(volume_epoch, current, segment_id)


def check_request(
    volume_epoch: int, membership_epoch: int, current_volume_epoch: int, current_membership_epoch: int, segment_id: str
) -> None:
    """Rules 1-3 for a request that reads or changes a segment on a writer's behalf."""
    check_volume_epoch(volume_epoch, current_volume_epoch, segment_id)
    check_membership_bound(membership_epoch)
    if membership_epoch < current_membership_epoch:
        raise stale_membership_epoch(
            membership_epoch, current_membership_epoch, segment_id, ": refresh the volume's geometry"
        )


def adopted(current: int, volume_epoch: int) -> int:
    """Rule 2: the volume epoch a segment holds once it accepted a request carrying `volume_epoch`."""
    return max(current, volume_epoch)


def plan_membership(
    membership_epoch: int, peers: list[list[str]], current: int, current_peers: list[list[str]], segment_id: str
) -> bool:
    """Rules 1 and 3 for UpdateMembership: True when the segment installs `membership_epoch` and `peers`,
    False when it holds both already (nothing to do); raises otherwise."""
    check_step("membership epoch", membership_epoch, current, segment_id)
    if membership_epoch < current:
        raise stale_membership_epoch(membership_epoch, current, segment_id, "; a membership epoch only moves forward")
    return membership_epoch != current or peers != current_peers


# -- rule 4: raising ------------------------------------------------------------------------


def plan_raise(epoch: int, writer_id: str, current: int, current_writer_id: str, segment_id: str) -> bool:
    """Rule 4: True when the segment takes `epoch` (store it with `writer_id`), False when it already
    holds it from the same writer (a retry: nothing to do, answered as a success); raises otherwise."""
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


# -- rules 5 and 6: what a request carries ----------------------------------------------------


def check_carried(what: str, epoch: int, volume_epoch: int) -> None:
    """Rule 5: a record or truncation range carries the request's epoch or an older one."""
    if epoch == 0:
        raise InvalidRequest(f"{what} has epoch 0; epochs start at 1")
    if epoch > volume_epoch:
        raise InvalidRequest(
            f"{what} has epoch {epoch}, newer than the request's volume epoch {volume_epoch}; "
            "a writer only writes with its own epoch or older ones"
        )


def peer_copy_epoch(current: int, carried: Iterable[int]) -> int:
    """Rule 6: the volume epoch of the request gossip makes to store a peer's copy carrying `carried`."""
    return max([current, *carried])
