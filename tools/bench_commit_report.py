"""`sixfold bench commit`'s report: the table of phases, bytes on the network per commit, the boxcar,
the ratios between modes, and the aim from the issue (printed, never asserted).
"""

from __future__ import annotations

import math
import os

from sixfold.storage.quorum import COPIES
from sixfold.tools.bench_commit_measure import (
    BARE,
    EMPTY,
    MACHINE,
    NORMAL,
    PAGES,
    PATCH_BYTES,
    PAUSED,
    STREAM,
    STREAM_PAUSED,
    Phase,
)

ETCD = "etcd"
SIXFOLD_GROUPS = ("writer", "nodes", "control")  # every sixfold process (the bench client not counted)

# Issue 14's goal, printed beside the figures (never asserted).
TARGET_CONCURRENCY = 64
TARGET_P99_MS = 50.0
TARGET_PAUSED_SPREAD = 0.2  # two nodes paused: commits/s at most 20% below the same mode unpaused
# [P17] Verbitski et al., SIGMOD 2017, Table 1: 0.95 vs 7.39 I/Os per transaction (SysBench write-only).
PAPER_IO_RATIO = 7.7


def _mark(ok: bool) -> str:
    return "PASS " if ok else "BELOW"


def print_results(phases: list[Phase], page_size: int, concurrencies: list[int]) -> None:
    by = {(p.mode, p.concurrency): p for p in phases}
    print()
    header = (
        f"{'mode':>15} {'C':>4} | {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} | "
        f"{'CPU cores: writer':>17} {'6 nodes':>8} {'bench':>6} {'machine':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode in (NORMAL, STREAM, PAUSED, STREAM_PAUSED, BARE, EMPTY, ETCD):
        for c in concurrencies:
            p = by.get((mode, c))
            if p is None:
                continue
            print(
                f"{mode:>15} {c:>4} | {p.per_s:>10,.0f} {p.percentile_ms(0.5):>8.1f} {p.percentile_ms(0.99):>8.1f} "
                f"{len(p.errors):>6} | {p.cores('writer'):>17.2f} {p.cores('nodes'):>8.2f} {p.cores('bench'):>6.2f} "
                f"{p.cores(MACHINE):>8.2f}"
            )
    for p in phases:
        if p.errors:
            print(f"  {p.mode} c={p.concurrency}: first error: {p.errors[0]}")
    print(
        f"(one {PATCH_BYTES}-byte patch at a random offset of one of {PAGES:,} pages per commit; latency = call "
        f"to durable return;\n CPU = cores used during the measured window by the writer (compute) process, the six "
        f"storage nodes together,\n this bench process, and the whole machine ({os.cpu_count()} CPUs; it includes "
        f"any other load on the machine))"
    )

    whole_page = page_size * COPIES
    print(
        f"\nnetwork per commit (serialized AppendRecords bytes the writer sent to all {COPIES} segments, "
        f"delta over each phase / delta of commits):"
    )
    for mode in (NORMAL, STREAM, PAUSED, STREAM_PAUSED, BARE):
        for c in concurrencies:
            p = by.get((mode, c))
            if p is None or p.bytes_per_commit != p.bytes_per_commit:  # NaN: no commits
                continue
            print(
                f"  {mode:>15} c={c:<3} {p.bytes_per_commit:>7,.0f} B/commit  vs whole pages "
                f"{page_size:,} B x {COPIES} = {whole_page:,} B: {whole_page / p.bytes_per_commit:5.1f}x fewer bytes"
            )
    if any(p.mode == PAUSED for p in phases):
        print(
            f"  ({PAUSED}: the writer queues the records of the two paused segments and sends them after "
            f"resume,\n   so only 4 copies are counted)"
        )
    print(
        f"  reference, the paper's figure, not ours: [P17] (Aurora, SIGMOD 2017, Table 1) reports "
        f"{PAPER_IO_RATIO}x fewer I/Os per transaction than mirrored MySQL"
    )

    print("\nboxcar (commits per AppendRecords message to one segment; fewer messages = less gRPC CPU everywhere):")
    for mode in (NORMAL, STREAM, PAUSED, STREAM_PAUSED, BARE):
        line = [
            f"c={c} {by[(mode, c)].commits_per_batch:5.1f}"
            for c in concurrencies
            if (mode, c) in by and not math.isnan(by[(mode, c)].commits_per_batch)
        ]
        if line:
            print(f"  {mode:>15}  " + "   ".join(line))
    print("\nratios:")
    for c in concurrencies:
        normal, paused, bare = by.get((NORMAL, c)), by.get((PAUSED, c)), by.get((BARE, c))
        if normal and bare and bare.per_s:
            print(
                f"  commit at c={c}: {normal.per_s / bare.per_s:6.1%} of bare "
                f"({normal.per_s:,.0f} / {bare.per_s:,.0f} commits/s)"
            )
        empty = by.get((EMPTY, c))
        if normal and empty and empty.per_s:
            print(
                f"  commit at c={c}: {normal.per_s / empty.per_s:6.1%} of empty calls to the writer "
                f"({normal.per_s:,.0f} / {empty.per_s:,.0f} calls/s)"
            )
        if normal and paused and normal.per_s:
            print(
                f"  2 paused at c={c}: {paused.per_s / normal.per_s:6.1%} of normal "
                f"(p99 {paused.percentile_ms(0.99):.1f} ms vs {normal.percentile_ms(0.99):.1f} ms)"
            )
        stream, stream_paused = by.get((STREAM, c)), by.get((STREAM_PAUSED, c))
        if stream and stream_paused and stream.per_s:
            print(
                f"  stream, 2 paused at c={c}: {stream_paused.per_s / stream.per_s:6.1%} of the stream "
                f"(p99 {stream_paused.percentile_ms(0.99):.1f} ms vs {stream.percentile_ms(0.99):.1f} ms)"
            )

    print_cpu_per_commit(by, concurrencies)
    print_peer(by, concurrencies)
    print_target(by)


def print_target(by: dict[tuple[str, int], Phase]) -> None:
    """Issue 14's goal, printed beside what this run measured (never asserted): at c=64 and at c=1 at least
    etcd's puts/s of the same run, p99 at c=64 under 50 ms, and with two nodes paused at most 20% less."""
    c = TARGET_CONCURRENCY
    print(
        f"\ngoal (issue 14, not asserted): at c={c} and at c=1 at least etcd's puts/s in the same run; p99 at "
        f"c={c} < {TARGET_P99_MS:.0f} ms; with two nodes paused at most {TARGET_PAUSED_SPREAD:.0%} below the same mode"
    )
    for mode, paused_mode in ((NORMAL, PAUSED), (STREAM, STREAM_PAUSED)):
        for at in (1, c):
            p, etcd = by.get((mode, at)), by.get((ETCD, at))
            if p is None:
                continue
            if etcd is None or not etcd.per_s:
                print(f"  [ -- ] {mode} at c={at}: {p.per_s:,.0f} commits/s; no etcd figure (--peer etcd)")
            else:
                print(
                    f"  [{_mark(p.per_s >= etcd.per_s)}] {mode} at c={at}: {p.per_s:,.0f} commits/s vs etcd "
                    f"{etcd.per_s:,.0f} ({p.per_s / etcd.per_s:.2f}x)"
                )
        p, paused = by.get((mode, c)), by.get((paused_mode, c))
        if p is None:
            print(f"  {mode} at c={c}: not measured (add {c} to --concurrency)")
            continue
        p99 = p.percentile_ms(0.99)
        print(f"  [{_mark(p99 < TARGET_P99_MS)}] {mode} p99 at c={c}: {p99:.1f} ms")
        if paused is not None and p.per_s:
            ratio = paused.per_s / p.per_s
            # The aim is that losing two nodes costs no more than 20%; faster is no failure (two paused nodes
            # leave their CPU to the others on a small machine), and it is said.
            faster = " (faster: the paused nodes' CPU went to the others)" if ratio > 1 + TARGET_PAUSED_SPREAD else ""
            print(
                f"  [{_mark(ratio >= 1 - TARGET_PAUSED_SPREAD)}] {mode} with two nodes paused at c={c}: "
                f"{paused.per_s:,.0f} commits/s, {ratio:.2f}x{faster}"
            )


def cpu_ms_per_commit(p: Phase, groups: tuple[str, ...]) -> float:
    """CPU milliseconds the groups' processes spent per commit during the measured window (from /proc)."""
    commits = p.after.commits - p.before.commits
    cpu = sum(p.after.cpu_s.get(g, 0.0) - p.before.cpu_s.get(g, 0.0) for g in groups)
    return cpu / commits * 1000 if commits > 0 else float("nan")


def print_cpu_per_commit(by: dict[tuple[str, int], Phase], concurrencies: list[int]) -> None:
    print("\nCPU per commit (utime + stime from /proc over the measured window / commits):")
    for c in concurrencies:
        etcd = by.get((ETCD, c))
        parts = []
        for mode in (NORMAL, STREAM):
            p = by.get((mode, c))
            if p is None:
                continue
            split = ", ".join(f"{g} {cpu_ms_per_commit(p, (g,)):.2f}" for g in SIXFOLD_GROUPS)
            parts.append(f"sixfold {mode} {cpu_ms_per_commit(p, SIXFOLD_GROUPS):.2f} ms ({split})")
        if etcd:
            parts.append(f"etcd {cpu_ms_per_commit(etcd, ('etcd',)):.2f} ms (3 members)")
        if parts:
            print(f"  c={c:<3} " + "; ".join(parts))


def print_peer(by: dict[tuple[str, int], Phase], concurrencies: list[int]) -> None:
    if not any((ETCD, c) in by for c in concurrencies):
        return
    nan = float("nan")
    print("\nsixfold beside etcd 3.4 (3 members on loopback, durable puts), measured in this run:")
    header = (
        f"{'C':>4} | {'unary/s':>9} {'p99 ms':>7} | {'stream/s':>9} {'p99 ms':>7} | {'bare/s':>9} | "
        f"{'etcd/s':>9} {'p99 ms':>7} | {'unary/etcd':>10} {'stream/etcd':>11}"
    )
    print(header)
    print("-" * len(header))
    for c in concurrencies:
        etcd = by.get((ETCD, c))
        if etcd is None:
            continue
        cells = []
        for mode in (NORMAL, STREAM):
            p = by.get((mode, c))
            cells.append(f"{p.per_s if p else nan:>9,.0f} {p.percentile_ms(0.99) if p else nan:>7.1f}")
        bare = by.get((BARE, c))
        ratios = [
            (by[(mode, c)].per_s / etcd.per_s if (mode, c) in by and etcd.per_s else nan) for mode in (NORMAL, STREAM)
        ]
        print(
            f"{c:>4} | {cells[0]} | {cells[1]} | {bare.per_s if bare else nan:>9,.0f} | "
            f"{etcd.per_s:>9,.0f} {etcd.percentile_ms(0.99):>7.1f} | {ratios[0]:>10.2f} {ratios[1]:>11.2f}"
        )
    print(
        "(unary: one WritePages call per commit; stream: WritePagesStream; ratios > 1: sixfold commits more per "
        "second than etcd puts)"
    )
