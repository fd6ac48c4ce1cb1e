"""Bearer tokens for the users of a cluster: who a client is (a user and a role) and for how long.

Pure except the signature (the `cryptography` package): no clock, no file, no randomness but the key a
`new_signing_key` draws. The caller passes `now` (seconds since the Unix epoch) and keeps the keys in
files (the signing key mode 0600). What each role may call is `permissions.py`.

Rules:
1. Roles are ordered, admin > writer > reader, and a role holds every right of the roles below it.
2. A token reads `sf1.<payload>.<signature>`, ASCII, at most `TOKEN_CHARS_MAX` characters. The payload
   is the base64url (no padding) of canonical JSON {"sub": user, "uid": user serial, "role", "iat",
   "exp": whole seconds, "kid": key id}; the signature is Ed25519 over the ASCII text `sf1.<payload>`,
   so the version is signed too. Both parts must be the canonical base64url of their bytes, so a
   changed character is always a changed byte string (a base64 tail has unused bits).
3. Ed25519 rather than HMAC: a process that checks tokens (a compute instance, the control plane) holds
   only the verify key, so one that leaks its files cannot mint an admin token; only the holder of the
   signing key (`sixfold up`, `sixfold token`) issues. A check is a public-key verification, far
   dearer than an HMAC; `VerifiedTokens` caches tokens whose signature held, so a client pays it once.
   Signature checks are OpenSSL's: nothing secret is compared in Python, so no timing to leak.
4. A token is valid from `iat - CLOCK_SKEW_S_MAX` until `exp`; `exp - iat` is 1 s .. `TTL_S_MAX`.
5. A token is only as good as its user now: `verify` looks the user up (the caller passes the lookup,
   e.g. `Users.get` over the registry file). A deleted user, one deleted and created again, or one whose
   tokens were revoked (all change the user's `serial`) is refused, and so is a token whose role is above
   the user's role now. A token may carry a role below its user's (least privilege for a script).
6. A token is never echoed: errors, logs and the audit log name it by `fingerprint` (8 hex digits of
   its SHA-256) at most; `redact` and `redact_text` scrub metadata and text before they are logged.
7. A user is a name matching `USER_NAME_PATTERN`, a role and a serial; the registry is `users.py`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from sixfold.storage.errors import InvalidRequest, StorageError

TOKEN_VERSION = "sf1"
TOKEN_CHARS_MAX = 1024  # a token's whole text; an issued one is about 230
TTL_S_MAX = 30 * 24 * 3600  # the longest a token may live (30 days), as an IAM token's is bounded
CLOCK_SKEW_S_MAX = 60  # a token issued this far in the verifier's future is still accepted
KEY_BYTES = 32  # an Ed25519 signing (seed) or verify key
SIGNATURE_BYTES = 64
KEY_ID_CHARS = 16  # hex digits of the verify key's SHA-256
FINGERPRINT_CHARS = 8  # hex digits of a token's SHA-256: how logs and errors name a token
USER_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,62}")  # 1 to 63 characters
CACHE_ENTRIES_MAX = 1024  # tokens whose signature a VerifiedTokens remembers

METADATA_KEY = "authorization"  # gRPC metadata key (lower case, as gRPC requires)
BEARER_PREFIX = "Bearer "

# Reasons (google.rpc.ErrorInfo.reason) of Unauthenticated: what a client branches on.
REASON_TOKEN_MISSING = "TOKEN_MISSING"
REASON_TOKEN_MALFORMED = "TOKEN_MALFORMED"
REASON_TOKEN_UNKNOWN_VERSION = "TOKEN_UNKNOWN_VERSION"
REASON_TOKEN_UNKNOWN_KEY = "TOKEN_UNKNOWN_KEY"
REASON_TOKEN_BAD_SIGNATURE = "TOKEN_BAD_SIGNATURE"
REASON_TOKEN_EXPIRED = "TOKEN_EXPIRED"
REASON_TOKEN_NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
REASON_USER_GONE = "USER_GONE"  # deleted, created again, or its tokens revoked
REASON_ROLE_LOWERED = "ROLE_LOWERED"


class Unauthenticated(StorageError):
    """No token, or one that does not prove who the caller is: the caller must get a new one."""

    status_code_name = "UNAUTHENTICATED"

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PermissionDenied(StorageError):
    """A known caller whose role does not hold the right the call needs."""

    status_code_name = "PERMISSION_DENIED"

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message, metadata)
        self.reason = reason


class Role(enum.Enum):
    READER = "reader"  # reads only: SQL reads, KV get/scan, page reads, status and listings
    WRITER = "writer"  # also writes: SQL and KV writes, page writes
    ADMIN = "admin"  # also volumes, clones, snapshots, backtrack, failover, endpoints, users

    def holds(self, needed: Role) -> bool:
        """Whether this role has the rights of `needed` (rule 1)."""
        return _RANK[self] >= _RANK[needed]

    @classmethod
    def parse(cls, text: str) -> Role:
        for role in cls:
            if role.value == text:
                return role
        raise InvalidRequest(f"there is no role {text[:32]!r}; a role is one of {', '.join(r.value for r in cls)}")


_RANK = {Role.READER: 1, Role.WRITER: 2, Role.ADMIN: 3}


def iso_utc(seconds: float) -> str:
    """A Unix time as ISO-8601 UTC, to the second (how errors and the audit log say a time)."""
    return datetime.fromtimestamp(math.floor(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- users (the registry is users.py) --------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    created_at: float  # seconds since the Unix epoch
    serial: int  # unique in the registry for ever: a token names it, so a new incarnation is a new user


def check_user_name(name: str) -> None:
    if not isinstance(name, str) or not USER_NAME_PATTERN.fullmatch(name):
        shown = name[:64] if isinstance(name, str) else type(name).__name__
        raise InvalidRequest(
            f"{shown!r} is not a user name: 1 to 63 characters, lower-case letters, digits, '_', '.' or '-', "
            "starting with a letter"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# --- keys and tokens -----------------------------------------------------------------------------


def new_signing_key() -> bytes:
    """A new cluster signing key: the 32-byte Ed25519 seed. Keep it in a file of mode 0600."""
    return Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def verify_key_of(signing_key: bytes) -> bytes:
    """The 32-byte public key that checks the tokens `signing_key` issues (not secret)."""
    return _private(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def key_id(verify_key: bytes) -> str:
    """The id a token names its key by: the first hex digits of the verify key's SHA-256."""
    return hashlib.sha256(verify_key).hexdigest()[:KEY_ID_CHARS]


