"""Encryption at rest, envelope style: a data key per volume seals records and pages; a master key
(the key service's) wraps the data key, which is stored only wrapped.

Pure except the cipher (the `cryptography` package, AES-256-GCM) and its random nonces: no clock, no
file. The key service keeps the master key; the storage node keeps wrapped keys and sealed bytes.

Rules:
1. A data key or master key is `KEY_BYTES` (32) random bytes: AES-256-GCM.
2. Sealed bytes: `SEAL_VERSION` (1 byte) | key version (4 bytes, big-endian) | nonce (12 random bytes)
   | ciphertext | tag (16 bytes); `SEAL_OVERHEAD_BYTES` more than the plaintext. The GCM associated
   data is the version and key-version bytes followed by the caller's AAD, so neither header field
   can be changed without the tag failing.
3. The AAD says where the bytes belong (`aad_for("record", segment_id, lsn)`: length-prefixed parts, so
   no two different lists of parts give the same bytes); a row moved to another place fails to open. The
   store binds rows to its own segment (storage/store/sealing.py): rows travel between nodes in clear
   over TLS and each node seals what it stores itself.
4. Nonces are random (96 bits): a data key version seals at most `SEALS_PER_KEY_MAX` (2^32) messages
   (NIST SP 800-38D 8.3); the node counts and asks for a new data key version before it is reached.
   `open_` takes every version a volume has (`Mapping[int, bytes]`) and picks the one the header names;
   a version the volume does not have means the header was altered.
5. Wrapped data key: `WRAP_VERSION` (1 byte) | master key id (8 bytes) | key id length (1 byte) | key id
   (UTF-8, at most `KEY_ID_BYTES_MAX`) | nonce (12) | ciphertext of the 32-byte key | tag (16). The AAD
   is the purpose `WRAP_PURPOSE` and the whole header, so a wrapped key cannot be passed off as another
   volume's. The master key id is a one-way digest of the master key, so unwrapping with the wrong
   master key says so instead of "altered".
6. `rewrap` (`sixfold volume rotate-key`) unwraps under the old master key and wraps under the new one:
   the data key, and so every sealed byte, is unchanged.
7. Failures raise with a sentence: `Tampered` (DATA_LOSS: the bytes or their place changed), `WrongKey`
   (FAILED_PRECONDITION: a key the caller holds does not fit), `InvalidRequest` for sizes over a bound.
"""

from __future__ import annotations

import functools
import hmac
import os
import struct
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sixfold.storage.errors import InvalidRequest, StorageError

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # GCM's 96-bit nonce
TAG_BYTES = 16
SEAL_VERSION = 1
WRAP_VERSION = 1
_SEAL_HEADER = struct.Struct(">BI")  # version, key version
SEAL_OVERHEAD_BYTES = _SEAL_HEADER.size + NONCE_BYTES + TAG_BYTES  # 33
PLAINTEXT_BYTES_MAX = 16 << 20  # a record batch or page is far smaller; more is a bug
AAD_BYTES_MAX = 4096
AAD_PARTS_MAX = 16
KEY_VERSION_MAX = 2**32 - 1
SEALS_PER_KEY_MAX = 2**32  # random 96-bit nonces under one key (rule 4)
KEY_ID_BYTES_MAX = 200  # a wrapped key's id: the volume id and key version, say
MASTER_KEY_ID_BYTES = 8
WRAP_PURPOSE = b"sixfold/data-key/v1"
_MASTER_KEY_ID_LABEL = b"sixfold/master-key-id/v1"


class Tampered(StorageError):
    """Sealed or wrapped bytes fail their tag: altered, truncated, or moved from where they were sealed."""

    status_code_name = "DATA_LOSS"


class WrongKey(StorageError):
    """The key given does not fit the bytes: another master key, or a data key version not at hand."""

    status_code_name = "FAILED_PRECONDITION"


