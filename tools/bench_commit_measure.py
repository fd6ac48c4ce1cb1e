"""`sixfold bench commit`'s measuring: the workload (one small patch at a random place per commit), closed-loop
clients, snapshots of the counters, CPU per process group, and the figures a phase yields.

No I/O beyond /proc; what a commit is comes from the caller (tools/bench_commit.py).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sixfold.storage.quorum import COPIES

PAGES = 1_000  # the pages the MTRs land on (one page per MTR)
PATCH_BYTES = 100
DATA_POOL = 512  # distinct random payloads, reused
PAUSED_NODES = ("a2", "c1")  # one node each in two AZs: the four left must all acknowledge
WARMUP_S = 1.0
CALL_TIMEOUT_S = 10.0
ERROR_BACKOFF_S = 0.05

NORMAL, PAUSED, BARE, EMPTY = "normal", "2 paused", "bare", "empty"
STREAM = "stream"  # the same MTRs over one WritePagesStream (compute/write_stream_client.py)
STREAM_PAUSED = "stream 2 paused"
MACHINE = "machine"  # CPU group: the whole machine, from /proc/stat


@dataclass
class Snapshot:
    at: float
    net_bytes: int = 0
    commits: int = 0
    batches: int = 0  # AppendRecords messages sent to all segments
    cpu_s: dict[str, float] = field(default_factory=dict)  # group -> CPU seconds (user + system)


@dataclass
class Phase:
    mode: str
    concurrency: int
    seconds: float
    latencies: list[float]
    errors: list[str]
    before: Snapshot
    after: Snapshot

    @property
    def commits(self) -> int:
        return len(self.latencies)

    @property
    def per_s(self) -> float:
        return self.commits / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def bytes_per_commit(self) -> float:
        commits = self.after.commits - self.before.commits
        return (self.after.net_bytes - self.before.net_bytes) / commits if commits else float("nan")

    @property
    def commits_per_batch(self) -> float:
        """Commits a stream message carried on average (the boxcar): commits / (batches / segments
        sending; with two paused, four)."""
        batches = self.after.batches - self.before.batches
        commits = self.after.commits - self.before.commits
        sending = COPIES - len(PAUSED_NODES) if self.mode in (PAUSED, STREAM_PAUSED) else COPIES
        return commits * sending / batches if batches else float("nan")

    def cores(self, group: str) -> float:
        wall = self.after.at - self.before.at
        return (self.after.cpu_s.get(group, 0.0) - self.before.cpu_s.get(group, 0.0)) / wall if wall else 0.0


class CpuMeter:
    """CPU seconds (utime + stime from /proc/PID/stat) of process groups: compute, nodes, control plane, bench."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.tick = os.sysconf("SC_CLK_TCK")

    def _cpu(self, pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return 0.0
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime

    def _machine_busy(self) -> float:
        """CPU seconds the whole machine was busy (every process, ours or not), from /proc/stat."""
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return (sum(values[:8]) - idle) / self.tick

    def read(self) -> dict[str, float]:
        cpu = {group: sum(self._cpu(pid) for pid in pids) for group, pids in self.groups.items()}
        cpu[MACHINE] = self._machine_busy()
        return cpu


async def closed_loop(
    commit: Callable[[random.Random], Awaitable[Any]],
    concurrency: int,
    seconds: float,
    snapshot: Callable[[], Awaitable[Snapshot]],
    mode: str,
) -> Phase:
    """C clients, each issuing its next commit when the previous returned. Warm up, then count the
    commits that complete within the measured window (and their latencies)."""
    measuring = False
    stop = False
    latencies: list[float] = []
    errors: list[str] = []

    async def client(index: int) -> None:
        rng = random.Random(index * 7_919 + concurrency)
        while not stop:
            started = time.perf_counter()
            try:
                await commit(rng)
            except Exception as error:  # noqa: BLE001 - counted and shown, the bench goes on
                if measuring:
                    errors.append(describe_error(error))
                await asyncio.sleep(ERROR_BACKOFF_S)
                continue
            if measuring:
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i)) for i in range(concurrency)]
    try:
        await asyncio.sleep(WARMUP_S)
        before = await snapshot()
        measuring = True
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        measuring = False
        elapsed = time.perf_counter() - started
        after = await snapshot()
        stop = True
        await asyncio.wait(tasks, timeout=CALL_TIMEOUT_S + 1)
    finally:
        stop = True
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Phase(mode, concurrency, elapsed, latencies, errors, before, after)


def describe_error(error: BaseException) -> str:
    code = getattr(error, "code", None)
    if callable(code):
        details = getattr(error, "details", lambda: "")()
        return f"{code().name}: {details}"
    return f"{type(error).__name__}: {error}"


def random_patch(rng: random.Random, pool: list[bytes], page_size: int) -> tuple[int, int, bytes]:
    return rng.randrange(PAGES), rng.randrange(page_size - PATCH_BYTES + 1), pool[rng.randrange(len(pool))]