def fingerprint(token: str) -> str:
    """How a token is named where it may not be shown (rule 6)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:FINGERPRINT_CHARS]


@dataclass(frozen=True)
class Claims:
    """What a valid token says: the caller is `user` (incarnation `user_serial`) with `role`."""

    user: str
    user_serial: int
    role: Role
    issued_at: int  # seconds since the Unix epoch
    expires_at: int
    key_id: str


def issue(signing_key: bytes, user: User, role: Role, now: float, ttl_s: int) -> str:
    """A token for `user` with `role` (at most the user's), valid from `now` for `ttl_s` seconds."""
    if not isinstance(ttl_s, int) or isinstance(ttl_s, bool) or not 1 <= ttl_s <= TTL_S_MAX:
        raise InvalidRequest(f"a token lives 1 to {TTL_S_MAX} seconds ({TTL_S_MAX // 86400} days), not {ttl_s!r}")
    if not user.role.holds(role):
        raise InvalidRequest(f"user {user.name} is a {user.role.value}; it cannot have a {role.value} token")
    issued_at = math.floor(now)
    claims = {
        "sub": user.name,
        "uid": user.serial,
        "role": role.value,
        "iat": issued_at,
        "exp": issued_at + ttl_s,
        "kid": key_id(verify_key_of(signing_key)),
    }
    payload = _b64encode(json.dumps(claims, sort_keys=True, separators=(",", ":")).encode())
    signed = f"{TOKEN_VERSION}.{payload}"
    return f"{signed}.{_b64encode(_private(signing_key).sign(signed.encode()))}"


class VerifiedTokens:
    """Tokens whose signature and form held, by SHA-256, at most `CACHE_ENTRIES_MAX` (oldest out first).
    `verify` still checks the time and the user of a cached token on every call."""

    def __init__(self, entries_max: int = CACHE_ENTRIES_MAX) -> None:
        assert entries_max >= 1
        self._entries_max = entries_max
        self._claims: dict[bytes, Claims] = {}

    def get(self, token: str) -> Claims | None:
        return self._claims.get(hashlib.sha256(token.encode()).digest())

    def put(self, token: str, claims: Claims) -> None:
        while len(self._claims) >= self._entries_max:
            self._claims.pop(next(iter(self._claims)), None)
        self._claims[hashlib.sha256(token.encode()).digest()] = claims

    def __len__(self) -> int:
        return len(self._claims)


def verify(
    verify_keys: bytes | Collection[bytes],
    token: str,
    now: float,
    *,
    users: Callable[[str], User | None],
    cache: VerifiedTokens | None = None,
) -> Claims:
    """The claims of a valid token; Unauthenticated with a sentence (and a reason) saying what is wrong.
    `verify_keys`: the cluster's verify key, or several while a key is being rotated out."""
    claims = cache.get(token) if cache is not None else None
    if claims is None:
        claims = _checked_claims(verify_keys, token)
        if cache is not None:
            cache.put(token, claims)
    name = f"token {fingerprint(token)} of user {claims.user}"
    if now < claims.issued_at - CLOCK_SKEW_S_MAX:
        raise Unauthenticated(
            REASON_TOKEN_NOT_YET_VALID,
            f"{name} is not valid before {iso_utc(claims.issued_at)} (now {iso_utc(now)}): the issuer's clock is "
            "ahead of this one; check both clocks",
        )
    if now >= claims.expires_at:
        raise Unauthenticated(
            REASON_TOKEN_EXPIRED,
            f"{name} expired at {iso_utc(claims.expires_at)} (now {iso_utc(now)}); get a new one with "
            f"`sixfold token {claims.user}` (as an admin) and pass it in SIXFOLD_TOKEN",
        )
    user = users(claims.user)
    if user is None or user.serial != claims.user_serial:
        raise Unauthenticated(
            REASON_USER_GONE,
            f"{name} is no longer valid: the user was deleted or its tokens revoked since it was issued",
        )
    if not user.role.holds(claims.role):
        raise Unauthenticated(
            REASON_ROLE_LOWERED,
            f"{name} carries role {claims.role.value}, but the user is a {user.role.value} now; get a new token",
        )
    return claims


def _checked_claims(verify_keys: bytes | Collection[bytes], token: str) -> Claims:
    """The claims of a token whose form and signature hold (rule 2); the time and user are not checked."""
    if not isinstance(token, str) or not token:
        raise Unauthenticated(REASON_TOKEN_MALFORMED, "the token is empty")
    if len(token) > TOKEN_CHARS_MAX:
        raise Unauthenticated(
            REASON_TOKEN_MALFORMED,
            f"the token is {len(token)} characters; a sixfold token is at most {TOKEN_CHARS_MAX}",
        )
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isascii() or not parts[0].isalnum():
        raise Unauthenticated(
            REASON_TOKEN_MALFORMED, "the token is not three parts joined by dots (the version sf1, payload, signature)"
        )
    if parts[0] != TOKEN_VERSION:
        raise Unauthenticated(
            REASON_TOKEN_UNKNOWN_VERSION,
            f"the token is of version {parts[0][:8]!r}; this cluster reads {TOKEN_VERSION} "
            "(did a newer sixfold issue it?)",
        )
    payload, signature = _b64decode(parts[1], "payload"), _b64decode(parts[2], "signature")
    claims = _payload_claims(payload)
    keys = {key_id(key): key for key in ([verify_keys] if isinstance(verify_keys, bytes) else verify_keys)}
    key = keys.get(claims.key_id)
    if key is None:
        raise Unauthenticated(
            REASON_TOKEN_UNKNOWN_KEY,
            f"the token was signed by key {claims.key_id}, which this cluster does not know "
            "(another cluster's token, or a key rotated out)",
        )
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise Unauthenticated(
            REASON_TOKEN_BAD_SIGNATURE, f"the signature of token {fingerprint(token)} does not match: it was altered"
        ) from None
    return claims


def _payload_claims(payload: bytes) -> Claims:
    try:
        fields = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError):
        fields = None
    if not isinstance(fields, dict) or set(fields) != {"sub", "uid", "role", "iat", "exp", "kid"}:
        raise Unauthenticated(REASON_TOKEN_MALFORMED, "the token's payload is not the claims of a sixfold token")
    sub, uid, role, iat, exp, kid = (fields[name] for name in ("sub", "uid", "role", "iat", "exp", "kid"))
    if not (
        isinstance(sub, str)
        and USER_NAME_PATTERN.fullmatch(sub)
        and isinstance(uid, int)
        and _is_int(uid)
        and role in {role.value for role in Role}
        and isinstance(iat, int)
        and isinstance(exp, int)
        and _is_int(iat)
        and 1 <= exp - iat <= TTL_S_MAX
        and isinstance(kid, str)
        and _KEY_ID.fullmatch(kid)
    ):
        raise Unauthenticated(REASON_TOKEN_MALFORMED, "the token's claims are out of range or of the wrong type")
    return Claims(user=sub, user_serial=uid, role=Role(role), issued_at=iat, expires_at=exp, key_id=kid)


