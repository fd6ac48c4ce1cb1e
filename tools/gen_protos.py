"""Regenerate the committed gRPC/protobuf code from proto/.

    python -m sixfold.tools.gen_protos            # write generated code beside its component
    python -m sixfold.tools.gen_protos --out DIR  # write into DIR instead (the staleness test uses this)

Every `proto/<component>/<version>/*.proto` becomes `<component>/<version>/*_pb2.py`,
`*_pb2.pyi` and `*_pb2_grpc.py` at the repository root. Installed, the components live
under the `sixfold` namespace, so the generated imports between them (protoc writes
`from storage.v1 import ...`) are rewritten to `from sixfold.storage.v1 import ...`; the
proto packages on the wire stay `storage.v1` and `compute.v1`.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
_COMPONENT_IMPORT = re.compile(r"^(from|import) (storage|compute)\.", re.MULTILINE)


def namespaced(source: str) -> str:
    """protoc's imports between generated modules, moved under the sixfold namespace."""
    return _COMPONENT_IMPORT.sub(r"\1 sixfold.\2.", source)


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every proto file; return the generated files."""
    import importlib.resources

    from grpc_tools import protoc  # imported here: only this tool needs grpc_tools

    files = proto_files()
    if not files:
        raise SystemExit(f"no .proto files under {PROTO_ROOT}")
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(f.relative_to(PROTO_ROOT)) for f in files],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    generated = []
    for f in files:
        rel = f.relative_to(PROTO_ROOT).with_suffix("")
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            generated.append(out_dir / rel.parent / (rel.name + suffix))
    for path in generated:
        path.write_text(namespaced(path.read_text()))
    for package_dir in {p.parent for p in generated}:
        init = package_dir / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by tools/gen_protos.py; do not edit."""\n')
    return generated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="output root (default: the repository root)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