def new_data_key() -> bytes:
    """A new data key: 32 random bytes for AES-256-GCM (rule 1)."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def new_master_key() -> bytes:
    """A new master key for the key service (kept outside every data directory, mode 0600)."""
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def master_key_id(master_key: bytes) -> str:
    """A name for a master key that reveals nothing of it (an HMAC under the key of a fixed label)."""
    _check_key(master_key, "master key")
    return hmac.digest(master_key, _MASTER_KEY_ID_LABEL, "sha256")[:MASTER_KEY_ID_BYTES].hex()


@functools.lru_cache(maxsize=256)
def _cipher(key: bytes) -> AESGCM:
    """One AESGCM object per key, kept: building it is a third of the cost of sealing a small row."""
    return AESGCM(key)


def aad_part(part: str | int | bytes) -> bytes:
    """One part of `aad_for`'s encoding: kind byte, 4-byte big-endian length, the bytes (rule 3)."""
    if type(part) is int:  # the common case first (LSNs and page numbers in every row's AAD): same bytes, faster
        digits = str(part).encode()
        return b"i" + len(digits).to_bytes(4, "big") + digits
    if isinstance(part, bool) or not isinstance(part, str | int | bytes):
        raise InvalidRequest(f"an AAD part is text, an integer or bytes, not {type(part).__name__}")
    if isinstance(part, int):
        data, kind = str(part).encode(), b"i"
    else:
        data, kind = (part.encode(), b"s") if isinstance(part, str) else (part, b"b")
    return kind + struct.pack(">I", len(data)) + data


def aad_for(*parts: str | int | bytes) -> bytes:
    """Associated data naming where sealed bytes belong, e.g. aad_for("page", volume_id, page_no, lsn)."""
    if not 1 <= len(parts) <= AAD_PARTS_MAX:
        raise InvalidRequest(f"the AAD has {len(parts)} parts; 1 to {AAD_PARTS_MAX} are accepted")
    out = b"".join(aad_part(part) for part in parts)
    if len(out) > AAD_BYTES_MAX:
        raise InvalidRequest(f"the AAD is {len(out)} bytes; at most {AAD_BYTES_MAX} are accepted")
    return out


def seal(data_key: bytes, plaintext: bytes, aad: bytes, *, key_version: int = 1) -> bytes:
    """`plaintext` encrypted and authenticated under `data_key`, bound to `aad` (rules 2 and 3)."""
    _check_key(data_key, "data key")
    if not 0 <= key_version <= KEY_VERSION_MAX:
        raise InvalidRequest(f"a key version is 0 to {KEY_VERSION_MAX}, not {key_version}")
    if len(plaintext) > PLAINTEXT_BYTES_MAX:
        raise InvalidRequest(f"{len(plaintext)} bytes to seal; at most {PLAINTEXT_BYTES_MAX} are accepted")
    _check_aad(aad)
    header = _SEAL_HEADER.pack(SEAL_VERSION, key_version)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + _cipher(data_key).encrypt(nonce, plaintext, header + aad)


def sealed_key_version(sealed: bytes) -> int:
    """The data key version that sealed these bytes (to pick the key; the tag still decides)."""
    return _seal_header(sealed)


def open_(data_keys: bytes | Mapping[int, bytes], sealed: bytes, aad: bytes) -> bytes:
    """The plaintext of `seal`'s output, given the data key (or every version of it) and the same AAD;
    `Tampered` if anything changed, `WrongKey` if the version it names is not among `data_keys`."""
    key_version = _seal_header(sealed)
    if isinstance(data_keys, bytes):
        data_key = data_keys
    elif key_version in data_keys:
        data_key = data_keys[key_version]
    else:
        raise Tampered(
            f"the bytes name data key version {key_version}, which the volume does not have (it has "
            f"{sorted(data_keys)[:16]}): they were altered"
        )
    _check_key(data_key, "data key")
    _check_aad(aad)
    header_bytes = _SEAL_HEADER.size
    nonce = sealed[header_bytes : header_bytes + NONCE_BYTES]
    try:
        return _cipher(data_key).decrypt(nonce, sealed[header_bytes + NONCE_BYTES :], sealed[:header_bytes] + aad)
    except InvalidTag:
        raise Tampered(
            f"{len(sealed)} sealed bytes (key version {key_version}) fail their authentication tag: they were "
            "altered, or moved from the place (AAD) they were sealed for, or the data key is not theirs"
        ) from None


def wrap(master_key: bytes, data_key: bytes, key_id: str) -> bytes:
    """`data_key` encrypted under `master_key`, bound to `key_id` (rule 5)."""
    _check_key(data_key, "data key")
    header = _wrap_header(master_key, key_id)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + AESGCM(master_key).encrypt(nonce, data_key, WRAP_PURPOSE + header)


def wrapped_key_id(wrapped: bytes) -> str:
    """The key id a wrapped key names (not authenticated until `unwrap`)."""
    return _parse_wrapped(wrapped)[1]


