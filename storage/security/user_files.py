"""The files behind a cluster's users and tokens (issue 16, item 3): the token signing key, its verify key,
the user registry and the admin token a client uses by default.

An adapter: files only (the clock is the caller's `now`). Layout of a cluster's state dir:
- `tokens/signing.key` (mode 0600, the directory 0700): the Ed25519 seed, hex. Only the control plane reads
  it (`--token-signing-key`), to issue tokens; it lives in no process's data dir.
- `tokens/verify.pub`: the verify key, hex (not secret). Compute instances read it (`--token-verify-key`).
- `admin.token` (mode 0600): a token of the user `admin`, which `sixfold up` creates (and the launcher issues
  again a week before it ends, `renew_admin_token`); the CLI and every client made through transport.py
  send it unless `SIXFOLD_TOKEN` names another.
- `<control plane data dir>/users.json` (mode 0600): the user registry (users.py), kept by the control plane.

Rules:
1. A secret is written to a temporary file of mode 0600 in its directory, synced, then renamed over the
   old one: it is never readable by others, not even for a moment, and never half written.
2. A file that does not parse stops its reader with a sentence naming it (never an empty registry or no
   key, which would refuse everyone or, worse, be read as "no checks").
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from sixfold.storage.errors import StorageError
from sixfold.storage.security import tokens
from sixfold.storage.security.tokens import Role
from sixfold.storage.security.users import Users

TOKENS_SUBDIR = "tokens"
SIGNING_KEY_FILE = "signing.key"
VERIFY_KEY_FILE = "verify.pub"
USERS_FILE = "users.json"
ADMIN_TOKEN_FILE = "admin.token"
TOKEN_ENV = "SIXFOLD_TOKEN"
ADMIN_USER = "admin"
ADMIN_TOKEN_TTL_S = tokens.TTL_S_MAX  # `sixfold up` issues the admin token for the longest a token lives
SECRET_MODE = 0o600
SECRET_DIR_MODE = 0o700


class UserFileError(Exception):
    """A key, registry or token file is missing or does not parse (rule 2)."""


def write_secret(path: Path, data: bytes, mode: int = SECRET_MODE) -> None:
    """Rule 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def tokens_dir(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / TOKENS_SUBDIR


def admin_token_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / ADMIN_TOKEN_FILE


def create_keys(directory: Path) -> bytes:
    """A new signing key in `directory` (0700) with its verify key beside it; the signing key."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, SECRET_DIR_MODE)
    signing_key = tokens.new_signing_key()
    write_secret(directory / SIGNING_KEY_FILE, signing_key.hex().encode() + b"\n")
    write_secret(directory / VERIFY_KEY_FILE, tokens.verify_key_of(signing_key).hex().encode() + b"\n", 0o644)
    return signing_key


def _load_key(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        text = Path(path).read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError) as error:
        raise UserFileError(f"cannot read the token {what} key {path}: {error}") from None
    if len(key) != tokens.KEY_BYTES:
        raise UserFileError(f"the token {what} key {path} is not {tokens.KEY_BYTES} bytes in hex")
    return key


def load_signing_key(path: str | os.PathLike[str]) -> bytes:
    return _load_key(path, "signing")


def load_verify_key(path: str | os.PathLike[str]) -> bytes:
    return _load_key(path, "verify")


def load_users(path: str | os.PathLike[str]) -> Users | None:
    """The registry in `path`; None when there is no such file (rule 2: one that does not parse raises)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise UserFileError(f"cannot read the user registry {path}: {error}") from None
    try:
        return Users.from_dict(json.loads(text))
    except (ValueError, StorageError) as error:
        shown = getattr(error, "message", str(error))
        raise UserFileError(f"the user registry {path} does not parse: {shown}") from None


def save_users(path: str | os.PathLike[str], users: Users) -> None:
    write_secret(Path(path), (json.dumps(users.to_dict(), indent=1, sort_keys=True) + "\n").encode())


def bootstrap(state_dir: Path, users_path: Path, now: float) -> tuple[Path, Path]:
    """A new secure cluster's signing key, its registry with the user `admin` and the admin token file;
    (signing key path, verify key path)."""
    directory = tokens_dir(state_dir)
    signing_key = create_keys(directory)
    users = Users()
    admin = users.create(ADMIN_USER, Role.ADMIN, now)
    save_users(users_path, users)
    token = tokens.issue(signing_key, admin, Role.ADMIN, now, ADMIN_TOKEN_TTL_S)
    write_secret(admin_token_path(state_dir), token.encode() + b"\n")
    return directory / SIGNING_KEY_FILE, directory / VERIFY_KEY_FILE


def client_token(state_dir: str | os.PathLike[str] | None) -> str | None:
    """The token a client of the cluster in `state_dir` sends: `SIXFOLD_TOKEN`, else the admin token file,
    else None (its calls are then refused UNAUTHENTICATED, saying a token is missing)."""
    from_env = os.environ.get(TOKEN_ENV, "").strip()
    if from_env:
        return from_env
    if state_dir is None:
        return None
    try:
        return admin_token_path(state_dir).read_text().strip() or None
    except OSError:
        return None


RENEW_BEFORE_S = 7 * 86400  # `renew_admin_token`: an admin token this close to its end is issued again


def token_expiry(token: str) -> int | None:
    """When a token says it expires, unverified (None if it does not parse): for the holder's own
    bookkeeping only, never to trust a token."""
    try:
        payload = token.split(".")[1]
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return int(fields["exp"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def renew_admin_token(state_dir: Path, users_path: Path, now: float) -> bool:
    """Issue the admin token file again when it ends within `RENEW_BEFORE_S` (a cluster outlives the 30
    days a token may live), from the signing key and the user `admin` of the registry; False (nothing
    done) when it is not due, or a file is missing (the user `admin` deleted: an operator's choice)."""
    path = admin_token_path(state_dir)
    try:
        expires_at = token_expiry(path.read_text().strip())
    except OSError:
        return False
    if expires_at is not None and expires_at - now > RENEW_BEFORE_S:
        return False
    try:
        signing_key = load_signing_key(tokens_dir(state_dir) / SIGNING_KEY_FILE)
        users = load_users(users_path)
    except UserFileError:
        return False
    admin = users.get(ADMIN_USER) if users is not None else None
    if admin is None or admin.role is not Role.ADMIN:
        return False
    token = tokens.issue(signing_key, admin, Role.ADMIN, now, ADMIN_TOKEN_TTL_S)
    write_secret(path, token.encode() + b"\n")
    return True
