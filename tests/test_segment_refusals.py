"""Refusals are told apart by their machine-readable reason (google.rpc.ErrorInfo), never by the words
of their message (compute/segment_stream.py)."""

from __future__ import annotations

import grpc
import pytest

from sixfold.compute.segment_stream import is_disk_refusal, is_membership_refusal, refused_epoch_of
from sixfold.storage.errors import DiskFull, StaleMembershipEpoch, StaleVolumeEpoch, StorageError
from sixfold.storage.status import status_code, trailing_metadata_of

pytestmark = pytest.mark.unit


def failed_call(error: StorageError, message: str | None = None) -> grpc.aio.AioRpcError:
    """A call that failed as a server aborting with `error` fails (storage/status.py `abort_with`)."""
    return grpc.aio.AioRpcError(
        status_code(error),
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*trailing_metadata_of(error)),
        details=error.message if message is None else message,
    )


def test_a_stale_volume_epoch_is_read_from_its_reason_and_metadata() -> None:
    call = failed_call(StaleVolumeEpoch("refused", {"volume_epoch": "7", "segment_id": "s"}), "no words here")
    assert refused_epoch_of(call) == 7
    assert not is_membership_refusal(call) and not is_disk_refusal(call)


def test_the_words_of_a_message_decide_nothing() -> None:
    words = "stale volume epoch 3 < 7; membership epoch too; disk full"
    bare = grpc.aio.AioRpcError(
        grpc.StatusCode.FAILED_PRECONDITION, grpc.aio.Metadata(), grpc.aio.Metadata(), details=words
    )
    assert refused_epoch_of(bare) is None
    assert not is_membership_refusal(bare) and not is_disk_refusal(bare)


def test_membership_and_disk_refusals_are_told_apart() -> None:
    membership = failed_call(StaleMembershipEpoch("refused", {"membership_epoch": "4"}))
    disk = failed_call(DiskFull("no room", {"free_bytes": "0"}))
    assert is_membership_refusal(membership) and refused_epoch_of(membership) is None
    assert is_disk_refusal(disk) and not is_membership_refusal(disk) and refused_epoch_of(disk) is None
