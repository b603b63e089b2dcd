"""PEM parsing, certificate chains, and whether a private key belongs to a certificate."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certsync.host.pem import pem_blocks
from certsync.host.x509 import check_key_matches, parse_chain, subject_public_key_info
from tests.fleet.x509util import self_signed
from tests.unit.certs import (
    DAY,
    HOUR,
    KEY_KINDS,
    NOW,
    caddy_key_pem,
    cert_pem,
    key_of,
    pem,
    pkcs8_key_pem,
    secret_forms,
)

# --- pem_blocks --------------------------------------------------------------------------------


def test_pem_blocks_reads_every_block(ca):
    issued = ca.issue()
    blocks = pem_blocks(issued.cert_pem)
    assert [label for label, _ in blocks] == ["CERTIFICATE", "CERTIFICATE"]
    assert blocks[0][1] == issued.cert.public_bytes(Encoding.DER)


def test_pem_blocks_accepts_crlf_and_no_final_newline(ca):
    data = ca.issue().cert_pem.replace(b"\n", b"\r\n").rstrip()
    assert len(pem_blocks(data)) == 2


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b" \n\n", "empty file"),
        (b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", "empty PEM block"),
        (b"-----BEGIN CERTIFICATE-----\nMIIB*A==\n-----END CERTIFICATE-----\n", None),
        (b"-----BEGIN CERTIFICATE-----\nMIIBAA=\n-----END CERTIFICATE-----\n", "base64"),
        (b"-----BEGIN CERTIFICATE-----\nMIIBAA==\n-----END PRIVATE KEY-----\n", None),
    ],
)
def test_pem_blocks_refuses_malformed_pem(data, reason):
    with pytest.raises(ValueError) as caught:
        pem_blocks(data)
    if reason:
        assert reason in str(caught.value)


def test_pem_blocks_refuses_text_around_blocks(ca):
    data = ca.issue().cert_pem
    with pytest.raises(ValueError, match="outside PEM"):
        pem_blocks(b"subject=CN = mail.example.com\n" + data)
    with pytest.raises(ValueError):
        pem_blocks(data + b"trailing garbage\n")


# --- parse_chain -------------------------------------------------------------------------------


def test_chain_leaf_then_intermediate_passes(ca):
    issued = ca.issue()
    info, ders = parse_chain(issued.cert_pem)
    assert info.sans == ("mail.example.com",)
    assert ders == tuple(c.public_bytes(Encoding.DER) for c in [issued.cert, ca.intermediate])


def test_chain_up_to_the_root_passes(ca):
    issued = ca.issue()
    _, ders = parse_chain(issued.cert_pem + cert_pem(ca.root))
    assert len(ders) == 3


def test_leaf_alone_passes(ca):
    issued = ca.issue()
    info, ders = parse_chain(cert_pem(issued.cert))
    assert len(ders) == 1 and info.sans == ("mail.example.com",)


def test_chain_intermediate_first_is_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="out of order"):
        parse_chain(cert_pem(ca.intermediate) + cert_pem(issued.cert))


def test_chain_with_a_missing_link_is_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="out of order"):
        parse_chain(cert_pem(issued.cert) + cert_pem(ca.root))


def test_truncated_certificate_is_refused(ca):
    data = ca.issue().cert_pem
    for cut in (len(data) // 4, len(data) // 2, len(data) - 40):
        with pytest.raises(ValueError, match="truncated"):
            parse_chain(data[:cut])


def test_certificate_file_holding_a_private_key_is_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="something else than certificates"):
        parse_chain(issued.cert_pem + issued.key_pem)
    with pytest.raises(ValueError, match="something else than certificates"):
        parse_chain(issued.key_pem)


def test_certificate_block_that_is_not_x509_is_refused(ca):
    issued = ca.issue()
    key_der = base64.b64decode(b"".join(issued.key_pem.splitlines()[1:-1]))
    with pytest.raises(ValueError, match="does not parse"):
        parse_chain(pem("CERTIFICATE", key_der))


# --- check_key_matches -------------------------------------------------------------------------

FORMATS = {"caddy": caddy_key_pem, "pkcs8": pkcs8_key_pem}
EXPECTED_LABELS = {
    ("ec256", "caddy"): b"EC PRIVATE KEY",
    ("ec384", "caddy"): b"EC PRIVATE KEY",
    ("rsa", "caddy"): b"RSA PRIVATE KEY",
    ("ed25519", "caddy"): b"ED25519 PRIVATE KEY",
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("kind", KEY_KINDS)
def test_key_matches_its_certificate(ca, kind, fmt):
    issued = ca.issue(key=kind)
    key = FORMATS[fmt](issued.key)
    label = EXPECTED_LABELS.get((kind, fmt), b"PRIVATE KEY")
    assert key.startswith(b"-----BEGIN " + label + b"-----\n")  # the format under test
    check_key_matches(issued.cert_pem, key)  # raises if not


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_key_of_another_pair_of_the_same_type_is_refused(ca, kind):
    issued = ca.issue(key=kind)
    other = caddy_key_pem(key_of(kind, 1))
    with pytest.raises(ValueError, match="does not match"):
        check_key_matches(issued.cert_pem, other)


@pytest.mark.parametrize(
    ("cert_kind", "key_kind"),
    [
        ("ec256", "rsa"),
        ("ec256", "ed25519"),
        ("ec256", "ec384"),
        ("rsa", "ec256"),
        ("rsa", "ed25519"),
        ("ed25519", "ec256"),
        ("ed25519", "rsa"),
    ],
)
def test_key_of_another_type_is_refused(ca, cert_kind, key_kind):
    issued = ca.issue(key=cert_kind)
    with pytest.raises(ValueError, match="does not match"):
        check_key_matches(issued.cert_pem, caddy_key_pem(key_of(key_kind)))


def test_key_of_the_intermediate_is_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="does not match"):
        check_key_matches(issued.cert_pem, caddy_key_pem(ca.intermediate_key))


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_truncated_key_is_refused(ca, kind):
    issued = ca.issue(key=kind)
    key = issued.key_pem
    for cut in (len(key) // 2, len(key) - 10):
        with pytest.raises(ValueError, match="truncated"):
            check_key_matches(issued.cert_pem, key[:cut])


@pytest.mark.parametrize("data", [b"", b"\n", b"   "])
def test_empty_key_is_refused(ca, data):
    with pytest.raises(ValueError, match="empty"):
        check_key_matches(ca.issue().cert_pem, data)


@pytest.mark.parametrize(
    "data",
    [b"not a key\n", b"\x30\x82\x01\x00binary DER\n", b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 x@y\n"],
)
def test_key_that_is_not_pem_is_refused(ca, data):
    with pytest.raises(ValueError):
        check_key_matches(ca.issue().cert_pem, data)


def test_key_that_is_not_pem_is_called_so(ca):
    with pytest.raises(ValueError, match="no PEM block"):
        check_key_matches(ca.issue().cert_pem, b"not a key\n")


def test_key_file_with_two_keys_is_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="not a single PEM private key"):
        check_key_matches(issued.cert_pem, issued.key_pem + caddy_key_pem(key_of("ec256", 1)))
    with pytest.raises(ValueError, match="not a single PEM private key"):
        check_key_matches(issued.cert_pem, issued.key_pem + issued.key_pem)


def test_key_file_holding_a_certificate_is_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="not a single PEM private key"):
        check_key_matches(issued.cert_pem, cert_pem(issued.cert))


def test_key_under_a_wrong_label_is_refused(ca):
    issued = ca.issue(key="ec256")
    relabelled = issued.key_pem.replace(b"EC PRIVATE KEY", b"RSA PRIVATE KEY")
    with pytest.raises(ValueError, match="does not load"):
        check_key_matches(issued.cert_pem, relabelled)


def test_swapped_files_are_refused(ca):
    issued = ca.issue()
    with pytest.raises(ValueError):
        check_key_matches(issued.key_pem, issued.cert_pem)


# --- the private key never shows in an error ---------------------------------------------------


def _messages(error: BaseException) -> str:
    """The error and everything chained to it, as text."""
    texts = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


def _bad_keys(ca):
    """(case, certificate file, key file, every private key PEM that the files hold a part of)."""
    issued = ca.issue(key="rsa")
    own = issued.key_pem
    other = caddy_key_pem(key_of("rsa", 1))
    yield "mismatched", issued.cert_pem, other, [other]
    yield "truncated", issued.cert_pem, own[: len(own) // 2], [own]
    yield "truncated at a line", issued.cert_pem, b"\n".join(own.splitlines()[:-3]) + b"\n", [own]
    relabelled = own.replace(b"RSA PRIVATE KEY", b"EC PRIVATE KEY")
    yield "wrong label", issued.cert_pem, relabelled, [own]
    yield "two keys", issued.cert_pem, own + other, [own, other]
    yield "bad base64", issued.cert_pem, own.replace(b"\n", b"\n*", 1), [own]
    yield "swapped", own, issued.cert_pem, [own]
    ed = ca.issue(key="ed25519")
    ed_other = caddy_key_pem(key_of("ed25519", 1))
    yield "mismatched ed25519", ed.cert_pem, ed_other, [ed_other]


def test_private_key_never_appears_in_errors(ca):
    for case, cert, key, secrets in _bad_keys(ca):
        with pytest.raises(ValueError) as caught:
            check_key_matches(cert, key)
        text = _messages(caught.value)
        for secret in secrets:
            for form in secret_forms(secret):
                assert form not in text, case


def test_private_key_in_the_certificate_file_never_appears_in_errors(ca):
    issued = ca.issue(key="rsa")
    with pytest.raises(ValueError) as caught:
        parse_chain(issued.cert_pem + issued.key_pem)
    text = _messages(caught.value)
    for secret in secret_forms(issued.key_pem):
        assert secret not in text


# --- subject_public_key_info and the leaf's public facts ---------------------------------------

SPKI = Encoding.DER, PublicFormat.SubjectPublicKeyInfo


def _der_sequence(content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return b"\x30" + bytes([size]) + content
    count = (size.bit_length() + 7) // 8
    return b"\x30" + bytes([0x80 | count]) + size.to_bytes(count, "big") + content


def _contents(der: bytes) -> bytes:
    """The contents of the DER SEQUENCE `der` (definite length)."""
    first = der[1]
    start = 2 if first < 0x80 else 2 + (first & 0x7F)
    return der[start:]


def _without_version(cert: x509.Certificate) -> bytes:
    """The certificate's DER with the optional [0] version field left out (an X.509 v1 layout;
    the signature no longer verifies, which SPKI extraction does not look at)."""
    tbs = cert.tbs_certificate_bytes
    version = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2 (v3)
    assert _contents(tbs).startswith(version)
    rest = _contents(cert.public_bytes(Encoding.DER))[len(tbs) :]
    return _der_sequence(_der_sequence(_contents(tbs)[len(version) :]) + rest)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_subject_public_key_info_is_the_certificates_spki(ca, kind):
    issued = ca.issue(key=kind)
    der = issued.cert.public_bytes(Encoding.DER)
    expected = issued.cert.public_key().public_bytes(*SPKI)
    assert subject_public_key_info(der) == expected
    assert subject_public_key_info(_without_version(issued.cert)) == expected
    info, _ = parse_chain(issued.cert_pem)
    assert info.spki_sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("cut", [1, 10, 100, -1])
def test_subject_public_key_info_of_truncated_der_is_refused(ca, cut):
    der = ca.issue().cert.public_bytes(Encoding.DER)
    with pytest.raises(ValueError):
        subject_public_key_info(der[:cut])


def test_a_new_key_changes_the_spki_and_a_reissue_keeps_it(ca):
    first = parse_chain(ca.issue(key=key_of("ec256", 0)).cert_pem)[0]
    reissued = parse_chain(ca.issue(key=key_of("ec256", 0), not_before=NOW - HOUR).cert_pem)[0]
    renewed = parse_chain(ca.issue(key=key_of("ec256", 1)).cert_pem)[0]
    assert first.fingerprint != reissued.fingerprint
    assert first.spki_sha256 == reissued.spki_sha256
    assert first.spki_sha256 != renewed.spki_sha256


def test_cert_info_names_subject_issuer_and_serial(ca):
    issued = ca.issue(["mail.example.com"], common_name="mail.example.com")
    info, _ = parse_chain(issued.cert_pem)
    assert info.subject == "CN=mail.example.com"
    assert info.issuer == "CN=certsync test intermediate"
    assert not info.self_signed
    assert info.serial == format(issued.cert.serial_number, "x")
    assert info.fingerprint == hashlib.sha256(issued.cert.public_bytes(Encoding.DER)).hexdigest()
    assert info.to_json()["self_signed"] is False


def test_self_signed_placeholder_is_told_apart(ca):
    placeholder = self_signed(["mail.example.com"], NOW - DAY, NOW + 30 * DAY)
    info, _ = parse_chain(placeholder.cert_pem)
    assert info.self_signed and info.subject == info.issuer == "CN=mail.example.com"
    assert info.to_json()["self_signed"] is True
    # a CA-issued leaf without any subject is not taken for a self-signed one
    assert not parse_chain(ca.issue(common_name=None).cert_pem)[0].self_signed


def test_names_in_a_certificate_cannot_carry_control_characters(ca):
    """A certificate's names are text its maker chose: a newline would forge a log or preview
    line, an escape sequence would reach the operator's terminal."""
    forged_line = "\n2026-01-01T00:00:00Z certsync mail-1: mail.example.com: in sync: ok"
    issued = ca.issue([f"mail.evil.test{forged_line}\x1b[2J"], common_name="x\u202ey\x85")
    info, _ = parse_chain(issued.cert_pem)
    assert info.sans == (
        "mail.evil.test\\n2026-01-01T00:00:00Z certsync mail-1: mail.example.com:"
        " in sync: ok\\x1b[2J",
    )
    assert info.subject == "CN=x\\u202ey\\x85"
    assert all(text.isprintable() for text in (*info.sans, info.subject, info.issuer))


def test_an_encrypted_key_is_refused_without_decrypting_it(ca):
    """Its writer chooses what decrypting costs (PBKDF2 rounds); no key certsync installs has a
    password."""
    issued = ca.issue()
    encrypted = issued.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="not a single PEM private key"):
        check_key_matches(issued.cert_pem, encrypted)
