"""A renewal reaches mox without a deploy: the cron job under a real cron daemon (Debian's
`cron`, in the host: the file the deploy installs in /etc/cron.d is accepted and runs), and the
optional watcher on Caddy's folders."""

from __future__ import annotations

import time

from tests.e2e.deployrun import caddy_fingerprint, deploy, served_fingerprints
from tests.e2e.faultkit import host_processes, log_lines
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

    took = renew_and_wait_until_served(host, pki, name, 150, "cron", interval=1)
    assert took < 120, f"served {took:.0f} s after the renewal"
    wait_for_logged_install(host, name, synced_by_deploy, "the cron job")


def test_watcher_serves_a_renewed_certificate_seconds_after_caddy_writes(make_fleet, pki, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    watching = fleet.write_inventory(
        tmp_path / "watching.py", extra_host_data={host.name: {"certsync_watch": True}}
    )
    assert deploy(watching).returncode == 0
    wait_for(lambda: host_processes(host, r"certsync\.pyz watch"), 10, "the watcher to start")
    synced_by_deploy = len(log_lines(host))

    took = renew_and_wait_until_served(host, pki, name, 60, "the watcher", interval=0.5)
    assert took < 20, f"served {took:.0f} s after the renewal"
    wait_for_logged_install(host, name, synced_by_deploy, "the watcher")
    assert len(host_processes(host, r"certsync\.pyz watch")) == 1  # the sync did not start another

    # Turned off: the watcher leaves once the deploy has written the new settings.
    assert deploy(fleet.write_inventory(tmp_path / "plain.py")).returncode == 0
    wait_for(lambda: not host_processes(host, r"certsync\.pyz watch"), 20, "the watcher to leave")


def renew_and_wait_until_served(
    host, pki, name: str, timeout: float, by: str, interval: float
) -> float:
    """Renew `name` in Caddy's storage on `host`; seconds until mox serves the new certificate."""
    pki.renew(name)
    host.copy_caddy_storage(pki)
    renewed = time.monotonic()
    new = caddy_fingerprint(pki, name)
    wait_for(
        lambda: set(served_fingerprints(host, name).values()) == {new},
        timeout,
        f"{by} on {host.name} to install and serve the renewed certificate",
        interval=interval,
    )
    return time.monotonic() - renewed


def wait_for_logged_install(host, name: str, lines_before: int, by: str) -> None:
    """The sync logs its outcome once it has checked every port: a moment after mox serves it."""
    wait_for(
        lambda: any(f"{name}: installed" in line for line in log_lines(host)[lines_before:]),
        30,
        f"{by}'s log line for {name} on {host.name}",
    )
