"""Conversions between storage.v1 protobuf messages and the core's plain values.

Protobuf objects stop here: the store and the segment rules see dataclasses.
"""

from __future__ import annotations

from sixfold.storage.errors import InvalidRequest
from sixfold.storage.records import LogRecord, PayloadKind
from sixfold.storage.segment import AppendBatch, Segment, TruncationRange
from sixfold.storage.v1 import storage_service_pb2 as pb

_KINDS = {int(k): k for k in PayloadKind}
_PROTO_KINDS = {PayloadKind.PATCH: pb.PAYLOAD_KIND_PATCH, PayloadKind.IMAGE: pb.PAYLOAD_KIND_IMAGE}
assert set(_PROTO_KINDS) == set(PayloadKind), "every payload kind has its wire value"


def record_from_proto(msg: pb.LogRecord) -> tuple[LogRecord, int]:
    """(record, the CRC-32C it carried)."""
    kind = _KINDS.get(msg.kind)
    if kind is None:
        raise InvalidRequest(f"record LSN {msg.lsn} has payload kind {msg.kind}; use PATCH or IMAGE")
    record = LogRecord(
        msg.lsn,
        msg.page_no,
        kind,
        msg.offset,
        msg.data,
        msg.prev_volume_lsn,
        msg.prev_pg_lsn,
        msg.prev_page_lsn,
        msg.epoch,
        msg.cpl,
        msg.commit_time_us,
    )
    return record, msg.crc32c


def record_to_proto(record: LogRecord) -> pb.LogRecord:
    return pb.LogRecord(
        lsn=record.lsn,
        page_no=record.page_no,
        kind=_PROTO_KINDS[record.kind],
        offset=record.offset,
        data=record.data,
        prev_volume_lsn=record.prev_volume_lsn,
        prev_pg_lsn=record.prev_pg_lsn,
        prev_page_lsn=record.prev_page_lsn,
        epoch=record.epoch,
        cpl=record.cpl,
        commit_time_us=record.commit_time_us,
        crc32c=record.crc(),
    )


def truncation_from_proto(msg: pb.TruncationRange) -> TruncationRange:
    return TruncationRange(msg.start_lsn, msg.end_lsn, msg.epoch)


def truncation_to_proto(r: TruncationRange) -> pb.TruncationRange:
    return pb.TruncationRange(start_lsn=r.start_lsn, end_lsn=r.end_lsn, epoch=r.epoch)


def batch_from_proto(msg: pb.AppendRecordsRequest) -> AppendBatch:
    if not msg.segment_id:
        raise InvalidRequest("the batch names no segment_id")
    return AppendBatch(
        segment_id=msg.segment_id,
        volume_epoch=msg.volume_epoch,
        membership_epoch=msg.membership_epoch,
        batch_id=msg.batch_id,
        records=[record_from_proto(r) for r in msg.records],
        truncation_ranges=[truncation_from_proto(r) for r in msg.truncation_ranges],
        vdl_hint=msg.vdl_hint,
        min_read_point=msg.min_read_point,
    )


def state_to_proto(
    seg: Segment,
    *,
    records_repaired: int = 0,
    records_quarantined: int = 0,
    versions_quarantined: int = 0,
    scrub_passes: int = 0,
    chain_gaps: int = 0,
    metadata_repaired: int = 0,
) -> pb.SegmentState:
    """The segment's state; the counters are the node's in-memory ones (gossip, scrubbing)."""
    meta = seg.meta
    return pb.SegmentState(
        segment_id=meta.segment_id,
        volume_id=meta.volume_id,
        pg_index=meta.pg_index,
        first_page=meta.first_page,
        page_count=meta.page_count,
        page_size=meta.page_size,
        scl=meta.scl,
        highest_lsn=meta.highest_lsn,
        volume_epoch=meta.volume_epoch,
        membership_epoch=meta.membership_epoch,
        retention_horizon_lsn=meta.retention_horizon_lsn,
        truncation_ranges=[truncation_to_proto(r) for r in meta.truncation_ranges],
        record_count=meta.record_count,
        vdl_hint=meta.vdl_hint,
        peers=[pb.SegmentPeer(node_id=n, address=a) for n, a in meta.peers],
        records_repaired=records_repaired,
        records_quarantined=records_quarantined,
        versions_quarantined=versions_quarantined,
        scrub_passes=scrub_passes,
        versions_coalesced=meta.versions_coalesced,
        records_collected=meta.records_collected,
        versions_collected=meta.versions_collected,
        pages_hydrated=meta.pages_hydrated,
        bytes_hydrated=meta.bytes_hydrated,
        pinned_lsns=meta.pinned_lsns,
        chain_anchor_lsn=meta.chain_anchor_lsn,
        scl_high_water=max(meta.scl_high_water, meta.scl),
        whole=seg.whole,
        rebuilding=meta.rebuilding,
        chain_gaps=chain_gaps,
        metadata_repaired=metadata_repaired,
        volume_epoch_owner=meta.volume_epoch_owner,
    )
