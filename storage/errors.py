"""Errors of the storage side, each mapped to one gRPC status code and, where a program must tell
cases apart, to a machine-readable reason.

Pure: no gRPC import. `status_code_name` is the name of a `grpc.StatusCode` member and `reason` a
`google.rpc.ErrorInfo` reason (domain `ERROR_DOMAIN`); `storage/status.py` turns both into a real
status in one place, and reads them back on the client side. The message is a sentence a client can
act on; it never carries a traceback. `metadata` carries the values a program needs (for a stale
epoch: the epoch the segment holds), as strings, as ErrorInfo does.
"""

from __future__ import annotations

ERROR_DOMAIN = "sixfold"

# Reasons (google.rpc.ErrorInfo.reason): what a caller branches on, never the message's words.
REASON_STALE_VOLUME_EPOCH = "STALE_VOLUME_EPOCH"  # metadata: volume_epoch, segment_id
REASON_STALE_MEMBERSHIP_EPOCH = "STALE_MEMBERSHIP_EPOCH"  # metadata: membership_epoch, segment_id
REASON_DISK_FULL = "DISK_FULL"  # metadata: free_bytes
REASON_DISK_FAILED = "DISK_FAILED"
REASON_FENCED = "FENCED"  # the writer: a newer writer opened the volume
REASON_REOPENING = "REOPENING"  # the writer: it is regaining the volume (a new recovery); retry
REASON_OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"  # the writer: the MTR was sent; it may still become durable
REASON_KEY_UNAVAILABLE = "KEY_UNAVAILABLE"  # a volume's data key is not at hand (the key service is gone)
REASON_NOT_COMMITTED = "NOT_COMMITTED"  # the writer: the MTR was truncated by a recovery; it never will be
REASON_READ_REPLICA = "READ_REPLICA"  # a compute instance: it is a read replica; send writes to the writer
REASON_NOT_WRITER = "NOT_WRITER"  # a compute instance: a writer-only request reached one that is not the writer


class StorageError(Exception):
    """Base of every operating error a storage node, the control plane or the writer reports."""

    status_code_name = "INTERNAL"
    reason = ""

    def __init__(self, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidRequest(StorageError):
    status_code_name = "INVALID_ARGUMENT"


class BadChecksum(InvalidRequest):
    """A record or page arrived over the network with a CRC-32C that does not match."""


class StaleEpoch(StorageError):
    """A request carries a volume or membership epoch older than one durably seen."""

    status_code_name = "FAILED_PRECONDITION"


class StaleVolumeEpoch(StaleEpoch):
    """The segment holds a newer volume epoch: some writer raised it (metadata: the segment's epoch)."""

    reason = REASON_STALE_VOLUME_EPOCH


class StaleMembershipEpoch(StaleEpoch):
    """The segment holds a newer membership epoch: the caller must refresh the volume's geometry."""

    reason = REASON_STALE_MEMBERSHIP_EPOCH


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


class KeyUnavailable(StorageError):
    """A segment's data key is not at hand (the key service cannot be reached, or refused): nothing of the
    segment is stored or served in clear instead; the call is refused until the key is back."""

    status_code_name = "UNAVAILABLE"
    reason = REASON_KEY_UNAVAILABLE


class ChecksumMismatch(StorageError):
    """Bytes read from disk fail their CRC-32C: the copy is bad and is never served."""

    status_code_name = "DATA_LOSS"


class DiskFailed(StorageError):
    """The node's LMDB environment is corrupt or its disk failed: nothing it holds is served; its
    segments are rebuilt from their peers in a fresh environment."""

    status_code_name = "DATA_LOSS"
    reason = REASON_DISK_FAILED


class DiskFull(StorageError):
    """The node's disk has no room: nothing was stored; the node retries once space returns."""

    status_code_name = "RESOURCE_EXHAUSTED"
    reason = REASON_DISK_FULL


class Unavailable(StorageError):
    status_code_name = "UNAVAILABLE"


class VolumeFull(StorageError):
    status_code_name = "RESOURCE_EXHAUSTED"
