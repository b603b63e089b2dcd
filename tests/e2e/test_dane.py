"""DANE-safe key changes on the real fleet: Caddy 2.11 renewing (a new key at each renewal unless
`reuse_private_keys`), knot as the zones' two authoritative servers (TSIG-signed updates, TTLs of
a few seconds), the hosts' resolver pointed at them. One fleet for the module, a host per test.

1. TLSA published for the current key, Caddy renews: held (deploy and cron job), mox serves the
   old certificate, status names the record; published with `nsupdate`: installed two TTLs after
   the first run that saw it everywhere, on every port.
2. The same, unattended, with scripts/dane-nsupdate as the publish command; the old record is
   deleted once mox serves the new key.
3. A renewal that keeps the key (`reuse_private_keys`): never held; with the DNS servers silent,
   neither that install nor an in-sync run looks anything up.
4. The deadline: installed anyway, with the alert naming the record.
5. The DNS servers down or silent: held with the reason, nothing installed, in bounds.
6. A name without TLSA records: installed as before.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from certsync.host.dane import DNS_BUDGET_SECONDS
from tests.conftest import require_e2e
from tests.e2e.deployrun import ROOT, caddy_fingerprint, deploy, served_fingerprints, status
from tests.e2e.faultkit import cron_command, log_lines
from tests.fleet import Fleet, HostSpec, Pki, TestHost
from tests.fleet.dnsserver import PRIMARY, SECONDARY, TTL, DnsServers, resolv_conf, zones_of
from tests.fleet.x509util import sha256_fingerprint, spki_sha256

# mail-41..46 (127.0.s.51-56): apart from the default hosts of the other modules' fleets
HELD, PUBLISHED, KEPT, DEADLINE, DOWN, NO_TLSA = range(41, 47)
WRAPPER = ROOT / "scripts" / "dane-nsupdate"
WAIT_BOUND = 8 * TTL + 30  # two TTLs, the secondary's catching up, a few cron runs


def owner(name: str, port: int = 25) -> str:
    return f"_{port}._tcp.{name}."


def record(spki: str) -> str:
    return f"3 1 1 {spki}"


@dataclass
class World:
    pki: Pki
    dns: DnsServers
    fleet: Fleet
    dir: Path

    def host(self, index: int) -> TestHost:
        return self.fleet[f"mail-{index}"]

    def inventory(self, index: int, **data: object) -> Path:
        path = self.dir / f"inventory-{index}-{len(list(self.dir.iterdir()))}.py"
        return self.fleet.write_inventory(path, extra_host_data={f"mail-{index}": data})

    def mox_spki(self, host: TestHost) -> str:
        from cryptography import x509

        name = host.cert_names[0]
        pem = host.source_of(f"/home/mox/certs/{name}.crt").read_bytes()
        return spki_sha256(x509.load_pem_x509_certificate(pem))

    def renew(self, host: TestHost) -> str:
        """Caddy renews the host's name; the new certificate's key hash."""
        cert = self.pki.renew(host.cert_names[0])
        host.copy_caddy_storage(self.pki)
        return spki_sha256(cert)

    def publish_tlsa(self, host: TestHost, spki: str, ports: tuple[int, ...] = (25,)) -> None:
        for port in ports:
            self.dns.add_tlsa(owner(host.cert_names[0], port), record(spki))


@pytest.fixture(scope="module")
def world(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    require_e2e()
    started = time.monotonic()
    specs = [
        HostSpec(index, (f"mail.h{index}.test",), resolv_conf=resolv_conf())
        for index in (HELD, PUBLISHED, KEPT, DEADLINE, DOWN, NO_TLSA)
    ]
    pki.issue([spec.cert_names[0] for spec in specs if spec.index != KEPT])
    pki.issue([f"mail.h{KEPT}.test"], reuse_private_keys=True)
    with DnsServers(zones_of(specs)) as dns, Fleet(specs, pki=pki) as fleet:
        world = World(pki, dns, fleet, tmp_path_factory.mktemp("dane"))
        # every host but DEADLINE's starts synced (mox on Caddy's certificate), no TLSA anywhere
        first = [f"mail-{spec.index}" for spec in specs if spec.index != DEADLINE]
        inventory = fleet.write_inventory(
            world.dir / "first.py", groups={"mail": [h.name for h in fleet], "first": first}
        )
        run = deploy(inventory, "--limit", "first")
        assert run.returncode == 0, run.output
        yield world
    print(f"\ntest_dane module: {time.monotonic() - started:.1f} s (fleet, DNS and tests)")


def sync_as_cron(host: TestHost) -> subprocess.CompletedProcess[str]:
    return host.run(cron_command(host), timeout=120)


def last_outcome(host: TestHost, name: str) -> str:
    return next(line for line in reversed(log_lines(host)) if f": {name}: " in line)


def metrics(host: TestHost) -> str:
    return host.source_of("/var/lib/prometheus/node-exporter/certsync.prom").read_text()


def nsupdate(world: World, lines: list[str]) -> None:
    """What the operator types: an RFC 2136 update signed with the zone's TSIG key."""
    script = f"server {PRIMARY}\n" + "".join(f"update {line}\n" for line in lines) + "send\n"
    result = subprocess.run(
        ["nsupdate", "-k", str(world.dns.bind_key_file)],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    world.dns.wait_in_sync()


def test_held_until_published_with_nsupdate_then_installed_after_two_ttls(world, tmp_path):
    host = world.host(HELD)
    name = host.cert_names[0]
    ports = (25, 465)
    inventory = world.inventory(HELD, certsync_dane_ports=list(ports))
    old_spki = world.mox_spki(host)
    world.publish_tlsa(host, old_spki, ports)
    old = set(served_fingerprints(host, name).values())
    new_spki = world.renew(host)
    assert new_spki != old_spki  # Caddy 2.11: a new key at each renewal

    run = deploy(inventory, "--limit", host.name)
    assert run.returncode == 0, run.output
    assert f"{name}: held for DANE" in run.output
    for port in ports:
        assert f"publish {owner(name, port)} IN TLSA {record(new_spki)}" in run.output
    assert sync_as_cron(host).returncode == 0
    assert "held for DANE" in last_outcome(host, name)
    assert set(served_fingerprints(host, name).values()) == old
    assert f'certsync_dane_held{{name="{name}"}} 1' in metrics(host)

    report = status(inventory, "--limit", host.name, "--json", cwd=tmp_path)
    assert report.returncode == 1, report.stdout + report.stderr
    checks = {c["check"]: c for c in report.json()["hosts"][host.name]["names"][name]["checks"]}
    assert not checks["dane"]["ok"] and record(new_spki) in checks["dane"]["detail"]
    assert [check for check, c in checks.items() if not c["ok"]] == ["dane"], checks

    nsupdate(world, [f"add {owner(name, p)} {TTL} TLSA {record(new_spki)}" for p in ports])
    assert sync_as_cron(host).returncode == 0
    seen = time.monotonic()
    assert "waiting two TTLs" in last_outcome(host, name)
    report = status(inventory, "--limit", host.name, "--json", cwd=tmp_path)
    checks = {c["check"]: c for c in report.json()["hosts"][host.name]["names"][name]["checks"]}
    assert checks["dane"]["ok"], checks["dane"]  # waiting out the TTLs waits for nobody

    new = caddy_fingerprint(world.pki, name)
    while time.monotonic() - seen < WAIT_BOUND:
        assert sync_as_cron(host).returncode == 0
        if ": installed" in last_outcome(host, name):
            break
        assert "held for DANE" in last_outcome(host, name)
        assert set(served_fingerprints(host, name).values()) == old
        time.sleep(0.5)
    installed_after = time.monotonic() - seen
    assert ": installed" in last_outcome(host, name), last_outcome(host, name)
    assert installed_after >= 2 * TTL - 2  # (the host counts whole seconds from its own run)
    assert set(served_fingerprints(host, name).values()) == {new}
    assert status(inventory, "--limit", host.name, cwd=tmp_path).returncode == 0
    assert f'certsync_dane_held{{name="{name}"}} 0' in metrics(host)


def test_the_publish_command_completes_the_change_and_deletes_the_old_record(world):
    host = world.host(PUBLISHED)
    name = host.cert_names[0]
    command = f"{WRAPPER} -s {PRIMARY} -k {world.dns.bind_key_file} -t {TTL}"
    inventory = world.inventory(PUBLISHED, certsync_dane_publish_command=command)
    old_spki = world.mox_spki(host)
    world.publish_tlsa(host, old_spki)
    new_spki = world.renew(host)

    run = deploy(inventory, "--limit", host.name)
    assert run.returncode == 0, run.output
    assert f"{name}: held for DANE" in run.output
    assert any("the DANE publish command took" in line for line in log_lines(host))
    world.dns.wait_in_sync()
    for server in (PRIMARY, SECONDARY):
        assert record(new_spki) in (world.dns.tlsa_records(server, owner(name)) or [])

    started = time.monotonic()
    new = caddy_fingerprint(world.pki, name)
    while time.monotonic() - started < WAIT_BOUND:  # what the cron job does, every few seconds
        assert sync_as_cron(host).returncode == 0
        if set(served_fingerprints(host, name).values()) == {new}:
            break
        time.sleep(0.5)
    assert set(served_fingerprints(host, name).values()) == {new}
    world.dns.wait_in_sync()
    for server in (PRIMARY, SECONDARY):
        assert world.dns.tlsa_records(server, owner(name)) == [record(new_spki)]
    adds = [line for line in log_lines(host) if "publish command took: add" in line]
    assert len(adds) == 1, adds  # handed over once, not at every run


def test_a_renewal_that_keeps_the_key_is_never_held_nor_looked_up(world, tmp_path):
    host = world.host(KEPT)
    name = host.cert_names[0]
    assert world.pki.renewal_keeps_key(name)
    inventory = world.inventory(KEPT)
    world.publish_tlsa(host, world.mox_spki(host))
    spki = world.renew(host)
    assert spki == world.mox_spki(host)
    new = caddy_fingerprint(world.pki, name)

    with world.dns.silent(PRIMARY), world.dns.silent(SECONDARY):
        started = time.monotonic()
        run = deploy(inventory, "--limit", host.name)
        assert run.returncode == 0, run.output
        assert set(served_fingerprints(host, name).values()) == {new}
        result = sync_as_cron(host)  # in sync: no DNS lookup either
        took = time.monotonic() - started
    assert result.returncode == 0 and ": in sync" in last_outcome(host, name)
    assert "held for DANE" not in run.output
    assert took < DNS_BUDGET_SECONDS, f"{took:.1f} s: a DNS lookup waited for the silent servers"


def test_the_deadline_installs_anyway_with_the_alert(world):
    host = world.host(DEADLINE)
    name = host.cert_names[0]
    # mox on the placeholder made at setup (30 days), whose key's record is published
    alert_file = "/var/lib/certsync/alert.txt"
    inventory = world.inventory(
        DEADLINE,
        certsync_dane_deadline_days=30,
        certsync_alert_command=f"tee -a {alert_file}",
    )
    world.publish_tlsa(host, world.mox_spki(host))
    new_spki = spki_sha256(world.pki.certificate(name))

    run = deploy(inventory, "--limit", host.name)

    assert run.returncode == 0, run.output
    new = caddy_fingerprint(world.pki, name)
    assert set(served_fingerprints(host, name).values()) == {new}
    missing = f"{owner(name)} IN TLSA {record(new_spki)}"
    assert "installed without waiting for DANE" in last_outcome(host, name)
    alert = host.run(f"cat {alert_file}", check=True).stdout
    assert f"{name}: installed" in alert and missing in alert, alert


def test_dns_down_or_silent_holds_with_the_reason_in_bounds(world):
    host = world.host(DOWN)
    name = host.cert_names[0]
    world.publish_tlsa(host, world.mox_spki(host))
    old = set(served_fingerprints(host, name).values())
    world.renew(host)

    with world.dns.stopped(SECONDARY):
        result = sync_as_cron(host)
        line = last_outcome(host, name)
    assert result.returncode == 0, result.stderr
    assert "held for DANE" in line and f"DNS lookup of {owner(name)} failed" in line, line
    assert set(served_fingerprints(host, name).values()) == old

    with world.dns.silent(PRIMARY), world.dns.silent(SECONDARY):
        started = time.monotonic()
        result = sync_as_cron(host)
        took = time.monotonic() - started
        line = last_outcome(host, name)
    assert result.returncode == 0, result.stderr
    assert "held for DANE" in line and f"DNS lookup of {owner(name)} failed" in line, line
    assert took < DNS_BUDGET_SECONDS + 10, f"the run took {took:.1f} s"
    assert set(served_fingerprints(host, name).values()) == old
    held = json.loads(host.source_of("/var/lib/certsync/dane.json").read_text())["held"]
    assert name in held


def test_a_name_without_tlsa_records_is_installed_as_before(world):
    host = world.host(NO_TLSA)
    name = host.cert_names[0]
    inventory = world.inventory(NO_TLSA)
    assert world.dns.tlsa_records(PRIMARY, owner(name)) == []
    before = world.mox_spki(host)
    assert world.renew(host) != before

    run = deploy(inventory, "--limit", host.name)

    assert run.returncode == 0, run.output
    assert "held for DANE" not in run.output
    new = caddy_fingerprint(world.pki, name)
    assert set(served_fingerprints(host, name).values()) == {new}
    assert sha256_fingerprint(world.pki.certificate(name)) == new
