"""The compute instances as the control plane sees them, watched through a chaos run: who is the writer,
at which generation, who is being promoted, and each instance's role and liveness
(storage.v1.ClusterService.ListComputeInstances, polled every `POLL_S`), kept as a timeline of changes;
and what one instance says of itself (compute.v1.InstanceService.GetInstanceStatus).

A thread of its own, so that the watch keeps its pace while the clients and the fault actions run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sixfold.storage.v1 import cluster_service_pb2 as cl_pb
from sixfold.tools.cluster import Cluster
from sixfold.tools.cluster_instances import InstanceCallError, list_instances, own_view

POLL_S = 0.05
LIST_TIMEOUT_S = 1.0
WRITER, READER = "writer", "reader"
_ROLES = {cl_pb.COMPUTE_ROLE_WRITER: WRITER, cl_pb.COMPUTE_ROLE_READER: READER}


@dataclass(frozen=True)
class View:
    """One answer of ListComputeInstances, from the first time it was seen."""

    at: float
    writer_id: str
    generation: int
    promoting_id: str
    roles: tuple[tuple[str, str, bool], ...]  # (instance id, role, alive), by id

    def role_of(self, instance_id: str) -> tuple[str, bool]:
        for name, role, alive in self.roles:
            if name == instance_id:
                return role, alive
        return "unknown", False

    def settled_writer(self) -> str:
        """The writer, when one is recorded and alive and no promotion runs ("" otherwise)."""
        if self.promoting_id or not self.writer_id:
            return ""
        return self.writer_id if self.role_of(self.writer_id) == (WRITER, True) else ""

    def key(self) -> tuple[str, int, str, tuple[tuple[str, str, bool], ...]]:
        return self.writer_id, self.generation, self.promoting_id, self.roles


class InstanceWatch:
    def __init__(self, control_plane: str, poll_s: float = POLL_S) -> None:
        self.control_plane = control_plane
        self.poll_s = poll_s
        self.views: list[View] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InstanceWatch:
        self._poll()
        self._thread = threading.Thread(target=self._run, name="instance-watch", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(LIST_TIMEOUT_S * 3)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()

    def _poll(self) -> None:
        try:
            reply = list_instances(self.control_plane, LIST_TIMEOUT_S)
        except InstanceCallError:
            self.failures += 1
            return
        view = View(
            time.monotonic(),
            reply.writer_id,
            reply.generation,
            reply.promoting_id,
            tuple(sorted((i.instance_id, _ROLES.get(i.role, "unknown"), i.alive) for i in reply.instances)),
        )
        with self._lock:
            if not self.views or self.views[-1].key() != view.key():
                self.views.append(view)

    def timeline(self) -> list[View]:
        with self._lock:
            return list(self.views)

    def latest(self) -> View | None:
        with self._lock:
            return self.views[-1] if self.views else None

    def writer_at(self, at: float) -> str:
        """The writer the control plane named at `at` ("" for none, or a promotion under way)."""
        writer = ""
        for view in self.timeline():
            if view.at > at:
                break
            writer = "" if view.promoting_id else view.writer_id
        return writer

    def wait(self, predicate: Callable[[View], bool], timeout_s: float) -> View | None:
        """The first view from now on for which `predicate` holds (None after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while True:
            view = self.latest()
            if view is not None and predicate(view):
                return view
            if time.monotonic() > deadline:
                return None
            time.sleep(self.poll_s / 2)

    def changes(self, origin: float) -> list[str]:
        """The writer's changes through the run, as lines."""
        lines = []
        last = None
        for view in self.timeline():
            now = (view.writer_id, view.generation, view.promoting_id)
            if now != last:
                what = f"promoting {view.promoting_id}" if view.promoting_id else f"writer {view.writer_id or '-'}"
                lines.append(f"{view.at - origin:.2f}s gen {view.generation} {what}")
                last = now
        return lines


def own_role(cluster: Cluster, name: str) -> str:
    """What the instance `name` says its role is (GetInstanceStatus): writer, reader, changing, unknown."""
    return own_view(cluster.record(name), True).role
