"""What each role of a user may call: one table, every RPC a client can reach, and the check.

Pure: no gRPC import (methods are their full names, as `grpc.HandlerCallDetails.method` gives them).

Rules:
1. Every RPC of compute.v1 SqlService, KvService, VolumeService, InstanceService and storage.v1
   ControlPlaneService, ClusterService, UserService has one `Rule` in `PERMISSIONS`; a method not in the
   table is refused (deny by default), so a new RPC is unreachable with a token until someone decides its
   rule.
2. `Rule.role` is the least role a user needs (roles are ordered, `tokens.Role.holds`). None marks an
   RPC between sixfold processes (registration, heartbeats, redo, promotion, the control plane's
   metadata changes that a compute writer orders): no user token reaches it; the caller's certificate
   role decides (the TLS layer).
3. SQL is a read or a write depending on its text: Execute, Statement and RunTransaction need writer,
   and reader suffices when every statement reads only per `statement_reads_only`; Begin needs writer,
   and reader suffices for a read-only transaction. A Session stream needs reader to open and each step
   is checked as the unary call it stands for (Begin, Statement, Commit, Rollback).
4. `statement_reads_only` is stricter than compute/sql/statements.py's `looks_read_only`, which only
   routes (it calls WITH ... INSERT read-only and falls back to the writer, and any PRAGMA without '='
   a read): here literals and comments are set aside, one statement only, WITH without a write verb,
   and only the PRAGMAs in `_PRAGMAS_READ`. A wrong "no" costs a reader a refusal; a wrong "yes" is
   caught by rule 5.
5. Defence in depth: `Grant.read_only` is true for a caller below writer, whatever the method; the
   servicer then runs the call without any write (a read-only connection or transaction, no fallback
   to the writer), so a statement misjudged by rule 4 fails rather than writes.
6. Commit and Rollback need only reader: a transaction holds no write but those its writer-checked
   statements made. Transaction ids are the engine's; the servicer should bind one to the user that
   began it, or a reader that learns another session's id can end that transaction early.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sixfold.storage.security.tokens import Claims, PermissionDenied, Role

SQL_CHARS_MAX = 1 << 20  # longer text is not classified (it needs writer); the engine refuses it anyway

REASON_ROLE_TOO_LOW = "ROLE_TOO_LOW"  # metadata: role_needed, role
REASON_PROCESS_ONLY = "PROCESS_ONLY"
REASON_UNKNOWN_METHOD = "UNKNOWN_METHOD"

SQL = "compute.v1.SqlService"
KV = "compute.v1.KvService"
VOLUME = "compute.v1.VolumeService"
INSTANCE = "compute.v1.InstanceService"
CONTROL_PLANE = "storage.v1.ControlPlaneService"
CLUSTER = "storage.v1.ClusterService"
USERS = "storage.v1.UserService"

BY_STATEMENTS = "statements"  # Rule.relaxed_by: reader suffices when every statement reads only
BY_READ_ONLY_TRANSACTION = "read_only_transaction"  # Rule.relaxed_by: reader suffices for one


@dataclass(frozen=True)
class Rule:
    role: Role | None  # the least role needed; None: sixfold processes only (rule 2)
    why: str
    relaxed_by: str = ""  # BY_STATEMENTS or BY_READ_ONLY_TRANSACTION: reader suffices then (rule 3)


def method(service: str, name: str) -> str:
    """A gRPC method's full name, as a server sees it: /package.Service/Method."""
    return f"/{service}/{name}"


_READS = Rule(Role.READER, "reads data or status")
_WRITES = Rule(Role.WRITER, "changes data")
_ADMIN = Rule(Role.ADMIN, "changes volumes or the cluster")
_SQL = Rule(Role.WRITER, "SQL: a write unless every statement reads only", BY_STATEMENTS)


def _process(callers: str) -> Rule:
    return Rule(None, f"called only by {callers}, with their certificates")


