"""Bearer tokens (storage/security/tokens.py), the user registry (users.py) and the permission table
(permissions.py): round trips, every one-character change refused, times, users, the table against a
brute-force spec and the proto files, SQL read classification against SQLite itself, redaction."""

from __future__ import annotations

import base64
import contextlib
import re
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sixfold.storage.errors import AlreadyExists, InvalidRequest
from sixfold.storage.security import permissions as perm
from sixfold.storage.security import tokens as tk
from sixfold.storage.security.users import UnknownUser, Users
from tests.depth import examples

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))  # a fixed signing key: the tests replay exactly
VERIFY_KEY = tk.verify_key_of(KEY)
NOW = 1_800_000_000.0
DAY = 86_400
ROLES = list(tk.Role)
names = st.from_regex(tk.USER_NAME_PATTERN, fullmatch=True)


def registry(name: str = "alice", role: tk.Role = tk.Role.WRITER) -> Users:
    users = Users()
    users.create(name, role, NOW - 10)
    return users


def token_for(users: Users, name: str = "alice", role: tk.Role | None = None, ttl_s: int = DAY) -> str:
    user = users.get(name)
    assert user is not None
    return tk.issue(KEY, user, role or user.role, NOW, ttl_s)


def refused(token: str, now: float, users: Users, reason: str | None = None) -> tk.Unauthenticated:
    with pytest.raises(tk.Unauthenticated) as caught:
        tk.verify(VERIFY_KEY, token, now, users=users.get)
    error = caught.value
    assert error.status_code_name == "UNAUTHENTICATED"
    assert reason is None or error.reason == reason, (error.reason, error.message)
    echoed = [part for part in (token, token.rsplit(".", 1)[-1]) if len(part) >= 8 and part in error.message]
    assert not echoed, error.message  # a token is never echoed
    return error


# --- tokens ------------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=examples(60))
@given(name=names, role=st.sampled_from(ROLES), ttl_s=st.integers(1, tk.TTL_S_MAX), dt=st.floats(0, 1))
def test_a_token_round_trips(name: str, role: tk.Role, ttl_s: int, dt: float) -> None:
    users = registry(name, tk.Role.ADMIN)
    token = tk.issue(KEY, users.get(name) or pytest.fail(), role, NOW + dt, ttl_s)
    assert len(token) <= tk.TOKEN_CHARS_MAX and token.startswith("sf1.")
    claims = tk.verify(VERIFY_KEY, token, NOW + dt + ttl_s - 1, users=users.get)
    issued_at = int(NOW + dt)
    assert (claims.user, claims.role, claims.issued_at, claims.expires_at) == (name, role, issued_at, issued_at + ttl_s)
    assert claims.key_id == tk.key_id(VERIFY_KEY)


