"""The protocol cores stay pure: no gRPC, LMDB, clock, randomness or threads (STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
PURE_MODULES = [
    "storage/records.py",
    "storage/scl.py",
    "storage/segment.py",
    "storage/segment_meta.py",
    "storage/chain.py",
    "storage/repair.py",
    "storage/retention.py",
    "storage/lineage.py",
    "storage/errors.py",
    "storage/placement.py",
    "storage/control_plane.py",
    "storage/control_plane_history.py",
    "storage/control_plane_membership.py",
    "storage/control_plane_timelines.py",
    "storage/epochs.py",
    "storage/truncation.py",
    "storage/copies.py",
    "storage/keys.py",
    "storage/node_writer.py",
    "compute/quorum.py",
    "compute/volume_log.py",
    "compute/recovery.py",
    "compute/recovery_steps.py",
    "compute/cache.py",
    "compute/routing.py",
    "compute/read_points.py",
    "compute/replica_state.py",
    "compute/errors.py",
    "compute/sql/pages.py",
    "compute/sql/statements.py",
    "storage/cluster_state.py",
    "storage/cluster_limits.py",
    "storage/cluster_state_file.py",
]
# compute/ is pure except these adapters (the writer process's I/O); a new module is pure unless listed here.
COMPUTE_ADAPTERS = {
    "compute/volume.py",
    "compute/volume_base.py",
    "compute/opening.py",
    "compute/fencing.py",
    "compute/following.py",
    "compute/reads.py",
    "compute/segment_reads.py",
    "compute/redo_publisher.py",
    "compute/redo_rpc.py",
    "compute/replica_volume.py",
    "compute/replica_follow.py",
    "compute/replicas.py",
    "compute/instance.py",  # a compute instance's role: registration, heartbeats, promotion, stepping down
    "compute/instance_rpc.py",
    "compute/writes.py",
    "compute/placement.py",
    "compute/segment_stream.py",
    "compute/service.py",
    "compute/time_travel.py",
    "compute/client.py",
    "compute/write_stream.py",
    "compute/write_stream_client.py",
    "compute/sql_service.py",
    "compute/kv_service.py",
    "compute/sql_client.py",
    "compute/endpoint_client.py",  # resolves endpoints through the control plane (ClusterService)
    "compute/sql_values.py",  # conversions to and from the wire (generated protobuf code)
    "compute/main.py",
    "compute/__init__.py",
}
FORBIDDEN = {"grpc", "lmdb", "time", "random", "threading", "asyncio", "socket", "subprocess"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_io(module: str) -> None:
    path = REPO / module
    assert path.exists(), f"{module} is listed as pure but does not exist"
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{module} imports {sorted(bad)}; keep I/O in the adapters"


def test_every_compute_module_but_the_adapters_is_listed_as_pure() -> None:
    modules = {str(p.relative_to(REPO)) for p in (REPO / "compute").glob("*.py")}
    unlisted = modules - COMPUTE_ADAPTERS - set(PURE_MODULES)
    assert not unlisted, f"{sorted(unlisted)}: list them as pure cores (or, if they do I/O, as adapters)"


def test_pure_modules_pull_in_no_io_indirectly() -> None:
    """Import every pure module in a fresh interpreter: none of them may load an I/O module through
    another module it imports (the AST check above only sees direct imports)."""
    names = ["sixfold." + m.removesuffix(".py").replace("/", ".") for m in PURE_MODULES]
    probe = (
        "import sys\n"
        f"before = set(sys.modules)\n"
        f"for name in {names!r}: __import__(name)\n"
        f"print(' '.join(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {sorted(FORBIDDEN)!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not out.strip(), f"importing the pure cores loads {out.strip()}"
