"""What the README and DESIGN.md say of today's Caddy, checked on what Caddy 2.11 (the test
fleet's, built by scripts/setup.sh) wrote: its storage layout, the private keys it writes for each
`key_type`, a new key at every renewal unless `reuse_private_keys`; and certsync syncing a pair
of each key type that mox then serves."""

from __future__ import annotations

import json
import re
import stat
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.e2e.deployrun import deploy
from tests.e2e.faultkit import assert_serves_caddys
from tests.fleet import HostSpec, Pki, served_certificate
from tests.fleet.pki import CADDY_HTTPS_PORT, KEY_TYPES, LOCAL_ISSUER_FOLDER
from tests.fleet.x509util import (
    key_matches_certificate,
    load_caddy_private_key,
    sha256_fingerprint,
    spki_sha256,
)

DOMAIN = "keys.test"
DEFAULT = f"default.{DOMAIN}"
REUSE = f"reuse.{DOMAIN}"
WILDCARD = f"*.wildcard.{DOMAIN}"  # not over DEFAULT: that one has no `tls` options
# key_type -> (the PEM label Caddy writes, the key's class and size or curve)
KEY_FORMATS = {
    None: ("EC PRIVATE KEY", ec.EllipticCurvePrivateKey, "secp256r1"),
    "p256": ("EC PRIVATE KEY", ec.EllipticCurvePrivateKey, "secp256r1"),
    "p384": ("EC PRIVATE KEY", ec.EllipticCurvePrivateKey, "secp384r1"),
    "rsa2048": ("RSA PRIVATE KEY", rsa.RSAPrivateKey, 2048),
    "rsa4096": ("RSA PRIVATE KEY", rsa.RSAPrivateKey, 4096),
    "ed25519": ("ED25519 PRIVATE KEY", ed25519.Ed25519PrivateKey, None),
}


def key_type_name(key_type: str) -> str:
    return f"{key_type}.{DOMAIN}"


@pytest.fixture(scope="module")
def caddy211(pki: Pki) -> Pki:
    """The session's Pki (Caddy 2.11) with this module's names: one per key type, one with
    `reuse_private_keys`, one with Caddy's default key type and a wildcard."""
    assert pki.caddy_version[:2] == (2, 11), pki.caddy_version
    pki.issue([DEFAULT, WILDCARD])
    pki.issue([REUSE], reuse_private_keys=True)
    for key_type in KEY_TYPES:
        pki.issue([key_type_name(key_type)], key_type=key_type)
    return pki


def test_caddy_211_stores_each_name_in_its_issuer_folder(caddy211: Pki) -> None:
    """certificates/<issuer>/<name>/<name>.crt|.key|.json, the issuer folder named after the
    ACME directory URL (host-port-path), `local` for Caddy's own CA, `*.` as `wildcard_.`;
    files 0600, folders 0700; `.crt` is the leaf first, then the chain that issued it."""
    certificates = caddy211.data_dir / "certificates"
    directory = urlsplit(caddy211.acme_directory)
    acme_folder = f"{directory.hostname}-{directory.port}-{directory.path.strip('/')}"
    for name, issuer, folder in (
        (DEFAULT, acme_folder, DEFAULT),
        (WILDCARD, LOCAL_ISSUER_FOLDER, f"wildcard_.wildcard.{DOMAIN}"),
    ):
        name_dir = certificates / issuer / folder
        assert sorted(path.name for path in name_dir.iterdir()) == [
            f"{folder}{suffix}" for suffix in (".crt", ".json", ".key")
        ]
        assert stat.S_IMODE(name_dir.stat().st_mode) == 0o700
        for path in name_dir.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        chain = x509.load_pem_x509_certificates((name_dir / f"{folder}.crt").read_bytes())
        leaf = chain[0]
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [name]
        assert len(chain) >= 2
        leaf.verify_directly_issued_by(chain[1])
        assert key_matches_certificate((name_dir / f"{folder}.key").read_bytes(), leaf)
        assert json.loads((name_dir / f"{folder}.json").read_text())["sans"] == [name]