@settings(deadline=None, max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_one_character_change_is_refused(data: st.DataObject) -> None:
    users = registry()
    token = token_for(users)
    at = data.draw(st.integers(0, len(token) - 1), label="position")
    new = data.draw(st.characters(codec="utf-8").filter(lambda c: c != token[at]), label="character")
    refused(token[:at] + new + token[at + 1 :], NOW, users)


@settings(deadline=None, max_examples=examples(200))
@given(data=st.data())
def test_any_byte_change_of_the_signature_or_payload_is_refused(data: st.DataObject) -> None:
    users = registry()
    version, payload, signature = token_for(users).split(".")
    part = data.draw(st.sampled_from(["payload", "signature"]))
    raw = bytearray(tk._b64decode(payload if part == "payload" else signature, part))
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    changed = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    token = f"{version}.{changed}.{signature}" if part == "payload" else f"{version}.{payload}.{changed}"
    refused(token, NOW, users)


def test_the_failures_say_what_is_wrong() -> None:
    users = registry()
    token = token_for(users, ttl_s=3600)
    error = refused(token, NOW + 3600, users, tk.REASON_TOKEN_EXPIRED)
    assert "expired at 2027-01-15T09:00:00Z" in error.message, error.message
    error = refused(token, NOW - tk.CLOCK_SKEW_S_MAX - 1, users, tk.REASON_TOKEN_NOT_YET_VALID)
    assert "not valid before 2027-01-15T08:00:00Z" in error.message
    tk.verify(VERIFY_KEY, token, NOW - tk.CLOCK_SKEW_S_MAX, users=users.get)  # inside the skew allowed
    assert "version 'sf2'" in refused("sf2" + token[3:], NOW, users, tk.REASON_TOKEN_UNKNOWN_VERSION).message
    refused("garbage", NOW, users, tk.REASON_TOKEN_MALFORMED)
    refused("", NOW, users, tk.REASON_TOKEN_MALFORMED)
    refused("sf1." + "A" * tk.TOKEN_CHARS_MAX, NOW, users, tk.REASON_TOKEN_MALFORMED)
    other = tk.issue(bytes(32), users.get("alice") or pytest.fail(), tk.Role.WRITER, NOW, DAY)
    assert "does not know" in refused(other, NOW, users, tk.REASON_TOKEN_UNKNOWN_KEY).message
    version, payload, _ = token.split(".")
    forged = version + "." + payload + "." + tk._b64encode(bytes(64))
    assert "does not match" in refused(forged, NOW, users, tk.REASON_TOKEN_BAD_SIGNATURE).message


def test_verify_accepts_any_key_of_a_rotation() -> None:
    users = registry()
    token = token_for(users)
    assert tk.verify([tk.verify_key_of(bytes(32)), VERIFY_KEY], token, NOW, users=users.get).user == "alice"


def test_a_token_is_only_as_good_as_its_user() -> None:
    users = registry()
    token = token_for(users)
    users.set_role("alice", tk.Role.READER)
    assert "is a reader now" in refused(token, NOW, users, tk.REASON_ROLE_LOWERED).message
    users.set_role("alice", tk.Role.WRITER)
    tk.verify(VERIFY_KEY, token, NOW, users=users.get)
    users.revoke_tokens("alice")
    refused(token, NOW, users, tk.REASON_USER_GONE)
    tk.verify(VERIFY_KEY, token_for(users), NOW, users=users.get)  # issued after the revocation
    users.delete("alice")
    refused(token, NOW, users, tk.REASON_USER_GONE)
    users.create("alice", tk.Role.WRITER, NOW)  # the same name again is another user
    refused(token, NOW, users, tk.REASON_USER_GONE)


def test_issue_refuses_a_role_above_the_user_and_a_ttl_out_of_bounds() -> None:
    users = registry(role=tk.Role.READER)
    user = users.get("alice") or pytest.fail()
    with pytest.raises(InvalidRequest, match="cannot have a writer token"):
        tk.issue(KEY, user, tk.Role.WRITER, NOW, DAY)
    for ttl_s in (0, tk.TTL_S_MAX + 1, -5):
        with pytest.raises(InvalidRequest, match="a token lives"):
            tk.issue(KEY, user, tk.Role.READER, NOW, ttl_s)


def test_the_cache_skips_the_signature_but_not_the_time_or_the_user() -> None:
    users = registry()
    cache = tk.VerifiedTokens(entries_max=2)
    token = token_for(users, ttl_s=60)
    tk.verify(VERIFY_KEY, token, NOW, users=users.get, cache=cache)
    assert cache.get(token) is not None
    with pytest.raises(tk.Unauthenticated, match="expired"):
        tk.verify(VERIFY_KEY, token, NOW + 60, users=users.get, cache=cache)
    users.delete("alice")
    with pytest.raises(tk.Unauthenticated) as caught:
        tk.verify(VERIFY_KEY, token, NOW, users=users.get, cache=cache)
    assert caught.value.reason == tk.REASON_USER_GONE
    users.create("bob", tk.Role.READER, NOW)
    for ttl_s in (61, 62, 63):
        tk.verify(VERIFY_KEY, token_for(users, "bob", ttl_s=ttl_s), NOW, users=users.get, cache=cache)
    assert len(cache) == 2 and cache.get(token) is None


def test_token_from_metadata() -> None:
    assert tk.token_from_metadata([("x", "1"), ("authorization", "Bearer sf1.a.b")]) == "sf1.a.b"
    with pytest.raises(tk.Unauthenticated) as caught:
        tk.token_from_metadata([("x", "1")])
    assert caught.value.reason == tk.REASON_TOKEN_MISSING
    for bad in ([("authorization", "Basic abc")], [("authorization", "Bearer a")] * 2):
        with pytest.raises(tk.Unauthenticated, match="not one 'Bearer <token>'"):
            tk.token_from_metadata(bad)


# --- users -------------------------------------------------------------------------------------------


def test_users_create_list_delete_and_round_trip_through_a_dict() -> None:
    users = Users()
    users.create("bob", tk.Role.READER, NOW)
    users.create("alice", tk.Role.ADMIN, NOW + 1)
    with pytest.raises(AlreadyExists, match="already exists"):
        users.create("bob", tk.Role.WRITER, NOW)
    for bad in ("", "Bob", "1bob", "b" * 64, "bo b", "bob\n"):
        with pytest.raises(InvalidRequest, match="not a user name"):
            users.create(bad, tk.Role.READER, NOW)
    assert [u.name for u in users.list()] == ["alice", "bob"]
    again = Users.from_dict(users.to_dict())
    assert again.list() == users.list() and again.to_dict() == users.to_dict()
    users.delete("bob")
    with pytest.raises(UnknownUser, match="no user 'bob'"):
        users.delete("bob")
    assert users.create("bob", tk.Role.READER, NOW).serial == 3  # a serial is never given twice


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 2, "next_serial": 1, "users": []},
        {"version": 1, "next_serial": -1, "users": []},
        {"version": 1, "next_serial": 1, "users": [{"name": "a"}]},
        {"version": 1, "next_serial": 1, "users": [{"name": "A", "role": "admin", "created_at": 0, "serial": 1}]},
        {"version": 1, "next_serial": 1, "users": [{"name": "a", "role": "root", "created_at": 0, "serial": 1}]},
        {"version": 1, "next_serial": 1, "users": [{"name": "a", "role": "admin", "created_at": 0, "serial": 1}] * 2},
    ],
)
def test_a_bad_registry_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        Users.from_dict(data)


