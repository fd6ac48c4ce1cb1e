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
"""

from __future__ import annotations

from pathlib import Path

from sixfold.storage.security import pki, transport
from sixfold.tools.cluster_layout import COMPUTE, CONTROL_PLANE, STORAGE_NODE, ClusterState, ProcessRecord

ROLE_OF = {CONTROL_PLANE: pki.ROLE_CONTROL_PLANE, STORAGE_NODE: pki.ROLE_STORAGE_NODE, COMPUTE: pki.ROLE_WRITER}

_client_of: dict[Path, bool] = {}


def secure_layout(state: ClusterState, state_dir: Path) -> None:
    """Rule 1: a new cluster's CA, the CLI's certificate and every process's, and their `--tls-dir`."""
    directory = transport.cluster_tls_dir(state_dir)
    pki.create_ca(directory)
    pki.issue(directory, transport.CLIENT_NAME, pki.ROLE_CLIENT_ADMIN)
    for record in state.processes:
        secure_record(record, state_dir)
    state.layout["tls"] = True
    _client_of.pop(state_dir, None)


def secure_record(record: ProcessRecord, state_dir: Path) -> None:
    """Rule 1/2: one process's certificate (named like the process) and its `--tls-dir` argument."""
    directory = transport.cluster_tls_dir(state_dir)
    pki.issue(directory, record.name, ROLE_OF[record.role])
    record.args = [*record.args, "--tls-dir", str(directory)]


def act_as_client_of(state_dir: Path) -> None:
    """Rule 3 (looked up once per state dir and process)."""
    secure = _client_of.get(state_dir)
    if secure is None:
        secure = _client_of[state_dir] = transport.use_cluster_client(state_dir)
    elif secure != (transport.current() is not None):
        transport.use_cluster_client(state_dir)
