"""The control plane's state on disk: `<data-dir>/control_plane.json`, written atomically after every
change and loaded at start (rule 3 of storage.control_plane_server; the format is
storage/control_plane_state_file.py's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sixfold.storage.control_plane import ControlPlane

STATE_FILE_NAME = "control_plane.json"


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """Write `data` so that a crash leaves either the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_state(path: Path, heartbeat_timeout_ms: int, failure_timeout_ms: int, started_ms: float) -> ControlPlane:
    """The persisted state, or an empty one when the file does not exist yet."""
    if not path.exists():
        return ControlPlane(heartbeat_timeout_ms, failure_timeout_ms, started_ms)
    with open(path) as f:
        data = json.load(f)
    return ControlPlane.from_dict(data, heartbeat_timeout_ms, failure_timeout_ms, started_ms)
