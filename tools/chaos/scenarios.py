"""The chaos scenarios by name: what each one breaks, and what must hold.

Each family of faults has its own module, which defines its scenarios (`FAMILY`):

- `scenarios_crash`: storage nodes SIGKILLed, paused or restarted (kill-one ... rolling-restart);
- `scenarios_writer`: the writer killed mid-MTR, and a second writer that fences it;
- `scenarios_network`: a slow node, a partitioned AZ;
- `scenarios_integrity`: bit rot, disk rot and a lost copy;
- `scenarios_membership`: a node lost for good and its replacement;
- `scenarios_time_travel`: clones and backtracks of vol0 while nodes fail (judged by LSN);
- `scenarios_failover`: a cluster with read replicas, the writer killed or paused and a reader promoted.

What a scenario is and what it sees of its run: `scenario_base`. `ORDER` is the order in which
`sixfold chaos list` shows them and `sixfold chaos all` runs them.
"""

from __future__ import annotations

from sixfold.tools.chaos import (
    scenarios_crash,
    scenarios_failover,
    scenarios_integrity,
    scenarios_membership,
    scenarios_network,
    scenarios_time_travel,
    scenarios_writer,
)
from sixfold.tools.chaos.scenario_base import Context, Criterion, Scenario, Timing, goes_on, ops, percentile
from sixfold.tools.chaos.scenarios_crash import quorum_possible_again

ORDER = (
    "kill-one",
    "kill-az",
    "kill-az-plus-one",
    "kill-four",
    "pause-two",
    "writer-kill",
    "old-writer",
    "byte-flip",
    "slow-node",
    "partition-az",
    "rolling-restart",
    "meta-rot",
    "tree-rot",
    "drop-segment",
    "replace",
    "replace-rollback",
    "replace-two",
    "clone-az-down",
    "clone-kill",
    "backtrack-node-stopped",
    "replace-clone",
    "writer-failover",
    "split-brain",
)

_BY_NAME = {
    s.name: s
    for family in (
        scenarios_crash.FAMILY,
        scenarios_writer.FAMILY,
        scenarios_network.FAMILY,
        scenarios_integrity.FAMILY,
        scenarios_membership.FAMILY,
        scenarios_time_travel.FAMILY,
        scenarios_failover.FAMILY,
    )
    for s in family
}
assert sorted(_BY_NAME) == sorted(ORDER), "every scenario has its place in ORDER, and only once"

SCENARIOS: dict[str, Scenario] = {name: _BY_NAME[name] for name in ORDER}


def resolve(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}") from None


__all__ = [
    "ORDER",
    "SCENARIOS",
    "Context",
    "Criterion",
    "Scenario",
    "Timing",
    "goes_on",
    "ops",
    "percentile",
    "quorum_possible_again",
    "resolve",
]
