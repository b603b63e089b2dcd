"""The cron job under a real cron daemon (Debian's `cron`, in the host): the file the deploy
installs in /etc/cron.d is accepted and runs, and a certificate Caddy renewed is served without
any deploy."""

from __future__ import annotations

import time

from tests.e2e.deployrun import caddy_fingerprint, deploy, served_fingerprints
from tests.e2e.faultkit import log_lines
from tests.fleet.waiting import wait_for

EVERY_MINUTE = "* * * * *"


def test_real_cron_serves_a_renewed_certificate_within_two_minutes(make_fleet, pki, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        extra_host_data={host.name: {"certsync_cron_schedule": EVERY_MINUTE}},
    )
    host.start_cron()
    assert deploy(inventory).returncode == 0
    synced_by_deploy = len(log_lines(host))

    pki.renew(name)
    host.copy_caddy_storage(pki)
    renewed = time.monotonic()
    new = caddy_fingerprint(pki, name)
    wait_for(
        lambda: set(served_fingerprints(host, name).values()) == {new},
        150,
        f"cron on {host.name} to install and serve the renewed certificate",
        interval=1,
    )

    took = time.monotonic() - renewed
    assert took < 120, f"served {took:.0f} s after the renewal"
    by_cron = log_lines(host)[synced_by_deploy:]
    assert any(f"{name}: installed" in line for line in by_cron), by_cron
