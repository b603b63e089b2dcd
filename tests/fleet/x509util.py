"""Certificates made with `cryptography`: mox placeholders and pebble's own HTTPS certificate."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class PemPair:
    cert_pem: bytes
    key_pem: bytes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # SEC1 "EC PRIVATE KEY", as Caddy writes its ECDSA keys.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def self_signed(
    names: list[str] | tuple[str, ...],
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    common_name: str | None = None,
) -> PemPair:
    """A self-signed ECDSA P-256 pair with these DNS SANs and dates (key as Caddy writes it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name or names[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def self_signed_placeholder(name: str) -> PemPair:
    """ECDSA P-256, SAN = name, valid from now for 30 days: what mox serves before the first
    sync, made when the host is set up (so usually newer than Caddy's certificate)."""
    now = _now()
    return self_signed(
        [name], now, now + datetime.timedelta(days=30), common_name=f"placeholder {name}"
    )


def ca_signed(
    names: list[str], not_before: datetime.datetime, not_after: datetime.datetime
) -> PemPair:
    """A pair for `names` signed by a throw-away CA (so not self-signed): leaf, then the CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "throw-away CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before - datetime.timedelta(days=1))
        .not_valid_after(not_after + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    return PemPair(chain, _key_pem(key))


def local_ca_and_server(common_name: str, ip: str) -> tuple[bytes, PemPair]:
    """A throw-away CA and a server certificate for `ip` signed by it: (ca_pem, server pair)."""
    now = _now()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    server = PemPair(server_cert.public_bytes(serialization.Encoding.PEM), _key_pem(server_key))
    return ca_cert.public_bytes(serialization.Encoding.PEM), server


def leaf_certificate(pem: bytes) -> x509.Certificate:
    """The first certificate of a PEM chain."""
    return x509.load_pem_x509_certificates(pem)[0]


def sha256_fingerprint(cert: x509.Certificate | bytes) -> str:
    """Hex SHA-256 of the DER; accepts a Certificate or DER bytes."""
    der = (
        cert.public_bytes(serialization.Encoding.DER)
        if isinstance(cert, x509.Certificate)
        else cert
    )
    return hashlib.sha256(der).hexdigest()


def spki_sha256(cert: x509.Certificate) -> str:
    """Hex SHA-256 of the certificate's SubjectPublicKeyInfo (DER): the DANE TLSA `3 1 1`
    value."""
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).hexdigest()


def load_caddy_private_key(key_pem: bytes) -> PrivateKeyTypes:
    """A key as Caddy stores it: Ed25519 is PKCS#8 under Caddy's own label `ED25519 PRIVATE KEY`,
    which `cryptography` does not know."""
    key_pem = key_pem.replace(
        b"-----BEGIN ED25519 PRIVATE KEY-----", b"-----BEGIN PRIVATE KEY-----"
    )
    key_pem = key_pem.replace(b"-----END ED25519 PRIVATE KEY-----", b"-----END PRIVATE KEY-----")
    return serialization.load_pem_private_key(key_pem, password=None)


def key_matches_certificate(key_pem: bytes, cert: x509.Certificate) -> bool:
    key = load_caddy_private_key(key_pem)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x82, size >> 8, size & 0xFF])
    return bytes([tag]) + length + content


def _der_int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def hostile_dsa_key_pem(bits: int = 30000) -> bytes:
    """A PKCS#8 DSA key under the label `PRIVATE KEY` with parameters of `bits` bits: decoding
    it makes OpenSSL compute g^x mod p (minutes of CPU at 30000 bits). Random numbers (p odd):
    OpenSSL checks nothing of them before that computation."""
    import base64
    import secrets

    p = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    g = secrets.randbits(bits) | (1 << (bits - 2))
    x = secrets.randbits(bits) | (1 << (bits - 1))
    q = secrets.randbits(256) | (1 << 255) | 1
    dsa_oid = bytes.fromhex("06072a8648ce380401")  # 1.2.840.10040.4.1
    params = _der(0x30, _der_int(p) + _der_int(q) + _der_int(g))
    der = _der(0x30, _der_int(0) + _der(0x30, dsa_oid + params) + _der(0x04, _der_int(x)))
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN PRIVATE KEY-----\n{body}-----END PRIVATE KEY-----\n".encode()
