"""`sixfold bench clone`: how long a copy-on-write clone takes and what it copies, at several volume sizes,
and what a read through to the parent costs, all from the same run.

A cluster of its own (control plane, six storage nodes in three AZs, the compute node) is started in a
temporary directory and always stopped at the end. For each size (default 1 MiB, 64 MiB and 512 MiB of
written pages):

    fill     a new volume gets that many whole pages (MTRs of `--pages-per-mtr` pages, 8 in flight)
    clone    `CloneVolume` from a client, timed end to end (the compute node picks the branch point, the
             control plane creates the clone's segments on the six nodes); three clones, median and worst
    copied   what the clone's segments hold right after creation, summed over the six nodes (records,
             pages hydrated, bytes hydrated: all 0 when no page data moved), and the growth of the
             nodes' LMDB files across the clones
    reads    `--reads` single-page reads from storage (skipping the writer's cache) of random written
             pages on the parent and on the clone (every one a fall-through on the node): p50/p99 and
             the clone/parent ratio

    backtrack the source back to its first commit (every page written after it becomes history), then
             forward again to its newest commit: each timed end to end (the compute node closes its writer,
             the control plane fences the timeline and branches a new one, the volume reopens on it)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sixfold.compute.client import VolumeClient
    from sixfold.tools.cluster import Cluster

CLONES_PER_SIZE = 3
FILL_IN_FLIGHT = 8
CALL_TIMEOUT_S = 120.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        default="1MiB,64MiB,512MiB",
        help="written page data per volume, comma-separated",
    )
    parser.add_argument("--reads", type=int, default=300, help="page reads per side for the latency (default 300)")
    parser.add_argument("--pages-per-mtr", type=int, default=32, help="pages per MTR while filling (default 32)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the page choice (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the cluster's state directory")


@dataclass
class SizeResult:
    size: int
    pages: int
    fill_s: float = 0.0
    clone_ms: list[float] = field(default_factory=list)
    copied_records: int = 0
    copied_pages: int = 0
    copied_bytes: int = 0
    lmdb_growth: int = 0
    parent_read_ms: list[float] = field(default_factory=list)
    clone_read_ms: list[float] = field(default_factory=list)
    backtrack_ms: float = 0.0
    forward_ms: float = 0.0


def _size_text(size: int) -> str:
    """1 MiB, 64 KiB, or bytes when neither divides it."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _lmdb_bytes(cluster: Cluster, names: list[str]) -> int:
    total = 0
    for name in names:
        for root, _, files in os.walk(cluster.data_dir(name)):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files if f.endswith(".mdb"))
    return total


def _clone_holdings(cluster: Cluster, names: list[str], volume_id: str) -> tuple[int, int, int]:
    """(records, pages hydrated, bytes hydrated) of the volume's segments over every node."""
    from sixfold.storage.security import transport  # as the cluster's `cli` (ListSegments carries no data)
    from sixfold.storage.v1 import storage_service_pb2 as pb
    from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc

    records = pages = hydrated = 0
    for name in names:
        with transport.channel(cluster.node_address(name), ()) as channel:
            reply = pb_grpc.StorageServiceStub(channel).ListSegments(pb.ListSegmentsRequest(), timeout=CALL_TIMEOUT_S)
        for s in reply.segments:
            if s.volume_id == volume_id:
                records += s.record_count
                pages += s.pages_hydrated
                hydrated += s.bytes_hydrated
    return records, pages, hydrated


