"""Fault actions of a chaos run (the "nemesis"), against a local cluster.

Every action is blocking (the launcher waits for a process to die, stop or
serve) and is meant to run in a worker thread while the clients keep going on
the event loop. Each one is logged with its `time.monotonic()` start and end so
the verdict can relate the history to the faults (`FaultLog`).

Mechanisms:
- SIGKILL / SIGSTOP / SIGCONT / SIGTERM and restarts: `tools.cluster.Cluster`.
- Slow node and partition: the node-side fault injector (`storage/faults.py`);
  each storage node watches `<data-dir>/faults.json`, which this module writes
  and removes. A partitioned node refuses every RPC that reaches it (the writer's
  streams and reads, the control plane's calls, health checks), but its own
  heartbeats to the control plane still go out: a one-way partition, which is
  enough to take it out of every quorum.
- Bit rot: one byte flipped inside stored records of a stopped node's LMDB file.
- Disk rot (`rot_metadata`, `rot_tree`): a segment's stored metadata edited in place (a rotten digit, or
  a forged copy with a valid CRC-32C), or whole LMDB pages overwritten with random bytes, in live pages
  of a stopped node's file (tools/chaos/lmdb_pages.py finds them); `abandon` leaves a node that cannot
  start on its disk down through the heal.
- A lost copy: DropSegment on a healthy member (the control plane must create it again).
- A second writer: another `sixfold compute` process opening the same volume,
  which fences the first (started and stopped here by PID).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.faults import FaultState, clear_fault_file, default_fault_file, write_fault_file
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.chaos import lmdb_pages
from sixfold.tools.cluster import COMPUTE, DEAD, PAUSED, PROJECT_ROOT, RUNNING, STOPPED, Cluster, health_check

STATUS_TIMEOUT_S = 3.0
CONNECTED_POLL_S = 0.1
SECOND_WRITER_OPEN_TIMEOUT_S = 60.0
SECOND_WRITER_STOP_TIMEOUT_S = 10.0
INJECTOR_POLL_GRACE_S = 0.5  # the node re-reads its fault file at most every 0.2 s; give it a little more


@dataclass
class FaultEvent:
    action: str  # "kill", "start", "pause", "partition", ...
    target: str  # node name(s)
    started: float  # time.monotonic()
    ended: float
    detail: str = ""
    ok: bool = True


@dataclass
class FaultLog:
    """Every fault action of a run, in order; thread-safe."""

    events: list[FaultEvent] = field(default_factory=list)
    listener: Callable[[FaultEvent], None] | None = None  # told of every event (the runner prints them)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, event: FaultEvent) -> FaultEvent:
        with self._lock:
            self.events.append(event)
        if self.listener is not None:
            self.listener(event)
        return event

    def to_jsonl(self, path: Path, origin: float) -> None:
        with open(path, "w") as f:
            for e in self.events:
                record = dict(asdict(e).items())
                record["t"] = round(e.started - origin, 3)
                f.write(json.dumps(record) + "\n")

    def first(self, action: str) -> FaultEvent | None:
        return next((e for e in self.events if e.action == action), None)


@dataclass
class FlipResult:
    node: str
    key: int
    token: str
    data_file: str
    copies_flipped: int  # LMDB's copy-on-write leaves old copies of a page behind; all are flipped
    offsets: list[int]


@dataclass
class MetaRot:
    """One segment's stored metadata rotted on a stopped node."""

    node: str
    segment_id: str
    mode: str  # "one-copy" (a rotten digit in one copy), "both-copies" (in both), "forged" (CRC fixed, both)
    edits: list[tuple[str, int, int]]  # (table, SCL before, SCL after) per copy edited
    copies_after: list[lmdb_pages.CopyState]  # what the node will read

    @property
    def held(self) -> int:
        """The SCL stored before the edit: what the segment's records proved when the node stopped."""
        return self.edits[0][1]

    @property
    def claimed(self) -> int:
        return self.edits[0][2]


@dataclass
class TreeRot:
    node: str
    token: str  # the acknowledged payload whose live page the noise starts around
    page: int  # the live page holding it
    first_byte: int
    bytes_overwritten: int
    pages: int
    tables_hit: dict[str, int]  # table -> live pages of it overwritten ("free" for free pages)
    data_file: str
    targeted: bool  # False: the live pages could not be told apart; the first copy of the token was hit


META_TABLES = ("segments", "segments_copy")


