"""Integrity scenarios: bit rot, disk rot and a lost copy on one storage node.

byte-flip: a byte of a stored record flipped; never served, detected by its
CRC-32C. meta-rot: a stopped node's segment metadata claims a higher SCL than its
records hold; the claim is refuted, noticed, and the node whole again. tree-rot:
live LMDB pages overwritten with noise; detected, never served, rebuilt from peers.
drop-segment: a healthy copy dropped; the control plane creates it again.
"""

from __future__ import annotations

import random
import re
import time
from typing import Any

from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.tools.chaos.bank_workload import BANK
from sixfold.tools.chaos.disk_rot import META_TABLES
from sixfold.tools.chaos.integrity_probes import (
    WHOLE_WAIT_MAX_S,
    WHOLE_WAIT_S,
    judge_at_rest,
    judge_log_errors,
    judge_whole,
    log_since,
    log_size,
    pg_states,
    placed_on,
    read_tokens,
    rotten_served,
    start_or_abandon,
    wait_recreated,
    wait_whole,
)
from sixfold.tools.chaos.scenario_base import Context, Criterion, Scenario, goes_on, ops
from sixfold.tools.cluster import COMPUTE

META_DELTA = (300, 5000)  # SCL raised by this much (clipped so that no digit is added)
TREE_ROT_PAGES = (2, 16)  # 8..64 KiB of 4 KiB pages
# The ERROR lines a rotted disk must cause (storage/segment_load.py, storage/lmdb_env.py, and
# storage/store/lifecycle.py when the start-up walk of the tree fails); any other ERROR or Traceback
# line in a storage node's log fails these scenarios. A dropped copy causes none.
META_ROT_ERRORS = ("is lost: ",)  # "segment <id> is lost: <why>; its rows are deleted ..."
# Both say "the LMDB environment at <path> is corrupt (<why>); ...": lmdb_env.py when an operation meets
# the corruption ("disk: ..."), store/lifecycle.py when the start-up walk of the tree fails.
TREE_ROT_ERRORS = ("is corrupt (",)


async def _byte_flip(ctx: Context) -> None:
    workload = ctx.workload
    bank = workload.kind == BANK
    key = -1 if bank else ctx.rng.choice(workload.single_keys)  # the bank's rows: the page is found by reading
    node = ctx.rng.choice(ctx.nodes())
    ctx.data.update(victim=node, key=key)
    ctx.mark("fault")
    await ctx.do(ctx.nemesis.stop, node)
    # Newest acknowledged tokens (of the key) first: one of them is surely on the node.
    tokens = [r.token for r in reversed(ops(ctx, "write", "ok")) if bank or r.keys == (key,)]
    if not tokens:
        raise RuntimeError(f"no acknowledged write {'' if bank else f'to page {key} '}before the flip")
    flip = await ctx.do(ctx.nemesis.flip_byte, node, key, [(t, workload.encode(t)) for t in tokens[:200]])
    ctx.data["flip"] = flip
    await ctx.do(ctx.nemesis.start, node)
    await ctx.do(ctx.nemesis.wait_writer_connected, workload.target.address, 30.0, {node})
    if bank:  # every page of the database, read on the node itself: the rotten one must fail its check
        pages, failed = await ctx.do(ctx.nemesis.probe_database, node)
        lost = [f for f in failed if f[1] == "DATA_LOSS"] or failed  # the rotten page first, if refused as such
        code, details = (lost[0][1], f"page {lost[0][0]}: {lost[0][2]}") if lost else ("OK", "")
        details = f"{pages} pages of the database read, {len(failed)} refused; {details}"
    else:
        code, details = await ctx.do(ctx.nemesis.probe_page, node, key)
    ctx.data["probe"] = (code, details)
    ctx.log(f"direct read of {'the database' if bank else f'page {key}'} on {node}: {code} {details[:160]}")
    # The writer's buffer cache holds every hot page: restart it so its reads go to the segments again.
    stopped_at = time.monotonic()
    await ctx.do(ctx.nemesis.stop, COMPUTE)
    await ctx.do(ctx.nemesis.start, COMPUTE)
    ctx.resume_points.append(("writer restart (cold cache)", stopped_at))
    await ctx.sleep(max(3.0, ctx.timing.fault_s / 2))