def _fill(client: VolumeClient, volume_id: str, pages: int, page_size: int, per_mtr: int) -> list[int]:
    """Write the pages; the commit LSNs."""

    def mtr(first: int) -> int:
        patches = [(p, 0, p.to_bytes(8, "big") * (page_size // 8)) for p in range(first, min(first + per_mtr, pages))]
        return client.write(volume_id, patches, timeout_s=CALL_TIMEOUT_S)

    with ThreadPoolExecutor(FILL_IN_FLIGHT) as pool:
        return list(pool.map(mtr, range(0, pages, per_mtr)))


def _timed_reads(client: VolumeClient, volume_id: str, page_nos: list[int]) -> list[float]:
    out = []
    for p in page_nos:
        started = time.perf_counter()
        client.read_images(volume_id, [p], from_storage=True, timeout_s=CALL_TIMEOUT_S)
        out.append((time.perf_counter() - started) * 1000)
    return out


def measure_size(
    cluster: Cluster,
    client: VolumeClient,
    size: int,
    args: argparse.Namespace,
    rng: random.Random,
    progress: Callable[[str], None],
) -> SizeResult:
    page_size = 4096
    result = SizeResult(size, max(1, size // page_size))
    source = f"bench-{_size_text(size).replace(' ', '').removesuffix('iB').lower()}"  # bench-1m, bench-64k
    names = cluster.node_names()
    client.create_volume(source, timeout_s=CALL_TIMEOUT_S)
    started = time.perf_counter()
    lsns = _fill(client, source, result.pages, page_size, args.pages_per_mtr)
    result.fill_s = time.perf_counter() - started
    progress(f"  {source}: {result.pages:,} pages written in {result.fill_s:.1f} s")
    before = _lmdb_bytes(cluster, names)
    for i in range(CLONES_PER_SIZE):
        clone = f"{source}-clone{i}"
        started = time.perf_counter()
        client.clone_volume(source, clone, timeout_s=CALL_TIMEOUT_S)
        result.clone_ms.append((time.perf_counter() - started) * 1000)
        records, pages, hydrated = _clone_holdings(cluster, names, clone)
        result.copied_records += records
        result.copied_pages += pages
        result.copied_bytes += hydrated
    result.lmdb_growth = _lmdb_bytes(cluster, names) - before
    page_nos = [rng.randrange(result.pages) for _ in range(args.reads)]
    _timed_reads(client, source, page_nos[:20])  # warm the channels
    result.parent_read_ms = _timed_reads(client, source, page_nos)
    result.clone_read_ms = _timed_reads(client, f"{source}-clone0", page_nos)
    started = time.perf_counter()
    client.backtrack(source, min(lsns), timeout_s=CALL_TIMEOUT_S)
    result.backtrack_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    client.backtrack(source, max(lsns), timeout_s=CALL_TIMEOUT_S)
    result.forward_ms = (time.perf_counter() - started) * 1000
    progress(
        f"  {source}: clones in {', '.join(f'{ms:.1f}' for ms in result.clone_ms)} ms; backtrack over "
        f"{len(lsns) - 1:,} commits {result.backtrack_ms:.1f} ms, forward again {result.forward_ms:.1f} ms"
    )
    return result


def print_results(results: list[SizeResult]) -> None:
    print()
    print(
        "   written    pages     fill s  clone ms p50/max  records+pages copied  LMDB growth  read ms parent p50/p99"
        "  clone p50/p99  clone/parent p50  backtrack ms  forward ms"
    )
    for r in results:
        parent50, clone50 = _pct(r.parent_read_ms, 0.5), _pct(r.clone_read_ms, 0.5)
        print(
            f"{_size_text(r.size):>10} {r.pages:>8,} {r.fill_s:>8.1f}  "
            f"{statistics.median(r.clone_ms):>6.1f} / {max(r.clone_ms):>6.1f}  "
            f"{r.copied_records + r.copied_pages:>10,} ({r.copied_bytes:,} B)  "
            f"{r.lmdb_growth / 2**20:>8.2f} MiB  {parent50:>10.2f} / {_pct(r.parent_read_ms, 0.99):>6.2f}  "
            f"{clone50:>6.2f} / {_pct(r.clone_read_ms, 0.99):>6.2f}  {clone50 / parent50 if parent50 else 0:>8.2f}x"
            f"  {r.backtrack_ms:>12.1f}  {r.forward_ms:>10.1f}"
        )
    print(
        "\nclone ms: CloneVolume from this client, end to end (aim: under 100 ms at every size); copied: what the "
        f"{CLONES_PER_SIZE} clones' segments hold right after creation over the six nodes (0 = no page data moved); "
        "LMDB growth: the nodes' .mdb files across the clones (LMDB grows in steps); backtrack: to the first commit "
        "(all the size's pages become history) and forward again, each including the volume's reopening (recovery) "
        "(aim: under 100 ms)."
    )


def _parse_sizes(text: str) -> list[int]:
    from sixfold.tools.volume_cli import parse_size

    sizes = [parse_size(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 4096:
        raise SystemExit("--sizes needs sizes of at least one page (4KiB), e.g. 1MiB,64MiB,512MiB")
    return sizes


def bench_clone(args: argparse.Namespace) -> int:
    from sixfold.compute.client import VolumeClient
    from sixfold.tools.cluster import Cluster

    sizes = _parse_sizes(args.sizes)
    if args.reads < 1 or args.pages_per_mtr < 1:
        raise SystemExit("--reads and --pages-per-mtr must be positive")
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    workdir = tempfile.mkdtemp(prefix="sixfold-bench-clone-")
    print(
        f"sixfold bench clone: sizes {args.sizes}, {CLONES_PER_SIZE} clones each, {args.reads} reads per side; "
        f"seed {seed}; files in {workdir}\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = []
    try:
        with Cluster(os.path.join(workdir, "cluster")) as cluster:
            cluster.up()
            with VolumeClient(cluster.compute_address(), timeout_s=CALL_TIMEOUT_S) as client:
                for size in sizes:
                    results.append(measure_size(cluster, client, size, args, rng, lambda s: print(s, flush=True)))
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_results(results)
    return 0
