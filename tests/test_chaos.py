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

import json
import queue
import sqlite3
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
from sixfold.tools.chaos.bank import SQL, TXN, BankLedger, BankOp, FinalState, check_bank, net_of, schema_statements
from sixfold.tools.chaos.bank import classify as bank_classify
from sixfold.tools.chaos.bank_client import inspect_image
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE
from sixfold.tools.chaos.runner import (
    RunConfig,
    ScenarioResult,
    classify,
    decode_value,
    encode_value,
    hot_keys,
    run_scenario,
    table,
)
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


@pytest.mark.chaos
@pytest.mark.parametrize("scenario", ["clone-kill", "backtrack-node-stopped"])
def test_time_travel_chaos_scenario_passes(scenario: str, tmp_path: Path) -> None:
    """A clone written beside its source while nodes are SIGKILLed; a backtrack while a node is stopped, which
    then comes back (it must never serve what the backtrack hid). Reads are judged by LSN on each timeline."""
    seed = int(time.time()) % 100_000
    print(f"seed={seed}")
    result = run_scenario(RunConfig(scenario=scenario, out_dir=tmp_path / scenario, seed=seed, seconds=10, clients=6))
    print(table([result]))
    assert result.verdict == "PASS", [c for c in result.criteria if c.ok is False] or result.error
    assert result.operations > 500 and result.lost == 0


@pytest.mark.unit
def test_an_out_dir_holding_an_earlier_cluster_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sixfold.tools.cli import main

    (tmp_path / "cluster").mkdir()
    assert main(["chaos", "kill-one", "--out", str(tmp_path), "--seed", "1"]) == 2
    assert "already holds a cluster from an earlier run" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster"], "nothing was started or written"


# --- the bank workload's checkers -------------------------------------------------------------------

BANK_INITIAL = {1: 1000, 2: 1000, 3: 1000}


def _transfer(tid: str, src: int, dst: int, amount: int, outcome: str, at: float) -> BankOp:
    return BankOp(
        WRITE,
        0,
        TXN,
        at,
        at + 0.1,
        outcome,
        "OK" if outcome == OK else "UNAVAILABLE",
        token=tid,
        keys=(src, dst),
        amount=amount,
    )


def _read(balances: dict[int, int], rows: dict[str, tuple[int, int, int]], at: float) -> BankOp:
    net = net_of(rows.values())
    return BankOp(
        READ, 1, SQL, at, at + 0.1, OK, "OK", balances=tuple((a, b, net.get(a, 0)) for a, b in balances.items())
    )


def _final(rows: dict[str, tuple[int, int, int]], **changed: int) -> FinalState:
    net = net_of(rows.values())
    balances = {a: b + net.get(a, 0) for a, b in BANK_INITIAL.items()}
    balances.update({int(a.lstrip("a")): b for a, b in changed.items()})
    return FinalState(balances, dict(rows), "ok")


def _failed_criteria(ops: list[BankOp], final: FinalState | None) -> list[str]:
    return [c.name for c in check_bank(ops, final, BANK_INITIAL).criteria() if c.ok is False]


@pytest.mark.unit
def test_the_bank_checkers_pass_a_clean_history_and_catch_lost_transfers_and_a_changed_total() -> None:
    t1, t3 = (1, 2, 10), (3, 1, 7)
    ops = [
        _transfer("t1", *t1, OK, 1.0),
        _transfer("t2", 2, 3, 5, FAIL, 1.1),
        _transfer("t3", *t3, INFO, 1.2),  # in doubt: present (whole) at the end
        _transfer("t4", 1, 3, 9, INFO, 1.3),  # in doubt: absent at the end
        _read({1: 990, 2: 1010, 3: 1000}, {"t1": t1}, 1.15),
    ]
    clean = check_bank(ops, _final({"t1": t1, "t3": t3}), BANK_INITIAL)
    assert all(c.ok for c in clean.criteria()), clean.criteria()
    assert (clean.acknowledged, clean.info_present, clean.info_absent, clean.final_total) == (1, 1, 1, 3000)

    assert _failed_criteria(ops, _final({"t3": t3})) == ["no acknowledged transfer lost"]
    lost = check_bank(ops, _final({"t3": t3}), BANK_INITIAL)
    assert len(lost.lost) == 1 and lost.lost[0].startswith("transfer t1 1->2 10")
    assert _failed_criteria(ops, _final({"t1": t1, "t3": t3}, a2=1011)) == ["total conserved", "transfers whole"]
    wrong_read = [*ops, _read({1: 990, 2: 1010, 3: 1001}, {"t1": t1}, 1.4)]
    assert _failed_criteria(wrong_read, _final({"t1": t1})) == ["total conserved", "transfers whole"]
    partial = FinalState({1: 990, 2: 1010, 3: 1000}, {"t1": t1, "t3": t3}, "ok")  # t3's row, not its moves
    assert _failed_criteria(ops, partial) == ["transfers whole"]
    assert _failed_criteria(ops, _final({"t1": t1, "t2": (2, 3, 5)})) == ["no failed transfer took effect"]
    assert _failed_criteria(ops, _final({"t1": t1, "t9": (1, 2, 1)})) == ["transfers whole"]  # nobody asked for t9
    assert _failed_criteria(ops, None) == ["final state read"]


