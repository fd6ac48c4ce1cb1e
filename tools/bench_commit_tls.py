"""`sixfold bench commit --tls`: what the secure default (mutual TLS, user tokens, encryption at rest) costs a
commit, as ratios to the plaintext run of the same invocation (issue 16: "reports the cost of TLS and
encryption as a ratio to the plaintext run").

tools/bench_commit.py runs the sixfold phases (`SIXFOLD_MODES`) on a plaintext cluster, then the same phases
(same concurrencies, same seconds) on a second cluster with the secure default (the first is started with
`insecure=True`): mutual TLS, a bearer token on every client call, and every record and page version sealed
(AES-256-GCM) on the storage nodes under the volume's data key from the key service; `print_tls` sets each
phase beside its plaintext twin: commits/s, p50, p99, and CPU per commit of the sixfold processes (the key
service counted with the control plane), each as secure/plaintext.
Pure: no I/O beyond printing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from sixfold.tools.bench_commit_measure import EMPTY, NORMAL, PAUSED, STREAM, STREAM_PAUSED, Phase
from sixfold.tools.bench_commit_report import SIXFOLD_GROUPS

# The phases run on both clusters, in report order (the bare fan-out runs on the plaintext cluster only).
SIXFOLD_MODES = (NORMAL, STREAM, EMPTY, PAUSED, STREAM_PAUSED)
TLS_PLAN = (
    "the same phases on a plaintext cluster (sixfold up --insecure), then on a second cluster with the secure "
    "default: mutual TLS on every port and channel, user tokens, encryption at rest on the nodes (this bench is "
    "its `cli` client with the admin token); bare only on the plaintext one"
)
AT_REST_NOTE = (
    "the secure cluster also seals every record and page version on its storage nodes (AES-256-GCM, key from the "
    "key service, held for a lease) and checks a token on every call: these ratios cover TLS, tokens and "
    "encryption at rest together"
)
RATIO_LINE = "secure/plaintext commits/s"


def tls_progress(progress: Callable[[str], None]) -> Callable[[str], None]:
    """The TLS run's progress lines, marked as such."""

    def marked(line: str) -> None:
        progress(f"[tls] {line}")

    return marked


def ratio(tls: float, plain: float) -> float:
    return tls / plain if plain and not math.isnan(plain) and not math.isnan(tls) else float("nan")


def cpu_ms_per_call(p: Phase) -> float:
    """CPU milliseconds of every sixfold process (writer, nodes, control plane) per completed call of the
    measured window (the phase's own count, so the empty calls have one too)."""
    cpu = sum(p.after.cpu_s.get(g, 0.0) - p.before.cpu_s.get(g, 0.0) for g in SIXFOLD_GROUPS)
    return cpu / p.commits * 1000 if p.commits else float("nan")


def _cell(value: float, width: int, spec: str) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}{spec}}"


def print_tls(plain: list[Phase], tls: list[Phase], concurrencies: list[int], loads: Sequence[float] = ()) -> None:
    """Each phase on the TLS cluster beside its plaintext twin, the ratios, and what they cover; `loads`: the
    machine's load average as each cluster started (plaintext, TLS)."""
    by_plain = {(p.mode, p.concurrency): p for p in plain}
    by_tls = {(p.mode, p.concurrency): p for p in tls}
    print(
        "\nthe secure default (mutual TLS, tokens, encryption at rest) beside plaintext (the same phases on a second "
        "cluster, after the plaintext one, in this run):"
    )
    header = (
        f"{'mode':>15} {'C':>4} | {'plain/s':>9} {'p50 ms':>7} {'p99 ms':>7} | {'secure/s':>9} {'p50 ms':>7} "
        f"{'p99 ms':>7} | {'sec/plain: /s':>13} {'p50':>5} {'p99':>5} {'CPU':>5}"
    )
    print(header)
    print("-" * len(header))
    for mode in SIXFOLD_MODES:
        for c in concurrencies:
            p, t = by_plain.get((mode, c)), by_tls.get((mode, c))
            if p is None or t is None:
                continue
            cells = [
                ratio(t.per_s, p.per_s),
                ratio(t.percentile_ms(0.5), p.percentile_ms(0.5)),
                ratio(t.percentile_ms(0.99), p.percentile_ms(0.99)),
                ratio(cpu_ms_per_call(t), cpu_ms_per_call(p)),
            ]
            print(
                f"{mode:>15} {c:>4} | {p.per_s:>9,.0f} {p.percentile_ms(0.5):>7.1f} {p.percentile_ms(0.99):>7.1f} | "
                f"{t.per_s:>9,.0f} {t.percentile_ms(0.5):>7.1f} {t.percentile_ms(0.99):>7.1f} | "
                f"{_cell(cells[0], 13, '.2f')} {_cell(cells[1], 5, '.2f')} {_cell(cells[2], 5, '.2f')} "
                f"{_cell(cells[3], 5, '.2f')}"
            )
    for t in tls:
        if t.errors:
            print(f"  secure {t.mode} c={t.concurrency}: {len(t.errors)} errors, first: {t.errors[0]}")
    summary = [
        f"c={c} {ratio(by_tls[(NORMAL, c)].per_s, by_plain[(NORMAL, c)].per_s):.2f}x"
        for c in concurrencies
        if (NORMAL, c) in by_tls and (NORMAL, c) in by_plain
    ]
    if summary:
        print(f"{RATIO_LINE} (unary WritePages): " + ", ".join(summary))
    print(
        "(secure/plain below 1 for /s, above 1 for latency and CPU: what the secure default costs; CPU = "
        "milliseconds of the writer,\n the six nodes, the control plane and the key service per call; empty = a "
        f"health check on the writer: TLS per call without storage)\n{AT_REST_NOTE}"
    )
    if len(loads) == 2:
        print(
            f"the clusters ran one after the other: load average {loads[0]:.1f} as the plaintext one started, "
            f"{loads[1]:.1f} as the TLS one did;\n other load on the machine that changes between them moves the "
            "ratios too (see the machine column above; compare runs on a quiet machine)"
        )
