"""The certsync deploy on the real SSH test fleet, with certificates Caddy obtained from pebble."""

from __future__ import annotations

import json
import re

from certsync.host.settings import BY_NAME
from certsync.program import zipapp_sha256
from tests.e2e.deployrun import (
    BACKUP_DIR,
    LOG_FILE,
    MOX_CERT_DIR,
    backups,
    caddy_fingerprint,
    caddy_sha256,
    deploy,
    preview,
    pyinfra,
    served_fingerprints,
    sha256_on_host,
)
from tests.e2e.faultkit import CONFIG_FILE, CRON_FILE, PROGRAM, cron_command
from tests.unit.certs import leaked_secrets


def assert_in_sync(fleet, pki, hosts=None):
    """On each host, checked over SSH (testinfra, one command): mox's folder and files (as mox
    reads them, through certsync's links) have mox's owner and modes 0700, 0644, 0600 and
    Caddy's bytes; and mox serves Caddy's certificate on every port."""
    for host in hosts or fleet:
        paths = [
            f"{MOX_CERT_DIR}/{n}{suffix}" for n in host.cert_names for suffix in (".crt", ".key")
        ]
        listing = host.testinfra().check_output(
            "stat -L -c '%n %U %G %a' "
            + " ".join([MOX_CERT_DIR, *paths])
            + " && sha256sum "
            + " ".join(paths)
        )
        meta = dict(line.split(" ", 1) for line in listing.splitlines()[: len(paths) + 1])
        sums = dict(reversed(line.split()) for line in listing.splitlines()[len(paths) + 1 :])
        assert meta[MOX_CERT_DIR] == "mox mox 700", host.name
        for name in host.cert_names:
            for suffix, mode in ((".crt", "644"), (".key", "600")):
                path = f"{MOX_CERT_DIR}/{name}{suffix}"
                assert meta[path] == f"mox mox {mode}", (host.name, path)
                assert sums[path] == caddy_sha256(pki, name, suffix), (host.name, path)
            served = served_fingerprints(host, name)
            assert set(served.values()) == {caddy_fingerprint(pki, name)}, (host.name, name, served)


def test_first_run_installs_caddys_certificates_and_mox_serves_them(fleet, pki, inventory):
    first = fleet.hosts[0]
    placeholder = sha256_on_host(first, f"{MOX_CERT_DIR}/{first.cert_names[0]}.crt")
    assert placeholder != caddy_sha256(pki, first.cert_names[0], ".crt")

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert_in_sync(fleet, pki)
    for host in fleet:
        files = host.testinfra()
        (stamp,) = backups(host)
        backup = files.file(f"{BACKUP_DIR}/{stamp}")
        assert (backup.user, backup.mode) == ("root", 0o700)
        assert files.file(BACKUP_DIR).mode == 0o700
        cron = files.file(CRON_FILE)
        assert (cron.user, cron.mode) == ("root", 0o644)
        assert re.search(
            r"^\S+ \S+ \S+ \S+ \S+ root .*certsync\.pyz sync --config ", cron.content_string, re.M
        )
        # the same command at boot, to repair what a crash left
        jobs = [
            line.split(" root ", 1) for line in cron.content_string.splitlines() if " root " in line
        ]
        assert [when for when, _ in jobs][1:] == ["@reboot"]
        assert jobs[1][1] == jobs[0][1].replace(" >/dev/null", " --boot >/dev/null")
    # The backup holds what mox had before: the placeholder.
    (stamp,) = backups(first)
    backed_up = sha256_on_host(first, f"{BACKUP_DIR}/{stamp}/{first.cert_names[0]}.crt")
    assert backed_up == placeholder


