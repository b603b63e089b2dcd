"""Debian 12's Caddy 2.6 (`/usr/bin/caddy`), which the rest of the suite no longer runs: a first
sync of a name and a wildcard, and a renewal, which on 2.6 keeps the private key, installed by the
cron job's command. Its own pebble and Caddy on 127.0.s.2 (the module's `pki` replaces the
session's for these tests; make_fleet, inventory and the helpers use it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import require_e2e
from tests.e2e.deployrun import deploy
from tests.e2e.faultkit import assert_serves_caddys, cron_command, log_lines
from tests.fleet import HostSpec, Pki
from tests.fleet.pki import DEBIAN_CADDY_FLAVOR
from tests.fleet.x509util import sha256_fingerprint, spki_sha256

NAME = "mail.h1.test"
WILDCARD = "*.h1.test"  # Caddy's own CA, 12-hour certificates: minimum validity 1 h


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    require_e2e()
    with Pki(caddy=DEBIAN_CADDY_FLAVOR) as pki:
        assert pki.caddy_version[:2] == (2, 6), pki.caddy_version
        pki.issue([NAME, WILDCARD])
        yield pki


def one_host(make_fleet, tmp_path):
    fleet = make_fleet([HostSpec(index=1, cert_names=(NAME, WILDCARD))])
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        extra_host_data={fleet.hosts[0].name: {"certsync_min_validity_hours": 1}},
    )
    return fleet.hosts[0], inventory


def test_caddy_26_first_sync_of_a_name_and_a_wildcard(pki, make_fleet, tmp_path):
    host, inventory = one_host(make_fleet, tmp_path)

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    for name in (NAME, WILDCARD):
        assert any(f": {name}: installed: " in line for line in log_lines(host)), name
        assert_serves_caddys(host, pki, name)  # the files, and what every port serves


def test_caddy_26_renewal_keeps_the_key_and_the_cron_job_installs_it(pki, make_fleet, tmp_path):
    host, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    old = pki.certificate(NAME)
    old_key = pki.key_path(NAME).read_bytes()
    assert pki.renewal_keeps_key(NAME)

    new = pki.renew(NAME)
    host.copy_caddy_storage(pki)
    result = host.run(cron_command(host))

    assert pki.renewals_logged(NAME) == 1  # Caddy renewed it (not obtained anew)
    assert sha256_fingerprint(new) != sha256_fingerprint(old)
    assert spki_sha256(new) == spki_sha256(old)
    assert pki.key_path(NAME).read_bytes() == old_key
    assert result.returncode == 0, result.stderr
    assert any(f": {NAME}: installed: " in line for line in log_lines(host)[-2:])
    assert_serves_caddys(host, pki, NAME)
    assert_serves_caddys(host, pki, WILDCARD)
