"""X.509 with the standard library: a certificate chain's facts, and whether a key matches it.

The only X.509 parser in Python's standard library is `ssl._ssl._test_decode_cert` (stable since
Python 2.7); the public key (for DANE `3 1 1` and to tell a key change) is cut out of the DER.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import re
import ssl
from collections.abc import Sequence

from .errors import printable, reason
from .keykind import MAX_CERT_BYTES, MAX_KEY_BYTES, der_header, key_kind
from .output import TIME_FORMAT
from .pem import memory_file, pem_blocks, pem_encode
from .record import Record

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any


class CertInfo(Record):
    """What certsync needs to know of a leaf certificate (all of it public)."""

    fingerprint: str  # sha256 of the leaf's DER, hex
    sans: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str
    subject: str
    issuer: str
    spki_sha256: str  # sha256 of the SubjectPublicKeyInfo: the DANE TLSA `3 1 1` value

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.fingerprint,
            "sans": list(self.sans),
            "not_before": self.not_before.strftime(TIME_FORMAT),
            "not_after": self.not_after.strftime(TIME_FORMAT),
            "serial": self.serial,
            "subject": self.subject,
            "issuer": self.issuer,
            "self_signed": self.self_signed,
            "spki_sha256": self.spki_sha256,
        }


def _decode_cert(der: bytes) -> dict:
    with memory_file(ssl.DER_cert_to_PEM_cert(der).encode()) as path:
        return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]


def _cert_time(value: str) -> dt.datetime:
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(value), dt.timezone.utc)


def _name(rdns: Any) -> str:
    short = {"commonName": "CN", "organizationName": "O", "countryName": "C"}
    parts = [f"{short.get(key, key)}={value}" for rdn in rdns or () for key, value in rdn]
    return ", ".join(parts)


def subject_public_key_info(cert_der: bytes) -> bytes:
    """The DER of the certificate's SubjectPublicKeyInfo (the 7th field of tbsCertificate,
    the 6th when the optional version is absent)."""
    _, start, _ = der_header(cert_der, 0)
    _, pos, tbs_end = der_header(cert_der, start)
    fields: list[tuple[int, int, int]] = []
    while pos < tbs_end and len(fields) < 7:
        tag, _, end = der_header(cert_der, pos)
        fields.append((tag, pos, end))
        pos = end
    if fields and fields[0][0] == 0xA0:  # [0] version
        fields = fields[1:]
    if len(fields) < 6 or fields[5][0] != 0x30:
        raise ValueError("no public key in the certificate")
    _, begin, end = fields[5]
    return cert_der[begin:end]


@functools.lru_cache(maxsize=64)  # mox's file and Caddy's are often the same bytes
def parse_chain(data: bytes) -> tuple[CertInfo, tuple[bytes, ...]]:
    """The leaf's CertInfo and every certificate's DER; raises ValueError for a bad chain."""
    if len(data) > MAX_CERT_BYTES:
        raise ValueError(f"certificate file is larger than {MAX_CERT_BYTES} bytes")
    blocks = pem_blocks(data)
    if any(label != "CERTIFICATE" for label, _ in blocks):
        raise ValueError("certificate file holds something else than certificates")
    ders = [der for _, der in blocks]
    try:
        decoded = [_decode_cert(der) for der in ders]
    except ssl.SSLError as error:
        raise ValueError(f"certificate does not parse ({ssl_reason(error)})") from error
    for index in range(1, len(decoded)):
        if decoded[index - 1].get("issuer") != decoded[index].get("subject"):
            raise ValueError("certificate chain is out of order (the leaf must come first)")
    return _cert_info(ders[0], decoded[0]), tuple(ders)


def cert_info(der: bytes) -> CertInfo:
    """The CertInfo of one DER certificate (e.g. the one a server sent); raises ValueError."""
    try:
        return _cert_info(der, _decode_cert(der))
    except ssl.SSLError as error:
        raise ValueError(f"certificate does not parse ({ssl_reason(error)})") from error


def _cert_info(der: bytes, leaf: dict) -> CertInfo:
    return CertInfo(
        fingerprint=hashlib.sha256(der).hexdigest(),
        sans=tuple(
            printable(value) for kind, value in leaf.get("subjectAltName", ()) if kind == "DNS"
        ),
        not_before=_cert_time(leaf["notBefore"]),
        not_after=_cert_time(leaf["notAfter"]),
        serial=format(int(leaf.get("serialNumber", "0"), 16), "x"),
        subject=printable(_name(leaf.get("subject"))),
        issuer=printable(_name(leaf.get("issuer"))),
        spki_sha256=hashlib.sha256(subject_public_key_info(der)).hexdigest(),
    )


def ssl_reason(error: ssl.SSLError) -> str:
    return getattr(error, "reason", None) or str(error)


# The labels Caddy writes (and mox reads); an encrypted key is none of them: decrypting one costs
# what its writer chose (PBKDF2 rounds), and no key certsync installs has a password.
KEY_LABELS = frozenset({"PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY", "ED25519 PRIVATE KEY"})


def _no_password() -> bytes:
    raise ValueError("the key is encrypted")


@functools.lru_cache(maxsize=64)  # a match is remembered (a mismatch raises again)
def check_key_matches(cert_pem: bytes, key_pem: bytes) -> None:
    """Raise ValueError unless `key_pem` is the private key of the leaf of `cert_pem`."""
    if len(key_pem) > MAX_KEY_BYTES:
        raise ValueError(f"key file is larger than {MAX_KEY_BYTES} bytes")
    blocks = pem_blocks(key_pem)
    if len(blocks) != 1 or blocks[0][0] not in KEY_LABELS:
        raise ValueError("key file is not a single PEM private key (unencrypted)")
    label, der = blocks[0]
    key_kind(label, der)  # before OpenSSL decodes it: only the algorithms Caddy writes
    if label == "ED25519 PRIVATE KEY":  # Caddy's own label for PKCS#8 Ed25519 bytes
        label = "PRIVATE KEY"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with memory_file(cert_pem) as cert_path, memory_file(pem_encode(label, der)) as key_path:
        try:
            # OpenSSL checks the key against the certificate (SSL_CTX_check_private_key).
            context.load_cert_chain(cert_path, key_path, password=_no_password)
        except ssl.SSLError as error:
            # NO_CERTIFICATE_ASSIGNED: a key of another type than the certificate's.
            if error.reason in ("KEY_VALUES_MISMATCH", "NO_CERTIFICATE_ASSIGNED"):
                raise ValueError("private key does not match the certificate") from error
            raise ValueError(f"private key does not load ({ssl_reason(error)})") from error


def untrusted_chain_problem(ders: Sequence[bytes], ca_file: str) -> str | None:
    """Why `openssl verify` does not trust the chain (leaf first) up to a CA of `ca_file`.

    Only certificates go to openssl, in memory: the leaf on stdin, the rest of the chain as
    -untrusted through a memfd. The private key is never involved.
    """
    import subprocess  # only here: a sync that checks no chain does not need it

    leaf = ssl.DER_cert_to_PEM_cert(ders[0]).encode()
    rest = "".join(ssl.DER_cert_to_PEM_cert(der) for der in ders[1:]).encode()
    argv = ["openssl", "verify", "-CAfile", ca_file]
    chain_fd = None
    try:
        if rest:
            chain_fd = os.memfd_create("certsync-chain", 0)
            os.write(chain_fd, rest)
            argv += ["-untrusted", f"/proc/self/fd/{chain_fd}"]
        result = subprocess.run(
            argv,
            input=leaf,
            capture_output=True,
            pass_fds=(chain_fd,) if chain_fd is not None else (),
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"the chain could not be checked (openssl verify: {reason(error)})"
    finally:
        if chain_fd is not None:
            os.close(chain_fd)
    if result.returncode == 0:
        return None
    lines = (result.stdout + result.stderr).decode(errors="replace").splitlines()
    why = next((line for line in lines if line.startswith("error ")), lines[-1] if lines else "")
    why = re.sub(r"^error \d+ at \d+ depth lookup: ", "", why)
    return f"certificate chain is not trusted by {ca_file} ({why.strip()[:200]})"
