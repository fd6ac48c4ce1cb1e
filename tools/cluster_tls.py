"""Mutual TLS for a local cluster (`sixfold up --tls`): the cluster CA and one certificate per process in
`<state-dir>/tls/`, and the `--tls-dir` every process is started with (storage/security/transport.py).

Rules:
1. The CA and every key are made once, when the cluster is created; keys are mode 0600 (pki.py). A process
   started again keeps its certificate. A replica added later gets its own.
2. A certificate names the process's role: the control plane `control-plane`, a storage node
   `storage-node`, every compute instance `writer` (a reader may be promoted; which instance writes is
   decided by the control plane and fenced by volume epochs), the CLI and the launcher's own checks `cli`
   with role `client-admin` (status and listings on storage nodes, nothing that changes data there).
3. A client of the cluster (this launcher, the CLI) uses the `cli` identity whenever it acts on a cluster
   whose state dir has one, and plaintext otherwise.
4. A test or chaos harness that must call what `cli` may not (read segments straight from a node, or send a
   node hostile admin RPCs, as an attacker who stole a certificate would) gets a certificate of that role
   from the cluster's CA (`harness_identity`), used for those channels only; never a wider role table.
6. Encryption at rest: a secure cluster runs the key service `kms` (storage/security/kms_server.py) before
   the control plane; the control plane and every storage node are given its address (`--kms`). Its master
   key file is `<state-dir>/kms/master-keys.json` (0600), in no process's data dir, so a copied data dir
   holds only sealed rows and wrapped keys.
5. User tokens (storage/security/user_files.py): a new cluster gets a token signing key in
   `<state-dir>/tokens/` (mode 0600; no process's data dir), a user registry in the control plane's data dir
   with the user `admin`, and `<state-dir>/admin.token` (mode 0600) that the CLI sends unless `SIXFOLD_TOKEN`
   names another token (issued again a week before its 30 days end, when a client first acts on the
   cluster). The control plane gets `--token-signing-key`, compute instances `--token-verify-key`.
"""

from __future__ import annotations

import fcntl
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from sixfold.storage.security import pki, transport, user_files
from sixfold.tools.cluster_layout import (
    COMPUTE,
    CONTROL_PLANE,
    HOST,
    KMS,
    STORAGE_NODE,
    ClusterState,
    ProcessRecord,
    new_record,
)

ROLE_OF = {
    CONTROL_PLANE: pki.ROLE_CONTROL_PLANE,
    STORAGE_NODE: pki.ROLE_STORAGE_NODE,
    COMPUTE: pki.ROLE_WRITER,
    KMS: pki.ROLE_KMS,
}
KMS_SUBDIR = "kms"  # <state-dir>/kms/: the master key file, outside every process's data dir
MASTER_KEY_FILE = "master-keys.json"

_client_of: dict[Path, bool] = {}


def secure_layout(state: ClusterState, state_dir: Path) -> None:
    """Rule 1: a new cluster's CA, the CLI's certificate and every process's, and their `--tls-dir`."""
    directory = transport.cluster_tls_dir(state_dir)
    pki.create_ca(directory)
    pki.issue(directory, transport.CLIENT_NAME, pki.ROLE_CLIENT_ADMIN)
    control_plane = next(record for record in state.processes if record.role == CONTROL_PLANE)
    user_files.bootstrap(state_dir, Path(control_plane.data_dir) / user_files.USERS_FILE, time.time())
    add_key_service(state, state_dir)
    for record in state.processes:
        secure_record(record, state_dir)
    state.layout["tls"] = True
    _client_of.pop(state_dir, None)


def add_key_service(state: ClusterState, state_dir: Path) -> None:
    """Rule 6: the key service (`sixfold kms`) first, on a port chosen now (the control plane and the storage
    nodes are started with its address), its master key file in `<state-dir>/kms/`, made at its first start."""
    key_file = state_dir / KMS_SUBDIR / MASTER_KEY_FILE
    record = new_record(state_dir, KMS, KMS, "", False, ["--key-file", str(key_file), "--create-key-file"])
    record.port = _free_port()
    for other in state.processes:
        if other.role in (CONTROL_PLANE, STORAGE_NODE):
            other.args = [*other.args, "--kms", record.address]
    state.processes.insert(0, record)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def secure_record(record: ProcessRecord, state_dir: Path) -> None:
    """Rule 1/2: one process's certificate (named like the process) and its `--tls-dir` argument."""
    directory = transport.cluster_tls_dir(state_dir)
    pki.issue(directory, record.name, ROLE_OF[record.role])
    record.args = [*record.args, "--tls-dir", str(directory), *_token_args(record, state_dir)]


def _token_args(record: ProcessRecord, state_dir: Path) -> list[str]:
    """Rule 5: the control plane signs user tokens, compute instances check them."""
    keys = user_files.tokens_dir(state_dir)
    if record.role == CONTROL_PLANE:
        return ["--token-signing-key", str(keys / user_files.SIGNING_KEY_FILE)]
    if record.role == COMPUTE:
        return ["--token-verify-key", str(keys / user_files.VERIFY_KEY_FILE)]
    return []


def harness_identity(state_dir: Path, role: str) -> pki.Identity | None:
    """Rule 4: an identity with `role` (named `harness-<role>`, issued once) from the CA of the cluster in
    `state_dir`; None for a plaintext cluster (`--insecure`)."""
    directory = transport.cluster_tls_dir(state_dir)
    if not pki.ca_paths(directory).cert.exists():
        return None
    name = f"harness-{role}"
    with open(directory / "harness.lock", "a") as lock:  # one issuer at a time across processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not pki.leaf_paths(directory, name)[0].exists():
            pki.issue(directory, name, role)
    return pki.load_identity(directory, name)


def harness_channel(state_dir: Path, role: str, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """Rule 4: a channel to `address` as the harness's `role` certificate (plaintext on an insecure cluster)."""
    return transport.channel_as(harness_identity(state_dir, role), address, options)


def act_as_client_of(state_dir: Path) -> None:
    """Rule 3 (looked up once per state dir and process)."""
    secure = _client_of.get(state_dir)
    if secure is None:
        users = state_dir / "data" / CONTROL_PLANE / user_files.USERS_FILE  # cluster_layout rule 1
        user_files.renew_admin_token(state_dir, users, time.time())  # rule 5: a week before it ends
        secure = _client_of[state_dir] = transport.use_cluster_client(state_dir)
    elif secure != (transport.current() is not None):
        transport.use_cluster_client(state_dir)
