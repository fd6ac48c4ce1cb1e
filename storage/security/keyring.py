"""A storage node's data keys (storage/store/sealing.py's `DataKeys`): unwrapped by the key service
(`sixfold kms`, storage/security/kms_server.py) and held in memory only, each for a lease.

Rules:
1. A key is asked for when first needed (a synchronous call, at most `FETCH_TIMEOUT_S`; `ensure` makes it
   off the event loop) and then held until its lease ends: the key service's lease, capped by the node's
   `--key-lease-s`. A background thread renews every held key once half its lease has passed, and only it:
   a read or write never waits on the key service for a key it held before.
2. When the key service cannot be reached, a held key is used until its lease ends, then refused at once:
   `KeyUnavailable`, with a sentence naming the key service and why. Nothing is ever stored in clear
   instead, and a bad answer never counts as a bad copy (sealing rule 3). A wrapped key the key service
   refuses (altered, another master key) is `KeyRefused` (FAILED_PRECONDITION: asking again will not help).
3. After a failed call the key service is not asked again for `RETRY_AFTER_S` for a key never held: a
   caller never waits on a dead key service more than once in a while.
4. The plaintext key is never logged; log lines name the key's id (the volume it was made for).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from sixfold.storage.errors import KeyUnavailable
from sixfold.storage.security import envelope, transport
from sixfold.storage.serving import CHANNEL_OPTIONS
from sixfold.storage.v1 import key_service_pb2 as pb
from sixfold.storage.v1 import key_service_pb2_grpc

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
RETRY_AFTER_S = 1.0
LEASE_S_DEFAULT = 300
LEASE_S_MIN = 1
LEASE_S_MAX = 24 * 3600
KEYS_MAX = 10_000  # wrapped keys held at once; a node holds a few per volume


@dataclass
class _Held:
    key: bytes
    key_id: str
    lease_s: float
    expires_at: float


# What the key service answers for a wrapped key it will never open: retrying does not help.
_REFUSALS = frozenset(
    {
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class KeyRefused(KeyUnavailable):
    """The key service refuses to unwrap this wrapped key (rule 2): not a key to wait for."""

    status_code_name = "FAILED_PRECONDITION"


class Keyring:
    """Rules 1-3, for one node. `fetch(wrapped) -> (data key, key id, lease seconds)` is the key service call
    (a test may pass its own); `clock` is monotonic seconds."""

    def __init__(
        self,
        kms_address: str,
        lease_s_max: float = LEASE_S_DEFAULT,
        fetch: Callable[[bytes], tuple[bytes, str, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not LEASE_S_MIN <= lease_s_max <= LEASE_S_MAX:
            raise ValueError(f"a key lease is {LEASE_S_MIN} to {LEASE_S_MAX} seconds, not {lease_s_max:g}")
        self.kms_address = kms_address
        self.lease_s_max = lease_s_max
        self._fetch = fetch or self._fetch_over_grpc
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._failed_at = -1e18
        self._last_failure = ""
        self._channel: grpc.Channel | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fetches = 0
        self.failures = 0

    # -- DataKeys ----------------------------------------------------------------------

    def data_key(self, wrapped_hex: str) -> bytes:
        """Rules 1-3: the plaintext data key, or KeyUnavailable."""
        now = self._clock()
        with self._lock:
            held = self._held.get(wrapped_hex)
            if held is not None and now < held.expires_at:
                return held.key
            recently_failed = now - self._failed_at < RETRY_AFTER_S
        if held is not None or recently_failed:  # rule 1: only the renewal thread asks again for a held key
            raise self._unavailable(wrapped_hex, held, now)
        try:
            return self._renew(wrapped_hex)
        except KeyUnavailable:
            raise
        except Exception:  # noqa: BLE001 - _renew recorded why; the sentence says it
            raise self._unavailable(wrapped_hex, held, self._clock()) from None

    async def ensure(self, wrapped_hex: str) -> None:
        """`data_key` off the event loop (a first fetch may wait up to FETCH_TIMEOUT_S)."""
        await asyncio.to_thread(self.data_key, wrapped_hex)

    # -- renewal -------------------------------------------------------------------------

    def start(self) -> None:
        """Rule 1's background renewal (a daemon thread; `stop` ends it)."""
        self._thread = threading.Thread(target=self._renew_loop, name="keyring", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=FETCH_TIMEOUT_S * 2)
        if self._channel is not None:
            self._channel.close()

    def renew_due(self) -> int:
        """Renew every held key past half its lease; the number renewed."""
        now = self._clock()
        with self._lock:
            due = [w for w, h in self._held.items() if h.expires_at - now < h.lease_s / 2]
        renewed = 0
        for wrapped_hex in due:  # each on its own: one key the key service refuses does not starve the others
            try:
                self._renew(wrapped_hex)
                renewed += 1
            except Exception:  # noqa: BLE001 - recorded and logged in _renew; the held key serves until its lease ends
                continue
        return renewed

    def _renew_period_s(self) -> float:
        with self._lock:
            shortest = min((h.lease_s for h in self._held.values()), default=self.lease_s_max)
        return max(0.25, min(5.0, shortest / 4))

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._renew_period_s()):
            self.renew_due()

    def _renew(self, wrapped_hex: str) -> bytes:
        wrapped = bytes.fromhex(wrapped_hex)
        try:
            key, key_id, lease_s = self._fetch(wrapped)
        except grpc.RpcError as error:
            why = f"{error.code().name}: {error.details()}"
            if error.code() in _REFUSALS:
                raise KeyRefused(
                    f"the key service at {self.kms_address} refuses to unwrap the data key of "
                    f"{_key_id(wrapped_hex)} ({why}); nothing of it is stored or served"
                ) from None
            self._note_failure(why)
            raise
        except Exception as error:
            self._note_failure(f"{type(error).__name__}: {error}")
            raise
        if len(key) != envelope.KEY_BYTES:  # a key service bug must not make every row look rotten
            self._note_failure(f"the key service answered a key of {len(key)} bytes, not {envelope.KEY_BYTES}")
            raise KeyUnavailable(f"the key service at {self.kms_address} answered an unusable data key")
        lease = max(float(LEASE_S_MIN), min(float(lease_s), self.lease_s_max))
        with self._lock:
            if wrapped_hex not in self._held and len(self._held) >= KEYS_MAX:
                self._held.pop(next(iter(self._held)))
            self._held[wrapped_hex] = _Held(key, key_id, lease, self._clock() + lease)
            if self._last_failure:
                log.info("the key service at %s answers again", self.kms_address)
            self._last_failure = ""
        self.fetches += 1
        return key

    def _note_failure(self, why: str) -> None:
        with self._lock:
            self._failed_at = self._clock()
            first = not self._last_failure
            self._last_failure = why
        self.failures += 1
        if first:
            log.warning("the key service at %s did not unwrap a data key (%s)", self.kms_address, why)

    def _unavailable(self, wrapped_hex: str, held: _Held | None, now: float) -> KeyUnavailable:
        key_id = held.key_id if held is not None else _key_id(wrapped_hex)
        lapsed = f"; the key's lease ran out {now - held.expires_at:.1f} s ago" if held is not None else ""
        why = self._last_failure or "no answer yet"
        return KeyUnavailable(
            f"the data key of {key_id} is not at hand: the key service at {self.kms_address} did not unwrap it "
            f"({why}){lapsed}; this node neither stores nor serves that volume's rows without it"
        )

    def _fetch_over_grpc(self, wrapped: bytes) -> tuple[bytes, str, float]:
        if self._channel is None:
            self._channel = transport.channel(self.kms_address, CHANNEL_OPTIONS)
        stub = key_service_pb2_grpc.KeyServiceStub(self._channel)
        reply = stub.DecryptDataKey(pb.DecryptDataKeyRequest(wrapped_data_key=wrapped), timeout=FETCH_TIMEOUT_S)
        return reply.data_key, reply.key_id, float(reply.lease_s)


def _key_id(wrapped_hex: str) -> str:
    try:
        return f"volume {envelope.wrapped_key_id(bytes.fromhex(wrapped_hex))}"
    except Exception:  # noqa: BLE001 - a name for a sentence only
        return "a volume"
