"""PEM parsing, certificate chains, and whether a private key belongs to a certificate."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tests.unit.certs import KEY_KINDS, caddy_key_pem, cert_pem, key_of, pem, pkcs8_key_pem

# --- pem_blocks --------------------------------------------------------------------------------


def test_pem_blocks_reads_every_block(cs, ca):
    issued = ca.issue()
    blocks = cs.pem_blocks(issued.cert_pem)
    assert [label for label, _ in blocks] == ["CERTIFICATE", "CERTIFICATE"]
    assert blocks[0][1] == issued.cert.public_bytes(Encoding.DER)


def test_pem_blocks_accepts_crlf_and_no_final_newline(cs, ca):
    data = ca.issue().cert_pem.replace(b"\n", b"\r\n").rstrip()
    assert len(cs.pem_blocks(data)) == 2


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
def test_pem_blocks_refuses_malformed_pem(cs, data, reason):
    with pytest.raises(ValueError) as caught:
        cs.pem_blocks(data)
    if reason:
        assert reason in str(caught.value)


def test_pem_blocks_refuses_text_around_blocks(cs, ca):
    data = ca.issue().cert_pem
    with pytest.raises(ValueError, match="outside PEM"):
        cs.pem_blocks(b"subject=CN = mail.example.com\n" + data)
    with pytest.raises(ValueError):
        cs.pem_blocks(data + b"trailing garbage\n")


# --- parse_chain -------------------------------------------------------------------------------


def test_chain_leaf_then_intermediate_passes(cs, ca):
    issued = ca.issue()
    info, ders = cs.parse_chain(issued.cert_pem)
    assert info.sans == ("mail.example.com",)
    assert ders == [c.public_bytes(Encoding.DER) for c in [issued.cert, ca.intermediate]]


def test_chain_up_to_the_root_passes(cs, ca):
    issued = ca.issue()
    _, ders = cs.parse_chain(issued.cert_pem + cert_pem(ca.root))
    assert len(ders) == 3


def test_leaf_alone_passes(cs, ca):
    issued = ca.issue()
    info, ders = cs.parse_chain(cert_pem(issued.cert))
    assert len(ders) == 1 and info.sans == ("mail.example.com",)


def test_chain_intermediate_first_is_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="out of order"):
        cs.parse_chain(cert_pem(ca.intermediate) + cert_pem(issued.cert))


def test_chain_with_a_missing_link_is_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="out of order"):
        cs.parse_chain(cert_pem(issued.cert) + cert_pem(ca.root))


def test_truncated_certificate_is_refused(cs, ca):
    data = ca.issue().cert_pem
    for cut in (len(data) // 4, len(data) // 2, len(data) - 40):
        with pytest.raises(ValueError, match="truncated"):
            cs.parse_chain(data[:cut])


def test_certificate_file_holding_a_private_key_is_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="something else than certificates"):
        cs.parse_chain(issued.cert_pem + issued.key_pem)
    with pytest.raises(ValueError, match="something else than certificates"):
        cs.parse_chain(issued.key_pem)


def test_certificate_block_that_is_not_x509_is_refused(cs, ca):
    issued = ca.issue()
    key_der = base64.b64decode(b"".join(issued.key_pem.splitlines()[1:-1]))
    with pytest.raises(ValueError, match="does not parse"):
        cs.parse_chain(pem("CERTIFICATE", key_der))


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
def test_key_matches_its_certificate(cs, ca, kind, fmt):
    issued = ca.issue(key=kind)
    key = FORMATS[fmt](issued.key)
    label = EXPECTED_LABELS.get((kind, fmt), b"PRIVATE KEY")
    assert key.startswith(b"-----BEGIN " + label + b"-----\n")  # the format under test
    cs.check_key_matches(issued.cert_pem, key)  # raises if not


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_key_of_another_pair_of_the_same_type_is_refused(cs, ca, kind):
    issued = ca.issue(key=kind)
    other = caddy_key_pem(key_of(kind, 1))
    with pytest.raises(ValueError, match="does not match"):
        cs.check_key_matches(issued.cert_pem, other)


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
def test_key_of_another_type_is_refused(cs, ca, cert_kind, key_kind):
    issued = ca.issue(key=cert_kind)
    with pytest.raises(ValueError, match="does not match"):
        cs.check_key_matches(issued.cert_pem, caddy_key_pem(key_of(key_kind)))


def test_key_of_the_intermediate_is_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="does not match"):
        cs.check_key_matches(issued.cert_pem, caddy_key_pem(ca.intermediate_key))


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_truncated_key_is_refused(cs, ca, kind):
    issued = ca.issue(key=kind)
    key = issued.key_pem
    for cut in (len(key) // 2, len(key) - 10):
        with pytest.raises(ValueError, match="truncated"):
            cs.check_key_matches(issued.cert_pem, key[:cut])


@pytest.mark.parametrize("data", [b"", b"\n", b"   "])
def test_empty_key_is_refused(cs, ca, data):
    with pytest.raises(ValueError, match="empty"):
        cs.check_key_matches(ca.issue().cert_pem, data)


@pytest.mark.parametrize(
    "data",
    [b"not a key\n", b"\x30\x82\x01\x00binary DER\n", b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 x@y\n"],
)
def test_key_that_is_not_pem_is_refused(cs, ca, data):
    with pytest.raises(ValueError):
        cs.check_key_matches(ca.issue().cert_pem, data)


def test_key_that_is_not_pem_is_called_so(cs, ca):
    with pytest.raises(ValueError, match="no PEM block"):
        cs.check_key_matches(ca.issue().cert_pem, b"not a key\n")


def test_key_file_with_two_keys_is_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="not a single PEM private key"):
        cs.check_key_matches(issued.cert_pem, issued.key_pem + caddy_key_pem(key_of("ec256", 1)))
    with pytest.raises(ValueError, match="not a single PEM private key"):
        cs.check_key_matches(issued.cert_pem, issued.key_pem + issued.key_pem)


def test_key_file_holding_a_certificate_is_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError, match="not a single PEM private key"):
        cs.check_key_matches(issued.cert_pem, cert_pem(issued.cert))


def test_key_under_a_wrong_label_is_refused(cs, ca):
    issued = ca.issue(key="ec256")
    relabelled = issued.key_pem.replace(b"EC PRIVATE KEY", b"RSA PRIVATE KEY")
    with pytest.raises(ValueError, match="does not load"):
        cs.check_key_matches(issued.cert_pem, relabelled)


def test_swapped_files_are_refused(cs, ca):
    issued = ca.issue()
    with pytest.raises(ValueError):
        cs.check_key_matches(issued.key_pem, issued.cert_pem)


# --- the private key never shows in an error ---------------------------------------------------


def _secret_forms(key_pem: bytes) -> list[str]:
    """Pieces of a PEM private key that must never appear in a message: its base64 lines."""
    lines = [line for line in key_pem.splitlines() if line and not line.startswith(b"-----")]
    der = base64.b64decode(b"".join(lines))
    return [line.decode() for line in lines if len(line) >= 16] + [der.hex(), repr(der)[2:40]]


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


def test_private_key_never_appears_in_errors(cs, ca):
    for case, cert, key, secrets in _bad_keys(ca):
        with pytest.raises(ValueError) as caught:
            cs.check_key_matches(cert, key)
        text = _messages(caught.value)
        for secret in secrets:
            for form in _secret_forms(secret):
                assert form not in text, case


def test_private_key_in_the_certificate_file_never_appears_in_errors(cs, ca):
    issued = ca.issue(key="rsa")
    with pytest.raises(ValueError) as caught:
        cs.parse_chain(issued.cert_pem + issued.key_pem)
    text = _messages(caught.value)
    for secret in _secret_forms(issued.key_pem):
        assert secret not in text