@pytest.mark.parametrize("key_type", KEY_FORMATS)
def test_caddy_211_writes_each_key_type_as_the_design_says(
    caddy211: Pki, key_type: str | None
) -> None:
    """ECDSA (P-256 by default) as SEC1 `EC PRIVATE KEY`, RSA as PKCS#1 `RSA PRIVATE KEY`,
    Ed25519 as PKCS#8 under Caddy's own label `ED25519 PRIVATE KEY`."""
    name = DEFAULT if key_type is None else key_type_name(key_type)
    label, key_class, size = KEY_FORMATS[key_type]
    pem = caddy211.key_path(name).read_bytes()
    assert pem.startswith(f"-----BEGIN {label}-----\n".encode()), pem[:40]
    key = load_caddy_private_key(pem)  # cryptography reads each label only in its own format
    assert isinstance(key, key_class)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        assert key.curve.name == size
    elif isinstance(key, rsa.RSAPrivateKey):
        assert key.key_size == size
    assert key_matches_certificate(pem, caddy211.certificate(name))


def test_caddy_211_renewal_makes_a_new_key_unless_reuse_private_keys(caddy211: Pki) -> None:
    """A renewal (Caddy renewing a due certificate from its own storage) writes a new private
    key; with `reuse_private_keys` in the site's `tls` block, the same key."""
    for name, keeps_key in ((DEFAULT, False), (REUSE, True)):
        old_cert, old_key = caddy211.certificate(name), caddy211.key_path(name).read_bytes()
        assert caddy211.renewal_keeps_key(name) is keeps_key
        renewals = caddy211.renewals_logged(name)

        new_cert = caddy211.renew(name)

        assert caddy211.renewals_logged(name) == renewals + 1, name  # renewed, not obtained
        assert sha256_fingerprint(new_cert) != sha256_fingerprint(old_cert), name
        assert new_cert.not_valid_before_utc >= old_cert.not_valid_before_utc, name
        assert (spki_sha256(new_cert) == spki_sha256(old_cert)) is keeps_key, name
        assert (caddy211.key_path(name).read_bytes() == old_key) is keeps_key, name
        assert key_matches_certificate(caddy211.key_path(name).read_bytes(), new_cert), name


def test_a_pair_of_each_key_type_is_synced_and_served_by_mox(caddy211, make_fleet, tmp_path):
    """RSA (2048, 4096), ECDSA P-384 and Ed25519 pairs as Caddy 2.11 wrote them: the deploy
    installs them byte for byte and every mox port serves each, with its key type."""
    names = tuple(key_type_name(key_type) for key_type in KEY_TYPES if key_type != "p256")
    fleet = make_fleet([HostSpec(index=1, cert_names=names)])
    host = fleet.hosts[0]
    inventory = fleet.write_inventory(tmp_path / "inventory.py")

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    for name in names:
        assert_serves_caddys(host, caddy211, name)  # files byte for byte, every port serves it


def test_caddy_211_serves_a_name_under_its_wildcard_site_with_the_wildcards_certificate(
    caddy211, make_fleet, tmp_path
):
    """Since 2.10, a site under a wildcard site of the same Caddy gets no certificate of its own
    unless it says `tls force_automate` (README): Caddy serves the wildcard's, and certsync
    refuses the name, saying Caddy has no certificate for it."""
    sibling, name = f"forced.wildcard.{DOMAIN}", f"mail.wildcard.{DOMAIN}"
    assert caddy211.issue([name], force_automate=False) == {}  # not waited for
    # Waiting for the sibling's certificate (`tls force_automate`) is waiting for the Caddy that
    # was started with both names to have made its choice for each.
    caddy211.issue([sibling])

    certificates = caddy211.data_dir / "certificates"
    assert sorted(certificates.glob(f"*/{name}")) == []
    served = served_certificate(caddy211.address, CADDY_HTTPS_PORT, name)
    assert sha256_fingerprint(served) == sha256_fingerprint(caddy211.certificate(WILDCARD))
    fleet = make_fleet([HostSpec(index=1, cert_names=(name,))])
    run = deploy(fleet.write_inventory(tmp_path / "inventory.py"))

    assert run.returncode != 0
    assert re.search(rf"{re.escape(name)}: refused: .*no certificate", run.output), run.output