def _judge_byte_flip(ctx: Context) -> list[Criterion]:
    flip = ctx.data["flip"]
    code, details = ctx.data["probe"]
    needle = "CRC-32C"
    writer_lines = [line for line in log_since(ctx, COMPUTE, 0) if needle in line]
    node_lines = [line for line in log_since(ctx, flip.node, 0) if needle in line]
    # Detected by whoever met it first: the direct read, the writer failing over, or the node itself (a scrub).
    detected = (code == "DATA_LOSS" and needle in details) or bool(writer_lines) or bool(node_lines)
    served = rotten_served(ctx)
    where = "a row of the transfers table" if flip.key < 0 else f"page {flip.key}"
    return [
        Criterion(
            "rotten record never served",
            not served,
            f"{where}, token {flip.token!r} on {flip.node}: {len(served)} reads showed rotten bytes"
            + (f" ({served[0][:160]})" if served else "")
            + (
                " (the bank's checks: no row no transfer explains, no torn read, no total moved, integrity ok)"
                if flip.key < 0
                else " (the linearizability checker also rejects any value no write explains)"
            ),
        ),
        Criterion(
            "bit rot detected",
            detected,
            f"direct ReadPage on {flip.node}: {code} ({details[:160]}); CRC-32C lines in the writer's log: "
            f"{len(writer_lines)}, in {flip.node}'s log: {len(node_lines)}",
        ),
    ]


