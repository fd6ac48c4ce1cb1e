"""The control plane's pure state machine (storage/control_plane.py and its parts): volumes and their
geometry, node registration and health, limits, the state file."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from sixfold.storage import control_plane as cp
from sixfold.storage import control_plane_limits as limits
from sixfold.storage.control_plane import ControlPlane, RegistryFull, UnknownNode
from sixfold.storage.errors import AlreadyExists, InvalidRequest, StaleEpoch, Unavailable, UnknownVolume, VolumeFull

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parent.parent
NODES = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]
MIB = 2**20
# The control plane's pure cores: no I/O, clock, randomness or threads (STYLE.md).
PURE_MODULES = [
    "storage/control_plane.py",
    "storage/control_plane_history.py",
    "storage/control_plane_limits.py",
    "storage/control_plane_lineage.py",
    "storage/control_plane_membership.py",
    "storage/control_plane_nodes.py",
    "storage/control_plane_state_file.py",
    "storage/control_plane_timelines.py",
    "storage/control_plane_values.py",
    "storage/copies.py",
    "storage/placement.py",
    "storage/quorum.py",
    "storage/replacement.py",
]
FORBIDDEN_IMPORTS = {"grpc", "lmdb", "time", "random", "threading", "asyncio", "socket", "subprocess", "os"}


def six_node_plane(now_ms: float = 0.0, timeout_ms: int = 3000) -> ControlPlane:
    plane = ControlPlane(heartbeat_timeout_ms=timeout_ms)
    for i, (node_id, az) in enumerate(NODES):
        plane.register_node(node_id, az, f"127.0.0.1:{7000 + i}", now_ms)
    return plane


def create(
    plane: ControlPlane, volume_id: str, page_size: int = 0, segment_size_bytes: int = MIB, now_ms: float = 0.0
) -> cp.VolumeGeometry:
    return plane.commit_pg_plan(plane.plan_create_volume(volume_id, page_size, segment_size_bytes, now_ms))


def grow(plane: ControlPlane, volume_id: str, geometry_epoch: int, now_ms: float = 0.0) -> cp.VolumeGeometry:
    plan = plane.plan_grow_volume(volume_id, geometry_epoch, now_ms)
    if plan is None:
        return plane.describe_volume(volume_id)
    return plane.commit_pg_plan(plan)


def test_create_volume_geometry() -> None:
    plane = six_node_plane()
    plan = plane.plan_create_volume("vol-1", 0, 0, 0.0)
    assert plane.list_volumes() == []  # planning changes nothing
    geometry = plane.commit_pg_plan(plan)
    assert (geometry.page_size, geometry.segment_size_bytes, geometry.geometry_epoch) == (4096, 10 * 2**30, 1)
    [pg] = geometry.protection_groups
    assert (pg.pg_index, pg.first_page, pg.page_count, pg.membership_epoch) == (0, 0, 10 * 2**30 // 4096, 1)
    assert {s.segment_id for s in pg.segments} == {"vol-1/pg-00000"}
    assert sorted(s.node_id for s in pg.segments) == [n for n, _ in NODES]
    assert {s.address for s in pg.segments} == {f"127.0.0.1:{7000 + i}" for i in range(6)}
    assert all(v.segment_count == 1 for v in plane.nodes(0.0))


def test_grow_adds_one_pg_and_bumps_epoch() -> None:
    plane = six_node_plane()
    create(plane, "v", page_size=8192, segment_size_bytes=MIB)
    geometry = grow(plane, "v", 1)
    assert geometry.geometry_epoch == 2
    pages_per_pg = MIB // 8192
    assert [(pg.pg_index, pg.first_page, pg.page_count) for pg in geometry.protection_groups] == [
        (0, 0, pages_per_pg),
        (1, pages_per_pg, pages_per_pg),
    ]
    assert geometry.protection_groups[1].segments[0].segment_id == "v/pg-00001"
    assert grow(plane, "v", 0).geometry_epoch == 3  # 0 = grow whatever the epoch


def test_grow_is_idempotent_per_epoch() -> None:
    plane = six_node_plane()
    create(plane, "v")
    first = grow(plane, "v", 1)
    again = grow(plane, "v", 1)  # a retry of the same request
    assert again == first and len(again.protection_groups) == 2
    assert all(v.segment_count == 2 for v in plane.nodes(0.0))
    with pytest.raises(InvalidRequest, match="newer than volume v's current epoch 2"):
        plane.plan_grow_volume("v", 7, 0.0)


def test_stale_plan_is_not_committed() -> None:
    plane = six_node_plane()
    create(plane, "v")
    plan_a = plane.plan_grow_volume("v", 1, 0.0)
    plan_b = plane.plan_grow_volume("v", 1, 0.0)
    assert plan_a is not None and plan_b is not None
    plane.commit_pg_plan(plan_a)
    with pytest.raises(StaleEpoch, match="volume v changed"):
        plane.commit_pg_plan(plan_b)
    assert len(plane.describe_volume("v").protection_groups) == 2


def test_volume_full_at_128_tib() -> None:
    plane = six_node_plane()
    create(plane, "big", segment_size_bytes=32 * 2**40)  # 4 PGs of 32 TiB make 128 TiB
    for epoch in (1, 2, 3):
        grow(plane, "big", epoch)
    with pytest.raises(VolumeFull, match=r"^volume big is full: 128 TiB$"):
        plane.plan_grow_volume("big", 4, 0.0)
    assert len(plane.describe_volume("big").protection_groups) == 4


def test_volume_full_at_pg_count_max(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "PG_COUNT_MAX", 3)
    plane = six_node_plane()
    create(plane, "small", segment_size_bytes=MIB)
    grow(plane, "small", 1)
    grow(plane, "small", 2)
    with pytest.raises(VolumeFull, match="volume small is full: 3 protection groups of 1 MiB"):
        plane.plan_grow_volume("small", 3, 0.0)


@pytest.mark.parametrize("volume_id", ["", "-lead", "Upper", "has_underscore", "a/b", "x" * 64, "sp ace"])
def test_bad_volume_ids(volume_id: str) -> None:
    with pytest.raises(InvalidRequest, match="is not valid"):
        six_node_plane().plan_create_volume(volume_id, 0, 0, 0.0)


def test_good_volume_ids() -> None:
    plane = six_node_plane()
    for volume_id in ["a", "0", "vol-1", "x" * 63]:
        create(plane, volume_id)
    assert [g.volume_id for g in plane.list_volumes()] == sorted(["a", "0", "vol-1", "x" * 63])


@pytest.mark.parametrize("page_size", [256, 1000, 3000, 131072, 65537, 4095])
def test_bad_page_sizes(page_size: int) -> None:
    with pytest.raises(InvalidRequest, match=f"page size {page_size} is not valid"):
        six_node_plane().plan_create_volume("v", page_size, 0, 0.0)


@pytest.mark.parametrize("page_size", [512, 1024, 4096, 16384, 65536])
def test_good_page_sizes(page_size: int) -> None:
    assert create(six_node_plane(), "v", page_size=page_size).page_size == page_size


def test_bad_segment_sizes() -> None:
    plane = six_node_plane()
    with pytest.raises(InvalidRequest, match="not a multiple of the page size 4096"):
        plane.plan_create_volume("v", 4096, 4096 * 3 + 1, 0.0)
    with pytest.raises(InvalidRequest, match="exceeds the volume limit of 128 TiB"):
        plane.plan_create_volume("v", 4096, 256 * 2**40, 0.0)


def test_duplicate_and_unknown_volumes() -> None:
    plane = six_node_plane()
    create(plane, "v")
    with pytest.raises(AlreadyExists, match="volume v already exists"):
        plane.plan_create_volume("v", 0, 0, 0.0)
    with pytest.raises(UnknownVolume, match="volume w does not exist"):
        plane.describe_volume("w")
    with pytest.raises(UnknownVolume):
        plane.plan_grow_volume("w", 0, 0.0)


def test_health_from_heartbeat_age() -> None:
    plane = six_node_plane(now_ms=1000.0, timeout_ms=3000)
    assert all(v.healthy for v in plane.nodes(4000.0))  # registration counts as a heartbeat
    plane.heartbeat("a1", "", 0, 5000.0)
    views = {v.node_id: v for v in plane.nodes(6500.0)}
    assert views["a1"].healthy and views["a1"].last_heartbeat_age_ms == 1500
    assert not views["a2"].healthy and views["a2"].last_heartbeat_age_ms == 5500
    with pytest.raises(Unavailable, match="AZ a has only 1 healthy node"):
        plane.plan_create_volume("v", 0, 0, 6500.0)


def test_heartbeat_from_unknown_node() -> None:
    with pytest.raises(UnknownNode, match=r"^node zz is not registered; register first$"):
        six_node_plane().heartbeat("zz", "127.0.0.1:1", 0, 0.0)


def test_re_registration_updates_address_and_az() -> None:
    plane = six_node_plane()
    plane.register_node("a1", "a", "127.0.0.1:9999", 10.0)
    assert plane.node("a1", 10.0).address == "127.0.0.1:9999"
    assert plane.heartbeat("a1", "127.0.0.1:8888", 0, 20.0) is True
    assert plane.heartbeat("a1", "127.0.0.1:8888", 0, 30.0) is False
    plane.register_node("a1", "d", "127.0.0.1:8888", 40.0)  # no segments yet: may move
    assert plane.node("a1", 40.0).az == "d"
    plane.register_node("a1", "a", "127.0.0.1:8888", 50.0)
    create(plane, "v", now_ms=50.0)
    with pytest.raises(InvalidRequest, match="holds 1 segments in AZ a"):
        plane.register_node("a1", "b", "127.0.0.1:8888", 60.0)
    assert plane.describe_volume("v").protection_groups[0].segments[0].address == "127.0.0.1:8888"


@pytest.mark.parametrize(
    "node_id, az, address",
    [
        ("", "a", "h:1"),
        ("a b", "a", "h:1"),
        ("n", "", "h:1"),
        ("n", "a/b", "h:1"),
        ("n", "a", "nohost"),
        ("n", "a", ":1"),
        ("n", "a", "h:port"),
    ],
)
def test_bad_registrations(node_id: str, az: str, address: str) -> None:
    with pytest.raises(InvalidRequest, match="is not valid"):
        ControlPlane().register_node(node_id, az, address, 0.0)


def test_placement_spreads_across_a_larger_fleet() -> None:
    plane = ControlPlane()
    for az in "abc":
        for i in range(4):
            plane.register_node(f"{az}{i}", az, f"h:{i}", 0.0)
    create(plane, "v")
    for epoch in range(1, 6):
        grow(plane, "v", epoch)
    counts = sorted(v.segment_count for v in plane.nodes(0.0))
    assert counts == [3] * 12  # 6 PGs x 6 segments over 12 nodes


def test_to_dict_from_dict_round_trip() -> None:
    plane = six_node_plane()
    plane.register_node("d1", "c", "127.0.0.1:7777", 0.0)
    create(plane, "v1")
    grow(plane, "v1", 1)
    create(plane, "v2", page_size=512, segment_size_bytes=512 * 8)
    data = plane.to_dict()
    restored = ControlPlane.from_dict(json.loads(json.dumps(data)))
    assert restored.to_dict() == data
    assert restored.list_volumes() == plane.list_volumes()
    assert [v.segment_count for v in restored.nodes(0.0)] == [v.segment_count for v in plane.nodes(0.0)]
    # Heartbeat times are not persisted: nodes are unhealthy until heard from.
    assert not any(v.healthy for v in restored.nodes(0.0))
    restored.heartbeat("a1", "", 0, 5.0)
    assert restored.node("a1", 5.0).healthy and not restored.node("a2", 5.0).healthy
    for node_id, _ in NODES:
        restored.heartbeat(node_id, "", 0, 5.0)
    grow(restored, "v1", 2, now_ms=5.0)
    assert restored.describe_volume("v1").geometry_epoch == 3


def test_registry_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "NODE_COUNT_MAX", 6)
    monkeypatch.setattr(limits, "VOLUME_COUNT_MAX", 1)
    plane = six_node_plane()
    with pytest.raises(RegistryFull, match="6 nodes are registered"):
        plane.register_node("d1", "d", "h:1", 0.0)
    plane.register_node("a1", "a", "h:2", 0.0)  # re-registering is not a new node
    create(plane, "v")
    with pytest.raises(RegistryFull, match="1 volumes exist"):
        plane.plan_create_volume("w", 0, 0, 0.0)


def test_from_dict_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="format version"):
        ControlPlane.from_dict({"format_version": 99, "nodes": [], "volumes": []})


@pytest.mark.parametrize("module", PURE_MODULES)
def test_control_plane_cores_are_pure(module: str) -> None:
    roots = set()
    for node in ast.walk(ast.parse((REPO_ROOT / module).read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & FORBIDDEN_IMPORTS, f"{module} imports {sorted(roots & FORBIDDEN_IMPORTS)}"