def test_second_run_changes_nothing_and_does_not_restart_mox(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    pids = {host.name: host.mox_pid() for host in fleet}
    before = {
        host.name: (backups(host), host.run(f"stat -c %i:%Y {MOX_CERT_DIR}/*").stdout)
        for host in fleet
    }

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    for host in fleet:
        assert host.mox_pid() == pids[host.name]
        assert (backups(host), host.run(f"stat -c %i:%Y {MOX_CERT_DIR}/*").stdout) == before[
            host.name
        ]
        assert re.search(rf"\[{host.name}\]\s+No changes", run.output), run.output
    assert_in_sync(fleet, pki)


def test_the_operation_alone_on_pyinfras_command_line_syncs_then_changes_nothing(
    fleet, pki, tmp_path
):
    # mail-1's names only on the command line (its data has none: None is unset, as a missing
    # key); mail-2 and mail-3 keep the names of their own data, which wins over the arguments.
    first = fleet.hosts[0]
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py", extra_host_data={first.name: {"certsync_names": None}}
    )
    command = (
        "-y",
        str(inventory),
        "certsync.operations.synced",
        f'names=["{first.cert_names[0]}"]',  # JSON, as pyinfra parses an argument
        "backups_keep=3",
    )

    run = pyinfra(*command)

    assert run.returncode == 0, run.output
    assert_in_sync(fleet, pki)
    for host in fleet:
        files = host.testinfra()
        for path, mode in ((PROGRAM, 0o755), (CONFIG_FILE, 0o644), (CRON_FILE, 0o644)):
            installed = files.file(path)
            assert (installed.user, installed.group, installed.mode) == ("root", "root", mode)
        config = json.loads(files.file(CONFIG_FILE).content_string)
        assert (config["names"], config["backups_keep"]) == (list(host.cert_names), 3), host.name
    pids = {host.name: host.mox_pid() for host in fleet}

    again = pyinfra(*command)

    assert again.returncode == 0, again.output
    for host in fleet:
        assert re.search(rf"\[{host.name}\]\s+No changes", again.output), again.output
        assert host.mox_pid() == pids[host.name], host.name


CARRIED = "<certsync host program, part 1 of "  # the carried program, as -vv shows it
STATE_FACT = "certsync.facts.CertsyncState"


def state_reads(output: str, host: str) -> list[str]:
    """The state read commands pyinfra ran on `host`, as -vv shows them."""
    commands = re.findall(rf"^\[{re.escape(host)}\]\s+>>> (.*)$", output, re.M)
    return [command for command in commands if " state --settings " in command]


def test_the_program_is_carried_only_to_a_host_without_this_version(fleet, pki, inventory):
    """Nothing installed: the small state read answers that this version is not installed, and
    the same fact reads again with the program in the command. Installed: one small command,
    the program sent no more; `pyinfra INVENTORY fact` reads it too."""
    first = deploy(inventory, "-vv")

    assert first.returncode == 0, first.output
    for host in fleet:
        reads = state_reads(first.output, host.name)
        assert [CARRIED in read for read in reads] == [False, True], reads
    assert_in_sync(fleet, pki)

    again = deploy(inventory, "-vv")

    assert again.returncode == 0, again.output
    assert CARRIED not in again.output
    for host in fleet:
        assert len(state_reads(again.output, host.name)) == 1, again.output
        assert re.search(rf"\[{host.name}\]\s+No changes", again.output), again.output
    fact = pyinfra("--json", str(inventory), "fact", STATE_FACT)
    assert fact.returncode == 0, fact.output
    for host in fleet:
        names = json.loads(fact.stdout)[STATE_FACT][host.name]["names"]
        assert {entry["action"] for entry in names.values()} == {"in sync"}, names