@pytest.mark.unit
def test_bank_outcomes_and_a_database_image(tmp_path: Path) -> None:
    assert bank_classify("ABORTED", "database is locked", committing=False) == FAIL
    assert bank_classify("UNAVAILABLE", "Socket closed", committing=False) == FAIL  # no commit was asked for
    assert bank_classify("UNAVAILABLE", "Stream removed (Socket closed)") == INFO
    assert bank_classify("UNAVAILABLE", "failed to connect to all addresses; last error: ...") == FAIL  # never sent
    assert bank_classify("UNAVAILABLE", "not durable in 5 s", "OUTCOME_UNKNOWN") == INFO
    assert bank_classify("ABORTED", "truncated by a recovery", "NOT_COMMITTED") == FAIL
    assert bank_classify("FAILED_PRECONDITION", "CHECK constraint failed: balance >= 0") == FAIL
    assert bank_classify("UNAVAILABLE", "writes wait until storage decides the outcome ...; retry") == FAIL
    assert bank_classify("DEADLINE_EXCEEDED", "a commit in flight may still have committed") == INFO

    db = sqlite3.connect(":memory:")
    for sql, params in schema_statements(3, 1000):
        db.execute(sql, params)
    db.execute("UPDATE accounts SET balance = balance - 5 WHERE id = 1")
    db.execute("UPDATE accounts SET balance = balance + 5 WHERE id = 3")
    db.execute("INSERT INTO transfers VALUES ('c0-1', 1, 3, 5)")
    db.commit()
    balances, count, integrity, rows = inspect_image(db.serialize())
    assert balances == ((1, 995, -5), (2, 1000, 0), (3, 1005, 5)) and count == 1 and integrity == "ok"
    assert rows == {"c0-1": (1, 3, 5)}
    ledger = BankLedger()
    ledger.add(_transfer("t1", 1, 2, 10, OK, 1.0))
    ledger.add(_read({1: 990, 2: 1010, 3: 1000}, {"t1": (1, 2, 10)}, 0.5))
    ledger.to_jsonl(tmp_path / "history.jsonl")
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [(e["f"], e["type"]) for e in events] == [
        ("sql", "invoke"),
        ("sql", "ok"),
        ("transfer", "invoke"),
        ("transfer", "ok"),
    ]
    assert events[1]["value"]["total"] == 3000 and events[3]["value"]["id"] == "t1"


@pytest.mark.unit
def test_the_bank_workload_is_refused_where_it_cannot_run_and_tabled_with_its_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sixfold.tools.cli import main

    assert main(["chaos", "clone-kill", "--workload", "bank", "--out", str(tmp_path / "x"), "--seed", "1"]) == 2
    assert "pages workload only" in capsys.readouterr().err and not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="cannot run with the bank workload"):
        run_scenario(RunConfig(scenario="replace-clone", out_dir=tmp_path / "y", seed=1, workload="bank"))
    pages = ScenarioResult("kill-one", "PASS", 1, "out", operations=10, ok=10, lost=0, linearizable="yes")
    bank = ScenarioResult("kill-one", "PASS", 1, "out", workload="bank", lost=0, linearizable="n/a", conserved="yes")
    assert "workload" not in table([pages]).splitlines()[0] and "conserved" not in table([pages]).splitlines()[0]
    header, _, page_row, bank_row = table([pages, bank]).splitlines()[:4]
    assert header.split() == [
        "scenario",
        "workload",
        "ops",
        "ok",
        "fail",
        "info",
        "lost",
        "linearizable",
        "vanished",
        "conserved",
        "resumed",
        "converged",
        "verdict",
    ]
    assert page_row.split()[1] == "pages" and bank_row.split()[1] == "bank" and bank_row.split()[9] == "yes"


@pytest.mark.chaos
@pytest.mark.parametrize("scenario", ["kill-one", "writer-kill"])
def test_bank_chaos_scenario_passes(scenario: str, tmp_path: Path) -> None:
    seed = int(time.time()) % 100_000
    print(f"seed={seed}")
    cfg = RunConfig(scenario=scenario, out_dir=tmp_path / scenario, seed=seed, seconds=10, clients=6, workload="bank")
    result = run_scenario(cfg)
    print(table([result]))
    assert result.verdict == "PASS", [c for c in result.criteria if c.ok is False] or result.error
    assert result.workload == "bank" and result.lost == 0 and result.conserved == "yes"
    assert result.details["counts"]["transfers_ok"] > 100
    assert (tmp_path / scenario / "history.jsonl").stat().st_size > 0
