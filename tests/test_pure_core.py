"""The protocol cores stay pure: no gRPC, LMDB, clock, randomness or threads (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PURE_MODULES = [
    "storage/records.py",
    "storage/scl.py",
    "storage/segment.py",
    "storage/chain.py",
    "storage/repair.py",
    "storage/retention.py",
    "storage/errors.py",
    "storage/placement.py",
    "storage/control_plane.py",
    "compute/quorum.py",
    "compute/volume_log.py",
    "compute/recovery.py",
    "compute/cache.py",
    "compute/routing.py",
    "compute/errors.py",
]
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