PERMISSIONS: dict[str, Rule] = {
    # SQL (rule 3): a statement decides; ending a transaction adds no write (rule 6).
    method(SQL, "Execute"): _SQL,
    method(SQL, "RunTransaction"): _SQL,
    method(SQL, "Statement"): _SQL,
    method(SQL, "Begin"): Rule(Role.WRITER, "a write transaction unless read-only", BY_READ_ONLY_TRANSACTION),
    method(SQL, "Session"): Rule(Role.READER, "opens a stream; each step is checked as its unary call"),
    method(SQL, "Commit"): Rule(Role.READER, "ends a transaction whose writes were checked"),
    method(SQL, "Rollback"): Rule(Role.READER, "ends a transaction, writing nothing"),
    # KV: reads and writes of keys.
    method(KV, "Get"): _READS,
    method(KV, "Scan"): _READS,
    method(KV, "Put"): _WRITES,
    method(KV, "Delete"): _WRITES,
    method(KV, "BatchPut"): _WRITES,
    method(KV, "CompareAndSet"): _WRITES,
    # Volumes: pages are data (writer); the volume's life and time travel are admin.
    method(VOLUME, "WritePages"): _WRITES,
    method(VOLUME, "WritePagesStream"): _WRITES,
    method(VOLUME, "ReadPages"): _READS,
    method(VOLUME, "GetVolumeStatus"): _READS,
    method(VOLUME, "ListVolumes"): _READS,
    method(VOLUME, "ListSnapshots"): _READS,
    method(VOLUME, "VolumeHistory"): _READS,
    method(VOLUME, "CreateVolume"): _ADMIN,
    method(VOLUME, "CloneVolume"): _ADMIN,
    method(VOLUME, "DeleteVolume"): _ADMIN,
    method(VOLUME, "CreateSnapshot"): _ADMIN,
    method(VOLUME, "DeleteSnapshot"): _ADMIN,
    method(VOLUME, "RestoreSnapshot"): _ADMIN,
    method(VOLUME, "Backtrack"): _ADMIN,
    # Instances: status for anyone; redo and role changes between processes.
    method(INSTANCE, "GetInstanceStatus"): _READS,
    method(INSTANCE, "FollowRedo"): _process("read replicas (the writer's redo stream)"),
    method(INSTANCE, "Promote"): _process("the control plane's failure detector"),
    method(INSTANCE, "StepDown"): _process("the control plane's failure detector"),
    # Control plane: listings for anyone. A change of volume metadata is ordered by the compute writer
    # (its certificate, no token), which knows the VDL and chain tails a clone, backtrack or delete needs;
    # a user asks VolumeService, or (the CLI's certificate, the bench and chaos tools making volumes)
    # calls the control plane with an admin token, where the certificate table (tls.py) still applies.
    method(CONTROL_PLANE, "ListNodes"): _READS,
    method(CONTROL_PLANE, "DescribeVolume"): _READS,
    method(CONTROL_PLANE, "ListVolumes"): _READS,
    method(CONTROL_PLANE, "ListSnapshots"): _READS,
    method(CONTROL_PLANE, "VolumeHistory"): _READS,
    method(CONTROL_PLANE, "FindVolumeCommit"): _READS,
    method(CONTROL_PLANE, "RegisterNode"): _process("storage nodes"),
    method(CONTROL_PLANE, "Heartbeat"): _process("storage nodes"),
    method(CONTROL_PLANE, "CreateVolume"): _ADMIN,
    method(CONTROL_PLANE, "GrowVolume"): _process("the compute writer, as a volume fills"),
    method(CONTROL_PLANE, "CloneVolume"): _ADMIN,
    method(CONTROL_PLANE, "RestoreSnapshot"): _ADMIN,
    method(CONTROL_PLANE, "DeleteVolume"): _ADMIN,
    method(CONTROL_PLANE, "DeleteSnapshot"): _ADMIN,
    method(CONTROL_PLANE, "Backtrack"): _ADMIN,
    method(CONTROL_PLANE, "RotateVolumeKey"): _ADMIN,
    # Cluster: listings and endpoint resolution for anyone; failover, removal, endpoints are admin.
    method(CLUSTER, "ListComputeInstances"): _READS,
    method(CLUSTER, "ListEndpoints"): _READS,
    method(CLUSTER, "ResolveEndpoint"): _READS,
    method(CLUSTER, "Failover"): _ADMIN,
    method(CLUSTER, "RemoveCompute"): _ADMIN,
    method(CLUSTER, "CreateEndpoint"): _ADMIN,
    method(CLUSTER, "DeleteEndpoint"): _ADMIN,
    method(CLUSTER, "RegisterCompute"): _process("compute instances"),
    method(CLUSTER, "ComputeHeartbeat"): _process("compute instances"),
    # Users and their tokens: admin; compute instances fetch the registry to check tokens against.
    method(USERS, "CreateUser"): _ADMIN,
    method(USERS, "ListUsers"): _ADMIN,
    method(USERS, "DeleteUser"): _ADMIN,
    method(USERS, "IssueToken"): _ADMIN,
    method(USERS, "SyncUsers"): _process("compute instances (the registry their token checks use)"),
}

# Session steps are checked as these unary calls (rule 3).
SESSION_BEGIN = method(SQL, "Begin")
SESSION_STATEMENT = method(SQL, "Statement")
SESSION_COMMIT = method(SQL, "Commit")
SESSION_ROLLBACK = method(SQL, "Rollback")


@dataclass(frozen=True)
class Grant:
    """A call allowed: who, the role it needed, and whether it must run without any write (rule 5)."""

    user: str
    role_needed: Role
    read_only: bool


def role_needed(name: str, *, sql: Sequence[str] = (), read_only_transaction: bool = False) -> Role:
    """The least role a user needs to call `name` with this request (rules 1 to 3); PermissionDenied
    for a method no user may call. `sql`: the statements the request runs (Execute and Statement: one;
    RunTransaction: all); `read_only_transaction`: Begin's read_only."""
    rule = PERMISSIONS.get(name)
    if rule is None:
        raise PermissionDenied(
            REASON_UNKNOWN_METHOD, f"{name[:200]} is not a method a user may call (no permission rule names it)"
        )
    if rule.role is None:
        raise PermissionDenied(REASON_PROCESS_ONLY, f"{name} is {rule.why}, never with a user token", {"method": name})
    if rule.relaxed_by == BY_STATEMENTS and sql and all(statement_reads_only(text) for text in sql):
        return Role.READER
    if rule.relaxed_by == BY_READ_ONLY_TRANSACTION and read_only_transaction:
        return Role.READER
    return rule.role


