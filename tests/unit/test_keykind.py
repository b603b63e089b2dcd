"""Only the key algorithms Caddy writes reach OpenSSL: recognised from the DER, sizes bounded."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, x25519

from certsync.host.caddy import choose_pair
from certsync.host.keykind import MAX_CERT_BYTES, MAX_KEY_BYTES, Unsupported, key_kind
from certsync.host.pem import pem_blocks
from certsync.host.x509 import check_key_matches, parse_chain
from tests.fleet.x509util import hostile_dsa_key_pem
from tests.unit.certs import (
    DAY,
    KEY_KINDS,
    LETSENCRYPT,
    NOW,
    caddy_key_pem,
    key_of,
    pem,
    pkcs8_key_pem,
    write_caddy,
)

EXPECTED = {"ec256": "EC P-256", "ec384": "EC P-384", "rsa": "RSA 2048", "ed25519": "Ed25519"}


def kind_of(key_pem: bytes) -> str:
    ((label, der),) = pem_blocks(key_pem)
    return key_kind(label, der)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_the_keys_caddy_writes_are_taken_in_every_form(kind):
    key = key_of(kind)
    assert kind_of(caddy_key_pem(key)) == EXPECTED[kind]
    assert kind_of(pkcs8_key_pem(key)) == EXPECTED[kind]


def _pkcs8(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: _pkcs8(dsa.generate_private_key(1024)), "DSA"),
        (lambda: _pkcs8(x25519.X25519PrivateKey.generate()), "X25519"),
        (lambda: _pkcs8(ed448.Ed448PrivateKey.generate()), "Ed448"),
        (lambda: _pkcs8(ec.generate_private_key(ec.SECP521R1())), "curve 1.3.132.0.35"),
        (lambda: caddy_key_pem(ec.generate_private_key(ec.SECP256K1())), "curve 1.3.132.0.10"),
    ],
)
def test_other_algorithms_are_refused_naming_them(make, named):
    with pytest.raises(Unsupported, match=named.replace(".", r"\.")):
        kind_of(make())


def _der(tag: int, content: bytes) -> bytes:
    size = len(content)
    length = bytes([size]) if size < 0x80 else bytes([0x82, size >> 8, size & 0xFF])
    return bytes([tag]) + length + content


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def test_an_rsa_key_over_8192_bits_is_refused_from_its_modulus():
    der = _der(0x30, _int(0) + _int((1 << 9000) | 1) + _int(65537) + _int(3) * 6)
    with pytest.raises(Unsupported, match="RSA of 9001 bits"):
        key_kind("RSA PRIVATE KEY", der)


def test_an_ec_key_with_explicit_curve_parameters_is_refused():
    explicit = _der(0xA0, _der(0x30, _int(1) + _der(0x30, b"")))
    der = _der(0x30, _int(1) + _der(0x04, b"\x01" * 32) + explicit)
    with pytest.raises(Unsupported, match="explicit curve parameters"):
        key_kind("EC PRIVATE KEY", der)


@pytest.mark.parametrize("der", [b"", b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x02\x01\x00"])
def test_der_that_does_not_parse_is_refused(der):
    with pytest.raises(ValueError, match="does not load"):
        key_kind("PRIVATE KEY", der)


def test_a_huge_dsa_key_is_refused_at_once_without_openssl(ca):
    """A 15 kB key (under the size cap) that costs OpenSSL about 10 s to decode."""
    key = hostile_dsa_key_pem()
    assert len(key) <= MAX_KEY_BYTES
    cert = ca.issue().cert_pem
    started = time.monotonic()
    with pytest.raises(ValueError, match="refusing the private key: DSA"):
        check_key_matches(cert, key)
    assert time.monotonic() - started < 0.5


def test_files_over_the_caps_are_refused_unparsed(ca):
    issued = ca.issue()
    big_key = caddy_key_pem(key_of("ec256")) + b"\n" * MAX_KEY_BYTES
    with pytest.raises(ValueError, match=f"larger than {MAX_KEY_BYTES} bytes"):
        check_key_matches(issued.cert_pem, big_key)
    big_cert = issued.cert_pem + pem("CERTIFICATE", b"\x30" * MAX_CERT_BYTES)
    with pytest.raises(ValueError, match=f"larger than {MAX_CERT_BYTES} bytes"):
        parse_chain(big_cert)


def test_a_huge_dsa_key_in_caddy_s_folder_refuses_that_issuer_at_once(ca, tmp_path):
    issued = ca.issue(["mail.example.com"])
    write_caddy(tmp_path, LETSENCRYPT, "mail.example.com", issued.cert_pem, hostile_dsa_key_pem())
    started = time.monotonic()
    choice = choose_pair(str(tmp_path), "mail.example.com", NOW, DAY, None)
    assert time.monotonic() - started < 0.5
    assert choice.pair is None
    assert "refusing the private key: DSA" in (choice.refusal or "")


def test_caddy_s_files_over_the_caps_are_not_read_further(ca, tmp_path):
    issued = ca.issue(["mail.example.com"])
    big_key = issued.key_pem + b"\n" * MAX_KEY_BYTES
    write_caddy(tmp_path, LETSENCRYPT, "mail.example.com", issued.cert_pem, big_key)
    choice = choose_pair(str(tmp_path), "mail.example.com", NOW, DAY, None)
    assert choice.pair is None
    assert f"mail.example.com.key is not a regular file of at most {MAX_KEY_BYTES} bytes" in (
        choice.refusal or ""
    )