_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_CHARS}}}")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Strict base64url: the alphabet, no padding, and the canonical encoding of what it decodes to."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        data = None
    if not text or data is None or _b64encode(data) != text:
        raise Unauthenticated(REASON_TOKEN_MALFORMED, f"the token's {what} is not canonical base64url")
    return data


def _private(signing_key: bytes) -> Ed25519PrivateKey:
    if not isinstance(signing_key, bytes) or len(signing_key) != KEY_BYTES:
        raise InvalidRequest(f"a signing key is {KEY_BYTES} bytes (an Ed25519 seed)")
    return Ed25519PrivateKey.from_private_bytes(signing_key)


# --- metadata and logs ---------------------------------------------------------------------------


def token_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The bearer token of a call's metadata; Unauthenticated when there is none or more than one."""
    values = [value for key, value in metadata if key.lower() == METADATA_KEY]
    if not values:
        raise Unauthenticated(
            REASON_TOKEN_MISSING,
            "the call carries no token: send 'authorization: Bearer <token>' (the CLI reads SIXFOLD_TOKEN)",
        )
    value = values[0]
    if len(values) > 1 or not isinstance(value, str) or not value.startswith(BEARER_PREFIX):
        raise Unauthenticated(REASON_TOKEN_MALFORMED, "the authorization metadata is not one 'Bearer <token>'")
    return value[len(BEARER_PREFIX) :].strip()


