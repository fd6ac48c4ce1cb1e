"""Errors of the storage side, each mapped to one gRPC status code.

Pure: no gRPC import. `status_code_name` is the name of a `grpc.StatusCode`
member; `storage/serving.py` turns it into a real status in one place. The
message is a sentence a client can act on; it never carries a traceback.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every operating error a storage node or the control plane reports."""

    status_code_name = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(StorageError):
    status_code_name = "INVALID_ARGUMENT"


class BadChecksum(InvalidRequest):
    """A record or page arrived over the network with a CRC-32C that does not match."""


class StaleEpoch(StorageError):
    """A request carries a volume or membership epoch older than one durably seen."""

    status_code_name = "FAILED_PRECONDITION"


class UnknownSegment(StorageError):
    status_code_name = "NOT_FOUND"


class UnknownVolume(StorageError):
    status_code_name = "NOT_FOUND"


class AlreadyExists(StorageError):
    status_code_name = "ALREADY_EXISTS"


class LsnConflict(StorageError):
    """An LSN already stored (or inside the complete chain) arrived with different content."""

    status_code_name = "ALREADY_EXISTS"


class PageOutOfRange(StorageError):
    status_code_name = "OUT_OF_RANGE"


class ReadPointOutOfRange(StorageError):
    """A read point above the segment's SCL or below its retention horizon."""

    status_code_name = "OUT_OF_RANGE"


class Truncated(StorageError):
    """A record inside an epoch-stamped truncation range: it must never come back."""

    status_code_name = "FAILED_PRECONDITION"


class BatchTooLarge(StorageError):
    status_code_name = "RESOURCE_EXHAUSTED"


class ChecksumMismatch(StorageError):
    """Bytes read from disk fail their CRC-32C: the copy is bad and is never served."""

    status_code_name = "DATA_LOSS"


class Unavailable(StorageError):
    status_code_name = "UNAVAILABLE"


class VolumeFull(StorageError):
    status_code_name = "RESOURCE_EXHAUSTED"
