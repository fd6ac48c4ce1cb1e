"""A storage node's LMDB environment walked in a child process before the node opens it.

Some corrupt pages do not raise an LMDB error: they trip an assertion inside LMDB's C code, which aborts
the process (SIGABRT), so a node that walked its own tree would die at every start and never rebuild.
The node runs this walk in a child first (`check_in_child`): if the child dies or meets an error, the
environment is failed before the node touches it, and the metadata copies the child managed to read
are what the node salvages (each still CRC-checked by the node: storage/segment_load.py).

    python -m sixfold.storage.tree_check PATH  # prints a JSON line per metadata copy, then OK; exit 3: an LMDB error
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import lmdb

from sixfold.storage.lmdb_env import MAX_DBS, TABLES
from sixfold.storage.segment_load import META_TABLES

CHECK_TIMEOUT_S = 600.0  # a walk of every key; a node with hundreds of GiB takes minutes
OK_LINE = "OK"
LMDB_ERROR_EXIT = 3


@dataclass
class TreeCheck:
    ok: bool
    problem: str = ""  # why not
    metadata: list[tuple[bytes, bytes, bytes]] = field(default_factory=list)  # (table, key, value) read


def check_in_child(path: str, timeout_s: float = CHECK_TIMEOUT_S) -> TreeCheck:
    """Walk the environment at `path` in a child process (nothing to check if it holds no data file)."""
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return TreeCheck(True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "sixfold.storage.tree_check", path],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "PYTHONFAULTHANDLER": ""},
        )
    except subprocess.TimeoutExpired:
        return TreeCheck(False, f"walking the tree took more than {timeout_s:.0f} s")
    metadata = []
    lines = done.stdout.splitlines()
    for line in lines:
        if line.startswith("["):
            table, key, value = json.loads(line)
            metadata.append((table.encode(), bytes.fromhex(key), bytes.fromhex(value)))
    if done.returncode == 0 and lines and lines[-1] == OK_LINE:
        return TreeCheck(True, metadata=metadata)
    if done.returncode < 0:
        problem = f"walking the tree killed the walker with signal {-done.returncode} ({_last(done.stderr)})"
    else:
        problem = f"walking the tree failed: {_last(done.stderr) or f'exit code {done.returncode}'}"
    return TreeCheck(False, problem, metadata)


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def walk(path: str) -> None:
    env = lmdb.open(path, readonly=True, lock=False, max_dbs=MAX_DBS, readahead=False)
    try:
        for table in (*META_TABLES, *(t for t in TABLES if t not in META_TABLES)):
            try:
                db = env.open_db(table, create=False)
            except lmdb.NotFoundError:
                continue
            with env.begin(db=db) as txn:
                if table in META_TABLES:
                    for key, value in txn.cursor():
                        print(json.dumps([table.decode(), bytes(key).hex(), bytes(value).hex()]), flush=True)
                else:
                    for _ in txn.cursor().iternext(keys=True, values=False):
                        pass
        print(OK_LINE, flush=True)
    finally:
        env.close()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m sixfold.storage.tree_check PATH", file=sys.stderr)
        return 2
    try:
        walk(argv[0])
    except lmdb.Error as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return LMDB_ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
