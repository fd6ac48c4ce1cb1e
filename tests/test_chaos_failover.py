"""The failover chaos scenarios (tools/chaos/scenarios_failover.py) and the reader-read checker they judge
reader probes with (tools/chaos/reader_check.py).

- The checker, pure: a clean set of reads passes; deliberate breaks are each caught: a read that shows
  more than the final state holds, a row the committed order does not have there, a transfer before its
  client sent it, balances off their transfers, and a read of an instance going backwards.
- writer-failover and split-brain for real, CI-sized (a cluster with two read replicas through the
  launcher; run_scenario stops every process by PID, also when the run fails): each must PASS, one with
  the pages workload on vol0 (the bank beside it on vol1), the other with the bank on vol0.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sixfold.compute.endpoint_client import Endpoint
from sixfold.compute.sql_client import SqlError
from sixfold.tools.chaos.bank import TXN, BankLedger, BankOp
from sixfold.tools.chaos.failover_loads import EndpointBankClient
from sixfold.tools.chaos.history import FAIL, INFO, OK, WRITE
from sixfold.tools.chaos.reader_check import ProbeRead, check_reader_reads, digest_rows, prefix_digests
from sixfold.tools.chaos.reader_probe import unbalanced
from sixfold.tools.chaos.runner import RunConfig, run_scenario, table
from sixfold.tools.chaos.scenarios import ORDER, SCENARIOS

FINAL = [(1, "c0-1"), (2, "c1-1"), (3, "c0-2"), (4, "c2-1")]
INVOKED = {"c0-1": 1.0, "c1-1": 1.5, "c0-2": 2.0, "c2-1": 3.0, "lost-1": 2.5}


def _read(
    count: int, invoked: float, completed: float, address: str = "r1", rows: list[tuple[int, str]] | None = None
) -> ProbeRead:
    seen = FINAL[:count] if rows is None else rows
    return ProbeRead(
        "replica1",
        address,
        invoked,
        completed,
        OK,
        read_point=100 + count,
        count=len(seen),
        digest=digest_rows(seen),
        tail=tuple(t for _, t in seen[-3:]),
    )


@pytest.mark.unit
def test_prefix_digests_are_the_digests_of_every_prefix() -> None:
    digests = prefix_digests(FINAL)
    assert len(digests) == len(FINAL) + 1
    assert all(digests[n] == digest_rows(FINAL[:n]) for n in range(len(FINAL) + 1))
    assert digest_rows([(1, "a"), (2, "b")]) != digest_rows([(1, "b"), (2, "a")])


@pytest.mark.unit
def test_clean_reader_reads_pass() -> None:
    reads = [
        _read(0, 0.5, 0.6),
        _read(2, 1.8, 1.9),  # c1-1 was invoked at 1.5: sent before the read completed
        _read(2, 2.0, 2.1, address="r2"),
        _read(4, 3.1, 3.2),
        _read(3, 3.0, 3.3, address="r2"),  # another instance may lag behind r1
        ProbeRead("replica2", "r2", 3.4, 3.5, FAIL, detail="UNAVAILABLE: ..."),  # failed reads are not judged
    ]
    check = check_reader_reads(reads, FINAL, INVOKED)
    assert check.reads == 5 and check.failed == 1
    assert all(c.ok for c in check.criteria()), check.criteria()


@pytest.mark.unit
def test_a_reader_read_above_durable_is_caught() -> None:
    more = _read(5, 4.0, 4.1, rows=[*FINAL, (5, "lost-1")])  # a commit the final state does not hold
    phantom = _read(2, 4.0, 4.1, rows=[(1, "c0-1"), (2, "lost-1")])  # a row not in the committed order there
    reordered = _read(2, 4.0, 4.1, rows=[(1, "c1-1"), (2, "c0-1")])
    check = check_reader_reads([more, phantom, reordered], FINAL, INVOKED)
    assert len(check.above_durable) == 3, check.above_durable
    assert check.criteria()[0].ok is False


@pytest.mark.unit
def test_a_reader_read_of_a_transfer_not_yet_sent_is_caught() -> None:
    early = _read(4, 2.2, 2.4)  # c2-1 was invoked only at 3.0
    check = check_reader_reads([early], FINAL, INVOKED)
    assert not check.above_durable and len(check.not_sent) == 1 and "c2-1" in check.not_sent[0]
    assert check.criteria()[0].ok is False
    nobody = check_reader_reads([_read(1, 2.0, 2.1)], FINAL, {})  # a transfer no client asked for
    assert nobody.not_sent and "no client asked for" in nobody.not_sent[0]


@pytest.mark.unit
def test_reader_balances_off_their_transfers_are_caught() -> None:
    initial = {1: 1000, 2: 1000}
    assert unbalanced([(1, 990, -10), (2, 1010, 10)], initial) == ""
    assert "total 2010" in unbalanced([(1, 1000, -10), (2, 1010, 10)], initial)
    assert "account 1" in unbalanced([(1, 1000, -10), (2, 1000, 10)], initial)
    read = _read(2, 1.8, 1.9)
    read.unbalanced = unbalanced([(1, 1000, -10), (2, 1010, 10)], initial)
    assert check_reader_reads([read], FINAL, INVOKED).criteria()[0].ok is False


@pytest.mark.unit
def test_a_reader_read_going_backwards_is_caught() -> None:
    reads = [
        _read(3, 2.1, 2.2),
        _read(2, 2.3, 2.4),  # began after a read of the same instance that saw 3 had completed
        _read(1, 2.15, 2.5, address="r2"),  # another instance: not compared with r1
        _read(2, 2.18, 2.6),  # overlaps the first read: concurrent, not judged
    ]
    check = check_reader_reads(reads, FINAL, INVOKED)
    assert len(check.backwards) == 1 and "2.300" in check.backwards[0], check.backwards
    above, backwards = check.criteria()
    assert above.ok is True and backwards.ok is False


@pytest.mark.unit
def test_without_the_final_order_reader_reads_are_not_passed() -> None:
    check = check_reader_reads([_read(1, 1.1, 1.2)], None, INVOKED)
    assert [c.ok for c in check.criteria()] == [False]


@pytest.mark.unit
def test_an_endpoint_bank_call_that_was_never_sent_fails_and_a_lost_commit_answer_is_unknown() -> None:
    client = EndpointBankClient(BankLedger(), 1, Endpoint("127.0.0.1:1"), "vol0")
    cases = [
        ("resolving endpoint 'cluster': no writer right now (a failover is under way); retry in a moment", FAIL),
        ("endpoint 'cluster' has no live instance now", FAIL),
        ("Stream removed (Socket closed)", INFO),
    ]
    for details, outcome in cases:
        op = BankOp(WRITE, 1, TXN, 0.0)
        client._failed(op, SqlError("UNAVAILABLE", details), committing=True)
        assert op.outcome == outcome, details
    client.close()


@pytest.mark.unit
def test_the_failover_scenarios_are_registered_with_two_replicas() -> None:
    assert ORDER[-2:] == ("writer-failover", "split-brain")
    for name in ("writer-failover", "split-brain"):
        scenario = SCENARIOS[name]
        assert scenario.cluster_options == {"replicas": 2}
        assert scenario.workload_factory is not None and scenario.start is not None and scenario.settle is not None


# --- the scenarios, for real ----------------------------------------------------------------------


def _criterion(result: object, name: str) -> str:
    found = [c for c in result.criteria if c.name == name]  # type: ignore[attr-defined]
    assert found and found[0].ok is True, found or name
    return str(found[0].detail)


@pytest.mark.chaos
def test_writer_failover_passes(tmp_path: Path) -> None:
    seed = int(time.time()) % 100_000
    print(f"seed={seed}")
    result = run_scenario(
        RunConfig(scenario="writer-failover", out_dir=tmp_path / "wf", seed=seed, seconds=12, clients=4)
    )
    print(table([result]))
    assert result.verdict == "PASS", [c for c in result.criteria if c.ok is False] or result.error
    assert result.lost == 0 and result.linearizable == "yes"
    failovers = result.details["scenario"]["failovers"]
    assert len(failovers) >= 2 and all(f["new_writer"] not in (None, f["victim"]) for f in failovers)
    assert failovers[1]["victim"] == failovers[0]["new_writer"], "the second kill hits the promoted writer"
    _criterion(result, "vol1 (bank): no acknowledged transfer lost")
    assert "0 not a prefix" in _criterion(result, "reader reads never above durable")
    _criterion(result, "reader probes read on readers")
    assert (tmp_path / "wf" / "reader-reads.jsonl").stat().st_size > 0
    assert (tmp_path / "wf" / "logs" / "replica2.log").exists()


@pytest.mark.chaos
def test_split_brain_passes(tmp_path: Path) -> None:
    seed = int(time.time()) % 100_000
    print(f"seed={seed}")
    cfg = RunConfig(scenario="split-brain", out_dir=tmp_path / "sb", seed=seed, seconds=12, clients=4, workload="bank")
    result = run_scenario(cfg)
    print(table([result]))
    assert result.verdict == "PASS", [c for c in result.criteria if c.ok is False] or result.error
    assert result.lost == 0 and result.conserved == "yes"
    assert " 0 acknowledged" in _criterion(result, "old writer acknowledges nothing after the new one opened")
    assert "says reader" in _criterion(result, "old writer rejoins as a reader")
    _criterion(result, "vol1 (pages): linearizable")
    _criterion(result, "reader reads never go backwards")
