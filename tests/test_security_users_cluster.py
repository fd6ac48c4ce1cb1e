"""Users and bearer tokens on a real cluster started with mutual TLS (issue 16, item 3).

Through the launcher (`Cluster.up(tls=True)`) and the `sixfold` command: the key and token files and their
modes; `sixfold user create` and `sixfold token`; a reader token cannot write (SQL INSERT refused
PERMISSION_DENIED, SELECT works); a writer token cannot create a volume (on the compute instance nor on the
control plane); an expired token, a missing one and garbage are refused UNAUTHENTICATED (the CLI saying how
to get a new token); a deleted user's token is refused on the compute instance and the control plane; and no
token appears in any log or audit file of the cluster.

One cluster for the module (a cluster is many processes on a small machine); stopped by PID afterwards even
when a test fails, and this process's TLS identity is reset at the end.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.compute.v1 import sql_service_pb2 as spb
from sixfold.compute.v1 import sql_service_pb2_grpc as spb_grpc
from sixfold.storage.security import pki, tls, transport, user_files
from sixfold.storage.security import tokens as tk
from sixfold.storage.security.audit import read
from sixfold.storage.security.user_service import Registry
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.tools.cluster import COMPUTE, CONTROL_PLANE, PROJECT_ROOT, Cluster
from tests.conftest import check_cluster_logs
from tests.polling import wait_until

CALL_S = 10.0
CLI_S = 60.0
SYNC_WAIT_S = 15.0  # generous: a compute instance syncs the users every second


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    local = Cluster(tmp_path_factory.mktemp("users") / "cluster")
    try:
        with local:  # __exit__ stops every process by PID, also when up() or a test fails
            local.up(tls=True)
            yield local
        check_cluster_logs(local, request)
    finally:
        transport.use(None)


def sixfold(cluster: Cluster, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """`sixfold ARGS` as a user runs it, with SIXFOLD_TOKEN=`token` (None: the state dir's admin token)."""
    env = {key: value for key, value in os.environ.items() if key != user_files.TOKEN_ENV}
    if token is not None:
        env[user_files.TOKEN_ENV] = token
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *args, "--state-dir", str(cluster.state_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_S,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def channel(cluster: Cluster, address: str, token: str | None) -> grpc.Channel:
    """A channel with the CLI's certificate that sends `token` (None: no token at all)."""
    identity = pki.load_identity(transport.cluster_tls_dir(cluster.state_dir), transport.CLIENT_NAME)
    credentials = tls.channel_credentials(identity)
    if token is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(address, credentials)


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as error:
        return error.code(), str(error.details())
    return grpc.StatusCode.OK, ""


def sql_code(cluster: Cluster, token: str | None, sql: str) -> tuple[grpc.StatusCode, str]:
    with channel(cluster, cluster.record(COMPUTE).address, token) as ch:
        stub = spb_grpc.SqlServiceStub(ch)
        return code_of(lambda: stub.Execute(spb.ExecuteRequest(volume_id="vol0", sql=sql), timeout=CALL_S))


def control_plane_code(cluster: Cluster, token: str | None, create: str = "") -> tuple[grpc.StatusCode, str]:
    """ListVolumes on the control plane, or CreateVolume of `create`."""
    with channel(cluster, cluster.control_plane_address(), token) as ch:
        stub = cp_grpc.ControlPlaneServiceStub(ch)
        if create:
            request = cp_pb.CreateVolumeRequest(volume_id=create, segment_size_bytes=1 << 20)
            return code_of(lambda: stub.CreateVolume(request, timeout=CALL_S))
        return code_of(lambda: stub.ListVolumes(cp_pb.ListVolumesRequest(), timeout=CALL_S))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.integration
def test_tokens_decide_what_each_user_may_do_and_are_never_written_down(cluster: Cluster) -> None:
    state = cluster.state_dir
    control_plane_data = Path(cluster.record(CONTROL_PLANE).data_dir)
    keys = user_files.tokens_dir(state)
    assert mode(user_files.admin_token_path(state)) == 0o600
    assert mode(keys / user_files.SIGNING_KEY_FILE) == 0o600 and mode(keys) == 0o700
    assert mode(control_plane_data / user_files.USERS_FILE) == 0o600
    assert not any(keys.resolve().is_relative_to(Path(r.data_dir).resolve()) for r in cluster.records())
    admin_token = user_files.admin_token_path(state).read_text().strip()

    # Users and their tokens, from the shell.
    ok(sixfold(cluster, "user", "create", "rita", "--role", "reader"))
    ok(sixfold(cluster, "user", "create", "walt", "--role", "writer"))
    assert "rita" in ok(sixfold(cluster, "user", "list"))
    reader = ok(sixfold(cluster, "token", "rita")).strip()
    writer = ok(sixfold(cluster, "token", "walt", "--ttl", "2h")).strip()
    assert reader.startswith("sf1.") and "\n" not in reader
    ok(sixfold(cluster, "sql", "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)", token=writer))

    # A reader reads and cannot write; a writer writes and cannot create a volume.
    refused = sixfold(cluster, "sql", "INSERT INTO t(name) VALUES ('r')", token=reader)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr and "needs role writer" in refused.stderr
    assert sql_code(cluster, reader, "INSERT INTO t(name) VALUES ('r')")[0] == grpc.StatusCode.PERMISSION_DENIED
    ok(sixfold(cluster, "sql", "INSERT INTO t(name) VALUES ('w')", token=writer))
    assert "w" in ok(sixfold(cluster, "sql", "SELECT name FROM t", token=reader))
    refused = sixfold(cluster, "volume", "create", "walts", token=writer)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr and "needs role admin" in refused.stderr
    code, details = control_plane_code(cluster, writer, create="walts")
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs role admin" in details, details
    refused = sixfold(cluster, "user", "create", "eve", "--role", "admin", token=writer)
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    assert control_plane_code(cluster, reader)[0] == grpc.StatusCode.OK  # listings are reads

    # Expired, missing and garbage tokens.
    signing_key = user_files.load_signing_key(keys / user_files.SIGNING_KEY_FILE)
    admin = Registry.open(control_plane_data).get("admin")
    assert admin is not None
    expired = tk.issue(signing_key, admin, tk.Role.ADMIN, time.time() - 7200, 60)
    for token, words in [(expired, "expired"), (None, "no token"), ("sf1.garbage.x", "")]:
        code, details = sql_code(cluster, token, "SELECT 1")
        assert code == grpc.StatusCode.UNAUTHENTICATED and words in details, (code, details)
        code, details = control_plane_code(cluster, token)
        assert code == grpc.StatusCode.UNAUTHENTICATED and words in details, (code, details)
    refused = sixfold(cluster, "sql", "SELECT 1", token=expired)
    assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr, refused.stderr
    assert "expired" in refused.stderr and "sixfold token admin" in refused.stderr, refused.stderr

    # A deleted user's tokens are refused, on the control plane at once and on compute within a sync.
    ok(sixfold(cluster, "user", "delete", "walt"))
    assert control_plane_code(cluster, writer)[0] == grpc.StatusCode.UNAUTHENTICATED
    wait_until(
        lambda: sql_code(cluster, writer, "SELECT 1")[0] == grpc.StatusCode.UNAUTHENTICATED,
        SYNC_WAIT_S,
        "the compute instance refuses the deleted user's token",
    )
    assert "rita" in ok(sixfold(cluster, "user", "list")) and "walt" not in ok(sixfold(cluster, "user", "list"))

    # The audit logs name users and fingerprints; no file of the cluster's logs or audit holds a token.
    entries = read(control_plane_data / "audit.log").entries
    assert any(e.who == "user:admin" and e.what == "UserService.DeleteUser" and e.outcome == "ok" for e in entries)
    compute_audit = read(Path(cluster.record(COMPUTE).data_dir) / "audit.log").entries
    assert any(e.who == "user:rita" and e.outcome.startswith("refused: ") for e in compute_audit)
    files = [*(state / "logs").rglob("*"), *(state / "data").rglob("audit.log*")]
    assert len(files) > 2
    for path in files:
        if path.is_file():
            text = path.read_bytes()
            for token in (admin_token, reader, writer, expired):
                assert token.encode() not in text, f"a token is in {path}"