class SecondWriter:
    """Another compute process for the same volume: opening it fences the cluster's writer."""

    def __init__(self, cluster: Cluster, out_dir: Path, volume: str) -> None:
        self.cluster = cluster
        self.volume = volume
        self.port_file = out_dir / "run" / "compute-new.port"
        self.log_file = out_dir / "logs" / "compute-new.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.address = ""

    def start(self) -> None:
        self.port_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.port_file.unlink()
        command = [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "compute",
            "--control-plane",
            self.cluster.control_plane_address(),
            "--port-file",
            str(self.port_file),
            "--default-volume",
            self.volume,
        ]
        with open(self.log_file, "ab") as log:
            log.write(f"--- chaos runner: starting a second writer: {' '.join(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )

    def wait_open(self, timeout_s: float = SECOND_WRITER_OPEN_TIMEOUT_S) -> str:
        """Until the new writer serves (it reports SERVING only once it opened the volume); its address."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the second writer exited with code {self.process.returncode}; see {self.log_file}")
            text = self.port_file.read_text().strip() if self.port_file.exists() else ""
            if text.isdigit():
                address = f"127.0.0.1:{text}"
                if health_check(address, 1.0) == "SERVING":
                    self.address = address
                    return address
            time.sleep(0.05)
        raise RuntimeError(f"the second writer did not open volume {self.volume} within {timeout_s:g} s")

    def stop(self) -> None:
        """SIGTERM by PID (its own session), SIGKILL after a timeout."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(SECOND_WRITER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


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
        """Flip one byte in the middle of the first needle (newest first) found in the node's LMDB file.

        The node must be stopped. Every copy of the needle in the file is flipped: LMDB
        writes pages copy-on-write, so stale copies of a leaf page may sit in free pages
        beside the live one, and only flipping them all makes sure the live record is hit.
        """
        data_file = Path(self.cluster.data_dir(node)) / "lmdb" / "data.mdb"

        def go() -> FlipResult:
            blob = bytearray(data_file.read_bytes())
            for token, needle in needles:
                offsets = []
                at = blob.find(needle)
                while at >= 0:
                    offsets.append(at)
                    at = blob.find(needle, at + 1)
                if not offsets:
                    continue
                middle = len(token.encode()) // 2  # inside the token itself, not its padding
                with open(data_file, "r+b") as f:
                    for at in offsets:
                        f.seek(at + middle)
                        f.write(bytes([blob[at + middle] ^ 0x01]))
                    f.flush()
                    os.fsync(f.fileno())
                return FlipResult(node, key, token, str(data_file), len(offsets), offsets)
            raise RuntimeError(f"none of the {len(needles)} tokens written to page {key} is in {data_file}")

        result: FlipResult = self._act("flip-byte", node, go, f"page {key}")
        self.log.events[-1].detail = (
            f"page {key}: flipped byte {len(result.token) // 2} of {result.token!r} "
            f"({result.copies_flipped} cop{'y' if result.copies_flipped == 1 else 'ies'} "
            f"in {Path(result.data_file).name})"
        )
        return result

    def probe_page(self, node: str, key: int, timeout_s: float = STATUS_TIMEOUT_S) -> tuple[str, str]:
        """Read `key` straight from the node's segment at its SCL: ("OK", data prefix) or (code, details)."""
        address = self.cluster.node_address(node)
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
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

    # -- disk rot ------------------------------------------------------------------------

    def data_file(self, node: str) -> Path:
        return Path(self.cluster.data_dir(node)) / "lmdb" / "data.mdb"

    def stored_metadata(self, node: str, segment_id: str) -> list[lmdb_pages.CopyState]:
        """The live metadata copies of a segment in a stopped node's file."""
        return lmdb_pages.metadata_copies(self.data_file(node), segment_id, META_TABLES)

    def rot_metadata(self, node: str, segment_id: str, mode: str, delta: int, table: str = "segments") -> MetaRot:
        """Raise the SCL in a stopped node's stored metadata of `segment_id` by `delta`, in place, keeping
        the number of digits, in the live copies only (stale copies in freed pages are never read):
        - "one-copy": the copy in `table`, its CRC-32C left as it was (that copy no longer checks);
        - "both-copies": both copies, CRCs left (no copy checks: the segment is lost);
        - "forged": both copies, CRCs recomputed (they check; only the records can refute them)."""
        tables = (table,) if mode == "one-copy" else META_TABLES
        path = self.data_file(node)

        def go() -> MetaRot:
            edits = lmdb_pages.edit_live_metadata(path, segment_id, delta, tables, fix_crc=mode == "forged")
            return MetaRot(node, segment_id, mode, edits, self.stored_metadata(node, segment_id))

        rot: MetaRot = self._act("meta-rot", node, go, f"{segment_id} {mode}")
        self.log.events[-1].detail = (
            f"{segment_id}: SCL {rot.held} -> {rot.claimed} in "
            f"{', '.join(t for t, _, _ in rot.edits)} ({mode}); the node will read: "
            + "; ".join(f"{c.table} {'checks' if c.checks else 'fails'}" for c in rot.copies_after)
        )
        return rot

    def rot_tree(self, node: str, needles: list[tuple[str, bytes]], pages: int, rng: random.Random) -> TreeRot:
        """Overwrite `pages` whole LMDB pages of a stopped node's file with random bytes, around the live
        page (of the records table, else of any table) holding the first needle (newest first) found
        there: the pages the node reads, not stale copies in freed pages."""
        path = self.data_file(node)

        def go() -> TreeRot:
            blob = path.read_bytes()
            try:
                lay: lmdb_pages.Layout | None = lmdb_pages.layout(blob)
            except ValueError:
                lay = None
            found: tuple[str, int, bool] | None = None
            if lay is not None:
                for tables in (("records",), tuple(sorted(set(lay.owner.values())))):
                    found = next(
                        (
                            (token, page, True)
                            for token, needle in needles
                            if (page := lmdb_pages.live_page_of(blob, lay, needle, tables)) is not None
                        ),
                        None,
                    )
                    if found:
                        break
            if found is None:
                found = next(
                    (
                        (token, blob.find(needle) // lmdb_pages.LMDB_PAGE, False)
                        for token, needle in needles
                        if blob.find(needle) >= 0
                    ),
                    None,
                )
            if found is None:
                raise RuntimeError(f"none of the {len(needles)} acknowledged tokens is in {path}")
            token, page, targeted = found
            page_size = lay.page_size if lay is not None else lmdb_pages.LMDB_PAGE
            first_page = max(lmdb_pages.META_PAGES, page - rng.randrange(pages))
            noise = bytes(rng.getrandbits(8) for _ in range(pages * page_size))
            first, size = lmdb_pages.overwrite(path, first_page, pages, noise, page_size)
            hit: dict[str, int] = {}
            for p in range(first // page_size, (first + size) // page_size):
                table = (lay.table_of(p) if lay is not None else None) or "free"
                hit[table] = hit.get(table, 0) + 1
            return TreeRot(node, token, page, first, size, size // page_size, hit, str(path), targeted)

        rot: TreeRot = self._act("tree-rot", node, go, f"{pages} pages")
        self.log.events[-1].detail = (
            f"{rot.pages} pages ({rot.bytes_overwritten} bytes) from byte {rot.first_byte} "
            f"overwritten with random bytes, around page {rot.page} holding {rot.token!r}; "
            f"live pages hit: {rot.tables_hit}"
        )
        return rot

    # -- storage node calls ------------------------------------------------------------------

    def list_segments(self, node: str, timeout_s: float = STATUS_TIMEOUT_S) -> pb.ListSegmentsResponse:
        with grpc.insecure_channel(self.cluster.node_address(node), options=CHANNEL_OPTIONS) as channel:
            return pb_grpc.StorageServiceStub(channel).ListSegments(pb.ListSegmentsRequest(), timeout=timeout_s)

    def segment_state(
        self,
        address: str,
        segment_id: str,
        timeout_s: float = STATUS_TIMEOUT_S,
    ) -> tuple[str, pb.SegmentState | None]:
        """("OK", state) or (status code name, None)."""
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            try:
                reply = pb_grpc.StorageServiceStub(channel).GetSegmentState(
                    pb.GetSegmentStateRequest(segment_id=segment_id), timeout=timeout_s
                )
            except grpc.RpcError as error:
                return error.code().name, None
        return "OK", reply.state

    def drop_segment(self, node: str, segment_id: str) -> int:
        """DropSegment on a healthy member: its copy is gone (records, metadata); the records removed."""

        def go() -> int:
            with grpc.insecure_channel(self.cluster.node_address(node), options=CHANNEL_OPTIONS) as channel:
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
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
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
        with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
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