# --- permissions -------------------------------------------------------------------------------------

# The spec, written out again without the module's helpers: method -> least role, "process" or "sql"/"begin".
SPEC: dict[str, str] = {
    **{f"/compute.v1.SqlService/{m}": "sql" for m in ("Execute", "RunTransaction", "Statement")},
    "/compute.v1.SqlService/Begin": "begin",
    **{f"/compute.v1.SqlService/{m}": "reader" for m in ("Session", "Commit", "Rollback")},
    **{f"/compute.v1.KvService/{m}": "reader" for m in ("Get", "Scan")},
    **{f"/compute.v1.KvService/{m}": "writer" for m in ("Put", "Delete", "BatchPut", "CompareAndSet")},
    **{
        f"/compute.v1.VolumeService/{m}": "reader"
        for m in ("ReadPages", "GetVolumeStatus", "ListVolumes", "ListSnapshots", "VolumeHistory")
    },
    **{f"/compute.v1.VolumeService/{m}": "writer" for m in ("WritePages", "WritePagesStream")},
    **{
        f"/compute.v1.VolumeService/{m}": "admin"
        for m in ("CreateVolume", "CloneVolume", "DeleteVolume", "CreateSnapshot", "DeleteSnapshot")
    },
    **{f"/compute.v1.VolumeService/{m}": "admin" for m in ("RestoreSnapshot", "Backtrack")},
    "/compute.v1.InstanceService/GetInstanceStatus": "reader",
    **{f"/compute.v1.InstanceService/{m}": "process" for m in ("FollowRedo", "Promote", "StepDown")},
    **{
        f"/storage.v1.ControlPlaneService/{m}": "reader"
        for m in ("ListNodes", "DescribeVolume", "ListVolumes", "ListSnapshots", "VolumeHistory", "FindVolumeCommit")
    },
    **{f"/storage.v1.ControlPlaneService/{m}": "process" for m in ("RegisterNode", "Heartbeat", "GrowVolume")},
    **{
        f"/storage.v1.ControlPlaneService/{m}": "admin"
        for m in (
            "CreateVolume",
            "CloneVolume",
            "RestoreSnapshot",
            "DeleteVolume",
            "DeleteSnapshot",
            "Backtrack",
            "RotateVolumeKey",
        )
    },
    **{
        f"/storage.v1.ClusterService/{m}": "reader"
        for m in ("ListComputeInstances", "ListEndpoints", "ResolveEndpoint")
    },
    **{
        f"/storage.v1.ClusterService/{m}": "admin"
        for m in ("Failover", "RemoveCompute", "CreateEndpoint", "DeleteEndpoint")
    },
    **{f"/storage.v1.ClusterService/{m}": "process" for m in ("RegisterCompute", "ComputeHeartbeat")},
    **{f"/storage.v1.UserService/{m}": "admin" for m in ("CreateUser", "ListUsers", "DeleteUser", "IssueToken")},
    "/storage.v1.UserService/SyncUsers": "process",
}
RANK = {"reader": 1, "writer": 2, "admin": 3}
SQL_SAMPLES = [(), ("SELECT 1",), ("SELECT 1", "DELETE FROM t"), ("INSERT INTO t VALUES (1)",)]