async def _meta_rot(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    placed = placed_on(ctx, victim)
    ctx.rng.shuffle(placed)
    # One segment gets a forged copy (CRC fixed: only its records refute it), the other a rotten digit with the
    # CRC left as it was (one copy: the other copy is used; both: the segment is lost and created again).
    modes = ["forged", ctx.rng.choice(["one-copy", "both-copies"])]
    if len(placed) == 1:
        modes = [ctx.rng.choice(modes)]
    ctx.data["victim"] = victim
    ctx.mark("fault")
    ctx.resume_points.append((f"stop {victim}", ctx.marks["fault"]))
    await ctx.do(ctx.nemesis.stop, victim)
    ctx.data["log_offset"] = log_size(ctx, victim)
    rots = []
    for (_pg, segment_id), mode in zip(placed, modes):
        copies = await ctx.do(ctx.nemesis.stored_metadata, victim, segment_id)
        scl = min(c.scl for c in copies if c.scl is not None)
        room = 10 ** len(str(scl)) - 1 - scl  # the digit count stays: a digit rots, none is added
        delta = min(ctx.rng.randint(*META_DELTA), room)
        if delta < 1:
            ctx.notes.append(f"{segment_id}: SCL {scl} leaves no room to raise it without another digit; left alone")
            continue
        rots.append(
            await ctx.do(ctx.nemesis.rot_metadata, victim, segment_id, mode, delta, ctx.rng.choice(META_TABLES))
        )
    if not rots:
        raise RuntimeError(f"no segment metadata on {victim} could be rotted")
    ctx.data["rots"] = rots
    await ctx.sleep(ctx.rng.uniform(0.5, 1.5))  # the load goes on with five nodes
    # The writer stops before the victim returns: its peers' SCLs then stand still, so what the victim claims
    # first can be told from what gossip brings it; and the writer's buffer cache is cold when it returns.
    stopped_at = time.monotonic()
    await ctx.do(ctx.nemesis.stop, COMPUTE)
    ctx.resume_points.append(("writer restart (cold cache)", stopped_at))
    before = await ctx.do(pg_states, ctx)
    pg_of = {segment_id: pg for pg, segment_id in placed}
    ctx.data["peer_scl"] = {
        rot.segment_id: max(
            (st.scl for node, (_, st) in before[pg_of[rot.segment_id]].items() if node != victim and st is not None),
            default=0,
        )
        for rot in rots
    }
    started = await start_or_abandon(ctx, victim)
    ctx.mark("victim_back")
    if started:
        address = ctx.cluster.node_address(victim)
        first: dict[str, tuple[str, Any]] = {}
        for rot in rots:  # at once: before gossip (every 1 s) brings it anything
            first[rot.segment_id] = await ctx.do(ctx.nemesis.segment_state, address, rot.segment_id)
        ctx.data["first_state"] = first
        listing = await ctx.do(ctx.nemesis.list_segments, victim)
        ctx.data["lost_segments"] = list(listing.lost_segments)
        said = []
        for rot in rots:
            code, st = first[rot.segment_id]
            said.append(
                f"{rot.segment_id} "
                + (code if st is None else f"SCL {st.scl}")
                + f" (held {rot.held}, claimed {rot.claimed})"
            )
        ctx.log(f"{victim} back: {'; '.join(said)}; lost: {list(listing.lost_segments)}")
    await ctx.do(ctx.nemesis.start, COMPUTE)
    if started:
        whole = await ctx.do(wait_whole, ctx, victim)
        if whole is not None:
            ctx.mark("whole_again", whole)
    await ctx.sleep(max(2.0, ctx.timing.fault_s / 3))


META_EXPECTED = {  # what the node must say about each kind of rotten metadata (storage/segment_load.py)
    "one-copy": ("CRC-32C", "using the other copy"),
    "both-copies": ("is lost",),
    "forged": ("records prove",),
}


def _judge_meta_rot(ctx: Context) -> list[Criterion]:
    victim, rots = ctx.data["victim"], ctx.data.get("rots", [])
    first, peers = ctx.data.get("first_state", {}), ctx.data.get("peer_scl", {})
    lines = log_since(ctx, victim, ctx.data.get("log_offset", 0))
    served = rotten_served(ctx)
    claims, honest = [], True
    for rot in rots:
        code, st = first.get(rot.segment_id, ("not asked", None))
        startup = [
            int(m.group(1))
            for line in lines
            if (m := re.search(rf"segment {re.escape(rot.segment_id)}: scl=(\d+)", line))
        ]
        if startup and startup[0] > rot.held:
            honest = False
        head = (
            f"{rot.segment_id} ({rot.mode}: stored SCL {rot.held} raised to {rot.claimed}): SCL at start-up "
            f"{startup[0] if startup else 'not logged (not held)'}"
        )
        if st is None:
            claims.append(f"{head}; first GetSegmentState after the restart: {code} (not held)")
            continue
        refilled = st.records_repaired + st.pages_hydrated
        bound, by = (
            (rot.held, "what its records held")
            if not refilled
            else (peers.get(rot.segment_id, rot.held), "its peers' highest SCL (gossip had already brought records)")
        )
        ok = st.scl <= bound
        honest = honest and ok
        claims.append(
            f"{head}; first GetSegmentState after the restart: SCL {st.scl}, whole {st.whole}, "
            f"{refilled} records repaired; must not exceed {by}, {bound}"
        )
    noticed, said = True, []
    for rot in rots:
        phrases = META_EXPECTED[rot.mode]
        hits = [line for line in lines if rot.segment_id in line and all(p in line for p in phrases)]
        noticed = noticed and bool(hits)
        said.append(
            f"{rot.segment_id} ({rot.mode}, expects {' + '.join(repr(p) for p in phrases)}): "
            + (hits[0].split(" ", 3)[-1][:200] if hits else "nothing")
        )
    started = "start_error" not in ctx.data
    return [
        Criterion(
            "no SCL claimed above what was held",
            bool(rots) and started and honest,
            "; ".join(claims) if started else f"{victim} could not start: {ctx.data['start_error']}",
        ),
        Criterion(
            "metadata problem noticed", bool(rots) and noticed, f"{victim}'s log since its restart: " + "; ".join(said)
        ),
        judge_whole(ctx, "victim_back", f"{victim} restarted"),
        Criterion(
            "rotten metadata never served",
            not served,
            f"{len(served)} reads showed rotten bytes; lost segments reported by "
            f"{victim}: {ctx.data.get('lost_segments', '-')}",
        ),
        judge_at_rest(ctx),
    ] + judge_log_errors(ctx, META_ROT_ERRORS)


async def _tree_rot(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    pages = ctx.rng.randint(*TREE_ROT_PAGES)
    ctx.data["victim"] = victim
    ctx.mark("fault")
    ctx.resume_points.append((f"stop {victim}", ctx.marks["fault"]))
    await ctx.do(ctx.nemesis.stop, victim)
    ctx.data["log_offset"] = log_size(ctx, victim)
    needles = read_tokens(ctx)
    if not needles:
        raise RuntimeError("no acknowledged write before the tree rot")
    noise = random.Random(ctx.rng.getrandbits(64))
    ctx.data["rot"] = await ctx.do(ctx.nemesis.rot_tree, victim, needles, pages, noise)
    await ctx.sleep(ctx.rng.uniform(0.5, 1.5))  # the load goes on with five nodes
    started = await start_or_abandon(ctx, victim)
    ctx.mark("victim_back")
    if started:
        listing = await ctx.do(ctx.nemesis.list_segments, victim)
        ctx.data["listing"] = {
            "disk_condition": pb.DiskCondition.Name(listing.disk_condition),
            "disk_detail": listing.disk_detail[:200],
            "environments_replaced": listing.environments_replaced,
            "lost_segments": list(listing.lost_segments),
            "segments": {
                s.segment_id: f"SCL {s.scl}" + ("" if s.whole else " rebuilding" if s.rebuilding else " not whole")
                for s in listing.segments
            },
        }
        ctx.log(f"{victim} back: {ctx.data['listing']}")
        whole = await ctx.do(wait_whole, ctx, victim)
        if whole is not None:
            ctx.mark("whole_again", whole)
    await ctx.sleep(max(2.0, ctx.timing.fault_s / 3))


def _judge_tree_rot(ctx: Context) -> list[Criterion]:
    victim, rot = ctx.data["victim"], ctx.data["rot"]
    lines = log_since(ctx, victim, ctx.data.get("log_offset", 0))
    listing = ctx.data.get("listing", {})
    corrupt = [line for line in lines if "is corrupt" in line]
    failed = listing.get("disk_condition") == "DISK_CONDITION_FAILED"
    replaced = listing.get("environments_replaced", 0)
    started = "start_error" not in ctx.data
    what = (
        f"{rot.bytes_overwritten} bytes ({rot.pages} pages) of {victim}'s data.mdb overwritten around the live "
        f"page holding {rot.token!r}; live pages hit per table: {rot.tables_hit}"
        + ("" if rot.targeted else " (the live pages could not be told apart: the first copy was hit)")
    )
    garbled = rotten_served(ctx)
    return (
        goes_on(ctx, "fault", "heal_start")
        + [
            Criterion(
                "node survives its rotten tree",
                started,
                f"{victim} started again on its rotten disk"
                if started
                else f"{victim} could not start on its rotten disk: {ctx.data['start_error']}",
            ),
            Criterion(
                "rotten tree detected",
                failed or replaced >= 1 or bool(corrupt),
                f"{what}; {victim} reports disk {listing.get('disk_condition', '-')}, "
                f"{replaced} environment(s) replaced, lost segments {listing.get('lost_segments', '-')}; "
                f"'is corrupt' lines in its log: {len(corrupt)}"
                + (f" ({corrupt[0].split(' ', 3)[-1][:160]})" if corrupt else ""),
            ),
            Criterion(
                "rotten tree never served",
                not garbled,
                f"{len(garbled)} reads showed rotten bytes" + (f" ({garbled[0][:160]})" if garbled else ""),
            ),
            judge_whole(ctx, "victim_back", f"{victim} restarted on a fresh environment"),
            judge_at_rest(ctx),
        ]
        + judge_log_errors(ctx, TREE_ROT_ERRORS)
    )


async def _drop_segment(ctx: Context) -> None:
    victim = ctx.rng.choice(ctx.base_nodes())
    pg, segment_id = ctx.rng.choice(placed_on(ctx, victim))
    ctx.data.update(victim=victim, segment_id=segment_id, pg=pg)
    ctx.mark("fault")
    ctx.data["records_removed"] = await ctx.do(ctx.nemesis.drop_segment, victim, segment_id)
    ctx.resume_points.append((f"drop {segment_id} on {victim}", ctx.marks["fault"]))
    seen = await ctx.do(wait_recreated, ctx, victim, segment_id, WHOLE_WAIT_MAX_S)
    if seen is not None:
        ctx.mark("recreated", seen)
        whole = await ctx.do(wait_whole, ctx, victim)
        if whole is not None:
            ctx.mark("whole_again", whole)
    await ctx.sleep(max(2.0, ctx.timing.fault_s - (time.monotonic() - ctx.marks["fault"])))


def _judge_drop_segment(ctx: Context) -> list[Criterion]:
    victim, segment_id = ctx.data["victim"], ctx.data["segment_id"]
    t0, recreated = ctx.marks["fault"], ctx.marks.get("recreated")
    return (
        goes_on(ctx, "fault", "heal_start")
        + [
            Criterion(
                "the control plane creates the copy again",
                recreated is not None,
                f"DropSegment {segment_id} on {victim} removed {ctx.data.get('records_removed')} records; "
                + (
                    f"held again {recreated - t0:.1f} s later ({ctx.data.get('recreated_as')})"
                    if recreated
                    else f"not held again within {WHOLE_WAIT_MAX_S:g} s"
                ),
            ),
            judge_whole(ctx, "fault", f"the drop of {segment_id}"),
            judge_at_rest(ctx),
        ]
        + judge_log_errors(ctx, ())
    )


# byte-flip and tree-rot find what they rot by its bytes in data.mdb: they run on a plaintext cluster (no
# encryption at rest, `sixfold up --insecure`). On an encrypting node a rotten byte fails the AES-GCM check
# instead of the CRC-32C (tests/test_encryption*.py); meta-rot edits segment metadata, which is not sealed.
PLAINTEXT_ON_DISK = {"insecure": True}

FAMILY = (
    Scenario(
        "byte-flip",
        "flip a byte of a stored record of a hot page in a stopped node's LMDB file",
        "never served; detected (CRC-32C)",
        _byte_flip,
        _judge_byte_flip,
        cluster_options=PLAINTEXT_ON_DISK,
    ),
    Scenario(
        "meta-rot",
        "raise the SCL in a stopped node's segment metadata (a rotten digit, a forged CRC), restart it and the writer",
        f"no SCL claimed above what the records hold; noticed; whole again within {WHOLE_WAIT_S:g} s; nothing lost",
        _meta_rot,
        _judge_meta_rot,
    ),
    Scenario(
        "tree-rot",
        f"overwrite {TREE_ROT_PAGES[0]}..{TREE_ROT_PAGES[1]} live LMDB pages of a stopped node "
        "with random bytes, restart it",
        f"detected, never served; rebuilt from peers, whole within {WHOLE_WAIT_S:g} s; writes go on; nothing lost",
        _tree_rot,
        _judge_tree_rot,
        cluster_options=PLAINTEXT_ON_DISK,
    ),
    Scenario(
        "drop-segment",
        "DropSegment on a healthy member of a PG while clients write",
        f"the control plane creates it again, whole within {WHOLE_WAIT_S:g} s; reads and writes go on; nothing lost",
        _drop_segment,
        _judge_drop_segment,
    ),
)
