"""The chaos runner and the node-side fault injector.

- The fault injector (storage/faults.py) in a real storage node process: a fault
  file makes it slow, then unreachable (new calls and an open stream get
  UNAVAILABLE), and removing the file brings it back.
- The LMDB file walk the disk-rot scenarios aim with (tools/chaos/lmdb_pages.py), on a real
  store's file: live pages told from stale copies, metadata edited in the live copies only.
- A CI-sized subset of `sixfold chaos` through the same code as the CLI:
  kill-one, writer-kill, replace and meta-rot, short, each must PASS.

Tiers, per test: the pure pieces are `unit`, the lone node `integration`, the
scenarios `chaos`.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from sixfold.storage.chain import ChainBuilder
from sixfold.storage.faults import UNREACHABLE_DETAILS, FaultFile, FaultState, clear_fault_file, write_fault_file
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.store import SegmentStore
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.chaos import lmdb_pages
from sixfold.tools.chaos.history import FAIL, INFO
from sixfold.tools.chaos.runner import RunConfig, classify, decode_value, encode_value, hot_keys, run_scenario, table
from sixfold.tools.cluster import PROJECT_ROOT, health_check
from tests.polling import wait_until
from tests.test_store import SEG, batch, commit_ok, meta

DELAY_MS = 300
SEGMENT = "vol-t/pg-00000"


# --- pure pieces ----------------------------------------------------------------------------------


@pytest.mark.unit
def test_fault_file_is_parsed_and_polled_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    now = [0.0]
    faults = FaultFile(path, poll_interval_s=0.2, clock=lambda: now[0])
    assert faults.current() == FaultState()
    write_fault_file(path, {"delay_ms": 250, "jitter_ms": 50})
    assert faults.current() == FaultState(), "re-read before the poll interval passed"
    now[0] += 0.25
    assert faults.current() == FaultState(delay_ms=250, jitter_ms=50)
    write_fault_file(path, FaultState(unreachable=True))
    now[0] += 0.25
    assert faults.current().unreachable
    path.write_text("{not json")
    now[0] += 0.25
    assert faults.current() == FaultState(), "an invalid file is ignored"
    clear_fault_file(path)
    now[0] += 0.25
    assert not faults.current().active
    with pytest.raises(ValueError):
        FaultState.parse('{"delay": 5}')


@pytest.mark.unit
def test_outcomes_and_values() -> None:
    assert classify(grpc.StatusCode.UNAVAILABLE, "PG 0 reaches only 3 of 6 segments ... Nothing was written.") == FAIL
    assert classify(grpc.StatusCode.UNAVAILABLE, "MTR ... it may still become durable later") == INFO
    assert classify(grpc.StatusCode.DEADLINE_EXCEEDED, "") == INFO
    assert classify(grpc.StatusCode.FAILED_PRECONDITION, "this writer was fenced") == FAIL
    assert classify(grpc.StatusCode.FAILED_PRECONDITION, "fenced while in flight: it may still become durable") == INFO
    assert classify(grpc.StatusCode.INVALID_ARGUMENT, "bad") == FAIL
    assert decode_value(bytes(4096)) is None
    assert decode_value(encode_value("p3-17") + bytes(100)) == "p3-17"
    garbled = decode_value(b"p3\x01-17".ljust(32, b"\0"))
    assert garbled is not None and garbled.startswith("<")
    singles, pairs = hot_keys(8)
    assert singles == [0, 1, 2, 16384, 16385, 16386] and pairs == [(3, 16387)]


# --- aiming at live LMDB pages ----------------------------------------------------------------------

META_TABLES = ("segments", "segments_copy")


def _many_commits(tmp_path: Path, commits: int = 60) -> tuple[str, int]:
    """A closed store whose one segment took `commits` single-record commits (each rewrites its metadata,
    so freed pages hold stale copies of it); returns (path, SCL)."""
    path = str(tmp_path / "lmdb")
    store = SegmentStore(path, map_size_bytes=1 << 24)
    store.create_segment(meta())
    chain = ChainBuilder()
    for i in range(commits):
        commit_ok(store, batch([chain.patch(i % 8, b"AIM-%04d-" % i + bytes(300))], batch_id=i + 1))
    scl = store.segment(SEG).tracker.scl
    store.close()
    return path, scl


@pytest.mark.unit
def test_the_walk_finds_live_pages_and_live_metadata_copies(tmp_path: Path) -> None:
    path, scl = _many_commits(tmp_path)
    blob = Path(path, "data.mdb").read_bytes()
    lay = lmdb_pages.layout(blob, META_TABLES)
    assert lay.page_size == 4096 and {"records", "page_index", *META_TABLES} <= set(lay.owner.values())
    assert blob.count(b"SFM1") > 2, "stale metadata copies lie in freed pages"
    live = [v for v in lay.values if v.key == SEG.encode()]
    assert sorted(v.table for v in live) == sorted(META_TABLES)
    assert all(blob[v.offset : v.offset + 4] == b"SFM1" for v in live)
    assert [c.scl for c in lmdb_pages.metadata_copies(Path(path, "data.mdb"), SEG, META_TABLES)] == [scl, scl]
    page = lmdb_pages.live_page_of(blob, lay, b"AIM-0059-", ("records",))
    assert page is not None and lay.table_of(page) == "records"
    assert lmdb_pages.live_page_of(blob, lay, b"no such payload", ("records",)) is None


@pytest.mark.unit
@pytest.mark.parametrize("mode", ["one-copy", "both-copies", "forged"])
def test_metadata_rotted_in_the_live_copies_is_what_the_node_reads(tmp_path: Path, mode: str) -> None:
    path, scl = _many_commits(tmp_path)
    tables = ("segments_copy",) if mode == "one-copy" else META_TABLES
    edits = lmdb_pages.edit_live_metadata(Path(path, "data.mdb"), SEG, 7, tables, fix_crc=mode == "forged")
    assert edits == [(t, scl, scl + 7) for t in tables]
    copies = lmdb_pages.metadata_copies(Path(path, "data.mdb"), SEG, META_TABLES)
    assert [c.checks for c in copies] == {
        "one-copy": [True, False],
        "both-copies": [False, False],
        "forged": [True, True],
    }[mode]
    store = SegmentStore(path)
    try:
        if mode == "both-copies":
            assert SEG not in store.segments and "CRC-32C" in store.lost[SEG]
        else:
            assert store.segment(SEG).tracker.scl == scl, "the records refute the raised SCL"
            assert store.metadata_repaired == 1
    finally:
        store.close()


# --- the fault injector in a real node --------------------------------------------------------------


@pytest.fixture
def lone_node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """One storage node process (no control plane) with a fault file; yields (address, fault file)."""
    data_dir = tmp_path / "node"
    port_file = tmp_path / "node.port"
    fault_file = tmp_path / "faults.json"
    log = open(tmp_path / "node.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "storage-node",
            "--node-id",
            "x1",
            "--az",
            "x",
            "--data-dir",
            str(data_dir),
            "--port-file",
            str(port_file),
            "--fault-file",
            str(fault_file),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT,
        start_new_session=True,
    )

    def serving() -> str:
        """The node's address once it serves; "" before."""
        assert process.poll() is None, (tmp_path / "node.log").read_text()
        text = port_file.read_text().strip() if port_file.exists() else ""
        serves = text.isdigit() and health_check(f"127.0.0.1:{text}") == "SERVING"
        return f"127.0.0.1:{text}" if serves else ""

    try:
        yield wait_until(serving, 30, "the storage node serves"), fault_file
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started


