"""The control plane's node registry: registration, heartbeats, health, failure and segment counts
(rules 1-4 and 10 of `storage.control_plane`, and the heartbeat half of rule 14).

Pure: the caller passes the time (`now_ms`, milliseconds on any monotonic clock).
`storage.control_plane.ControlPlane` builds on this class and adds the volumes placed on the nodes.
"""

from __future__ import annotations

from sixfold.storage.control_plane_limits import (
    FAILURE_TIMEOUT_MS_DEFAULT,
    HEARTBEAT_TIMEOUT_MS_DEFAULT,
    UnknownNode,
    check_node_room,
    validate_address,
    validate_node_fields,
)
from sixfold.storage.control_plane_values import Node, NodeView
from sixfold.storage.copies import CopyWatch, NodeReport
from sixfold.storage.errors import InvalidRequest


class NodeRegistry:
    """The storage nodes the control plane knows of (see the rules of storage.control_plane)."""

    def __init__(
        self,
        heartbeat_timeout_ms: int = HEARTBEAT_TIMEOUT_MS_DEFAULT,
        failure_timeout_ms: int = FAILURE_TIMEOUT_MS_DEFAULT,
        started_ms: float = 0.0,
    ) -> None:
        assert heartbeat_timeout_ms > 0, heartbeat_timeout_ms
        assert failure_timeout_ms >= heartbeat_timeout_ms, (failure_timeout_ms, heartbeat_timeout_ms)
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.failure_timeout_ms = failure_timeout_ms
        self.started_ms = started_ms
        self._nodes: dict[str, Node] = {}
        self._segment_counts: dict[str, int] = {}
        self.copies = CopyWatch()  # rule 14 (memory only, like heartbeat times)

    def register_node(self, node_id: str, az: str, address: str, now_ms: float) -> NodeView:
        """Rule 1. Returns the node as now registered."""
        validate_node_fields(node_id, az, address)
        node = self._nodes.get(node_id)
        if node is None:
            check_node_room(node_id, len(self._nodes))
            node = self._nodes[node_id] = Node(node_id, az, address)
        elif node.az != az and self.segment_count(node_id) > 0:
            raise InvalidRequest(
                f"node {node_id} holds {self.segment_count(node_id)} segments in AZ {node.az}; "
                f"it cannot re-register in AZ {az}: use a new node id"
            )
        node.az = az
        node.address = address
        node.last_heartbeat_ms = now_ms
        return self._view(node, now_ms)

    def heartbeat(
        self, node_id: str, address: str, reported_segment_count: int, now_ms: float, report: NodeReport | None = None
    ) -> bool:
        """Rules 3 and 14. Returns True when the heartbeat changed persistent state (a new address)."""
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} is not registered; register first")
        changed = False
        if address and address != node.address:
            validate_address(node_id, address)
            node.address = address
            changed = True
        node.last_heartbeat_ms = now_ms
        node.reported_segment_count = reported_segment_count
        if report is not None:
            self.copies.note_report(node_id, report, self.placed_on(node_id), now_ms)
        return changed

    def node(self, node_id: str, now_ms: float) -> NodeView:
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"node {node_id} is not registered; register first")
        return self._view(node, now_ms)

    def nodes(self, now_ms: float) -> list[NodeView]:
        return [self._view(self._nodes[node_id], now_ms) for node_id in sorted(self._nodes)]

    def is_healthy(self, node_id: str, now_ms: float) -> bool:
        """Rule 2."""
        node = self._nodes[node_id]
        if node.last_heartbeat_ms is None:
            return False
        return now_ms - node.last_heartbeat_ms <= self.heartbeat_timeout_ms

    def is_failed(self, node_id: str, now_ms: float) -> bool:
        """Rule 10."""
        node = self._nodes[node_id]
        last = node.last_heartbeat_ms if node.last_heartbeat_ms is not None else self.started_ms
        return now_ms - last > self.failure_timeout_ms

    def segment_count(self, node_id: str) -> int:
        """Rule 4: segments placed on the node by this control plane."""
        return self._segment_counts.get(node_id, 0)

    def _view(self, node: Node, now_ms: float) -> NodeView:
        age_ms = 0 if node.last_heartbeat_ms is None else max(0, int(now_ms - node.last_heartbeat_ms))
        return NodeView(
            node_id=node.node_id,
            az=node.az,
            address=node.address,
            healthy=self.is_healthy(node.node_id, now_ms),
            last_heartbeat_age_ms=age_ms,
            segment_count=self.segment_count(node.node_id),
            reported_segment_count=node.reported_segment_count,
            copies=self.copies.of(node.node_id, self.placed_on(node.node_id), now_ms),
        )

    def _count(self, node_id: str, delta: int) -> None:
        self._segment_counts[node_id] = self._segment_counts.get(node_id, 0) + delta
        assert self._segment_counts[node_id] >= 0, node_id

    def placed_on(self, node_id: str) -> set[str]:
        """Every segment placed on the node (rule 4). The registry alone places none: the control plane
        overrides this with its volumes' placements."""
        return set()