_RELAXED_WHAT = {BY_STATEMENTS: "a statement that may write", BY_READ_ONLY_TRANSACTION: "a write transaction"}


def authorize(claims: Claims, name: str, *, sql: Sequence[str] = (), read_only_transaction: bool = False) -> Grant:
    """Allow the call or raise PermissionDenied naming the role needed and the caller's role."""
    needed = role_needed(name, sql=sql, read_only_transaction=read_only_transaction)
    if not claims.role.holds(needed):
        what = _RELAXED_WHAT.get(PERMISSIONS[name].relaxed_by, PERMISSIONS[name].why)
        raise PermissionDenied(
            REASON_ROLE_TOO_LOW,
            f"{_shown(name)} ({what}) needs role {needed.value} or above; user {claims.user} has a "
            f"{claims.role.value} token",
            {"role_needed": needed.value, "role": claims.role.value, "method": name},
        )
    return Grant(user=claims.user, role_needed=needed, read_only=not claims.role.holds(Role.WRITER))


def _shown(name: str) -> str:
    """/compute.v1.SqlService/Execute as SqlService.Execute."""
    service, _, rpc = name.lstrip("/").rpartition("/")
    return f"{service.rpartition('.')[2]}.{rpc}" if service else name


# --- is a statement a read? (rule 4) ---------------------------------------------------------------

# Where a string literal, a quoted name or a comment may start: nothing inside one is a verb or a
# statement separator.
_QUOTED_OR_COMMENT = re.compile(r"['\"`\[]|--|/\*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_WRITE_VERBS = frozenset({"insert", "update", "delete", "replace", "upsert", "create", "drop", "alter", "attach"})
_PRAGMA = re.compile(r"pragma\s+(?:[A-Za-z_]\w*\s*\.\s*)?([A-Za-z_]\w*)\s*(.*)", re.DOTALL | re.IGNORECASE)
# PRAGMAs that read, bare or with an argument in parentheses (a table or index name, a row limit).
_PRAGMAS_READ_WITH_ARGUMENT = frozenset(
    {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo", "foreign_key_list",
     "foreign_key_check", "integrity_check", "quick_check", "table_list"}
)  # fmt: skip
# PRAGMAs that read only when bare: with a value (`= x` or `(x)`) each of them sets something.
_PRAGMAS_READ_BARE = frozenset(
    {"database_list", "compile_options", "page_count", "freelist_count", "page_size", "user_version",
     "schema_version", "application_id", "encoding", "journal_mode", "function_list", "pragma_list",
     "collation_list", "module_list", "data_version", "foreign_keys", "max_page_count"}
)  # fmt: skip


def statement_reads_only(sql: str) -> bool:
    """Whether one statement surely changes nothing (rule 4): False when in doubt."""
    if not isinstance(sql, str) or len(sql) > SQL_CHARS_MAX:
        return False
    bare = _without_quoted_or_comments(sql)
    if bare is None or ";" in bare:
        return False  # an unterminated literal, or a second statement
    words = [word.lower() for word in _WORD.findall(bare)]
    if not words:
        return False
    verb = words[0]
    if verb in ("select", "values", "explain"):
        return True  # EXPLAIN compiles its statement and runs none of it
    if verb == "with":
        return not _WRITE_VERBS.intersection(words)
    if verb == "pragma":
        match = _PRAGMA.fullmatch(bare)
        if match is None or "=" in match.group(2):
            return False
        name, rest = match.group(1).lower(), match.group(2).strip()
        return (name in _PRAGMAS_READ_WITH_ARGUMENT and (not rest or rest.startswith("("))) or (
            name in _PRAGMAS_READ_BARE and not rest
        )
    return False


def _without_quoted_or_comments(sql: str) -> str | None:
    """`sql` with each literal, quoted name and comment replaced by a space and trailing ';' dropped; None
    when a literal or quoted name is not closed. One pass (a reader's 1 MiB of '[' costs linear time)."""
    parts: list[str] = []
    at = 0
    while (found := _QUOTED_OR_COMMENT.search(sql, at)) is not None:
        parts.append(sql[at : found.start()])
        opener = found.group()
        if opener == "--":
            end = sql.find("\n", found.end())
            at = len(sql) if end < 0 else end + 1
        elif opener == "/*":
            end = sql.find("*/", found.end())
            at = len(sql) if end < 0 else end + 2  # SQLite ends an open comment at the end of the text
        else:
            closer = "]" if opener == "[" else opener
            end = sql.find(closer, found.end())
            while end >= 0 and closer != "]" and sql.startswith(closer, end + 1):
                end = sql.find(closer, end + 2)  # a doubled quote stands for itself
            if end < 0:
                return None
            at = end + 1
        parts.append(" ")
    parts.append(sql[at:])
    return "".join(parts).strip().rstrip("; \t\r\n")
