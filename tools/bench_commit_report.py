"""`sixfold bench commit`'s report: the table of phases, bytes on the network per commit, the boxcar,
the ratios between modes, and the aim from the issue (printed, never asserted).
"""

from __future__ import annotations

import math
import os

from sixfold.storage.quorum import COPIES
from sixfold.tools.bench_commit_measure import BARE, EMPTY, MACHINE, NORMAL, PAGES, PATCH_BYTES, PAUSED, Phase

# The aim from the issue, printed as a target (never asserted).
TARGET_CONCURRENCY = 64
TARGET_COMMITS_PER_S = 1_500
TARGET_P99_MS = 50.0
TARGET_BARE_FRACTION = 0.5
# [P17] Verbitski et al., SIGMOD 2017, Table 1: 0.95 vs 7.39 I/Os per transaction (SysBench write-only).
PAPER_IO_RATIO = 7.7


def _mark(ok: bool) -> str:
    return "PASS " if ok else "BELOW"


def print_results(phases: list[Phase], page_size: int, concurrencies: list[int]) -> None:
    by = {(p.mode, p.concurrency): p for p in phases}
    print()
    header = (
        f"{'mode':>8} {'C':>4} | {'commits/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6} | "
        f"{'CPU cores: writer':>17} {'6 nodes':>8} {'bench':>6} {'machine':>8}"
    )
    print(header)
    print("-" * len(header))
    for mode in (NORMAL, PAUSED, BARE, EMPTY):
        for c in concurrencies:
            p = by.get((mode, c))
            if p is None:
                continue
            print(
                f"{mode:>8} {c:>4} | {p.per_s:>10,.0f} {p.percentile_ms(0.5):>8.1f} {p.percentile_ms(0.99):>8.1f} "
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
    for mode in (NORMAL, PAUSED, BARE):
        for c in concurrencies:
            p = by.get((mode, c))
            if p is None or p.bytes_per_commit != p.bytes_per_commit:  # NaN: no commits
                continue
            print(
                f"  {mode:>8} c={c:<3} {p.bytes_per_commit:>7,.0f} B/commit  vs whole pages "
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
    for mode in (NORMAL, PAUSED, BARE):
        line = [
            f"c={c} {by[(mode, c)].commits_per_batch:5.1f}"
            for c in concurrencies
            if (mode, c) in by and not math.isnan(by[(mode, c)].commits_per_batch)
        ]
        if line:
            print(f"  {mode:>8}  " + "   ".join(line))
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

    c = TARGET_CONCURRENCY
    print(
        f"\ntarget (the aim from the issue, not asserted): at concurrency {c}, >= {TARGET_COMMITS_PER_S:,} commits/s "
        f"with p99 < {TARGET_P99_MS:.0f} ms, and >= {TARGET_BARE_FRACTION:.0%} of the bare baseline"
    )
    normal, bare = by.get((NORMAL, c)), by.get((BARE, c))
    if normal is None:
        print(f"  not measured: add {c} to --concurrency")
        return
    print(
        f"  [{_mark(normal.per_s >= TARGET_COMMITS_PER_S)}] commits/s at c={c}: {normal.per_s:,.0f} "
        f"(target >= {TARGET_COMMITS_PER_S:,})"
    )
    p99 = normal.percentile_ms(0.99)
    print(f"  [{_mark(p99 < TARGET_P99_MS)}] p99 at c={c}: {p99:.1f} ms (target < {TARGET_P99_MS:.0f} ms)")
    if bare and bare.per_s:
        share = normal.per_s / bare.per_s
        print(
            f"  [{_mark(share >= TARGET_BARE_FRACTION)}] share of bare at c={c}: {share:.1%} "
            f"(target >= {TARGET_BARE_FRACTION:.0%})"
        )