def spec_allows(role: tk.Role, method: str, sql: tuple[str, ...], read_only_transaction: bool) -> bool:
    kind = SPEC.get(method, "process")
    if kind == "process":
        return False
    if kind == "sql":
        kind = "reader" if sql and all(s.startswith("SELECT") for s in sql) else "writer"
    if kind == "begin":
        kind = "reader" if read_only_transaction else "writer"
    return RANK[role.value] >= RANK[kind]


def test_the_table_names_every_rpc_of_the_client_facing_services() -> None:
    found = set()
    protos = ["compute/v1/" + p.name for p in (REPO / "proto/compute/v1").glob("*.proto")]
    for proto in [
        *protos,
        "storage/v1/control_plane_service.proto",
        "storage/v1/cluster_service.proto",
        "storage/v1/user_service.proto",
    ]:
        text = (REPO / "proto" / proto).read_text()
        package = re.search(r"^package ([\w.]+);", text, re.MULTILINE)
        assert package is not None
        for service, body in re.findall(r"^service (\w+) \{(.*?)^\}", text, re.MULTILINE | re.DOTALL):
            found |= {f"/{package.group(1)}.{service}/{rpc}" for rpc in re.findall(r"rpc (\w+)\(", body)}
    assert set(perm.PERMISSIONS) == found == set(SPEC)


def test_the_table_against_the_brute_force_spec() -> None:
    users = Users()
    for role in ROLES:
        users.create(role.value, role, NOW)
        claims = tk.verify(VERIFY_KEY, token_for(users, role.value), NOW, users=users.get)
        for method in [*SPEC, "/storage.v1.StorageService/DropSegment", "/x.Y/Z"]:
            for sql in SQL_SAMPLES:
                for read_only_transaction in (False, True):
                    allowed = spec_allows(role, method, sql, read_only_transaction)
                    try:
                        grant = perm.authorize(claims, method, sql=sql, read_only_transaction=read_only_transaction)
                    except tk.PermissionDenied as error:
                        assert not allowed, (role, method, sql, error.message)
                        assert error.status_code_name == "PERMISSION_DENIED"
                        if error.reason == perm.REASON_ROLE_TOO_LOW:
                            needed = error.metadata["role_needed"]
                            assert f"needs role {needed}" in error.message and f"a {role.value} token" in error.message
                    else:
                        assert allowed, (role, method, sql)
                        assert grant.read_only == (role is tk.Role.READER) and grant.user == role.value


READS = [
    "SELECT * FROM t",
    "  -- why\n select a from t where b = ';DELETE FROM t';",
    "/* ; */ SELECT 1 ;  ",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "EXPLAIN DELETE FROM t",
    "VALUES (1), (2)",
    "PRAGMA table_info(t)",
    "PRAGMA main.index_list('t')",
    "pragma user_version",
    "SELECT 'it''s; fine', \"a\"\"b;\", `c``;`, [d;] FROM t -- ; DELETE",
]
WRITES = [
    "DELETE FROM t",
    "SELECT 1; DELETE FROM t",
    "SELECT 'x; DELETE FROM t",
    "WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x",
    "PRAGMA user_version = 5",
    "PRAGMA user_version(5)",
    "PRAGMA journal_mode(WAL)",
    "PRAGMA wal_checkpoint",
    "PRAGMA incremental_vacuum",
    "PRAGMA optimize",
    "VACUUM",
    "ATTACH 'x.db' AS x",
    "",
    "x" * (perm.SQL_CHARS_MAX + 1),
    "SELECT " + "[" * (perm.SQL_CHARS_MAX - 7),  # one pass: no time quadratic in the text
    "SELECT " + "'" * (perm.SQL_CHARS_MAX - 8) + "; DELETE FROM t",
]


