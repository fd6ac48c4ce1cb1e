"""`sixfold bench commit --profile`: py-spy profiles of the writer and one storage node during a phase, saved as
flame graphs (SVG) with the top frames printed.

py-spy (a dev dependency) samples a running process from outside (`py-spy record --format raw --gil`:
collapsed stacks, one line per distinct stack with its sample count; `--gil` keeps only the samples of the
thread holding the GIL, so the graph is where Python spends CPU, not threads waiting on a queue or a socket,
and C that runs without the GIL -- an fsync, an LMDB commit -- is left out); `top_frames` ranks frames by the samples in
which they are the innermost one (self) and in which they appear at all (total); `flame_svg` draws the
collapsed stacks as a flame graph, one rectangle per frame, its width the share of samples.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import zlib
from collections import Counter
from dataclasses import dataclass

RATE_HZ = 200
SVG_WIDTH = 1600
ROW_PX = 16
TOP = 12


@dataclass
class Recording:
    name: str
    pid: int
    raw_path: str
    svg_path: str
    process: subprocess.Popen[bytes]


def py_spy() -> str | None:
    return shutil.which("py-spy")


def start(binary: str, name: str, pid: int, seconds: float, out_prefix: str) -> Recording:
    """Sample `pid` for `seconds` in the background (non-blocking: the process is not paused)."""
    raw = f"{out_prefix}-{name}.txt"
    process = subprocess.Popen(
        [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            str(RATE_HZ),
            "--format",
            "raw",
            "--nonblocking",
            "--gil",
            "--output",
            raw,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return Recording(name, pid, raw, f"{out_prefix}-{name}.svg", process)


def finish(recording: Recording, timeout_s: float) -> str:
    """Wait for py-spy, write the SVG; '' or why it failed."""
    try:
        _, err = recording.process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        recording.process.kill()
        recording.process.wait()
        return "py-spy did not finish"
    if recording.process.returncode != 0:
        return f"py-spy failed: {err.decode(errors='replace').strip()[:300]}"
    stacks = read_collapsed(recording.raw_path)
    with open(recording.svg_path, "w") as f:
        f.write(flame_svg(stacks, f"{recording.name} (pid {recording.pid})"))
    return ""


def read_collapsed(path: str) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";"))] += int(count)
    return stacks


PACKAGES = ("compute/", "storage/", "tools/")  # sixfold's folders, as py-spy names a frame's file
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository: compute/, storage/, tools/


def ours(frame: str) -> bool:
    """A frame of sixfold's own code (the total ranking shows these: the event loop's frames are on every stack)."""
    where = frame.partition(" (")[2]
    where = where[len(REPO_ROOT) + 1 :] if where.startswith(REPO_ROOT + os.sep) else where  # (py-spy shortens paths)
    return where.startswith(PACKAGES) and not where.startswith("tools/cli.py")


def short(frame: str) -> str:
    """`function (path/to/module.py:LINE)` as `function (module.py)`; py-spy's thread frames kept."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    return f"{name} ({where.rsplit('/', 1)[-1]})" if where else name


Ranked = list[tuple[str, int]]


def top_frames(stacks: Counter[tuple[str, ...]], n: int = TOP) -> tuple[int, Ranked, Ranked]:
    """(samples, the n frames most often innermost, the n frames most often anywhere on the stack)."""
    total = sum(stacks.values())
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    for stack, count in stacks.items():
        if not stack:
            continue
        own[short(stack[-1])] += count
        for frame in {short(f) for f in stack if ours(f)}:
            anywhere[frame] += count

    def ranked(counts: Counter[str]) -> Ranked:
        return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    return total, ranked(own), ranked(anywhere)


def flame_svg(stacks: Counter[tuple[str, ...]], title: str) -> str:
    """A flame graph: the root at the bottom, each frame as wide as its share of the samples."""
    total = sum(stacks.values()) or 1
    tree: dict[tuple[str, ...], int] = Counter()
    for stack, count in stacks.items():
        for depth in range(1, len(stack) + 1):
            tree[stack[:depth]] += count
    depth_max = max((len(s) for s in tree), default=0)
    height = (depth_max + 2) * ROW_PX
    x_of: dict[tuple[str, ...], float] = {(): 0.0}
    cursor: dict[tuple[str, ...], float] = {(): 0.0}
    rects = []
    for path in sorted(tree):  # parents before their children, siblings in name order
        parent = path[:-1]
        x = cursor.get(parent, x_of.get(parent, 0.0))
        width = tree[path] / total * SVG_WIDTH
        x_of[path] = cursor[path] = x
        cursor[parent] = x + width
        if width < 0.5:
            continue
        y = height - (len(path) + 1) * ROW_PX
        label = short(path[-1])
        hue = 10 + (zlib.crc32(label.encode()) % 50)
        tip = html.escape(f"{label}: {tree[path]} samples ({tree[path] / total:.1%})")
        text = html.escape(label[: max(0, int(width / 7))])
        rects.append(
            f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{ROW_PX - 1}" '
            f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" y="{y + ROW_PX - 4}" font-size="11">{text}</text></g>'
        )
    head = html.escape(f"{title}: {total} samples at {RATE_HZ} Hz (py-spy)")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" font-family="monospace">'
        f'<text x="4" y="14" font-size="13">{head}</text>{"".join(rects)}</svg>\n'
    )


def report(recording: Recording, concurrency: int) -> list[str]:
    """The top frames of a finished recording, as lines for the bench's report."""
    total, own, anywhere = top_frames(read_collapsed(recording.raw_path))
    lines = [f"\nprofile of the {recording.name} (pid {recording.pid}) at c={concurrency}: {total} samples"]
    lines.append("  most often innermost (self):")
    lines += [f"    {count / total:6.1%}  {frame}" for frame, count in own] if total else []
    lines.append("  sixfold's frames most often on the stack (total):")
    lines += [f"    {count / total:6.1%}  {frame}" for frame, count in anywhere] if total else []
    return lines
