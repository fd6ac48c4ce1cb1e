"""Errors the compute node reports; each maps to one gRPC status (storage.errors.StorageError)."""

from __future__ import annotations

from sixfold.storage.errors import (
    REASON_FENCED,
    REASON_NOT_COMMITTED,
    REASON_OUTCOME_UNKNOWN,
    REASON_REOPENING,
    InvalidRequest,
    PageOutOfRange,
    StorageError,
    UnknownVolume,
    VolumeFull,
)

__all__ = [
    "CommitTimeout",
    "Fenced",
    "FencedInFlight",
    "InvalidRequest",
    "NotCommitted",
    "PageOutOfRange",
    "QuorumNotMet",
    "Regaining",
    "UnknownVolume",
    "VolumeFull",
]


class Fenced(StorageError):
    """A newer writer opened the volume: this one may no longer change it."""

    status_code_name = "FAILED_PRECONDITION"
    reason = REASON_FENCED


class QuorumNotMet(StorageError):
    status_code_name = "UNAVAILABLE"


class CommitTimeout(StorageError):
    """The MTR was sent but did not become durable in time; it may still become durable."""

    status_code_name = "UNAVAILABLE"
    reason = REASON_OUTCOME_UNKNOWN


class FencedInFlight(CommitTimeout):
    """The writer was fenced while the MTR was in flight: the new writer's recovery may have made it durable."""


class NotCommitted(StorageError):
    """The MTR never became durable and never will: the writer regained the volume with a new recovery,
    which truncated every LSN above the recovered VDL (this MTR's among them). Retry it."""

    status_code_name = "ABORTED"
    reason = REASON_NOT_COMMITTED


class Regaining(StorageError):
    """The writer is regaining the volume (a new recovery) after a segment refused its epoch; retry shortly."""

    status_code_name = "UNAVAILABLE"
    reason = REASON_REOPENING
