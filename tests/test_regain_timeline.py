"""A writer that regains a volume after a refusal stays on its own timeline (compute/fencing.py
`timeline_moved`): when the name now leads to other segments (a backtrack), it is fenced instead."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from sixfold.compute.fencing import timeline_moved
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb

pytestmark = pytest.mark.unit


def geometry(*segment_ids: str) -> cp_pb.VolumeGeometry:
    return cp_pb.VolumeGeometry(
        protection_groups=[
            cp_pb.ProtectionGroup(pg_index=i, segments=[cp_pb.SegmentPlacement(segment_id=s, node_id="a1")])
            for i, s in enumerate(segment_ids)
        ]
    )


def known(*segment_ids: str) -> dict[int, SimpleNamespace]:
    return {i: SimpleNamespace(streams={"a1": SimpleNamespace(segment_id=s)}) for i, s in enumerate(segment_ids)}


def test_the_same_segments_or_a_grown_pg_is_the_same_timeline() -> None:
    assert timeline_moved(known("v/pg-00000"), geometry("v/pg-00000")) == ""
    assert timeline_moved(known("v/pg-00000"), geometry("v/pg-00000", "v/pg-00001")) == ""  # grown meanwhile


def test_a_backtrack_moved_the_name_to_other_segments() -> None:
    why = timeline_moved(known("v/pg-00000", "v/pg-00001"), geometry("v.2/pg-00000", "v.2/pg-00001"))
    assert why == "PG 0 is segment v.2/pg-00000 now, not v/pg-00000"