_SECRET_KEY_WORDS = ("authorization", "token", "secret", "password", "cookie")
_TOKEN_TEXT = re.compile(r"(?:Bearer\s+)?sf\d+\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*|Bearer\s+\S+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """Whether a metadata key or a log field of this name carries a credential (its value is never shown)."""
    return any(word in key.lower() for word in _SECRET_KEY_WORDS)


def redact_text(text: str) -> str:
    """`text` with every token (or bearer credential) in it replaced by its fingerprint (rule 6)."""
    return _TOKEN_TEXT.sub(lambda match: f"<token {fingerprint(match.group().split()[-1])}>", text)


def redact(metadata: Iterable[tuple[str, str | bytes]] | Mapping[str, str | bytes]) -> list[tuple[str, str]]:
    """Call metadata fit for a log: secret-bearing keys keep only a fingerprint, other values are scrubbed
    of anything token-shaped, binary values are shown by length."""
    pairs = metadata.items() if isinstance(metadata, Mapping) else metadata
    shown: list[tuple[str, str]] = []
    for key, value in pairs:
        if isinstance(value, bytes):
            text = value.decode("utf-8", "replace") if not key.endswith("-bin") else f"<{len(value)} bytes>"
        else:
            text = value
        if is_secret_key(key):
            text = f"<redacted {fingerprint(text.split()[-1] if text.split() else text)}>"
        shown.append((key, redact_text(text)))
    return shown
