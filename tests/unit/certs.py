"""Helpers for the unit tests of certsync.host: make certificates, lay out Caddy storage.

Certificates are made with `cryptography`; keys are written in the PEM formats Caddy writes.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from certsync.host import records
from certsync.host.plan import INSTALLED
from certsync.host.settings import Config
from certsync.host.x509 import parse_chain
from tests.fleet.x509util import spki_sha256

# One reference instant for every test, whole seconds (X.509 times have no fractions).
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

KEY_KINDS = ("ec256", "ec384", "rsa", "ed25519")


@functools.cache
def key_of(kind: str, index: int = 0) -> PrivateKey:
    """A private key of `kind`; the same (kind, index) gives the same key all session long.

    Cached because RSA key generation is slow; use another index for another key.
    """
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind}")


def caddy_key_pem(key: PrivateKey) -> bytes:
    """The key as Caddy (certmagic) writes it: SEC1 for ECDSA, PKCS#1 for RSA, and PKCS#8 bytes
    under the non-standard label "ED25519 PRIVATE KEY" for Ed25519."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return pem("ED25519 PRIVATE KEY", der)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def pkcs8_key_pem(key: PrivateKey) -> bytes:
    """The key as standard PKCS#8 "PRIVATE KEY" PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return b"".join(
        [
            f"-----BEGIN {label}-----\n".encode(),
            *(line + b"\n" for line in lines),
            f"-----END {label}-----\n".encode(),
        ]
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str | None) -> x509.Name:
    if common_name is None:
        return x509.Name([])
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _sign_hash(key: PrivateKey) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass
class Issued:
    """A leaf certificate, its key and the intermediate that signed it."""

    cert: x509.Certificate
    key: PrivateKey
    intermediates: list[x509.Certificate] = field(default_factory=list)

    @property
    def cert_pem(self) -> bytes:
        """What Caddy writes to <name>.crt: the leaf first, then the chain."""
        return b"".join(cert_pem(c) for c in [self.cert, *self.intermediates])

    @property
    def key_pem(self) -> bytes:
        """What Caddy writes to <name>.key."""
        return caddy_key_pem(self.key)

    @property
    def sha256(self) -> str:
        """The leaf's fingerprint: what a TLS client sees served."""
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def spki_sha256(self) -> str:
        """The DANE TLSA `3 1 1` value: sha256 of the leaf's SubjectPublicKeyInfo."""
        return spki_sha256(self.cert)


class Ca:
    """A root and an intermediate CA (ECDSA P-256) that issue leaf certificates."""

    def __init__(self, name: str = "certsync test") -> None:
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca_cert(
            _name(f"{name} root"), self.root_key, _name(f"{name} root"), self.root_key
        )
        self.intermediate_key = ec.generate_private_key(ec.SECP256R1())
        self.intermediate = self._ca_cert(
            _name(f"{name} intermediate"), self.intermediate_key, self.root.subject, self.root_key
        )

    @staticmethod
    def _ca_cert(
        subject: x509.Name, key: PrivateKey, issuer: x509.Name, issuer_key: PrivateKey
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - 3650 * DAY)
            .not_valid_after(NOW + 3650 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256())
        )

    def issue(
        self,
        sans: tuple[str, ...] | list[str] = ("mail.example.com",),
        *,
        key: PrivateKey | str = "ec256",
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        common_name: str | None = None,
    ) -> Issued:
        """A leaf for `sans` (DNS names), valid from `not_before` (default NOW - 1 day) to
        `not_after` (default NOW + 60 days), with no subject unless `common_name` is given."""
        private = key_of(key) if isinstance(key, str) else key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.intermediate.subject)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or NOW - DAY)
            .not_valid_after(not_after or NOW + 60 * DAY)
        )
        if sans:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]),
                critical=common_name is None,  # RFC 5280: critical when the subject is empty
            )
        leaf = builder.sign(self.intermediate_key, hashes.SHA256())
        return Issued(leaf, private, [self.intermediate])


# --- Caddy storage --------------------------------------------------------------------------------

LETSENCRYPT = "acme-v02.api.letsencrypt.org-directory"
ZEROSSL = "acme.zerossl.com-v2-dv90"


def stored_name(name: str) -> str:
    """How certmagic names the folder and files of `name` (independent of certsync's own)."""
    name = name.lower()
    return name.replace("*", "wildcard_", 1) if name.startswith("*.") else name


def write_caddy(
    data_dir: Path,
    issuer: str,
    name: str,
    cert: bytes | None,
    key: bytes | None,
) -> Path:
    """Write <data_dir>/certificates/<issuer>/<stored>/<stored>.crt|.key|.json as Caddy does
    (folders 0700, files 0600); a None file is not written. Returns the name's folder."""
    stored = stored_name(name)
    folder = data_dir / "certificates" / issuer / stored
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for suffix, data in ((".crt", cert), (".key", key)):
        if data is not None:
            path = folder / (stored + suffix)
            path.write_bytes(data)
            path.chmod(0o600)
    (folder / (stored + ".json")).write_text(
        json.dumps({"sans": [name], "issuer_data": {"url": "https://example.invalid/cert"}})
    )
    return folder


def secret_forms(key_pem: bytes) -> list[str]:
    """Pieces of a PEM private key that must never appear in output, a log or a message: each of
    its base64 lines, and its DER as hex and as a Python bytes repr."""
    lines = [line for line in key_pem.splitlines() if line and not line.startswith(b"-----")]
    assert lines, "not a PEM key: no base64 lines"
    der = base64.b64decode(b"".join(lines))
    return [line.decode() for line in lines if len(line) >= 16] + [der.hex(), repr(der)[2:40]]


def leaked_secrets(text: str, *key_pems: bytes) -> list[str]:
    """The pieces of these private keys (secret_forms) that `text` holds: [] when none."""
    return [form for key in key_pems for form in secret_forms(key) if form in text]


def remember_installed(config: Config, name: str, cert_pem: bytes) -> None:
    """What a sync that installed `cert_pem` for `name` leaves behind: its record of it (only
    such a certificate is kept from a downgrade)."""
    installed = records.load(config, INSTALLED)
    records.save(config, INSTALLED, {**installed, name: parse_chain(cert_pem)[0].fingerprint})