def wrapped_by(wrapped: bytes) -> str:
    """The id of the master key a wrapped key names (not authenticated until `unwrap`)."""
    return _parse_wrapped(wrapped)[2]


def unwrap(master_key: bytes, wrapped: bytes, *, key_id: str | None = None) -> bytes:
    """The data key `wrap` wrapped; `WrongKey` for another master key (or another `key_id` than the
    one expected), `Tampered` if the wrapped bytes were altered."""
    header, found_key_id, wrapped_by = _parse_wrapped(wrapped)
    if key_id is not None and found_key_id != key_id:
        raise WrongKey(f"the wrapped key is {found_key_id[:64]!r}'s, not {key_id[:64]!r}'s")
    if wrapped_by != master_key_id(master_key):
        raise WrongKey(
            f"data key {found_key_id[:64]!r} is wrapped by master key {wrapped_by}, not by this one "
            f"({master_key_id(master_key)}): the key service holds another master key (or the bytes were altered)"
        )
    nonce = wrapped[len(header) : len(header) + NONCE_BYTES]
    try:
        data_key = AESGCM(master_key).decrypt(nonce, wrapped[len(header) + NONCE_BYTES :], WRAP_PURPOSE + header)
    except InvalidTag:
        raise Tampered(f"wrapped data key {found_key_id[:64]!r} fails its authentication tag: it was altered") from None
    assert len(data_key) == KEY_BYTES
    return data_key


def rewrap(old_master_key: bytes, new_master_key: bytes, wrapped: bytes) -> bytes:
    """The same data key and key id, wrapped under `new_master_key` (rule 6)."""
    return wrap(new_master_key, unwrap(old_master_key, wrapped), wrapped_key_id(wrapped))


def _wrap_header(master_key: bytes, key_id: str) -> bytes:
    encoded = key_id.encode() if isinstance(key_id, str) else b""
    if not 1 <= len(encoded) <= KEY_ID_BYTES_MAX:
        raise InvalidRequest(f"a key id is 1 to {KEY_ID_BYTES_MAX} bytes of text")
    wrapped_by = bytes.fromhex(master_key_id(master_key))
    return bytes([WRAP_VERSION]) + wrapped_by + bytes([len(encoded)]) + encoded


def _parse_wrapped(wrapped: bytes) -> tuple[bytes, str, str]:
    """(header, key id, master key id) of a wrapped key whose layout holds."""
    fixed = 1 + MASTER_KEY_ID_BYTES + 1
    if len(wrapped) < fixed or wrapped[0] != WRAP_VERSION:
        raise Tampered(f"{len(wrapped)} bytes are not a version-{WRAP_VERSION} wrapped data key")
    key_id_bytes = wrapped[fixed - 1]
    header = wrapped[: fixed + key_id_bytes]
    if len(wrapped) != len(header) + NONCE_BYTES + KEY_BYTES + TAG_BYTES:
        raise Tampered(f"a wrapped data key of {len(wrapped)} bytes has the wrong length for its header")
    try:
        key_id = header[fixed:].decode()
    except UnicodeDecodeError:
        raise Tampered("a wrapped data key's key id is not UTF-8: it was altered") from None
    return header, key_id, wrapped[1 : 1 + MASTER_KEY_ID_BYTES].hex()


def _seal_header(sealed: bytes) -> int:
    if len(sealed) < SEAL_OVERHEAD_BYTES:
        raise Tampered(f"{len(sealed)} bytes are too short to be sealed ({SEAL_OVERHEAD_BYTES} at least)")
    if len(sealed) > PLAINTEXT_BYTES_MAX + SEAL_OVERHEAD_BYTES:
        raise Tampered(f"{len(sealed)} sealed bytes exceed the largest seal can make")
    version, key_version = _SEAL_HEADER.unpack_from(sealed)
    if version != SEAL_VERSION:
        raise Tampered(f"sealed bytes of version {version}; this node reads version {SEAL_VERSION}")
    return int(key_version)


def _check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise WrongKey(f"a {what} is {KEY_BYTES} bytes (AES-256)")


def _check_aad(aad: bytes) -> None:
    if not isinstance(aad, bytes) or len(aad) > AAD_BYTES_MAX:
        raise InvalidRequest(f"the AAD is bytes, at most {AAD_BYTES_MAX}")
