"""What the disk-rot and lost-copy scenarios look at: segment placement and state, node logs, and
whether every PG is whole again.

Blocking calls (run them through `ctx.do`) that ask the control plane and the storage nodes, and the
criteria they share: whole again within a bound, six equal copies at rest, only the expected error
lines in the logs, no read of bytes no write explains.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from sixfold.storage.security import transport
from sixfold.storage.v1 import control_plane_service_pb2 as cp_pb2
from sixfold.storage.v1 import control_plane_service_pb2_grpc as cp_grpc
from sixfold.tools.chaos.bank_workload import BANK
from sixfold.tools.chaos.scenario_base import Context, Criterion, ops
from sixfold.tools.cluster import ClusterError

# Disk rot and lost copies. A node back from a rotted disk, or a dropped copy, must have every PG's six
# segments whole again within WHOLE_WAIT_S (the control plane creates a lost copy again once it has been
# missing from the node's heartbeats for 2 s; rebuilding then measures its target from three peers and
# gossip fills it); the run waits up to WHOLE_WAIT_MAX_S to say how long it took.
WHOLE_WAIT_S = 30.0
WHOLE_WAIT_MAX_S = 2 * WHOLE_WAIT_S
AT_REST_WAIT_S = 20.0  # after the clients stopped: the six copies of each PG whole and equal
ROT_NEEDLES_MAX = 400  # newest acknowledged tokens tried as needles


def placed_on(ctx: Context, node: str) -> list[tuple[int, str]]:
    """(PG index, segment id) of every segment of the volume placed on `node`."""
    return sorted(
        (pg.pg_index, s.segment_id) for pg in ctx.geometry().protection_groups for s in pg.segments if s.node_id == node
    )


def log_size(ctx: Context, node: str) -> int:
    path = ctx.cluster.log_path(node)
    return path.stat().st_size if path.exists() else 0


def log_since(ctx: Context, node: str, offset: int) -> list[str]:
    """The lines `node` logged after byte `offset` of its log (appended across restarts)."""
    path = ctx.cluster.log_path(node)
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace").splitlines()


def pg_states(ctx: Context, last: str | None = None) -> dict[int, dict[str, tuple[str, Any]]]:
    """Per PG: node -> (code, SegmentState or None) from GetSegmentState on each of its segments, the
    segments on `last` asked last (so its SCL is never compared with newer peer SCLs than its own)."""
    out: dict[int, dict[str, tuple[str, Any]]] = {}
    for pg in ctx.geometry().protection_groups:
        placements = sorted(pg.segments, key=lambda s: s.node_id == last)
        out[pg.pg_index] = {s.node_id: ctx.nemesis.segment_state(s.address, s.segment_id) for s in placements}
    return out


def _describe_states(states: dict[int, dict[str, tuple[str, Any]]]) -> str:
    parts = []
    for pg, by_node in sorted(states.items()):
        cells = []
        for node, (code, st) in sorted(by_node.items()):
            if st is None:
                cells.append(f"{node} {code}")
            else:
                flags = "" if st.whole else (" rebuilding" if st.rebuilding else " not whole")
                cells.append(f"{node} {st.scl}{flags}")
        parts.append(f"pg{pg}: " + ", ".join(cells))
    return "; ".join(parts)


def _whole_again(states: dict[int, dict[str, tuple[str, Any]]], victim: str) -> bool:
    """Every segment of every PG is held and whole, and the victim's copies have caught up with the tail:
    SCL at least the lowest of its peers' (asked before it)."""
    for by_node in states.values():
        if any(st is None or not st.whole for _, st in by_node.values()):
            return False
        if victim in by_node:
            peers = [st.scl for node, (_, st) in by_node.items() if node != victim]
            if peers and by_node[victim][1].scl < min(peers):
                return False
    return bool(states)


def note_control_plane_view(ctx: Context, node: str) -> None:
    """Remember each change in what the control plane says of `node` (ctx.data["control_plane_views"])."""
    try:
        info = _control_plane_view(ctx, node)
    except grpc.RpcError:
        return
    if info is None:
        return
    view = cp_pb2.NodeHealth.Name(info.health).removeprefix("NODE_HEALTH_")
    if info.segments_missing:
        view += f" missing {list(info.segments_missing)}"
    if info.segments_rebuilding:
        view += f" rebuilding {list(info.segments_rebuilding)}"
    views = ctx.data.setdefault("control_plane_views", [])
    if not views or views[-1] != view:
        views.append(view)


def wait_whole(ctx: Context, victim: str, timeout_s: float = WHOLE_WAIT_MAX_S) -> float | None:
    """Poll until every PG's six segments are whole again (`_whole_again`); the time, or None."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        note_control_plane_view(ctx, victim)
        try:
            states = pg_states(ctx, last=victim)
        except grpc.RpcError:
            time.sleep(0.2)
            continue
        last = _describe_states(states)
        if _whole_again(states, victim):
            ctx.data["whole_view"] = last
            return time.monotonic()
        time.sleep(0.2)
    ctx.data["whole_view"] = last
    ctx.notes.append(f"after {timeout_s:g} s not every segment was whole again: {last}")
    return None


def wait_recreated(ctx: Context, node: str, segment_id: str, timeout_s: float) -> float | None:
    """Poll the node until it holds `segment_id` again; meanwhile note what the control plane says of it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        note_control_plane_view(ctx, node)
        try:
            held = {s.segment_id: s for s in ctx.nemesis.list_segments(node).segments}
        except grpc.RpcError:
            time.sleep(0.2)
            continue
        if segment_id in held:
            s = held[segment_id]
            ctx.data["recreated_as"] = f"SCL {s.scl}, rebuilding {s.rebuilding}, whole {s.whole}"
            return time.monotonic()
        time.sleep(0.2)
    return None


