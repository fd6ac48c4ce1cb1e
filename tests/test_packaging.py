"""Installed, the project lives under one `sixfold` namespace (issue 11).

The repository keeps its fixed top-level folders (storage/, compute/, tools/), and
setuptools' package-dir mapping installs them as sixfold.storage, sixfold.compute and
sixfold.tools, so nothing named `storage`, `compute` or `tools` lands in site-packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("storage", "compute", "tools")


def test_the_repository_top_level_is_the_fixed_one() -> None:
    allowed = {"pyproject.toml", "README.md", "proto", "storage", "compute", "tools", "tests", ".ci", "docs"}
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    top = {line.split("/", 1)[0] for line in tracked.splitlines() if line}
    top -= {".gitignore"}
    assert top <= allowed, f"unexpected top-level entries: {sorted(top - allowed)}"


def test_every_component_package_is_installed_under_sixfold() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        "sixfold." + ".".join(init.parent.relative_to(REPO).parts)
        for component in COMPONENTS
        for init in (REPO / component).rglob("__init__.py")
    }
    assert on_disk == listed, f"packages on disk but not installed: {sorted(on_disk - listed)}"
    assert config["package-dir"] == {f"sixfold.{c}": c for c in COMPONENTS}


def test_no_module_imports_a_component_by_its_bare_name() -> None:
    bare = []
    for component in (*COMPONENTS, "tests"):
        for path in (REPO / component).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                else:
                    continue
                bare += [f"{path.relative_to(REPO)}:{node.lineno} {n}" for n in names if n.split(".")[0] in COMPONENTS]
    assert not bare, f"import these as sixfold.<component>: {bare}"


def test_a_user_script_outside_the_repository_imports_sixfold(tmp_path: Path) -> None:
    script = tmp_path / "user_script.py"
    script.write_text(
        "import importlib.util\n"
        "from sixfold.compute.client import VolumeClient\n"
        "from sixfold.storage.v1 import storage_service_pb2\n"
        "import sixfold.tools.cli\n"
        "print(VolumeClient.__name__, storage_service_pb2.DESCRIPTOR.package)\n"
        "print([n for n in ('storage', 'compute', 'tools') if importlib.util.find_spec(n) is not None])\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["VolumeClient storage.v1", "[]"]
