"""The committed generated code is what tools/gen_protos.py makes from proto/ today."""

from __future__ import annotations

from pathlib import Path

import pytest

from sixfold.tools.gen_protos import REPO_ROOT, generate

pytestmark = pytest.mark.unit


def test_committed_generated_code_is_current(tmp_path: Path) -> None:
    generated = generate(tmp_path)
    assert generated, "no generated files"
    stale = []
    for path in generated:
        rel = path.relative_to(tmp_path)
        committed = REPO_ROOT / rel
        if not committed.exists() or committed.read_bytes() != path.read_bytes():
            stale.append(str(rel))
    assert not stale, f"generated code is stale; run `python -m sixfold.tools.gen_protos` and commit: {stale}"


def test_every_service_follows_the_style() -> None:
    """buf style: versioned package, services end in Service, one request/response per RPC, enum zero UNSPECIFIED."""
    from sixfold.compute.v1 import volume_service_pb2
    from sixfold.storage.v1 import control_plane_service_pb2, storage_service_pb2

    for module in (storage_service_pb2, control_plane_service_pb2, volume_service_pb2):
        descriptor = module.DESCRIPTOR
        assert descriptor.package.endswith(".v1")
        for service in descriptor.services_by_name.values():
            assert service.name.endswith("Service")
            seen = set()
            for method in service.methods:
                assert method.input_type.name == f"{method.name}Request"
                assert method.output_type.name == f"{method.name}Response"
                assert method.input_type.name not in seen
                seen.add(method.input_type.name)
        for enum in descriptor.enum_types_by_name.values():
            assert enum.values_by_number[0].name.endswith("_UNSPECIFIED")
