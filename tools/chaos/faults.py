"""Fault actions of a chaos run (the "nemesis"), against a local cluster.

Every action is blocking (the launcher waits for a process to die, stop or
serve) and is meant to run in a worker thread while the clients keep going on
the event loop. Each one is logged with its `time.monotonic()` start and end so
the verdict can relate the history to the faults (`FaultLog`, fault_log.py).

Mechanisms:
- SIGKILL / SIGSTOP / SIGCONT / SIGTERM and restarts: `tools.cluster.Cluster`.
- Slow node and partition: the node-side fault injector (`storage/faults.py`);
  each storage node watches `<data-dir>/faults.json`, which this module writes
  and removes. A partitioned node refuses every RPC that reaches it (the writer's
  streams and reads, the control plane's calls, health checks), but its own
  heartbeats to the control plane still go out: a one-way partition, which is
  enough to take it out of every quorum.
- Bit rot and disk rot (disk_rot.py): one byte flipped inside stored records, a segment's stored
  metadata edited in place (a rotten digit, or a forged copy with a valid CRC-32C), or whole LMDB pages
  overwritten with random bytes, in live pages of a stopped node's file (tools/chaos/lmdb_pages.py
  finds them); `abandon` leaves a node that cannot start on its disk down through the heal.
- A lost copy: DropSegment on a healthy member (the control plane must create it again).
- A second writer (second_writer.py): another `sixfold compute` process opening the same volume,
  which fences the first (started and stopped by PID).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.faults import FaultState, clear_fault_file, default_fault_file, write_fault_file
from sixfold.storage.security import pki, transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.chaos import disk_rot, lmdb_pages
from sixfold.tools.chaos.disk_rot import FlipResult, MetaRot, TreeRot
from sixfold.tools.chaos.fault_log import FaultEvent, FaultLog
from sixfold.tools.chaos.second_writer import SecondWriter
from sixfold.tools.cluster import COMPUTE, DEAD, PAUSED, RUNNING, STOPPED, Cluster
from sixfold.tools.cluster_tls import harness_channel

STATUS_TIMEOUT_S = 3.0
SQLITE_MAGIC = b"SQLite format 3\0"  # page 0 of a volume holding a database; its bytes 28..31: the page count
DATABASE_PROBE_PAGES_MAX = 4096
CONNECTED_POLL_S = 0.1
INJECTOR_POLL_GRACE_S = 0.5  # the node re-reads its fault file at most every 0.2 s; give it a little more


class Nemesis:
    """Fault actions against one cluster; remembers what it broke so that `heal` can undo it all."""

    def __init__(self, cluster: Cluster, log: FaultLog | None = None, volume: str = "vol0") -> None:
        self.cluster = cluster
        self.log = log or FaultLog()
        self.volume = volume
        self.fault_files: set[str] = set()
        self.second_writer: SecondWriter | None = None
        self.abandoned: set[str] = set()  # nodes `heal` leaves down (they cannot start on their disk)

    def _act(self, action: str, target: str, fn: Callable[[], Any], detail: str = "") -> Any:
        started = time.monotonic()
        try:
            result = fn()
        except Exception as error:
            self.log.add(FaultEvent(action, target, started, time.monotonic(), f"{detail} FAILED: {error}", ok=False))
            raise
        self.log.add(FaultEvent(action, target, started, time.monotonic(), detail))
        return result

    # -- processes ---------------------------------------------------------------------

    def kill(self, node: str) -> None:
        self._act("kill", node, lambda: self.cluster.kill(node), "SIGKILL")

    def stop(self, node: str) -> None:
        self._act("stop", node, lambda: self.cluster.stop(node), "SIGTERM")

    def start(self, node: str) -> None:
        self._act("start", node, lambda: self.cluster.start(node), "same port and data")

    def pause(self, node: str) -> None:
        self._act("pause", node, lambda: self.cluster.pause(node), "SIGSTOP")

    def resume(self, node: str) -> None:
        self._act("resume", node, lambda: self.cluster.resume(node), "SIGCONT")

    def abandon(self, node: str, why: str) -> None:
        """Leave `node` down through the heal: it failed to start on its own disk, and starting it again
        would fail the same way (the run goes on without it, and the verdict says why)."""
        self.abandoned.add(node)
        now = time.monotonic()
        self.log.add(FaultEvent("abandon", node, now, now, why[:300]))

    def state_of(self, node: str) -> str:
        return self.cluster._state_of(self.cluster.record(node))

    # -- node-side fault injection -------------------------------------------------------

    def fault_file(self, node: str) -> str:
        return default_fault_file(str(self.cluster.data_dir(node)))

    def _set_fault(self, node: str, state: FaultState) -> None:
        path = self.fault_file(node)
        write_fault_file(path, state)
        self.fault_files.add(path)

    def partition(self, nodes: list[str]) -> None:
        def go() -> None:
            for node in nodes:
                self._set_fault(node, FaultState(unreachable=True))
            time.sleep(INJECTOR_POLL_GRACE_S)

        self._act("partition", ",".join(nodes), go, "unreachable (fault file)")

    def slow(self, node: str, delay_ms: float, jitter_ms: float = 0.0) -> None:
        def go() -> None:
            self._set_fault(node, FaultState(delay_ms=delay_ms, jitter_ms=jitter_ms))
            time.sleep(INJECTOR_POLL_GRACE_S)

        self._act("slow", node, go, f"every request delayed {delay_ms:g}..{delay_ms + jitter_ms:g} ms")

    def clear_faults(self) -> None:
        paths = sorted(self.fault_files)

        def go() -> None:
            for path in paths:
                clear_fault_file(path)
            self.fault_files.clear()
            time.sleep(INJECTOR_POLL_GRACE_S)

        if paths:
            self._act("clear-faults", ",".join(Path(p).parent.name for p in paths), go)

    # -- bit rot -------------------------------------------------------------------------

    def flip_byte(self, node: str, key: int, needles: list[tuple[str, bytes]]) -> FlipResult:
        """Flip one byte in the middle of the first needle (newest first) found in the stopped node's
        LMDB file, in every copy of it (`disk_rot.flip_byte`)."""
        data_file = self.data_file(node)
        result: FlipResult = self._act(
            "flip-byte", node, lambda: disk_rot.flip_byte(node, data_file, key, needles), _page_text(key)
        )
        self.log.events[-1].detail = (
            f"{_page_text(key)}: flipped byte {len(result.token) // 2} of {result.token!r} "
            f"({result.copies_flipped} cop{'y' if result.copies_flipped == 1 else 'ies'} "
            f"in {Path(result.data_file).name})"
        )
        return result

    def probe_page(self, node: str, key: int, timeout_s: float = STATUS_TIMEOUT_S) -> tuple[str, str]:
        """Read `key` straight from the node's segment at its SCL: ("OK", data prefix) or (code, details). A
        node serves data to the cluster's processes alone: this probe carries a `reader` certificate."""
        address = self.cluster.node_address(node)
        with harness_channel(self.cluster.state_dir, pki.ROLE_READER, address, CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.StorageServiceStub(channel)
            segments = stub.ListSegments(pb.ListSegmentsRequest(), timeout=timeout_s).segments
            for seg in segments:
                if seg.volume_id == self.volume and seg.first_page <= key < seg.first_page + seg.page_count:
                    try:
                        reply = stub.ReadPage(
                            pb.ReadPageRequest(segment_id=seg.segment_id, page_no=key, read_point=seg.scl),
                            timeout=timeout_s,
                        )
                    except grpc.RpcError as error:
                        return error.code().name, error.details() or ""
                    return "OK", repr(bytes(reply.data[:32]).rstrip(b"\0"))
        return "NOT_FOUND", f"no segment of {self.volume} holding page {key} on {node}"

    def probe_database(self, node: str, timeout_s: float = STATUS_TIMEOUT_S) -> tuple[int, list[tuple[int, str, str]]]:
        """Read every page of the SQLite database on the volume straight from the node's segments at their SCL
        (how many: page 0's header says): (pages read, [(page, code, details)] of the reads that failed)."""
        address = self.cluster.node_address(node)
        with harness_channel(self.cluster.state_dir, pki.ROLE_READER, address, CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.StorageServiceStub(channel)
            segments = [
                s
                for s in stub.ListSegments(pb.ListSegmentsRequest(), timeout=timeout_s).segments
                if s.volume_id == self.volume
            ]

            def read(key: int) -> tuple[str, bytes | str]:
                for seg in segments:
                    if seg.first_page <= key < seg.first_page + seg.page_count:
                        try:
                            request = pb.ReadPageRequest(segment_id=seg.segment_id, page_no=key, read_point=seg.scl)
                            return "OK", bytes(stub.ReadPage(request, timeout=timeout_s).data)
                        except grpc.RpcError as error:
                            return error.code().name, error.details() or ""
                return "NOT_FOUND", f"no segment of {self.volume} holding page {key} on {node}"

            code, first = read(0)
            if code != "OK":
                return 1, [(0, code, str(first))]
            assert isinstance(first, bytes)
            declared = int.from_bytes(first[28:32], "big") if first.startswith(SQLITE_MAGIC) else 1
            count = min(max(declared, 1), DATABASE_PROBE_PAGES_MAX)
            failed = []
            for key in range(1, count):
                code, got = read(key)
                if code != "OK":
                    failed.append((key, code, str(got)))
        return count, failed

    # -- disk rot ------------------------------------------------------------------------

    def data_file(self, node: str) -> Path:
        return Path(self.cluster.data_dir(node)) / "lmdb" / "data.mdb"

    def stored_metadata(self, node: str, segment_id: str) -> list[lmdb_pages.CopyState]:
        """The live metadata copies of a segment in a stopped node's file."""
        return disk_rot.stored_metadata(self.data_file(node), segment_id)

    def rot_metadata(self, node: str, segment_id: str, mode: str, delta: int, table: str = "segments") -> MetaRot:
        """Raise the SCL in a stopped node's stored metadata of `segment_id` by `delta`, in the live copies
        (`disk_rot.rot_metadata` says how each `mode` rots them)."""
        path = self.data_file(node)
        rot: MetaRot = self._act(
            "meta-rot",
            node,
            lambda: disk_rot.rot_metadata(node, path, segment_id, mode, delta, table),
            f"{segment_id} {mode}",
        )
        self.log.events[-1].detail = (
            f"{segment_id}: SCL {rot.held} -> {rot.claimed} in "
            f"{', '.join(t for t, _, _ in rot.edits)} ({mode}); the node will read: "
            + "; ".join(f"{c.table} {'checks' if c.checks else 'fails'}" for c in rot.copies_after)
        )
        return rot

    def rot_tree(self, node: str, needles: list[tuple[str, bytes]], pages: int, rng: random.Random) -> TreeRot:
        """Overwrite `pages` whole LMDB pages of a stopped node's file with random bytes, around the live
        page holding the first needle found there (`disk_rot.rot_tree`)."""
        path = self.data_file(node)
        rot: TreeRot = self._act(
            "tree-rot", node, lambda: disk_rot.rot_tree(node, path, needles, pages, rng), f"{pages} pages"
        )
        self.log.events[-1].detail = (
            f"{rot.pages} pages ({rot.bytes_overwritten} bytes) from byte {rot.first_byte} "
            f"overwritten with random bytes, around page {rot.page} holding {rot.token!r}; "
            f"live pages hit: {rot.tables_hit}"
        )
        return rot

    # -- storage node calls ------------------------------------------------------------------

    def list_segments(self, node: str, timeout_s: float = STATUS_TIMEOUT_S) -> pb.ListSegmentsResponse:
        with transport.channel(self.cluster.node_address(node), CHANNEL_OPTIONS) as channel:
            return pb_grpc.StorageServiceStub(channel).ListSegments(pb.ListSegmentsRequest(), timeout=timeout_s)

    def segment_state(
        self,
        address: str,
        segment_id: str,
        timeout_s: float = STATUS_TIMEOUT_S,
    ) -> tuple[str, pb.SegmentState | None]:
        """("OK", state) or (status code name, None)."""
        with transport.channel(address, CHANNEL_OPTIONS) as channel:
            try:
                reply = pb_grpc.StorageServiceStub(channel).GetSegmentState(
                    pb.GetSegmentStateRequest(segment_id=segment_id), timeout=timeout_s
                )
            except grpc.RpcError as error:
                return error.code().name, None
        return "OK", reply.state

    def drop_segment(self, node: str, segment_id: str) -> int:
        """DropSegment on a healthy member: its copy is gone (records, metadata); the records removed. A node
        takes DropSegment from the control plane alone: this comes with a `control-plane` certificate from the
        cluster's CA (an operator's mistake, or a stolen certificate)."""

        def go() -> int:
            address = self.cluster.node_address(node)
            with harness_channel(self.cluster.state_dir, pki.ROLE_CONTROL_PLANE, address, CHANNEL_OPTIONS) as channel:
                return int(
                    pb_grpc.StorageServiceStub(channel)
                    .DropSegment(pb.DropSegmentRequest(segment_id=segment_id), timeout=STATUS_TIMEOUT_S * 3)
                    .records_removed
                )

        removed: int = self._act("drop-segment", node, go, segment_id)
        self.log.events[-1].detail = f"{segment_id}: {removed} records removed"
        return removed

    # -- a second writer ----------------------------------------------------------------

    def open_second_writer(self, out_dir: Path) -> str:
        writer = self.second_writer = SecondWriter(self.cluster, out_dir, self.volume)

        def go() -> str:
            writer.start()
            return writer.wait_open()

        return self._act("second-writer", "compute-new", go, "a second compute process opens the volume")

    # -- the writer's view ----------------------------------------------------------------

    def wait_writer_connected(self, address: str, timeout_s: float = 30.0, nodes: set[str] | None = None) -> bool:
        """Until the writer at `address` has its stream to every segment (of `nodes`, default all) connected."""
        deadline = time.monotonic() + timeout_s
        with transport.channel(address, CHANNEL_OPTIONS) as channel:
            stub = vgrpc.VolumeServiceStub(channel)
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    status = stub.GetVolumeStatus(
                        vpb.GetVolumeStatusRequest(volume_id=self.volume), timeout=STATUS_TIMEOUT_S
                    ).status
                    if status.protection_groups and all(
                        s.connected
                        for pg in status.protection_groups
                        for s in pg.segments
                        if nodes is None or s.node_id in nodes
                    ):
                        return True
                time.sleep(CONNECTED_POLL_S)
        return False

    def writer_fenced(self, address: str) -> bool:
        with transport.channel(address, CHANNEL_OPTIONS) as channel:
            stub = vgrpc.VolumeServiceStub(channel)
            try:
                status = stub.GetVolumeStatus(
                    vpb.GetVolumeStatusRequest(volume_id=self.volume), timeout=STATUS_TIMEOUT_S
                ).status
            except grpc.RpcError:
                return False
        return bool(status.fenced)

    # -- heal ------------------------------------------------------------------------------

    def heal(self) -> list[str]:
        """Undo everything: clear fault files, resume paused processes, start dead or stopped ones.
        Storage nodes first, then the writer. Returns what was done."""
        done = []
        if self.fault_files:
            self.clear_faults()
            done.append("cleared fault files")
        names = self.cluster.node_names()
        for node in names:
            if self.state_of(node) == PAUSED:
                self.resume(node)
                done.append(f"resumed {node}")
        for node in names:
            if node in self.abandoned:
                done.append(f"left {node} down (it cannot start on its disk)")
                continue
            if self.state_of(node) in (DEAD, STOPPED):
                self.start(node)
                done.append(f"started {node}")
        if self.cluster.has_compute() and self.state_of(COMPUTE) != RUNNING:
            if self.state_of(COMPUTE) == PAUSED:
                self.resume(COMPUTE)
                done.append("resumed compute")
            else:
                self.start(COMPUTE)
                done.append("started compute")
        return done

    def close(self) -> None:
        """Remove fault files and stop the second writer (if any). Safe to call twice."""
        for path in list(self.fault_files):
            clear_fault_file(path)
        self.fault_files.clear()
        if self.second_writer is not None:
            self.second_writer.stop()


__all__ = ["FaultEvent", "FaultLog", "FlipResult", "MetaRot", "Nemesis", "SecondWriter", "TreeRot"]


def _page_text(key: int) -> str:
    """The page a flip aims at (key -1: the page of a bank transfers row, found by its id)."""
    return "a transfers row" if key < 0 else f"page {key}"
