"""Placement of a new protection group (PG): which six storage nodes hold its segments.

Pure: takes values, returns values. No gRPC, LMDB, clock or randomness.

Rules
1. A PG has six segments on six distinct nodes, exactly two in each of three
   distinct AZs (`AZ_COUNT` x `NODES_PER_AZ` = `PG_SEGMENT_COUNT`, from
   `storage.quorum`, which says why: losing a whole AZ leaves a write quorum,
   losing an AZ and one more node a read quorum).
2. Only healthy nodes are eligible, and never a node in `exclude`.
3. "Spreading load" means, precisely: among every choice satisfying rules 1-2,
   take the one with the smallest *total* segment count over its six nodes;
   among choices with equal total, take the one whose node ids, sorted, form
   the lexicographically smallest tuple. That key identifies exactly one choice,
   so the result is deterministic and a brute-force oracle can check it.
4. Within one AZ, the two nodes with the smallest (segment_count, node_id)
   realise rule 3 for that AZ: a pair's total is minimal only if it holds the
   lowest count and the next lowest, and among those, the smallest ids sort
   first element by element. The AZ totals are independent, so the global
   minimum is the best triple of AZs, each with its best pair; when more than
   three AZs qualify, the triples are compared by the same key.
5. When no choice exists, `Unavailable` says which AZs fall short and why.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sixfold.storage.errors import Unavailable
from sixfold.storage.quorum import AZ_COUNT, NODES_PER_AZ
from sixfold.storage.quorum import COPIES as PG_SEGMENT_COUNT

# The number of AZs whose triples are compared (rule 4); far above any real fleet.
AZ_COUNT_MAX = 64


@dataclass(frozen=True)
class Candidate:
    """A storage node as placement sees it."""

    node_id: str
    az: str
    segment_count: int
    healthy: bool = True


def placement_key(chosen: Sequence[Candidate]) -> tuple[int, tuple[str, ...]]:
    """The order rule 3 minimises: total segment count, then sorted node ids."""
    return sum(c.segment_count for c in chosen), tuple(sorted(c.node_id for c in chosen))


def choose_pg_nodes(candidates: Iterable[Candidate], exclude: Iterable[str] = ()) -> list[Candidate]:
    """Choose the six nodes for a new PG (rules 1-4), sorted by (az, node_id).

    Raises `Unavailable` when fewer than three AZs have two eligible nodes.
    """
    everyone = list(candidates)
    _check_distinct(everyone)
    excluded = frozenset(exclude)
    eligible = [c for c in everyone if c.healthy and c.node_id not in excluded]
    best_pairs = _best_pair_per_az(eligible)
    if len(best_pairs) < AZ_COUNT:
        raise Unavailable(_shortfall_sentence(everyone, eligible, excluded))
    if len(best_pairs) > AZ_COUNT_MAX:
        raise Unavailable(f"cannot place a PG: {len(best_pairs)} AZs exceed the limit of {AZ_COUNT_MAX}")
    triples = itertools.combinations(sorted(best_pairs), AZ_COUNT)
    best = min(
        (tuple(c for az in triple for c in best_pairs[az]) for triple in triples),
        key=placement_key,
    )
    chosen = sorted(best, key=lambda c: (c.az, c.node_id))
    _assert_valid(chosen)
    return chosen


def _check_distinct(candidates: Sequence[Candidate]) -> None:
    node_ids = [c.node_id for c in candidates]
    assert len(node_ids) == len(set(node_ids)), f"duplicate node ids among candidates: {node_ids}"


def _best_pair_per_az(eligible: Sequence[Candidate]) -> dict[str, tuple[Candidate, ...]]:
    by_az: dict[str, list[Candidate]] = {}
    for c in eligible:
        by_az.setdefault(c.az, []).append(c)
    return {
        az: tuple(sorted(nodes, key=lambda c: (c.segment_count, c.node_id))[:NODES_PER_AZ])
        for az, nodes in by_az.items()
        if len(nodes) >= NODES_PER_AZ
    }


def _assert_valid(chosen: Sequence[Candidate]) -> None:
    assert len(chosen) == PG_SEGMENT_COUNT, chosen
    assert len({c.node_id for c in chosen}) == PG_SEGMENT_COUNT, chosen
    per_az: dict[str, int] = {}
    for c in chosen:
        assert c.healthy, c
        per_az[c.az] = per_az.get(c.az, 0) + 1
    assert len(per_az) == AZ_COUNT and all(n == NODES_PER_AZ for n in per_az.values()), chosen


def _shortfall_sentence(everyone: Sequence[Candidate], eligible: Sequence[Candidate], excluded: frozenset[str]) -> str:
    need = f"a PG needs {NODES_PER_AZ} healthy nodes per AZ in {AZ_COUNT} AZs"
    if not everyone:
        return f"cannot place a PG: no storage nodes are registered; {need}"
    eligible_count: dict[str, int] = dict.fromkeys(sorted({c.az for c in everyone}), 0)
    for c in eligible:
        eligible_count[c.az] += 1
    short = [f"AZ {az} has {_node_phrase(n, excluded)}" for az, n in eligible_count.items() if n < NODES_PER_AZ]
    qualifying = [az for az, n in eligible_count.items() if n >= NODES_PER_AZ]
    missing = AZ_COUNT - len(eligible_count)
    if missing > 0:
        known = ", ".join(eligible_count)
        short.append(
            f"only {len(eligible_count)} AZ{'s' if len(eligible_count) != 1 else ''} ({known}) "
            f"{'have' if len(eligible_count) != 1 else 'has'} any registered node"
        )
    qualifying_text = ", ".join(qualifying) if qualifying else "none"
    return f"cannot place a PG: {'; '.join(short)}; {need} (AZs that qualify: {qualifying_text})"


def _node_phrase(count: int, excluded: frozenset[str]) -> str:
    kind = "healthy node" if not excluded else "healthy, non-excluded node"
    if count == 0:
        return f"no {kind}"
    return f"only {count} {kind}"
