"""`sixfold bench commit`'s plot: throughput and p99 latency against concurrency, sixfold beside its peers.

matplotlib is a dev dependency (`pip install -e ".[dev]"`); without it the plot is skipped with that sentence.
"""

from __future__ import annotations

from sixfold.tools.bench_commit_measure import Phase

LABELS = {
    "normal": "sixfold, unary WritePages",
    "stream": "sixfold, WritePagesStream",
    "bare": "bare fan-out (baseline)",
    "etcd": "etcd 3.4, 3 members",
}
TLS_LABELS = {"normal": "sixfold over mutual TLS, unary", "stream": "sixfold over mutual TLS, stream"}


def save_plot(phases: list[Phase], path: str, tls_phases: list[Phase] | None = None) -> str:
    """Write the PNG; '' or why not. `tls_phases` (from --tls) are drawn dashed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 'matplotlib is not installed (it comes with pip install -e ".[dev]")'
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    lines = [(phases, mode, label, "-") for mode, label in LABELS.items()]
    lines += [(tls_phases or [], mode, label, "--") for mode, label in TLS_LABELS.items()]
    for source, mode, label, style in lines:
        shown = sorted((p for p in source if p.mode == mode and p.latencies), key=lambda p: p.concurrency)
        if not shown:
            continue
        xs = [p.concurrency for p in shown]
        left.plot(xs, [p.per_s for p in shown], marker="o", linestyle=style, label=label)
        right.plot(xs, [p.percentile_ms(0.99) for p in shown], marker="o", linestyle=style, label=label)
    for axis, ylabel in ((left, "commits (puts) per second"), (right, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (closed-loop clients)")
        axis.set_ylabel(ylabel)
        axis.grid(True, alpha=0.3)
    right.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle("durable 100-byte commits on this machine, one run")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return ""
