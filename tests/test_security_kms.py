"""The key service's core (storage/security/kms_server.py over master_keys.py), without a process: data keys
made only wrapped, unwrapped again, rewrapped under a new master key version while old wrappings still open;
bad input refused with a sentence; the master key file 0600, refused when open to others or damaged, never
replaced. Randomness: the keys and nonces (os.urandom) only."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest

from sixfold.storage.errors import InvalidRequest
from sixfold.storage.security import envelope
from sixfold.storage.security.kms_server import KeyServicer
from sixfold.storage.security.master_keys import MasterKeyFileError, MasterKeys
from sixfold.storage.v1 import key_service_pb2 as pb

pytestmark = pytest.mark.unit


def test_keys_are_made_wrapped_unwrapped_and_rewrapped_and_old_wrappings_still_open(tmp_path: Path) -> None:
    path = tmp_path / "kms" / "master-keys.json"
    service = KeyServicer(MasterKeys.create(path), lease_s=7)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    made = asyncio.run(service.GenerateDataKey(pb.GenerateDataKeyRequest(key_id="vol0"), None))
    assert made.master_key_id == service.master_keys.current_id
    opened = asyncio.run(service.DecryptDataKey(pb.DecryptDataKeyRequest(wrapped_data_key=made.wrapped_data_key), None))
    assert len(opened.data_key) == envelope.KEY_BYTES and opened.key_id == "vol0" and opened.lease_s == 7
    assert opened.data_key not in path.read_bytes() and opened.data_key.hex() not in path.read_text()

    rewrapped = asyncio.run(
        service.RewrapDataKey(pb.RewrapDataKeyRequest(wrapped_data_key=made.wrapped_data_key), None)
    )
    assert rewrapped.previous_master_key_id == made.master_key_id != rewrapped.master_key_id
    reloaded = KeyServicer(MasterKeys.load(path))  # the new version was persisted before it was used
    for wrapped in (made.wrapped_data_key, rewrapped.wrapped_data_key):
        again = asyncio.run(reloaded.DecryptDataKey(pb.DecryptDataKeyRequest(wrapped_data_key=wrapped), None))
        assert again.data_key == opened.data_key
    status = asyncio.run(reloaded.GetKeyServiceStatus(pb.GetKeyServiceStatusRequest(), None))
    assert status.master_key_count == 2 and status.current_master_key_id == rewrapped.master_key_id


def test_bad_input_is_refused_with_a_sentence(tmp_path: Path) -> None:
    service = KeyServicer(MasterKeys.create(tmp_path / "keys.json"))
    made = asyncio.run(service.GenerateDataKey(pb.GenerateDataKeyRequest(key_id="v"), None)).wrapped_data_key
    altered = bytearray(made)
    altered[-1] ^= 1
    cases: list[tuple[bytes, type[Exception], str]] = [
        (bytes(altered), envelope.Tampered, "altered"),
        (b"", InvalidRequest, "no wrapped_data_key"),
        (b"\x01" * 600, InvalidRequest, "at most 512 bytes"),
        (b"\x07garbage", envelope.Tampered, "not a version-1 wrapped data key"),
    ]
    for wrapped, error, words in cases:
        with pytest.raises(error, match=words):
            asyncio.run(service.DecryptDataKey(pb.DecryptDataKeyRequest(wrapped_data_key=wrapped), None))
    other = KeyServicer(MasterKeys.create(tmp_path / "other.json"))
    with pytest.raises(envelope.WrongKey, match="does not hold"):
        asyncio.run(other.DecryptDataKey(pb.DecryptDataKeyRequest(wrapped_data_key=made), None))
    with pytest.raises(InvalidRequest, match="key_id"):
        asyncio.run(service.GenerateDataKey(pb.GenerateDataKeyRequest(key_id=""), None))


def test_the_master_key_file_is_refused_when_open_to_others_or_damaged_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    MasterKeys.create(path)
    with pytest.raises(MasterKeyFileError, match="never replaced"):
        MasterKeys.create(path)
    os.chmod(path, 0o644)
    with pytest.raises(MasterKeyFileError, match="chmod 600"):
        MasterKeys.load(path)
    os.chmod(path, 0o600)
    data = json.loads(path.read_text())
    key_id = data["current"]
    data["keys"][key_id] = "00" * 32
    path.write_text(json.dumps(data))
    with pytest.raises(MasterKeyFileError, match="damaged"):
        MasterKeys.load(path)
    path.write_text("{not json")
    with pytest.raises(MasterKeyFileError, match="not a master key file"):
        MasterKeys.load(path)
    with pytest.raises(MasterKeyFileError, match="no master key file"):
        MasterKeys.load(tmp_path / "missing.json")
