"""Time travel and garbage collection on a real cluster (through the launcher): the storage nodes keep a
volume's backtrack window of history even when their own history window is shorter, so a clone at an early
LSN works inside the window; where history was collected (a volume with a 1 s window), a clone or a backtrack
at a point below it is refused with a sentence saying so, and nothing is created or moved."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.tools.cluster import Cluster

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0
GC_FLAGS = ["--history-window-s", "0.5", "--coalesce-interval-ms", "200"]  # the nodes keep 0.5 s


@pytest.fixture
def client(cluster: Cluster) -> Iterator[VolumeClient]:
    with VolumeClient(cluster.compute_address(), timeout_s=TIMEOUT_S) as c:
        yield c


def fill(client: VolumeClient, volume: str) -> int:
    """Many MTRs over a few pages (enough records per page to fold); the first one's LSN."""
    first = client.write(volume, [(0, 0, b"first"), (1, 0, b"first")])
    for i in range(40):
        client.write(volume, [(i % 4, 8, b"w%04d" % i)])
    return first


@pytest.mark.cluster_options(node_flags=GC_FLAGS)
def test_a_volumes_backtrack_window_keeps_its_history_and_a_point_below_what_is_kept_is_refused(
    cluster: Cluster, client: VolumeClient
) -> None:
    client.create_volume("short", backtrack_window_s=1)
    client.create_volume("kept", backtrack_window_s=3600)
    short_first, kept_first = fill(client, "short"), fill(client, "kept")
    deadline = time.monotonic() + 45
    refused: VolumeError | None = None
    while refused is None and time.monotonic() < deadline:
        time.sleep(0.5)
        client.write("short", [(2, 16, b"tick")])  # the writer reports a newer read point: the horizon may rise
        try:
            client.clone_volume("short", "short-early", at_lsn=short_first)
        except VolumeError as error:
            if error.code != grpc.StatusCode.OUT_OF_RANGE:
                raise
            refused = error
        else:
            client.delete_volume("short-early")  # not collected yet: try again later
    assert refused is not None, "the short window's history was never collected"
    # Found by the compute node's tail lookup, or (GC having run in between) by the nodes asked to create it.
    print("clone below what is kept:", refused.details)
    assert (
        f"LSN {short_first} is below what volume 'short' still keeps" in refused.details
        or "segments no longer keep its pages at the branch point" in refused.details
    ), refused.details
    assert "short-early" not in {v.volume_id for v in client.list_volumes()}  # nothing half made

    with pytest.raises(VolumeError) as outside:
        client.backtrack("short", short_first)
    assert outside.value.code in (grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.FAILED_PRECONDITION), outside.value
    print("backtrack below what is kept:", outside.value.code.name, outside.value.details)
    assert client.read_page("short", 2)[16:20] == b"tick"  # nothing moved

    # The same writes on a volume with a 1 h window, over the same time: everything is still there.
    client.clone_volume("kept", "kept-early", at_lsn=kept_first)
    assert client.read_page("kept-early", 0)[:5] == b"first" and client.read_page("kept-early", 0)[8:13] == b"\0" * 5
    assert client.backtrack("kept", kept_first).to_lsn == kept_first
    assert client.read_page("kept", 3)[8:13] == b"\0" * 5