def _control_plane_view(ctx: Context, node: str) -> Any:
    with transport.channel(ctx.cluster.control_plane_address(), ()) as channel:
        nodes = cp_grpc.ControlPlaneServiceStub(channel).ListNodes(cp_pb2.ListNodesRequest(), timeout=5).nodes
    return next((n for n in nodes if n.node_id == node), None)


def judge_whole(ctx: Context, since: str, what: str) -> Criterion:
    """The bound on becoming whole again, measured from mark `since`."""
    start, done = ctx.marks.get(since), ctx.marks.get("whole_again")
    took = None if start is None or done is None else done - start
    if took is not None:
        head = (
            f"every PG's six segments whole, {ctx.data.get('victim')}'s caught up with its peers, "
            f"{took:.1f} s after {what}"
        )
    elif "start_error" in ctx.data:
        head = f"{ctx.data.get('victim')} never came back"
    else:
        head = f"not within {WHOLE_WAIT_MAX_S:g} s of {what}"
    return Criterion(
        f"whole again within {WHOLE_WAIT_S:g} s",
        took is not None and took <= WHOLE_WAIT_S,
        head + f"; last view: {ctx.data.get('whole_view', '-')}; meanwhile the control plane said of "
        f"{ctx.data.get('victim')}: {' -> '.join(ctx.data.get('control_plane_views', [])) or '-'}",
    )


def judge_at_rest(ctx: Context, timeout_s: float = AT_REST_WAIT_S) -> Criterion:
    """Once the clients stopped: every segment of every PG whole, the six SCLs of each PG equal."""
    deadline = time.monotonic() + timeout_s
    view = "no answer"
    agree = False
    while True:
        try:
            states = pg_states(ctx)
            view = _describe_states(states)
            agree = bool(states) and all(
                all(st is not None and st.whole for _, st in by_node.values())
                and len({st.scl for _, st in by_node.values()}) == 1
                for by_node in states.values()
            )
        except grpc.RpcError as error:
            view = f"could not ask: {error}"
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return Criterion("six whole copies at rest", agree, f"after the clients stopped: {view}")


def judge_log_errors(ctx: Context, expected: tuple[str, ...]) -> list[Criterion]:
    """ERROR and Traceback lines in the storage nodes' logs other than the ones the fault must cause (judged:
    a rotted disk or a lost copy is reported as designed, never a traceback), and in the other processes'
    logs (reported only: e.g. the writer logs a stream that a node's SIGTERM tore down)."""
    nodes = set(ctx.nodes())
    every = ctx.cluster.log_errors()
    unexpected = ctx.cluster.log_errors(expected)
    storage = [line for line in unexpected if line.split(":", 1)[0] in nodes]
    others = [line for line in unexpected if line.split(":", 1)[0] not in nodes]
    return [
        Criterion(
            "storage nodes log only the expected errors",
            not storage,
            f"{len(every) - len(unexpected)} expected error lines (containing "
            f"{' or '.join(repr(e) for e in expected) or 'nothing'}), {len(storage)} others"
            + (": " + " | ".join(line[:200] for line in storage[:3]) if storage else ""),
        ),
        Criterion(
            "error lines of the other processes",
            None,
            f"{len(others)}" + (": " + " | ".join(line[:200] for line in others[:3]) if others else ""),
        ),
    ]


def read_tokens(ctx: Context) -> list[tuple[str, bytes]]:
    """Acknowledged tokens, newest first: the node that was up when they were written surely holds most."""
    return [(r.token, ctx.workload.encode(r.token)) for r in reversed(ops(ctx, "write", "ok"))][:ROT_NEEDLES_MAX]


def garbled_reads(ctx: Context) -> list[Any]:
    """Reads that returned bytes no write explains (undecodable: `<hex>`)."""
    return [r for r in ops(ctx, "read", "ok") if any(v is not None and v.startswith("<") for v in r.values)]


def rotten_served(ctx: Context) -> list[str]:
    """Reads that show rotten bytes were served. The page workload: values no write explains. The bank: a
    row no transfer explains, a torn read, a total that moved, a failed integrity_check (tools/chaos/bank.py),
    as a rotten record applied to a SQLite page would show."""
    if ctx.workload.kind == BANK:
        from sixfold.tools.chaos.bank import check_bank

        workload: Any = ctx.workload
        if workload.final is None:
            return ["the final state could not be read, so the rows were not checked"]
        check = check_bank(workload.records, workload.final, workload.initial, workload.origin)
        return check.phantom + check.torn_reads + check.wrong_total + check.bad_integrity
    return [r.describe() for r in garbled_reads(ctx)]


async def start_or_abandon(ctx: Context, node: str) -> bool:
    """Start a node whose disk was rotted; if it cannot start (it crashed on its own disk), say so and leave it
    down through the heal (it would crash again), so the rest of the run can still be judged."""
    offset = log_size(ctx, node)
    try:
        await ctx.do(ctx.nemesis.start, node)
    except ClusterError as error:
        first = str(error).splitlines()[0].split("; log:")[0]
        last = [line for line in log_since(ctx, node, offset) if line.strip()][-2:]
        ctx.data["start_error"] = f"{first}; its log ends: {' | '.join(last)}"
        ctx.nemesis.abandon(node, ctx.data["start_error"])
        ctx.log(f"{node} could not start on its rotted disk: {ctx.data['start_error']}")
        return False
    return True