def test_owner_and_mode_drift_is_repaired_without_restart(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    host = fleet.hosts[0]
    key = f"{MOX_CERT_DIR}/{host.cert_names[0]}.key"
    host.run(f"chmod 644 {key} && chown root {key}", check=True)
    pid = host.mox_pid()

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert host.mox_pid() == pid
    assert_in_sync(fleet, pki, [host])


def test_renewed_certificate_is_installed_and_served(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    host = fleet.hosts[0]
    name = host.cert_names[0]
    old = caddy_fingerprint(pki, name)
    pid = host.mox_pid()

    pki.renew(name)
    fleet.copy_caddy_storage(pki)
    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert caddy_fingerprint(pki, name) != old
    assert host.mox_pid() != pid
    assert_in_sync(fleet, pki)


def test_cron_job_command_syncs_by_itself(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    host = fleet.hosts[-1]
    name = host.cert_names[0]
    pki.renew(name)
    host.copy_caddy_storage(pki)
    result = host.run(cron_command(host))

    assert result.returncode == 0, result.stderr
    assert_in_sync(fleet, pki, [host])
    last_lines = host.run(f"tail -n {len(host.cert_names)} {LOG_FILE}", check=True).stdout
    assert f"{name}: installed" in last_lines
    for other in host.cert_names[1:]:
        assert f"{other}: in sync" in last_lines


def test_force_reinstalls_and_restarts_only_the_limited_host(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    pids = {host.name: host.mox_pid() for host in fleet}
    target = fleet.hosts[0]

    run = deploy(inventory, "--limit", target.name, "--data", "certsync_force=true")

    assert run.returncode == 0, run.output
    for host in fleet:
        restarted = host.mox_pid() != pids[host.name]
        assert restarted == (host is target), host.name
    assert_in_sync(fleet, pki)


def test_name_missing_from_caddy_is_refused_and_the_others_still_sync(fleet, pki, tmp_path):
    host = fleet.hosts[-1]
    names = list(host.cert_names)
    renewed = names[0]
    pki.renew(renewed)
    host.copy_caddy_storage(pki)
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        extra_host_data={host.name: {"certsync_names": [*names, "nocert.h9.test"]}},
    )

    run = deploy(inventory, "--limit", host.name)

    assert run.returncode != 0
    assert re.search(rf"{host.name}.*nocert\.h9\.test: refused: .*no certificate", run.output), (
        run.output
    )
    assert host.run(f"ls {MOX_CERT_DIR}/nocert.h9.test.crt").returncode != 0
    assert_in_sync(fleet, pki, [host])


def test_invalid_settings_are_refused_before_anything_runs(fleet, inventory):
    host = fleet.hosts[0]
    host.run("rm -f /tmp/pwned")
    before = host.run(f"stat -c %Y {CRON_FILE} {MOX_CERT_DIR}/*").stdout

    for data, setting in (
        ("certsync_verify_ports=993,99999", "certsync_verify_ports"),
        ("certsync_names=mail.h1.test;touch /tmp/pwned", "certsync_names"),
        ("certsync_mox_cert_dir=/home/mox/../../etc", "certsync_mox_cert_dir"),
        ("certsync_mox_cert_dir=relative/certs", "certsync_mox_cert_dir"),
    ):
        run = deploy(inventory, "--data", data)
        assert run.returncode != 0, data
        assert setting in run.output and "mail-1" in run.output, run.output
    assert host.run("test -e /tmp/pwned").returncode != 0
    assert host.run(f"stat -c %Y {CRON_FILE} {MOX_CERT_DIR}/*").stdout == before


def test_private_keys_never_appear_in_output_or_log(fleet, pki, inventory):
    host = fleet.hosts[0]
    name = host.cert_names[0]
    pki.renew(name)
    fleet.copy_caddy_storage(pki)

    run = deploy(inventory, "-vvv", "--debug", "--diff")

    assert run.returncode == 0, run.output
    log = host.run(f"cat {LOG_FILE}", check=True).stdout
    for key_host in fleet:
        for key_name in key_host.cert_names:
            key = pki.key_path(key_name).read_bytes()
            assert leaked_secrets(run.output, key) == [], (
                f"key material of {key_name} in the deploy output"
            )
            assert leaked_secrets(log, key) == [], f"key material of {key_name} in the log"
    assert_in_sync(fleet, pki)


def test_diff_shows_what_changes_in_config_and_cron_job_and_never_a_key(make_fleet, pki, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    fresh = preview(inventory, "--diff")
    assert fresh.returncode == 0, fresh.output
    program_line = (
        f"Will install {PROGRAM}: the certsync host program, sha256 {zipapp_sha256()[:16]}"
    )
    for expected in (program_line, f"Will create {CONFIG_FILE}", f"Will create {CRON_FILE}"):
        assert f"[{host.name}] {expected}" in fresh.output, fresh.output
    assert deploy(inventory).returncode == 0
    old_key = host.source_of(f"{MOX_CERT_DIR}/{name}.key").read_bytes()
    pki.renew(name)  # a new key waits in Caddy's storage too
    fleet.copy_caddy_storage(pki)
    changes = ("--data", "certsync_backups_keep=3", "--data", "certsync_cron_schedule=@hourly")

    shown = preview(inventory, "--diff", *changes)
    run = deploy(inventory, "--diff", *changes)

    assert shown.returncode == 0, shown.output
    for expected in (
        rf"\[{host.name}\] Will modify {CONFIG_FILE}",
        r'-\s+"backups_keep": 5,',
        r'\+\s+"backups_keep": 3,',
        rf"\[{host.name}\] Will modify {CRON_FILE}",
        rf"-\s+{re.escape(BY_NAME['cron_schedule'].default)} root ",
        r"\+\s+@hourly root ",
    ):
        assert re.search(expected, shown.output), (expected, shown.output)
    assert f"Will install {PROGRAM}" not in shown.output  # the same host program
    assert run.returncode == 0, run.output
    assert host.run(f"grep -q '^@hourly root ' {CRON_FILE}").returncode == 0
    keys = (old_key, pki.key_path(name).read_bytes())
    for output in (shown.output, run.output):
        assert leaked_secrets(output, *keys) == [], "key material shown"
