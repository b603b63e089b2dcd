"""Which algorithm a private key is, read from its DER by hand before OpenSSL sees it.

OpenSSL decodes whatever algorithm a PEM `PRIVATE KEY` names, and some decodings cost what the
key's writer chose: a DSA key's public part is g^x mod p, with no bound on p (a 16 kB key costs
seconds of CPU, a larger one days). The mox user writes mox's key files, so only the algorithms
Caddy writes are handed to OpenSSL: RSA up to 8192 bits, EC on P-256 or P-384 (a named curve,
never explicit parameters), and Ed25519. The sizes are bounded too.
"""

from __future__ import annotations

MAX_KEY_BYTES = 16 * 1024  # an RSA 8192 key in PEM is about 6.4 kB
MAX_CERT_BYTES = 64 * 1024  # a leaf and a few intermediates
MAX_RSA_BITS = 8192

SEQUENCE, INTEGER, OCTET_STRING, OID, NULL = 0x30, 0x02, 0x04, 0x06, 0x05

RSA = "1.2.840.113549.1.1.1"
EC = "1.2.840.10045.2.1"
ED25519 = "1.3.101.112"
CURVES = {"1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384"}
# Named in a refusal, so that the reason says what the key is.
KNOWN = {
    "1.2.840.10040.4.1": "DSA",
    "1.2.840.10046.2.1": "DH (X9.42)",
    "1.2.840.113549.1.3.1": "DH",
    "1.2.840.113549.1.1.10": "RSA-PSS",
    "1.3.101.110": "X25519",
    "1.3.101.111": "X448",
    "1.3.101.113": "Ed448",
    "1.2.643.7.1.1.1.1": "GOST R 34.10-2012",
    "1.2.156.10197.1.301": "SM2",
}


class Unsupported(ValueError):
    """A key of an algorithm or size certsync does not hand to OpenSSL."""


def der_header(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the contents, end of the contents) of the DER item at `pos`."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _items(data: bytes, start: int, end: int, limit: int) -> list[tuple[int, int, int]]:
    """The first `limit` items (tag, start, end) of the contents data[start:end]."""
    items: list[tuple[int, int, int]] = []
    while start < end and len(items) < limit:
        tag, begin, stop = der_header(data[:end], start)
        items.append((tag, begin, stop))
        start = stop
    return items


def _sequence(data: bytes, pos: int = 0, limit: int = 10) -> list[tuple[int, int, int]]:
    tag, start, end = der_header(data, pos)
    if tag != SEQUENCE:
        raise ValueError("not a DER sequence")
    return _items(data, start, end, limit)


def _oid(data: bytes, item: tuple[int, int, int]) -> str:
    tag, start, end = item
    if tag != OID or not 0 < end - start <= 32:
        raise ValueError("not an object identifier")
    arcs: list[int] = []
    value = 0
    for byte in data[start:end]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = min(arcs[0] // 40, 2) if arcs else 0
    return ".".join(map(str, [first, arcs[0] - 40 * first, *arcs[1:]])) if arcs else ""


def _rsa(data: bytes) -> str:
    """PKCS#1 RSAPrivateKey: version, n, e, ...; n at most MAX_RSA_BITS."""
    items = _sequence(data, 0, 3)
    if len(items) < 3 or any(tag != INTEGER for tag, _, _ in items):
        raise ValueError("not an RSA private key")
    _, start, end = items[1]
    bits = int.from_bytes(data[start:end], "big").bit_length()
    if bits > MAX_RSA_BITS:
        raise Unsupported(f"RSA of {bits} bits (certsync takes up to {MAX_RSA_BITS})")
    if items[2][2] - items[2][1] > 8:
        raise Unsupported("RSA with a public exponent of more than 64 bits")
    return f"RSA {bits}"


def _sec1(data: bytes, curve: str | None) -> str:
    """SEC1 ECPrivateKey: version, key, [0] named curve (or the PKCS#8 one), [1] public key."""
    items = _sequence(data, 0, 4)
    if len(items) < 2 or items[0][0] != INTEGER or items[1][0] != OCTET_STRING:
        raise ValueError("not an EC private key")
    for tag, start, end in items[2:]:
        if tag == 0xA0:  # [0] ECParameters: a named curve only
            inner = _items(data, start, end, 1)
            named = _oid(data, inner[0]) if inner and inner[0][0] == OID else None
            if named is None:
                raise Unsupported("EC with explicit curve parameters (not a named curve)")
            if curve is not None and named != curve:
                raise Unsupported("EC with two curve parameters that differ")
            curve = named
    if curve not in CURVES:
        what = "no curve" if curve is None else f"curve {curve}"
        raise Unsupported(f"EC on {what} (certsync takes P-256 and P-384)")
    return f"EC {CURVES[curve]}"


def _pkcs8(data: bytes) -> str:
    """PKCS#8 PrivateKeyInfo: version, AlgorithmIdentifier {OID, parameters}, key."""
    items = _sequence(data, 0, 3)
    if len(items) < 3 or items[0][0] != INTEGER or items[2][0] != OCTET_STRING:
        raise ValueError("not a PKCS#8 private key")
    algorithm = _items(data, items[1][1], items[1][2], 2) if items[1][0] == SEQUENCE else []
    if not algorithm:
        raise ValueError("not a PKCS#8 private key")
    oid = _oid(data, algorithm[0])
    key = data[items[2][1] : items[2][2]]
    if oid == RSA:
        return _rsa(key)
    if oid == EC:
        if len(algorithm) < 2 or algorithm[1][0] != OID:
            raise Unsupported("EC with explicit curve parameters (not a named curve)")
        return _sec1(key, _oid(data, algorithm[1]))
    if oid == ED25519:
        if len(algorithm) > 1 or len(key) != 34:
            raise ValueError("not an Ed25519 private key")
        return "Ed25519"
    name = KNOWN.get(oid, "an unknown algorithm")
    raise Unsupported(f"{name} (OID {oid}); certsync takes RSA, EC P-256 or P-384, Ed25519")


def key_kind(label: str, der: bytes) -> str:
    """What the key is ("RSA 2048", "EC P-256", "Ed25519"); raises ValueError, with what it is,
    for a key certsync does not hand to OpenSSL."""
    try:
        if label in ("PRIVATE KEY", "ED25519 PRIVATE KEY"):
            return _pkcs8(der)
        if label == "EC PRIVATE KEY":
            return _sec1(der, None)
        if label == "RSA PRIVATE KEY":
            return _rsa(der)
    except Unsupported as error:
        raise Unsupported(f"refusing the private key: {error}") from None
    except (IndexError, ValueError):
        raise ValueError(f"private key does not load (not a {label} in DER)") from None
    raise Unsupported(f"a {label} block is not a private key certsync takes")
