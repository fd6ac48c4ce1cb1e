"""The cluster's certificates (issue 16, item 1): one CA per cluster and one certificate per process.

Layout of the PKI directory (the launcher puts it in the state dir):

    ca.pem, ca.key          the cluster CA (self-signed, EC P-256, 10 years)
    <name>.pem, <name>.key  a process's certificate and private key, signed by the CA

Private keys are created mode 0600 (`os.open(..., 0o600)` with O_EXCL, so a key is never readable by
anyone else, not even for a moment); certificates are 0644. Files appear atomically (written to a
temporary name, then linked or renamed into place), so a crash never leaves half a key.

**Identity in a certificate.** Each leaf certificate carries, besides the IP 127.0.0.1 and the DNS
name localhost (so clients verify the server they dial on the loopback), a URI subject alternative
name `sixfold://role/<role>/<name>`: the process's role and its name. `role_of_cert` reads it back;
`tls.peer_role` reads it from a connected peer.

**Roles.** control-plane, storage-node, writer, reader, kms, client-admin (the CLI). A compute instance
changes between writer and reader at failover, and a certificate cannot change with it (re-issuing one
would make a promotion wait on the CA and a reconnect). So the certificate role says what an instance
*may* do, not what it does now: every compute instance that may be promoted gets the `writer` role,
and which of them is the volume's writer at this moment stays decided by the volume epoch, as before
(RaiseVolumeEpoch fences the old writer; its appends are refused as stale). The `reader` role is for
what must never write: a compute instance kept out of failover, or a tool that only reads pages. A
`reader` certificate can read pages and records but a storage node refuses it every data-changing RPC
(see `tls.STORAGE_RPC_ROLES`).

EC P-256, not Ed25519: grpcio 1.85 refuses an Ed25519 certificate in the handshake (BoringSSL:
NO_COMMON_SIGNATURE_ALGORITHMS, tried), while P-256 works in every TLS stack and tool (openssl, grpcurl).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROLE_CONTROL_PLANE = "control-plane"
ROLE_STORAGE_NODE = "storage-node"
ROLE_WRITER = "writer"
ROLE_READER = "reader"
ROLE_KMS = "kms"
ROLE_CLIENT_ADMIN = "client-admin"
ROLES = frozenset({ROLE_CONTROL_PLANE, ROLE_STORAGE_NODE, ROLE_WRITER, ROLE_READER, ROLE_KMS, ROLE_CLIENT_ADMIN})

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
CA_VALIDITY_DAYS = 3650
# No automatic renewal yet: a leaf lasts as long as a long-lived local cluster may; `issue(..., replace=True)`
# renews one.
LEAF_VALIDITY_DAYS = 1825
# Certificates are valid from a little before now, so a peer whose clock lags does not refuse them.
CLOCK_SKEW = datetime.timedelta(minutes=5)

ROLE_URI_PREFIX = "sixfold://role/"
NAME_CHARS_MAX = 63
# A name starts with a letter or digit; then letters, digits, '.', '_' and '-'. It names files and goes
# into a URI, so nothing else (no '/', no spaces).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_DNS_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# "ca" would collide with the CA's own files.
RESERVED_NAMES = frozenset({"ca"})

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644
DIRECTORY_MODE = 0o700

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Identity:
    """What a process presents and trusts: the cluster CA, its own certificate (chain) and key, all PEM."""

    name: str
    role: str
    ca_pem: bytes
    cert_chain_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CaPaths:
    cert: Path
    key: Path


# -- validation ------------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """`name` if it may name a process's certificate, else ValueError with a sentence saying why."""
    if not isinstance(name, str):
        raise ValueError(f"a certificate name must be a string, not {type(name).__name__}")
    if not name:
        raise ValueError("a certificate name must not be empty")
    if len(name) > NAME_CHARS_MAX:
        raise ValueError(f"certificate name {name[:20]!r}... is {len(name)} characters; the limit is {NAME_CHARS_MAX}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"certificate name {name!r} may hold only ASCII letters, digits, '.', '_' and '-', and must start "
            "with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"certificate name {name!r} is reserved for the cluster CA's own files")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: a certificate's role is one of {', '.join(sorted(ROLES))}")
    return role


def role_uri(role: str, name: str) -> str:
    return f"{ROLE_URI_PREFIX}{validate_role(role)}/{validate_name(name)}"


def parse_role_uri(uri: str) -> tuple[str, str] | None:
    """(role, name) from a `sixfold://role/<role>/<name>` URI; None for any other URI or a malformed one."""
    if not uri.startswith(ROLE_URI_PREFIX):
        return None
    role, sep, name = uri[len(ROLE_URI_PREFIX) :].partition("/")
    if not sep:
        return None
    try:
        return validate_role(role), validate_name(name)
    except ValueError:
        return None


def _san_entries(hosts: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        labels = host.split(".")
        if not host or len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise ValueError(f"host {host!r} is neither an IP address nor a DNS name")
        entries.append(x509.DNSName(host))
    return entries


# -- files -----------------------------------------------------------------------------------------


def _write_new(path: Path, data: bytes, mode: int, *, replace: bool = False) -> None:
    """Write `path` atomically with `mode` from the first byte on. Without `replace`, an existing file is
    never overwritten (FileExistsError)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # exactly `mode`, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if `path` exists: no overwrite, even racing another writer
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """Signatures (TLS handshakes) for every certificate; certificate and CRL signing for the CA only."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ca_paths(directory: str | os.PathLike[str]) -> CaPaths:
    d = Path(directory)
    return CaPaths(d / CA_CERT_FILE, d / CA_KEY_FILE)


def leaf_paths(directory: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    d = Path(directory)
    validate_name(name)
    return d / f"{name}.pem", d / f"{name}.key"


# -- the CA ----------------------------------------------------------------------------------------


def create_ca(directory: str | os.PathLike[str]) -> CaPaths:
    """Create the cluster CA in `directory` (made 0700 if it does not exist). Refuses (FileExistsError)
    if a CA certificate or key is already there: a new CA would orphan every certificate it signed."""
    paths = ca_paths(directory)
    Path(directory).mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    for existing in (paths.cert, paths.key):
        if existing.exists():
            raise FileExistsError(
                f"{existing} already exists: this directory has a cluster CA, and a new one would make every "
                "certificate it signed untrusted; delete the directory first to start a new cluster PKI"
            )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    # A random serial in the name too: two clusters' CAs never look alike to a TLS stack building a chain.
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sixfold"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"sixfold cluster CA {secrets.token_hex(4)}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_VALIDITY_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    # The key first: a directory with ca.pem always has its ca.key.
    _write_new(paths.key, _key_pem(key), KEY_FILE_MODE)
    _write_new(paths.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_FILE_MODE)
    return paths


def _load_ca(directory: str | os.PathLike[str]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    paths = ca_paths(directory)
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        key = serialization.load_pem_private_key(paths.key.read_bytes(), password=None)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no cluster CA in {directory}: {e.filename} is missing (create_ca makes one)") from e
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{paths.key} is not an EC private key")
    return cert, key


# -- leaves ----------------------------------------------------------------------------------------


def issue(
    directory: str | os.PathLike[str],
    name: str,
    role: str,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    *,
    replace: bool = False,
) -> tuple[Path, Path]:
    """Issue `name`'s certificate for `role`, signed by the CA in `directory`; returns (cert path, key
    path). Usable as a server and a client certificate (every process is both). Refuses to overwrite
    an existing one unless `replace` (a renewal, or a new role)."""
    validate_name(name)
    validate_role(role)
    sans = [*_san_entries(hosts), x509.UniformResourceIdentifier(role_uri(role, name))]
    cert_path, key_path = leaf_paths(directory, name)
    if not replace and (cert_path.exists() or key_path.exists()):
        raise FileExistsError(
            f"{cert_path.stem} already has a certificate in {directory}; pass replace=True to renew it"
        )
    ca_cert, ca_key = _load_ca(directory)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(days=LEAF_VALIDITY_DAYS), ca_cert.not_valid_after_utc)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sixfold"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    # Key first, so a certificate on disk always has its key; on a renewal both are replaced.
    _write_new(key_path, _key_pem(key), KEY_FILE_MODE, replace=replace)
    _write_new(cert_path, cert.public_bytes(serialization.Encoding.PEM), CERT_FILE_MODE, replace=replace)
    return cert_path, key_path


def role_of_cert(pem: bytes) -> tuple[str, str]:
    """(role, name) from the `sixfold://role/<role>/<name>` URI of a PEM certificate; ValueError if it
    has none, or more than one."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError(f"certificate {cert.subject.rfc4514_string()} names no role: it has no SAN") from None
    found = [p for uri in san.get_values_for_type(x509.UniformResourceIdentifier) if (p := parse_role_uri(uri))]
    if len(found) != 1:
        raise ValueError(
            f"certificate {cert.subject.rfc4514_string()} must name exactly one role in a {ROLE_URI_PREFIX} URI; "
            f"it names {len(found)}"
        )
    return found[0]


def load_identity(directory: str | os.PathLike[str], name: str) -> Identity:
    """`name`'s identity from `directory`: checked to be signed by the cluster CA, to match its key and
    to name a role, so a mixed-up file fails here with a sentence rather than as a failed handshake."""
    cert_path, key_path = leaf_paths(directory, name)
    ca_path = ca_paths(directory).cert
    try:
        ca_pem, cert_pem, key_pem = ca_path.read_bytes(), cert_path.read_bytes(), key_path.read_bytes()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no identity for {name!r} in {directory}: {e.filename} is missing") from e
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as e:
        raise ValueError(f"{cert_path} is not signed by the cluster CA in {ca_path}") from e
    key = serialization.load_pem_private_key(key_pem, password=None)
    if key.public_key() != cert.public_key():
        raise ValueError(f"{key_path} is not the private key of {cert_path}")
    role, cert_name = role_of_cert(cert_pem)
    if cert_name != name:
        raise ValueError(f"{cert_path} is the certificate of {cert_name!r}, not of {name!r}")
    return Identity(name=name, role=role, ca_pem=ca_pem, cert_chain_pem=cert_pem, key_pem=key_pem)
