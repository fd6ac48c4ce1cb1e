"""The control plane as a process (`sixfold control-plane`), and six real storage nodes registering
with it and holding the segments it places."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from sixfold.storage.control_plane_server import STATE_FILE_NAME, start_control_plane
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc, storage_service_pb2_grpc
from sixfold.storage.v1 import storage_service_pb2 as ss_pb2

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parent.parent
NODES = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b"), ("c1", "c"), ("c2", "c")]
MIB = 2**20
WAIT_S_MAX = 30.0


def cp_stub(channel: grpc.aio.Channel) -> control_plane_service_pb2_grpc.ControlPlaneServiceStub:
    return control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)


def wait_for_port_file(path: Path, proc: subprocess.Popen, what: str) -> int:
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode} before writing {path}")
        time.sleep(0.05)
    raise AssertionError(f"{what} wrote no port file within {WAIT_S_MAX} s")


def stop_process(proc: subprocess.Popen) -> int:
    """Stop a process this test started, by its PID: SIGTERM, then SIGKILL if it lingers."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def test_control_plane_process_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "cp.port"
    log_path = tmp_path / "control_plane.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sixfold.tools.cli",
                "control-plane",
                "--data-dir",
                str(tmp_path / "cp"),
                "--port-file",
                str(port_file),
                "--heartbeat-timeout-ms",
                "2000",
            ],
            cwd=REPO_ROOT,
            stderr=log,
            stdout=log,
        )
    try:
        port = wait_for_port_file(port_file, proc, "the control plane")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = control_plane_service_pb2_grpc.ControlPlaneServiceStub(channel)
            stub.RegisterNode(cp_pb2.RegisterNodeRequest(node_id="a1", az="a", address="127.0.0.1:1"), timeout=5)
            assert [n.node_id for n in stub.ListNodes(cp_pb2.ListNodesRequest(), timeout=5).nodes] == ["a1"]
    finally:
        returncode = stop_process(proc)
    output = log_path.read_text()
    assert returncode == 0, output
    assert f"control plane serving on 127.0.0.1:{port}" in output
    assert "ERROR" not in output and "Traceback" not in output, output
    assert json.loads((tmp_path / "cp" / STATE_FILE_NAME).read_text())["nodes"][0]["node_id"] == "a1"


# ---------------------------------------------------------------------------
# Six real storage nodes (storage/node_main.py) against the control plane

NODE_MAIN_MISSING = importlib.util.find_spec("sixfold.storage.node_main") is None


@pytest.mark.skipif(NODE_MAIN_MISSING, reason="storage/node_main.py does not exist yet")
def test_six_real_storage_nodes(tmp_path: Path) -> None:
    async def scenario() -> None:
        server, cp_port, _ = await start_control_plane("127.0.0.1", 0, tmp_path / "cp")
        procs: list[tuple[str, subprocess.Popen]] = []
        try:
            for node_id, az in NODES:
                procs.append((node_id, start_storage_node(tmp_path, node_id, az, cp_port)))
            ports = {}
            for node_id, proc in procs:
                ports[node_id] = await asyncio.to_thread(
                    wait_for_port_file, tmp_path / f"{node_id}.port", proc, f"storage node {node_id}"
                )
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cp_port}") as channel:
                stub = cp_stub(channel)
                await wait_until_healthy(stub, len(NODES))
                geometry = (
                    await stub.CreateVolume(cp_pb2.CreateVolumeRequest(volume_id="real", segment_size_bytes=MIB))
                ).geometry
                geometry = (
                    await stub.GrowVolume(
                        cp_pb2.GrowVolumeRequest(volume_id="real", geometry_epoch=geometry.geometry_epoch)
                    )
                ).geometry
                assert len(geometry.protection_groups) == 2
                for placement in geometry.protection_groups[1].segments:
                    assert placement.address.endswith(f":{ports[placement.node_id]}")
                    await check_segment_exists(placement.address, placement.segment_id)
                nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
                assert all(n.segment_count == 2 for n in nodes)
        finally:
            for _node_id, proc in procs:
                stop_process(proc)
            await server.stop(None)
        for node_id, _ in procs:
            log = (tmp_path / f"{node_id}.log").read_text()
            assert "Traceback" not in log, log

    asyncio.run(scenario())


def start_storage_node(tmp_path: Path, node_id: str, az: str, cp_port: int) -> subprocess.Popen:
    log = open(tmp_path / f"{node_id}.log", "w")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sixfold.tools.cli",
                "storage-node",
                "--node-id",
                node_id,
                "--az",
                az,
                "--data-dir",
                str(tmp_path / node_id),
                "--port",
                "0",
                "--port-file",
                str(tmp_path / f"{node_id}.port"),
                "--control-plane",
                f"127.0.0.1:{cp_port}",
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
        )
    finally:
        log.close()


async def wait_until_healthy(stub: Any, count: int) -> None:
    deadline = time.monotonic() + WAIT_S_MAX
    while time.monotonic() < deadline:
        nodes = (await stub.ListNodes(cp_pb2.ListNodesRequest())).nodes
        if sum(n.health == cp_pb2.NODE_HEALTH_HEALTHY for n in nodes) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {count} storage nodes registered and healthy within {WAIT_S_MAX} s")


async def check_segment_exists(address: str, segment_id: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = storage_service_pb2_grpc.StorageServiceStub(channel)
        reply = await stub.GetSegmentState(ss_pb2.GetSegmentStateRequest(segment_id=segment_id), timeout=5)
        assert reply.state.segment_id == segment_id
        assert reply.state.volume_id == "real" and reply.state.pg_index == 1
