"""Checks of a whole chaos run beyond the history checkers: multi-page MTRs atomic, segments converged.

`check_atomicity` reads the workload's records (a torn two-page read or final read);
`check_convergence` asks the writer and every segment, once the run is healed,
whether the six segments of each PG agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import grpc

from sixfold.compute.v1 import volume_service_pb2 as vpb
from sixfold.compute.v1 import volume_service_pb2_grpc as vgrpc
from sixfold.storage.security import transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import storage_service_pb2 as pb
from sixfold.storage.v1 import storage_service_pb2_grpc as pb_grpc
from sixfold.tools.chaos.history import FAIL, INFO, OK, READ, WRITE
from sixfold.tools.chaos.scenario_base import Criterion
from sixfold.tools.chaos.workload import VOLUME, Workload

CONVERGENCE_TIMEOUT_S = 15.0

CONVERGENCE_NOTE = (
    "a segment that missed records while the writer restarted cannot get them from the new writer; "
    "it converges only through gossip repair between segments (storage/gossip.py), so a mismatch "
    "there is reported, not judged"
)


def check_atomicity(workload: Workload) -> Criterion:
    """Two-page MTRs are whole: every ok two-page read, and the final read, shows one token on both pages
    (the pair's pages are only ever written together)."""
    torn = []
    pair_reads = 0
    for r in workload.records:
        if r.kind == READ and r.outcome == OK and len(r.keys) == 2:
            pair_reads += 1
            if r.values[0] != r.values[1]:
                torn.append(f"read at t={r.invoked - workload.origin:.3f}: {dict(zip(r.keys, r.values))}")
    for a, b in workload.pairs:
        if workload.final_values and workload.final_values.get(a) != workload.final_values.get(b):
            torn.append(
                f"final read: page {a} = {workload.final_values.get(a)!r}, page {b} = {workload.final_values.get(b)!r}"
            )
    mtrs = [r for r in workload.records if r.kind == WRITE and len(r.keys) == 2]
    by_outcome = {o: sum(1 for r in mtrs if r.outcome == o) for o in (OK, FAIL, INFO)}
    detail = (
        f"{len(mtrs)} two-page MTRs across both PGs (ok {by_outcome[OK]}, fail {by_outcome[FAIL]}, "
        f"info {by_outcome[INFO]}); {pair_reads} two-page reads and the final read: {len(torn)} torn"
    )
    if torn:
        detail += ": " + "; ".join(torn[:5])
    return Criterion("MTRs atomic", not torn, detail)


@dataclass
class Convergence:
    converged: bool
    detail: str
    per_pg: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # pg -> node -> (scl, highest)


def segment_states(writer_address: str) -> dict[str, dict[str, tuple[int, int]]]:
    """For each PG of vol0 (as the writer lists them): node -> (SCL, highest LSN) from GetSegmentState."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    with transport.channel(writer_address, CHANNEL_OPTIONS) as channel:
        status = (
            vgrpc.VolumeServiceStub(channel)
            .GetVolumeStatus(vpb.GetVolumeStatusRequest(volume_id=VOLUME), timeout=5)
            .status
        )
    for pg in status.protection_groups:
        states: dict[str, tuple[int, int]] = {}
        for seg in pg.segments:
            with transport.channel(seg.address, CHANNEL_OPTIONS) as channel:
                try:
                    reply = pb_grpc.StorageServiceStub(channel).GetSegmentState(
                        pb.GetSegmentStateRequest(segment_id=seg.segment_id), timeout=3
                    )
                    states[seg.node_id] = (reply.state.scl, reply.state.highest_lsn)
                except grpc.RpcError:
                    states[seg.node_id] = (-1, -1)
        out[f"pg{pg.pg_index}"] = states
    return out


def check_convergence(writer_address: str, timeout_s: float = CONVERGENCE_TIMEOUT_S) -> Convergence:
    """Poll until the six segments of every PG agree on SCL and highest LSN (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    states: dict[str, dict[str, tuple[int, int]]] = {}
    while True:
        try:
            states = segment_states(writer_address)
        except grpc.RpcError as error:
            if time.monotonic() > deadline:
                return Convergence(False, f"could not ask the writer: {error}")
            time.sleep(0.5)
            continue
        agree = bool(states) and all(len(set(s.values())) == 1 for s in states.values())
        if agree or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    parts = []
    for pg, s in states.items():
        if len(set(s.values())) == 1:
            scl, highest = next(iter(s.values()))
            parts.append(f"{pg}: all {len(s)} at SCL {scl} (highest {highest})")
        else:
            parts.append(f"{pg}: " + ", ".join(f"{n} {scl}/{hi}" for n, (scl, hi) in sorted(s.items())))
    return Convergence(agree, "; ".join(parts), states)
