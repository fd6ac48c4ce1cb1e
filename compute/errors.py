"""Errors the compute node reports; each maps to one gRPC status (storage.errors.StorageError)."""

from __future__ import annotations

from storage.errors import InvalidRequest, PageOutOfRange, StorageError, UnknownVolume, VolumeFull

__all__ = ["Fenced", "QuorumNotMet", "InvalidRequest", "PageOutOfRange", "UnknownVolume", "VolumeFull",
           "CommitTimeout", "FencedInFlight"]


class Fenced(StorageError):
    """A newer writer opened the volume: this one may no longer change it."""

    status_code_name = "FAILED_PRECONDITION"


class QuorumNotMet(StorageError):
    status_code_name = "UNAVAILABLE"


class CommitTimeout(StorageError):
    """The MTR was sent but did not become durable in time; it may still become durable."""

    status_code_name = "UNAVAILABLE"


class FencedInFlight(CommitTimeout):
    """The writer was fenced while the MTR was in flight: the new writer's recovery may have made it durable."""