@pytest.mark.integration
def test_a_fault_file_makes_a_node_slow_then_unreachable_and_removing_it_heals(lone_node: tuple[str, Path]) -> None:
    address, fault_file = lone_node
    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    stub = pb_grpc.StorageServiceStub(channel)

    def list_segments() -> pb.ListSegmentsResponse:
        return stub.ListSegments(pb.ListSegmentsRequest(), timeout=10)

    def slow() -> bool:
        return _timed(list_segments) >= DELAY_MS / 1000 * 0.9

    def prompt() -> bool:
        try:
            return _timed(list_segments) < DELAY_MS / 1000 / 2
        except grpc.RpcError as error:
            if error.details() == UNREACHABLE_DETAILS:
                return False  # the node has not re-read its fault file yet
            raise

    stub.CreateSegment(
        pb.CreateSegmentRequest(
            segment_id=SEGMENT,
            volume_id="vol-t",
            pg_index=0,
            first_page=0,
            page_count=64,
            page_size=4096,
            membership_epoch=1,
        ),
        timeout=10,
    )
    assert _timed(list_segments) < DELAY_MS / 1000 / 2

    # An open AppendRecords stream: empty batches are acknowledged with the segment's SCL.
    requests: queue.Queue[pb.AppendRecordsRequest | None] = queue.Queue()
    acks: list[tuple[float, pb.AppendRecordsResponse]] = []
    ended: list[tuple[grpc.StatusCode, str | None]] = []

    def feed() -> Iterator[pb.AppendRecordsRequest]:
        while (item := requests.get()) is not None:
            yield item

    call = stub.AppendRecords(feed())

    def read_acks() -> None:
        try:
            for ack in call:
                acks.append((time.monotonic(), ack))
        except grpc.RpcError as error:
            ended.append((error.code(), error.details()))

    reader = threading.Thread(target=read_acks, daemon=True)
    reader.start()

    def batch(n: int) -> float:
        sent = time.monotonic()
        requests.put(pb.AppendRecordsRequest(segment_id=SEGMENT, volume_epoch=1, membership_epoch=1, batch_id=n))
        wait_until(lambda: len(acks) >= n or ended, 10, f"batch {n} is acknowledged", poll_s=0.005)
        assert len(acks) == n, ended
        return acks[-1][0] - sent

    assert batch(1) < DELAY_MS / 1000 / 2

    # Slow: unary calls and every stream message wait.
    write_fault_file(fault_file, {"delay_ms": DELAY_MS})
    wait_until(slow, 5, f"the node delays a call by {DELAY_MS} ms as its fault file says")
    assert batch(2) >= DELAY_MS / 1000 * 0.9

    # Unreachable: the open stream ends with UNAVAILABLE, new calls are refused, health checks too.
    write_fault_file(fault_file, {"unreachable": True})
    reader.join(5)
    assert not reader.is_alive(), "the open stream was not ended"
    assert ended and ended[0][0] == grpc.StatusCode.UNAVAILABLE and ended[0][1] == UNREACHABLE_DETAILS, ended
    with pytest.raises(grpc.RpcError) as info:
        list_segments()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and info.value.details() == UNREACHABLE_DETAILS
    assert health_check(address) == "unreachable"

    # Healed: the file is gone.
    clear_fault_file(fault_file)
    wait_until(prompt, 5, "the node answers promptly again once its fault file is gone")
    assert [s.segment_id for s in list_segments().segments] == [SEGMENT]
    assert health_check(address) == "SERVING"
    requests.put(None)
    channel.close()


# --- chaos scenarios, CI-sized --------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.parametrize("scenario", ["kill-one", "writer-kill", "replace", "meta-rot"])
def test_chaos_scenario_passes(scenario: str, tmp_path: Path) -> None:
    seed = int(time.time()) % 100_000
    print(f"seed={seed}")
    result = run_scenario(RunConfig(scenario=scenario, out_dir=tmp_path / scenario, seed=seed, seconds=10, clients=6))
    print(table([result]))
    assert (tmp_path / scenario / "history.jsonl").stat().st_size > 0
    assert (tmp_path / scenario / "verdict.json").exists()
    assert (tmp_path / scenario / "logs" / "compute.log").exists()
    assert result.verdict == "PASS", [c for c in result.criteria if c.ok is False] or result.error
    assert result.operations > 500
    assert result.lost == 0 and result.linearizable == "yes"


@pytest.mark.unit
def test_an_out_dir_holding_an_earlier_cluster_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sixfold.tools.cli import main

    (tmp_path / "cluster").mkdir()
    assert main(["chaos", "kill-one", "--out", str(tmp_path), "--seed", "1"]) == 2
    assert "already holds a cluster from an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster"], "nothing was started or written"
