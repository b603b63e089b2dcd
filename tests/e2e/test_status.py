"""`certsync status` on the real fleet: in sync, after each kind of drift, and with a host that
cannot be reached. Run from another folder than the repository, as an operator would."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.e2e.deployrun import MOX_CERT_DIR, ROOT, caddy_fingerprint, deploy, status
from tests.e2e.faultkit import CRON_FILE, cron_command, log_lines, now, put_mox_files
from tests.fleet.hostspec import ADMIN_USER, MOX_CONFIG
from tests.fleet.x509util import ca_signed, spki_sha256
from tests.unit.certs import leaked_secrets

CHECKS = ["caddy", "mox_files", "mox_equals_caddy", "mox_conf", "served", "cron", "dane"]
DAY = dt.timedelta(days=1)


def deployed_host(make_fleet, tmp_path, hosts=1):
    fleet = make_fleet(hosts)
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    run = deploy(inventory)
    assert run.returncode == 0, run.output
    return fleet, inventory


def assert_no_key_material(pki, fleet, text):
    for host in fleet:
        for name in host.cert_names:
            assert leaked_secrets(text, pki.key_path(name).read_bytes()) == [], (
                f"key material of {name} in the status report"
            )


def failed_checks(report, host, name):
    entry = report["hosts"][host]["names"][name]
    assert [c["check"] for c in entry["checks"]] == CHECKS
    assert entry["ok"] == all(c["ok"] for c in entry["checks"])
    return {c["check"]: c["detail"] for c in entry["checks"] if not c["ok"]}


def test_status_of_a_fleet_in_sync(make_fleet, pki, tmp_path):
    fleet, inventory = deployed_host(make_fleet, tmp_path)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    table = status(inventory, cwd=elsewhere)
    as_json = status(inventory, "--json", cwd=elsewhere)

    assert table.returncode == 0, table.stdout + table.stderr
    assert re.search(
        rf"^{host.name}\s+{re.escape(name)}\s+\d{{4}}-\d\d-\d\d \(\d+ days left\)\s+ok$",
        table.stdout,
        re.M,
    ), table.stdout
    assert f"_25._tcp.{name}. IN TLSA 3 1 1 {spki_sha256(pki.certificate(name))}" in table.stdout
    assert as_json.returncode == 0, as_json.stderr
    report = as_json.json()
    assert set(report) == {"ok", "hosts"} and report["ok"] is True
    assert set(report["hosts"][host.name]) == {"ok", "error", "names"}
    assert report["hosts"][host.name]["error"] is None
    assert failed_checks(report, host.name, name) == {}
    details = {c["check"]: c["detail"] for c in report["hosts"][host.name]["names"][name]["checks"]}
    fingerprint = caddy_fingerprint(pki, name)[:16]
    assert f"sha256={fingerprint}" in details["caddy"] and "days left" in details["caddy"]
    assert details["served"].startswith(f"993, 465, 587 serve sha256={fingerprint}")
    assert f"TLSA 3 1 1 {spki_sha256(pki.certificate(name))}" in details["served"]
    assert re.fullmatch(r"last run \S+ \(.* ago\): installed", details["cron"]), details["cron"]
    assert_no_key_material(pki, fleet, table.stdout + as_json.stdout)

    # Not as root: the host's own `_sudo`, as the deploy uses it; without it, the host is named.
    admin = {"ssh_user": ADMIN_USER}
    with_sudo = fleet.write_inventory(tmp_path / "sudo.py", {host.name: {**admin, "_sudo": True}})
    without = fleet.write_inventory(tmp_path / "nosudo.py", {host.name: admin})
    assert status(with_sudo, cwd=elsewhere).returncode == 0
    refused = status(without, "--json", cwd=elsewhere)
    assert refused.returncode == 2
    assert refused.json()["hosts"][host.name]["error"] == "needs root to read the keys (set _sudo)"
    # the deploy's own `_sudo` (certsync_deploy(_sudo=True)), or pyinfra's --sudo
    (elsewhere / "sudo_deploy.py").write_text(
        "from certsync.deploy import certsync_deploy\n\ncertsync_deploy(_sudo=True)\n"
    )
    assert status(without, "sudo_deploy.py", cwd=elsewhere).returncode == 0
    assert status(without, "--sudo", cwd=elsewhere).returncode == 0
    # a setting certsync refuses: that host's report says which and why
    wrong = status(inventory, "--data", "certsync_verify_ports=0", "--json", cwd=elsewhere)
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    error = wrong.json()["hosts"][host.name]["error"]
    assert error.startswith(f"{host.name}: certsync_verify_ports: 0"), error


def renew_in_caddy(host, pki, name):
    pki.renew(name)
    host.copy_caddy_storage(pki)


def other_pair(name):
    return ca_signed([name], now() - DAY, now() + 60 * DAY)


def change_mox_files(host, pki, name):
    pair = other_pair(name)
    put_mox_files(host, name, pair.cert_pem, pair.key_pem)  # mox still serves what it read


def loosen_key_mode(host, pki, name):
    host.run(f"chmod 0644 {MOX_CERT_DIR}/{name}.key", check=True)


def mox_conf_names_other_files(host, pki, name):
    conf = host.source_of(MOX_CONFIG)
    conf.write_text(
        conf.read_text().replace(f"{MOX_CERT_DIR}/{name}.", f"{MOX_CERT_DIR}/old-{name}.")
    )


def mox_serves_another(host, pki, name):
    pair = other_pair(name)
    put_mox_files(host, name, pair.cert_pem, pair.key_pem)
    host.restart_mox()
    put_mox_files(host, name, pki.cert_path(name).read_bytes(), pki.key_path(name).read_bytes())


def remove_cron_file(host, pki, name):
    host.run(f"rm {CRON_FILE}", check=True)


def cron_run_fails(host, pki, name):
    """Caddy's storage is gone; the cron job's own command runs and refuses the name."""
    shutil.rmtree(host.source_of(host.caddy_data_dir) / "certificates")
    result = host.run(cron_command(host))
    assert result.returncode == 1, result.stderr
    assert f"{name}: refused: " in log_lines(host)[-1]


DRIFTS = {
    "caddy renewed": (
        renew_in_caddy,
        {
            "mox_equals_caddy": r"the next sync installs it",
            "served": r"serves sha256=\w+, not sha256=",
        },
    ),
    "mox files changed": (change_mox_files, {"mox_equals_caddy": r"^mox has .*Caddy sha256="}),
    "key mode": (loosen_key_mode, {"mox_files": r"\.key has mode 0644, not 0600"}),
    "mox.conf names other files": (
        mox_conf_names_other_files,
        {
            "mox_conf": r"^no listener in .* names .* in TLS KeyCerts",
            "served": r"^not checked: no listener",
        },
    ),
    "mox serves another": (mox_serves_another, {"served": r"serves sha256=\w+, not sha256="}),
    "cron file missing": (
        remove_cron_file,
        {"cron": r"/etc/cron\.d/certsync missing: run the deploy"},
    ),
    "last run failed": (
        cron_run_fails,
        {
            "caddy": r"does not exist",
            "mox_equals_caddy": r"no valid pair",
            "cron": r"^last run \S+ \(.*\): refused: Caddy's storage .* does not exist",
        },
    ),
}


@pytest.mark.parametrize("drift", list(DRIFTS))
def test_status_names_each_kind_of_drift(make_fleet, pki, tmp_path, drift):
    fleet, inventory = deployed_host(make_fleet, tmp_path)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    make_drift, expected = DRIFTS[drift]
    make_drift(host, pki, name)

    table = status(inventory, cwd=tmp_path)
    report = status(inventory, "--json", cwd=tmp_path)

    assert (table.returncode, report.returncode) == (1, 1), table.stdout + table.stderr
    failed = failed_checks(report.json(), host.name, name)
    assert sorted(failed) == sorted(expected), failed
    for check, pattern in expected.items():
        assert re.search(pattern, failed[check]), (check, failed[check])
    first = next(check for check in CHECKS if check in expected)
    line = next(line for line in table.stdout.splitlines() if line.startswith(host.name))
    assert " FAIL " in line and failed[first] in line, line
    assert_no_key_material(pki, fleet, table.stdout + report.stdout)


def test_status_names_an_unreachable_host_and_still_checks_the_others(make_fleet, pki, tmp_path):
    fleet, inventory = deployed_host(make_fleet, tmp_path, hosts=2)
    down, up = fleet.hosts
    down.stop_sshd()

    table = status(inventory, cwd=tmp_path)
    report = status(inventory, "--json", cwd=tmp_path)

    assert (table.returncode, report.returncode) == (2, 2)
    assert re.search(rf"^{down.name}\s+-\s+-\s+UNKNOWN unreachable: ", table.stdout, re.M), (
        table.stdout
    )
    assert re.search(rf"^{up.name}\s+{re.escape(up.cert_names[0])}\s+.*\sok$", table.stdout, re.M)
    hosts = report.json()["hosts"]
    assert hosts[down.name]["ok"] is False and hosts[down.name]["error"].startswith("unreachable")
    assert hosts[up.name] == {**hosts[up.name], "ok": True, "error": None}
    limited = status(inventory, "--limit", up.name, cwd=tmp_path)
    assert limited.returncode == 0 and down.name not in limited.stdout
    # as pyinfra: a --limit without a match is a warning; the other limits still apply
    warned = status(inventory, "--limit", up.name, "--limit", "mail-9", cwd=tmp_path)
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert "No host matches found for --limit pattern: mail-9" in warned.stderr
    assert up.name in warned.stdout and down.name not in warned.stdout
    nothing = status(inventory, "--limit", "mail-9", cwd=tmp_path)
    assert nothing.returncode == 2 and "no host matched, or none has" in nothing.stderr


def test_status_takes_pyinfra_inventory_forms_and_connection_options(make_fleet, pki, tmp_path):
    """A host name as the inventory (as `pyinfra HOST ...`), the settings in the working
    folder's group_data/all.py, the connection from --user, --key and --port; the deploy run
    the same way."""
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    folder = tmp_path / "operator"
    (folder / "group_data").mkdir(parents=True)
    data = {
        key: value
        for key, value in host.inventory_data().items()
        if key not in ("ssh_hostname", "ssh_user", "ssh_key")
    }
    (folder / "group_data" / "all.py").write_text(
        "".join(f"{key} = {value!r}\n" for key, value in data.items())
    )
    connect = ("--user", "root", "--port", "22")
    key = ("--key", str(host.client_key))
    shutil.copy(ROOT / "deploy.py", folder)  # status reads it too: the working folder's
    run = subprocess.run(
        [sys.executable, "-m", "pyinfra", "-y", *connect, *key, host.address, "deploy.py"],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr

    with_key = status(host.address, *connect, *key, "--json", cwd=folder)
    without_key = status(host.address, *connect, "--json", cwd=folder)

    assert with_key.returncode == 0, with_key.stdout + with_key.stderr
    assert list(with_key.json()["hosts"]) == [host.address]
    assert failed_checks(with_key.json(), host.address, name) == {}
    assert without_key.returncode == 2, without_key.stdout + without_key.stderr
    assert without_key.json()["hosts"][host.address]["error"].startswith("unreachable: ")
