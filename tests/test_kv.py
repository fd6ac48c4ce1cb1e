"""compute.v1.KvService and `sixfold kv` on a real cluster (through the launcher): put, get,
delete, batch put, range and prefix scans with a limit, compare-and-set, bounds, and the CLI as a
subprocess. One cluster serves the whole module; each test uses its own key prefix."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from sixfold.compute.kv_service import KEY_BYTES_MAX, VALUE_BYTES_MAX
from sixfold.compute.sql_client import SqlClient, SqlError
from sixfold.tools.cluster import Cluster
from tests.sql_cluster import module_cluster, sixfold, sixfold_ok

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def kv_cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    with module_cluster(tmp_path_factory, request) as cluster:
        yield cluster


@pytest.fixture
def kv(kv_cluster: Cluster) -> Iterator[SqlClient]:
    with SqlClient(kv_cluster.compute_address(), timeout_s=TIMEOUT_S) as client:
        yield client


def keys(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [key for key, _ in pairs]


def test_put_get_delete_batch_scan_and_cas(kv: SqlClient) -> None:
    assert kv.get("api:a") is None
    lsn = kv.put("api:a", b"\x00value\xff")
    assert lsn > 0 and kv.get("api:a") == b"\x00value\xff"
    assert kv.put("api:a", "v2") > lsn and kv.get("api:a") == b"v2"
    big = (bytes(range(256)) * 4096)[:VALUE_BYTES_MAX]  # the largest value, under the largest key
    big_key = b"api:big:" + b"k" * (KEY_BYTES_MAX - 8)
    assert kv.put(big_key, big) > 0 and kv.get(big_key) == big
    existed, deleted_at = kv.delete(big_key)
    assert existed and deleted_at > 0 and kv.get(big_key) is None
    assert kv.delete(big_key) == (False, 0)

    batch_lsn = kv.batch_put([(f"api:user:{i:03}", f"u{i}") for i in range(250)] + [("api:zz", "last")])
    assert batch_lsn > lsn
    page = kv.scan(prefix="api:user:", limit=100)
    assert keys(page.pairs) == [f"api:user:{i:03}".encode() for i in range(100)] and page.more
    everything = list(page.pairs)
    while page.more:
        page = kv.scan(start=page.next_start, prefix="api:user:", limit=100)
        everything += page.pairs
    assert everything == [(f"api:user:{i:03}".encode(), f"u{i}".encode()) for i in range(250)]
    assert keys(kv.scan(start="api:user:248", end="api:zzz").pairs) == [b"api:user:248", b"api:user:249", b"api:zz"]
    assert keys(kv.scan(start="api:", end="api:b").pairs) == [b"api:a"]
    assert kv.scan(prefix="api:nothing").pairs == []
    assert len(kv.scan(prefix="api:").pairs) == 252  # the default limit is 1,000

    missed = kv.cas("api:c", "old", "new")
    assert (missed.swapped, missed.current, missed.commit_lsn) == (False, None, 0)
    created = kv.cas("api:c", None, "one")
    assert created.swapped and created.current == b"one" and created.commit_lsn > batch_lsn
    taken = kv.cas("api:c", None, "two")
    assert not taken.swapped and taken.current == b"one"
    stale = kv.cas("api:c", "zero", "two")
    assert not stale.swapped and stale.current == b"one"
    swapped = kv.cas("api:c", "one", "two")
    assert swapped.swapped and swapped.current == b"two" and kv.get("api:c") == b"two"

    for bad in (
        lambda: kv.put("", "v"),
        lambda: kv.put("k" * 1025, "v"),
        lambda: kv.put("api:huge", bytes(VALUE_BYTES_MAX + 1)),
        lambda: kv.batch_put([]),
        lambda: kv.scan(limit=10_001),
    ):
        with pytest.raises(SqlError) as raised:
            bad()
        assert raised.value.code.name == "INVALID_ARGUMENT" and raised.value.details
    with SqlClient(kv.address, volume_id="nosuch", timeout_s=TIMEOUT_S) as lost, pytest.raises(SqlError) as raised:
        lost.get("k")
    assert raised.value.code.name == "NOT_FOUND"
    assert kv.execute("SELECT count(*) FROM kv WHERE key >= ? AND key < ?", [b"api:", b"api;"]).rows == [(253,)]


def test_kv_cli(kv_cluster: Cluster) -> None:
    assert sixfold_ok(kv_cluster, "kv", "put", "cli:1", "ann").startswith("commit LSN ")
    sixfold_ok(kv_cluster, "kv", "put", "cli:2", "bob")
    sixfold_ok(kv_cluster, "kv", "--hex", "put", "636c693a33", "00ff")  # "cli:3"
    assert sixfold_ok(kv_cluster, "kv", "get", "cli:1") == "ann\n"
    assert sixfold_ok(kv_cluster, "kv", "get", "cli:3") == "x'00ff'\n"
    missing = sixfold(kv_cluster, "kv", "get", "cli:9")
    assert missing.returncode == 1 and "not found" in missing.stderr
    out = sixfold_ok(kv_cluster, "kv", "scan", "--prefix", "cli:", "--limit", "2")
    assert out.splitlines()[2:] == [
        "cli:1  ann",
        "cli:2  bob",
        "(2 keys; more follow: raise --limit, or scan on with --start LAST_KEY)",
    ]
    scanned = json.loads(sixfold_ok(kv_cluster, "kv", "scan", "--start", "cli:2", "--end", "cli:9", "--json"))
    assert scanned["pairs"] == [{"key": "cli:2", "value": "bob"}, {"key": "cli:3", "value": "x'00ff'"}]
    assert sixfold_ok(kv_cluster, "kv", "del", "cli:1").startswith("deleted (commit LSN ")
    assert "nothing deleted" in sixfold_ok(kv_cluster, "kv", "del", "cli:1")
    bad = sixfold(kv_cluster, "kv", "put", "", "v")
    assert bad.returncode == 1 and bad.stderr.startswith("error: INVALID_ARGUMENT: "), bad.stderr
    usage = sixfold(kv_cluster, "kv", "scan", "--limit", "0")
    assert usage.returncode == 2
