"""The key service's master keys: one JSON file, mode 0600, kept outside every data directory
(`sixfold up` puts it in `<state-dir>/kms/`, away from `<state-dir>/data/`).

Rules:
1. The file holds every master key version ever made (hex) and which one is current. A data key is
   wrapped under the current one; a wrapped key names the master key that wrapped it
   (envelope.py rule 5), so older versions still unwrap what they wrapped.
2. The file is written whole and atomically (temporary file, fsync, rename, fsync of the directory) with
   mode 0600 from the start; a file readable by others, unparsable, or with a key of the wrong length is
   refused with a sentence, never repaired or replaced (a new master key would orphan every volume).
3. `rotate` makes a new current version; nothing is ever removed.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from sixfold.storage.errors import InvalidRequest
from sixfold.storage.security import envelope

FILE_MODE = 0o600
MASTER_KEYS_MAX = 10_000
FILE_BYTES_MAX = 4 << 20


class MasterKeyFileError(InvalidRequest):
    """The master key file is missing, unreadable, open to others or malformed (rule 2)."""

    status_code_name = "FAILED_PRECONDITION"


class MasterKeys:
    """Rules 1-3 over one file."""

    def __init__(self, path: str | os.PathLike[str], keys: dict[str, bytes], current: str) -> None:
        self.path = Path(path)
        self._keys = keys
        self.current_id = current

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> MasterKeys:
        """A new file with one master key; refused if the file exists (rule 2)."""
        target = Path(path)
        if target.exists():
            raise MasterKeyFileError(f"{target} exists already; a master key file is never replaced")
        key = envelope.new_master_key()
        keys = cls(target, {envelope.master_key_id(key): key}, envelope.master_key_id(key))
        keys._write()
        return keys

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MasterKeys:
        target = Path(path)
        try:
            info = target.stat()
        except FileNotFoundError:
            raise MasterKeyFileError(f"there is no master key file at {target}") from None
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise MasterKeyFileError(
                f"{target} is readable or writable by others (mode {stat.S_IMODE(info.st_mode):o}); "
                f"chmod 600 it before the key service uses it"
            )
        if info.st_size > FILE_BYTES_MAX:
            raise MasterKeyFileError(f"{target} is {info.st_size} bytes; a master key file is at most {FILE_BYTES_MAX}")
        try:
            data = json.loads(target.read_text())
            current = data["current"]
            keys = {str(k): bytes.fromhex(v) for k, v in data["keys"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise MasterKeyFileError(f"{target} is not a master key file ({type(error).__name__}: {error})") from None
        for key_id, key in keys.items():
            if len(key) != envelope.KEY_BYTES or envelope.master_key_id(key) != key_id:
                raise MasterKeyFileError(f"{target}: master key {key_id[:16]!r} is damaged (its id does not match)")
        if current not in keys or len(keys) > MASTER_KEYS_MAX:
            raise MasterKeyFileError(f"{target} names no current master key among its {len(keys)} keys")
        return cls(target, keys, current)

    def current(self) -> bytes:
        return self._keys[self.current_id]

    def by_id(self, key_id: str) -> bytes:
        key = self._keys.get(key_id)
        if key is None:
            raise envelope.WrongKey(
                f"the wrapped key was wrapped by master key {key_id[:16]}, which this key service does not hold"
            )
        return key

    def __len__(self) -> int:
        return len(self._keys)

    def rotate(self) -> str:
        """Rule 3: a new current master key version; its id."""
        if len(self._keys) >= MASTER_KEYS_MAX:
            raise MasterKeyFileError(f"the key service holds {MASTER_KEYS_MAX} master keys already")
        key = envelope.new_master_key()
        key_id = envelope.master_key_id(key)
        previous = self.current_id
        self._keys[key_id] = key
        self.current_id = key_id
        try:
            self._write()
        except OSError:
            del self._keys[key_id]
            self.current_id = previous
            raise
        return key_id

    def _write(self) -> None:
        """Rule 2: whole, atomic, 0600 from the first byte."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        body = json.dumps({"current": self.current_id, "keys": {k: v.hex() for k, v in self._keys.items()}})
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.unlink(missing_ok=True)  # a stale one may have a looser mode; O_EXCL makes a new one 0600
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            os.write(fd, body.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
