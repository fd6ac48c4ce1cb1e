"""Copy-on-write clones, snapshots, restore and delete on a real cluster (through the launcher).

A clone shows exactly its source at the branch point plus its own writes; neither sees the other's
later writes; a clone of a clone works; a clone holding a SQLite database opens in `sixfold sql`;
bad input gets a clear status and changes nothing. One cluster serves the module; each test uses
its own volumes (small segments, so a volume spans several PGs).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from sixfold.compute.client import VolumeClient, VolumeError
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.tools.cluster import Cluster
from tests.sql_cluster import module_cluster, sixfold, sixfold_ok

pytestmark = pytest.mark.integration

TIMEOUT_S = 60.0
SEGMENT_BYTES = 16 * 4096  # 16 pages per PG


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as local:
        yield local


@pytest.fixture
def client(cluster: Cluster) -> Iterator[VolumeClient]:
    with VolumeClient(cluster.compute_address(), timeout_s=TIMEOUT_S) as c:
        yield c


def pad(value: bytes) -> bytes:
    """Values are written 16 bytes wide, so a later write replaces an earlier one whole."""
    assert len(value) <= 16
    return value.ljust(16, b"\0")


def page(client: VolumeClient, volume: str, page_no: int) -> bytes:
    return client.read_page(volume, page_no)[:16].rstrip(b"\0")


def code(raised: pytest.ExceptionInfo[VolumeError]) -> grpc.StatusCode:
    return raised.value.code


def test_a_clone_shows_the_source_at_the_branch_and_then_only_its_own_writes(client: VolumeClient) -> None:
    client.create_volume("src", segment_size_bytes=SEGMENT_BYTES)
    pages = [0, 5, 17, 40]  # three PGs
    for p in pages:
        client.write_page("src", p, pad(f"src-{p}".encode()))
    early = client.write("src", [(1, 0, pad(b"one")), (18, 0, pad(b"eighteen"))])  # one MTR over two PGs
    client.write_page("src", 5, pad(b"src-5-later"))

    reply = client.clone_volume("src", "c1")
    assert reply.clone.parent_volume_id == "src" and reply.clone.pg_count >= 3
    assert reply.clone.branch_lsn == client.status("src").vdl
    status = client.status("c1")
    assert (status.parent_volume_id, status.branch_lsn) == ("src", reply.clone.branch_lsn)
    for p in pages:
        expected = b"src-5-later" if p == 5 else f"src-{p}".encode()
        assert page(client, "c1", p) == expected, p
    assert page(client, "c1", 1) == b"one" and page(client, "c1", 18) == b"eighteen"

    client.write_page("c1", 0, pad(b"clone-0"))
    client.write_page("c1", 40, pad(b"clone-40"))
    client.write_page("src", 17, pad(b"src-17-after"))
    assert page(client, "c1", 0) == b"clone-0" and page(client, "src", 0) == b"src-0"
    assert page(client, "c1", 40) == b"clone-40" and page(client, "src", 40) == b"src-40"
    assert page(client, "c1", 17) == b"src-17" and page(client, "src", 17) == b"src-17-after"

    # A clone of the clone, and a clone of the source at an earlier commit.
    client.clone_volume("c1", "c2")
    client.write_page("c2", 5, pad(b"c2-5"))
    assert page(client, "c2", 0) == b"clone-0" and page(client, "c2", 17) == b"src-17"
    assert page(client, "c1", 5) == b"src-5-later" and page(client, "c2", 5) == b"c2-5"

    old = client.clone_volume("src", "c-old", at_lsn=early)
    assert old.clone.branch_lsn == early
    assert page(client, "c-old", 5) == b"src-5" and page(client, "c-old", 18) == b"eighteen"
    assert page(client, "c-old", 17) == b"src-17"

    # Past the parent's end: the clone grows with PGs of its own.
    far = 16 * 8 + 3
    client.write_page("c1", far, pad(b"grown"))
    assert page(client, "c1", far) == b"grown"
    assert page(client, "c1", 18) == b"eighteen"


def test_bad_clone_requests_are_refused_and_change_nothing(client: VolumeClient) -> None:
    client.create_volume("bad-src", segment_size_bytes=SEGMENT_BYTES)
    lsn = client.write("bad-src", [(0, 0, pad(b"a")), (20, 0, pad(b"b"))])
    with pytest.raises(VolumeError) as raised:
        client.clone_volume("no-such-volume", "x1")
    assert code(raised) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(VolumeError) as raised:
        client.clone_volume("bad-src", "bad-src")
    assert code(raised) == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(VolumeError) as raised:
        client.clone_volume("bad-src", "x2", at_lsn=client.status("bad-src").vdl + 1000)
    assert code(raised) == grpc.StatusCode.OUT_OF_RANGE and "VDL" in raised.value.details
    with pytest.raises(VolumeError) as raised:
        client.clone_volume("bad-src", "x3", at_lsn=lsn - 1)  # the MTR's first record, not its CPL
    assert code(raised) == grpc.StatusCode.INVALID_ARGUMENT and "transaction" in raised.value.details
    with pytest.raises(VolumeError) as raised:
        client.clone_volume("bad-src", "")
    assert code(raised) == grpc.StatusCode.INVALID_ARGUMENT
    names = {v.volume_id for v in client.list_volumes()}
    assert not names & {"x1", "x2", "x3"}
    assert page(client, "bad-src", 20) == b"b"


def test_snapshots_restore_and_delete(cluster: Cluster, client: VolumeClient) -> None:
    client.create_volume("snapsrc", segment_size_bytes=SEGMENT_BYTES)
    client.write_page("snapsrc", 3, pad(b"before"))
    out = sixfold_ok(cluster, "volume", "snapshot", "create", "snapsrc", "s1")
    assert "snapshot s1 of snapsrc" in out
    client.write_page("snapsrc", 3, pad(b"after"))
    listed = sixfold_ok(cluster, "volume", "snapshot", "list", "snapsrc")
    assert "s1" in listed and "snapsrc" in listed
    assert "s1" not in {v.volume_id for v in client.list_volumes()}

    sixfold_ok(cluster, "volume", "restore", "s1", "restored")
    assert page(client, "restored", 3) == b"before" and page(client, "snapsrc", 3) == b"after"

    in_use = sixfold(cluster, "volume", "snapshot", "delete", "s1")
    assert in_use.returncode == 1 and "FAILED_PRECONDITION" in in_use.stderr and "restored" in in_use.stderr
    taken = sixfold(cluster, "volume", "snapshot", "create", "snapsrc", "s1")
    assert taken.returncode == 1 and "ALREADY_EXISTS" in taken.stderr
    sixfold_ok(cluster, "volume", "delete", "restored")
    sixfold_ok(cluster, "volume", "snapshot", "delete", "s1")
    assert "s1" not in sixfold_ok(cluster, "volume", "snapshot", "list")
    unknown = sixfold(cluster, "volume", "restore", "s1", "again")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr


def test_deleting_a_volume_keeps_what_its_clones_read(cluster: Cluster, client: VolumeClient) -> None:
    client.create_volume("parent", segment_size_bytes=SEGMENT_BYTES)
    client.write_page("parent", 2, pad(b"kept"))
    client.clone_volume("parent", "child")
    out = sixfold_ok(cluster, "volume", "delete", "parent")
    assert "stays" in out
    assert "parent" not in {v.volume_id for v in client.list_volumes()}
    assert page(client, "child", 2) == b"kept"
    again = sixfold(cluster, "volume", "create", "parent")
    assert again.returncode == 1 and "ALREADY_EXISTS" in again.stderr
    reply = client.delete_volume("child")
    assert not reply.kept_for_clones and set(reply.volumes_dropped) >= {"child", "parent"}
    with pytest.raises(VolumeError) as raised:
        client.read_page("child", 2)
    assert code(raised) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(VolumeError) as raised:
        client.delete_volume("child")
    assert code(raised) == grpc.StatusCode.NOT_FOUND


def test_a_clone_of_a_database_opens_in_sql(cluster: Cluster, client: VolumeClient) -> None:
    client.create_volume("dbsrc")
    address = cluster.compute_address()
    with SqlClient(address, volume_id="dbsrc", timeout_s=TIMEOUT_S) as source:
        source.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        source.execute("INSERT INTO t(v) VALUES ('a'), ('b')")
        sixfold_ok(cluster, "volume", "clone", "dbsrc", "dbclone")
        with SqlClient(address, volume_id="dbclone", timeout_s=TIMEOUT_S) as clone:
            clone.execute("INSERT INTO t(v) VALUES ('only-in-clone')")
            source.execute("INSERT INTO t(v) VALUES ('only-in-source')")
            clone_rows = [r[0] for r in clone.execute("SELECT v FROM t ORDER BY id").rows]
        source_rows = [r[0] for r in source.execute("SELECT v FROM t ORDER BY id").rows]
    assert clone_rows == ["a", "b", "only-in-clone"]
    assert source_rows == ["a", "b", "only-in-source"]
    out = sixfold_ok(cluster, "sql", "--volume", "dbclone", "PRAGMA integrity_check")
    assert "ok" in out


def test_backtrack_rewinds_in_place_and_can_move_forward_again(cluster: Cluster, client: VolumeClient) -> None:
    client.create_volume("bt", segment_size_bytes=SEGMENT_BYTES)
    first = client.write("bt", [(0, 0, pad(b"v1")), (20, 0, pad(b"w1"))])
    second = client.write("bt", [(0, 0, pad(b"v2"))])
    third = client.write("bt", [(20, 0, pad(b"w3"))])
    vdl_before = client.status("bt").vdl

    out = sixfold_ok(cluster, "volume", "backtrack", "bt", "--to", str(first))
    assert f"to LSN {first}" in out
    assert page(client, "bt", 0) == b"v1" and page(client, "bt", 20) == b"w1"
    after = client.write("bt", [(5, 0, pad(b"after"))])
    assert after > vdl_before  # new LSNs continue above every LSN the volume ever used
    assert page(client, "bt", 5) == b"after"

    # Forward again, to a commit of the timeline left behind: its writes reappear, the newer ones do not.
    reply = client.backtrack("bt", second)
    assert reply.to_lsn == second
    assert page(client, "bt", 0) == b"v2" and page(client, "bt", 20) == b"w1" and page(client, "bt", 5) == b""
    client.backtrack("bt", third)
    assert page(client, "bt", 20) == b"w3"

    history = client.volume_history("bt")
    assert len(history.backtracks) == 3 and len(history.timelines) >= 3
    assert [b.to_lsn for b in history.backtracks] == [first, second, third]
    shown = sixfold_ok(cluster, "volume", "history", "bt")
    assert "TIMELINE" in shown and str(second) in shown
    assert f"backtracked: shows its earlier timeline up to LSN {third}" in sixfold_ok(cluster, "volume", "status", "bt")

    refusals = (
        (client.status("bt").vdl + 10**12, grpc.StatusCode.OUT_OF_RANGE, "VDL"),  # above every LSN used
        (first - 1, grpc.StatusCode.INVALID_ARGUMENT, "transaction"),  # the first record of a two-record MTR
    )
    for to_lsn, wanted, words in refusals:
        with pytest.raises(VolumeError) as raised:
            client.backtrack("bt", to_lsn)
        assert code(raised) == wanted and words in raised.value.details, raised.value
    bad = sixfold(cluster, "volume", "backtrack", "bt", "--to", "yesterday")
    assert bad.returncode == 2 and "not a time" in bad.stderr
    assert page(client, "bt", 20) == b"w3"  # nothing changed by the refusals


def test_a_backtrack_ends_open_sql_transactions_with_a_clear_status_and_sql_sees_the_point(
    cluster: Cluster, client: VolumeClient
) -> None:
    """An open read transaction's read point is on the timeline the volume leaves: its next statement fails
    with ABORTED and a sentence naming the backtrack; a new one reads the volume at the point, as do writes."""
    client.create_volume("btsql")
    address = cluster.compute_address()
    with SqlClient(address, volume_id="btsql", timeout_s=TIMEOUT_S) as sql:
        sql.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        point = sql.execute("INSERT INTO t(v) VALUES ('kept-1'), ('kept-2')").commit_lsn
        sql.execute("INSERT INTO t(v) VALUES ('hidden')")
        with sql.session() as reader:
            reader.begin(read_only=True)
            seen = [r[0] for r in reader.execute("SELECT v FROM t ORDER BY id").rows]
            assert seen == ["kept-1", "kept-2", "hidden"]
            assert client.backtrack("btsql", point).to_lsn == point
            with pytest.raises(SqlError) as aborted:
                reader.execute("SELECT v FROM t ORDER BY id")
        assert aborted.value.code == grpc.StatusCode.ABORTED, aborted.value
        assert "is being backtracked" in aborted.value.details and "rolled back" in aborted.value.details
        assert [r[0] for r in sql.execute("SELECT v FROM t ORDER BY id").rows] == ["kept-1", "kept-2"]
        after = sql.execute("INSERT INTO t(v) VALUES ('after')").commit_lsn
        assert after > point
        assert [r[0] for r in sql.execute("SELECT v FROM t ORDER BY id").rows] == ["kept-1", "kept-2", "after"]
        assert sql.execute("PRAGMA integrity_check").rows == [("ok",)]


def test_a_clone_at_a_time_is_a_point_in_time_restore(client: VolumeClient) -> None:
    client.create_volume("pitr", segment_size_bytes=SEGMENT_BYTES)
    client.write_page("pitr", 1, pad(b"old"))
    time.sleep(0.05)
    between_us = int(time.time() * 1_000_000)
    time.sleep(0.05)
    client.write_page("pitr", 1, pad(b"new"))
    reply = client.clone_volume("pitr", "pitr-restored", at_time_us=between_us)
    assert page(client, "pitr-restored", 1) == b"old" and page(client, "pitr", 1) == b"new"
    with pytest.raises(VolumeError) as raised:
        client.clone_volume("pitr", "pitr-too-early", at_time_us=1_000_000)  # 1970
    assert code(raised) in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE)
    assert reply.clone.branch_lsn < client.status("pitr").vdl