@pytest.mark.parametrize("sql", READS)
def test_statements_that_read(sql: str) -> None:
    assert perm.statement_reads_only(sql)


@pytest.mark.parametrize("sql", WRITES)
def test_statements_that_may_write(sql: str) -> None:
    assert not perm.statement_reads_only(sql)


HEADS = ["SELECT 1", "SELECT * FROM t", "WITH x AS (SELECT 1)", "EXPLAIN", "VALUES (1)", "PRAGMA", "-- c\n", "/* ; */"]
FRAGMENTS = [
    "SELECT", "* FROM t", "1", ";", "DELETE FROM t", "INSERT INTO t VALUES (7, 8)", "UPDATE t SET a = 9",
    "REPLACE INTO t VALUES (1, 1)", "WITH x AS (SELECT 1)", "EXPLAIN", "VALUES (1)", "PRAGMA", "table_info(t)",
    "user_version", "= 3", "(4)", "journal_mode", "main.", "'", "';'", "\"", "[", "]", "`", "--", "/*", "*/",
    "\n", "CREATE TABLE u(a)", "DROP TABLE t", "RETURNING *", "x'00'", "incremental_vacuum", "SELECT 1 FROM t",
]  # fmt: skip


@settings(deadline=None, max_examples=examples(400), suppress_health_check=[HealthCheck.too_slow])
@given(head=st.sampled_from(HEADS), tail=st.lists(st.sampled_from(FRAGMENTS), max_size=6))
def test_a_statement_judged_read_only_changes_nothing_in_sqlite(head: str, tail: list[str]) -> None:
    """The oracle is SQLite: whatever `statement_reads_only` accepts, run as a whole script, leaves the
    database, its change count and the connection's pragmas as they were. (Checked to catch
    `looks_read_only` in its place: WITH ... INSERT, PRAGMA x(5), SELECT 1; DELETE ...)"""
    sql = " ".join([head, *tail])
    if not perm.statement_reads_only(sql):
        return
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.executescript("CREATE TABLE t(a, b); INSERT INTO t VALUES (1, 2), (3, 4); CREATE INDEX tb ON t(b);")
    pragmas = ("user_version", "journal_mode", "foreign_keys", "schema_version", "page_count", "freelist_count")
    before = (db.serialize(), [db.execute(f"PRAGMA {p}").fetchall() for p in pragmas], db.total_changes)
    with contextlib.suppress(sqlite3.Error):
        db.executescript(sql)
    after = (db.serialize(), [db.execute(f"PRAGMA {p}").fetchall() for p in pragmas], db.total_changes)
    assert before == after, sql


# --- redaction ---------------------------------------------------------------------------------------


def test_redact_leaves_no_token() -> None:
    users = registry()
    token = token_for(users)
    metadata: list[tuple[str, str | bytes]] = [
        ("authorization", f"Bearer {token}"),
        ("x-note", f"see {token} here"),
        ("trace-bin", b"\x00\x01"),
    ]
    shown = tk.redact(metadata)
    assert token not in repr(shown) and token.split(".")[2] not in repr(shown)
    assert shown[0] == ("authorization", f"<redacted {tk.fingerprint(token)}>")
    assert shown[1] == ("x-note", f"see <token {tk.fingerprint(token)}> here")
    assert shown[2] == ("trace-bin", "<2 bytes>")
    assert tk.redact({"user-agent": "grpc-python"}) == [("user-agent", "grpc-python")]
    assert token not in tk.redact_text(f"call failed: authorization=Bearer {token}")


@settings(deadline=None, max_examples=examples(50))
@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20))
def test_redact_text_removes_a_token_wherever_it_sits(prefix: str, suffix: str) -> None:
    token = token_for(registry())
    assert token.split(".")[2] not in tk.redact_text(prefix + token + suffix)
