"""Faults and hostile input (issue 4): every failure leaves mox serving a valid certificate.

Each test breaks one thing on the real fleet (pebble + Caddy's storage, sshd + mox per host) and
checks what a user would: mox still serves a whole pair (the old one or the new one) on every
port, mox's files and the backups are intact, the output names host, name and why, and the exit
status tells the failure. Host program exit statuses: 0 ok, 1 refused, 3 rolled back, 4 restore
failed (certsync/host/cli.py); pyinfra exits 1 when a host fails and shows the host program's
`exit N` line.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.deployrun import (
    BACKUP_DIR,
    MOX_CERT_DIR,
    caddy_fingerprint,
    deploy,
    preview,
    served_fingerprints,
)
from tests.e2e.faultkit import (
    CRON_FILE,
    HOST_RUN_DIR,
    SYNC_COMMAND,
    assert_serves_caddys,
    assert_serves_whole_pair,
    backup_files,
    caddy_name_dir,
    host_popen,
    host_processes,
    leftovers,
    log_lines,
    made_pair,
    mox_files,
    mox_pair_view,
    now,
    one_host,
    wait_until_no_sync_runs,
    write_host_file,
)
from tests.fleet.fleet import MOXCTL
from tests.fleet.hostspec import ADMIN_HOME, ADMIN_USER
from tests.fleet.rundirs import RUNS_ROOT
from tests.fleet.waiting import wait_for
from tests.unit.certs import leaked_secrets, secret_forms

DAY = dt.timedelta(days=1)


def assert_refused(run, host, name, why):
    """pyinfra failed the host; the output names host, name, 'refused' and why; exit 1."""
    assert run.returncode != 0, run.output
    assert re.search(rf"certsync {host.name}: {re.escape(name)}: refused: .*{why}", run.output), (
        run.output
    )
    assert f"certsync {host.name}: exit 1:" in run.output, run.output


def assert_rolled_back(run, host, name, why):
    assert run.returncode != 0, run.output
    assert re.search(
        rf"certsync {host.name}: {re.escape(name)}: rolled back: .*{why}.*; rolled back: ",
        run.output,
    ), run.output
    assert f"certsync {host.name}: exit 3:" in run.output, run.output


# --- 1-4: what Caddy has is not a pair to install --------------------------------------------


def test_missing_caddy_data_dir_is_refused(make_fleet, tmp_path):
    fleet, host, name, inventory = one_host(
        make_fleet, tmp_path, certsync_caddy_data_dir="/var/lib/certsync/no-caddy-here"
    )
    before = mox_files(host)

    run = deploy(inventory)

    assert_refused(run, host, name, "Caddy's storage /var/lib/certsync/no-caddy-here/certificates")
    assert mox_files(host) == before
    assert_serves_whole_pair(host, name)
    assert backup_files(host) == {}


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("new key beside the old certificate", "does not match"),
        ("truncated certificate", "truncated"),
        ("empty key", "empty file"),
    ],
)
def test_incomplete_caddy_pair_is_skipped_and_synced_once_whole(
    make_fleet, pki, tmp_path, damage, why
):
    """Caddy writes key, cert and json one by one: a run in between sees a broken pair. The key
    of another name stands in for Caddy's new key of a renewal (both are keys Caddy made)."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    folder = caddy_name_dir(host, name)
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    if damage.startswith("new key"):
        key.write_bytes((caddy_name_dir(host, "mail.h2.test") / "mail.h2.test.key").read_bytes())
    elif damage.startswith("truncated"):
        data = crt.read_bytes()
        crt.write_bytes(data[: len(data) // 2])
    else:
        key.write_bytes(b"")
    before = mox_files(host)
    placeholder = assert_serves_whole_pair(host, name)

    run = deploy(inventory)

    assert_refused(run, host, name, why)
    assert mox_files(host) == before
    assert assert_serves_whole_pair(host, name) == placeholder

    # Caddy finishes writing; the next run (the cron job's command) syncs it.
    host.copy_caddy_storage(pki)
    result = host.run(SYNC_COMMAND)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{name}: installed" in result.stdout
    assert_serves_caddys(host, pki, name)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("expired", "certificate expired at"),
        ("not yet valid", "not valid yet"),
        ("expiring within the minimum", "within the minimum validity of 24 h"),
        ("wrong name", "not valid for mail.h1.test .names: other.h1.test"),
    ],
)
def test_invalid_caddy_certificate_is_refused(make_fleet, tmp_path, case, why):
    """Pairs made with `cryptography` (self-signed; only dates and names matter here), put where
    Caddy keeps its pair for the name."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    names, start, end = [name], now() - DAY, now() + 30 * DAY
    if case == "expired":
        start, end = now() - 30 * DAY, now() - DAY
    elif case == "not yet valid":
        start = now() + DAY
    elif case == "expiring within the minimum":
        end = now() + dt.timedelta(hours=3)
    else:
        names = ["other.h1.test"]
    cert_pem, key_pem = made_pair(names, start, end)
    folder = caddy_name_dir(host, name)
    (folder / f"{name}.crt").write_bytes(cert_pem)
    (folder / f"{name}.key").write_bytes(key_pem)
    before = mox_files(host)
    placeholder = assert_serves_whole_pair(host, name)

    run = deploy(inventory)

    assert_refused(run, host, name, why)
    assert mox_files(host) == before
    assert assert_serves_whole_pair(host, name) == placeholder
    assert backup_files(host) == {}


def test_untrusted_chain_is_refused_when_a_trusted_chain_is_required(make_fleet, pki, tmp_path):
    """pebble's CA is in no system store: refused; trusting pebble's root makes it sync."""
    fleet, host, name, inventory = one_host(
        make_fleet, tmp_path, certsync_require_trusted_chain=True
    )
    before = mox_files(host)

    run = deploy(inventory)

    assert_refused(run, host, name, "not trusted by /etc/ssl/certs/ca-certificates.crt")
    assert mox_files(host) == before
    assert_serves_whole_pair(host, name)

    write_host_file(host, "/etc/certsync/pebble-root.pem", pki.issuing_root_pem(), 0o644)
    trusting = fleet.write_inventory(
        tmp_path / "trusting.py",
        extra_host_data={
            host.name: {
                "certsync_require_trusted_chain": True,
                "certsync_trusted_ca_file": "/etc/certsync/pebble-root.pem",
            }
        },
    )
    run = deploy(trusting)

    assert run.returncode == 0, run.output
    assert "chain checked on the host" in run.output
    assert_serves_caddys(host, pki, name)


def test_older_caddy_certificate_than_mox_is_not_installed(make_fleet, pki, tmp_path):
    """A stale issuer folder holds the older of two certificates pebble issued; mox has the newer
    one: no downgrade."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    old_crt, old_key = pki.cert_path(name).read_bytes(), pki.key_path(name).read_bytes()
    pki.renew(name)
    host.copy_caddy_storage(pki)
    assert deploy(inventory).returncode == 0
    newer = assert_serves_whole_pair(host, name)
    assert newer == caddy_fingerprint(pki, name)
    current = caddy_name_dir(host, name)
    for entry in current.iterdir():
        entry.unlink()
    current.rmdir()
    stale = caddy_name_dir(host, name, issuer="acme-staging-v02.api.letsencrypt.org-directory")
    stale.mkdir(parents=True)
    (stale / f"{name}.crt").write_bytes(old_crt)
    (stale / f"{name}.key").write_bytes(old_key)
    before, backups_before = mox_files(host), backup_files(host)
    pid = host.mox_pid()

    run = deploy(inventory)

    assert_refused(run, host, name, "older than mox's .*not downgrading")
    assert mox_files(host) == before
    assert backup_files(host) == backups_before
    assert host.mox_pid() == pid
    assert assert_serves_whole_pair(host, name) == newer


# --- 5: the new pair fails after it is installed: roll back ----------------------------------

RESTART_DOWN_ONCE = f"""#!/bin/sh
# First call: stop mox and leave it down (a restart after which mox does not come back).
# Later calls: restart it properly (certsync's rollback).
count=/run/certsync-e2e/restart-count
n=$(($(cat $count 2>/dev/null || echo 0) + 1))
echo $n >$count
if [ $n -eq 1 ]; then exec {MOXCTL} stop; fi
exec {MOXCTL} restart
"""


NOT_UTF8_MOX = """#!/bin/sh
# `mox config test` that fails with bytes that are not UTF-8
printf 'config error: \\377\\376\\n' >&2
exit 1
"""


@pytest.mark.parametrize(
    "failure",
    [
        "mox config test fails",
        "mox config test prints bytes that are not UTF-8",
        "mox does not come back",
        "mox serves something else",
    ],
)
def test_failed_install_is_rolled_back_and_the_old_certificate_served(
    make_fleet, pki, tmp_path, failure
):
    data: dict[str, object] = {"certsync_verify_timeout_seconds": 4}
    if failure == "mox config test fails":
        data["certsync_mox_config"] = "/etc/certsync/broken-mox.conf"
        why = "mox config test failed"
    elif failure.startswith("mox config test"):
        data["certsync_mox_binary"] = "/etc/certsync/not-utf8-mox"
        why = (
            "mox config test failed \\(exit 1\\); to see why, run as root:"
            " /etc/certsync/not-utf8-mox -config /home/mox/config/mox.conf config test"
        )
    elif failure == "mox does not come back":
        data["certsync_restart_command"] = "/etc/certsync/restart-down-once"
        why = (
            "mox does not serve the expected certificate after 4 s:"
            " mail.h1.test 127.0.\\d+.11:465: "
        )
    else:
        data["certsync_restart_command"] = "true"
        why = "mox does not serve the expected certificate after 4 s: .* serves sha256="
    fleet, host, name, inventory = one_host(make_fleet, tmp_path, **data)
    write_host_file(host, "/etc/certsync/broken-mox.conf", "Listeners: [this is not sconf\n")
    write_host_file(host, "/etc/certsync/restart-down-once", RESTART_DOWN_ONCE)
    write_host_file(host, "/etc/certsync/not-utf8-mox", NOT_UTF8_MOX)
    before = mox_pair_view(host)
    old = assert_serves_whole_pair(host, name)
    pid = host.mox_pid()

    run = deploy(inventory)

    assert_rolled_back(run, host, name, why)
    # mox's pair is back (in certsync's layout: its files became links on the way)
    assert mox_pair_view(host) == before and leftovers(host) == []
    assert assert_serves_whole_pair(host, name) == old
    if failure == "mox config test prints bytes that are not UTF-8":
        # neither shown nor logged: as root, it may quote any file that mox.conf points to
        assert "config error" not in run.output + "\n".join(log_lines(host))
    if failure.startswith("mox config test"):
        assert "mox was not restarted" in run.output
        assert host.mox_pid() == pid
    else:
        assert "mox's previous files restored and served again" in run.output
    if failure == "mox does not come back":
        assert (host.run_dir / "restart-count").read_text().strip() == "2"
    (stamp,) = {path.split("/")[0] for path in backup_files(host)}
    backup = backup_files(host)
    assert backup[f"{stamp}/{name}.crt"] == before[f"{name}.crt"][0]
    assert backup[f"{stamp}/{name}.key"] == before[f"{name}.key"][0]


# --- 6: no room, or a read-only folder, while installing -------------------------------------


@pytest.mark.parametrize("fault", ["disk full", "read-only"])
def test_full_or_read_only_cert_folder_keeps_the_old_files(make_fleet, tmp_path, fault):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    copy = f"{HOST_RUN_DIR}/certs-copy"
    if fault == "disk full":
        # a 16 KiB tmpfs holding mox's files, then filled up
        setup = (
            f"cp -a {MOX_CERT_DIR} {copy}"
            f" && mount -t tmpfs -o size=16k,mode=0700,uid=$(id -u mox),gid=$(id -g mox)"
            f" certsync-full {MOX_CERT_DIR}"
            f" && cp -a {copy}/. {MOX_CERT_DIR}/"
            f" && {{ dd if=/dev/zero of={MOX_CERT_DIR}/.filler bs=1k 2>/dev/null; true; }}"
            f" && chown mox:mox {MOX_CERT_DIR}/.filler"
        )
        why = "No space left on device"
    else:
        setup = (
            f"mount --bind {MOX_CERT_DIR} {MOX_CERT_DIR} && mount -o remount,bind,ro {MOX_CERT_DIR}"
        )
        why = "Read-only file system"
    result = host.run(setup)
    assert result.returncode == 0, result.stderr
    before = mox_files(host)
    old = assert_serves_whole_pair(host, name)
    pid = host.mox_pid()

    run = deploy(inventory)

    assert run.returncode != 0, run.output
    assert re.search(
        rf"certsync {host.name}: {name}: failed: install failed \({why}.*\); mox's files unchanged",
        run.output,
    ), run.output
    assert f"certsync {host.name}: exit 3:" in run.output
    assert mox_files(host) == before  # no temporary file left either
    assert host.mox_pid() == pid
    assert assert_serves_whole_pair(host, name) == old
    (stamp,) = {path.split("/")[0] for path in backup_files(host)}
    assert backup_files(host)[f"{stamp}/{name}.crt"] == before[f"{name}.crt"][0]


# --- 7: two syncs at once ---------------------------------------------------------------------


def test_a_sync_waits_for_the_lock_and_completes_after_release(make_fleet, pki, tmp_path):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    host.write_placeholder(name)  # mox's files differ from Caddy's again
    before = mox_files(host)
    pid = host.mox_pid()
    held, release = host.run_dir / "held", host.run_dir / "release"
    holder = host_popen(
        host,
        f"flock /var/lib/certsync/lock sh -c 'touch {HOST_RUN_DIR}/held;"
        f" while [ ! -e {HOST_RUN_DIR}/release ]; do sleep 0.05; done'",
        tmp_path / "holder.log",
    )
    try:
        wait_for(held.exists, 10, "the test to hold the lock")
        with (tmp_path / "deploy.log").open("wb") as out:
            pyinfra = subprocess.Popen(
                ["pyinfra", "-y", str(inventory), "deploy.py"],
                cwd=Path(__file__).resolve().parents[2],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(
            lambda: any("waiting for /var/lib/certsync/lock" in line for line in log_lines(host)),
            60,
            "the sync to report that it waits for the lock",
        )
        # It waits: nothing touched, mox not restarted, the deploy still running.
        assert mox_files(host) == before
        assert host.mox_pid() == pid
        assert pyinfra.poll() is None
    finally:
        release.touch()
        holder.wait(timeout=30)

    assert pyinfra.wait(timeout=120) == 0, (tmp_path / "deploy.log").read_text()
    assert_serves_caddys(host, pki, name)
    lines = log_lines(host)
    waited = next(i for i, line in enumerate(lines) if "waiting for" in line)
    assert any(f"{name}: installed" in line for line in lines[waited:])


def test_cron_job_and_deploy_at_once_install_exactly_once(make_fleet, pki, tmp_path):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    host.write_placeholder(name)
    logged, backups_before = (
        len(log_lines(host)),
        len({p.split("/")[0] for p in backup_files(host)}),
    )

    cron = host_popen(host, SYNC_COMMAND, tmp_path / "cron.log")
    run = deploy(inventory)
    cron_status = cron.wait(timeout=120)

    assert run.returncode == 0, run.output
    assert cron_status == 0, (tmp_path / "cron.log").read_text()
    new_lines = log_lines(host)[logged:]
    installs = [line for line in new_lines if f"{name}: installed" in line]
    assert len(installs) == 1, new_lines
    assert len({p.split("/")[0] for p in backup_files(host)}) == backups_before + 1
    assert_serves_caddys(host, pki, name)


# --- 8: the SSH connection drops mid-sync ----------------------------------------------------

# Stops mox and returns: certsync then waits for mox to serve the new certificate. mox comes
# back once the test says so (after it killed the deploy), or after 60 s.
RESTART_WHEN_TOLD = f"""#!/bin/sh
{MOXCTL} stop
touch {HOST_RUN_DIR}/restarting
(
    i=0
    while [ ! -e {HOST_RUN_DIR}/go ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i + 1)); done
    {MOXCTL} start
) </dev/null >/dev/null 2>&1 &
"""
# Runs the host program and records its exit status, which nobody else can see once the SSH
# session is gone.
PYTHON_RECORDING_STATUS = f"""#!/bin/sh
/usr/bin/python3 "$@"
echo $? >{HOST_RUN_DIR}/exit-status
"""


SSH_SESSION = r"^sshd: root|^sshd-session"  # sshd's session processes (not the listener)


def test_ssh_drop_during_verify_ends_fully_synced(make_fleet, pki, tmp_path):
    fleet, host, name, inventory = one_host(
        make_fleet,
        tmp_path,
        certsync_restart_command="/etc/certsync/restart-when-told",
        certsync_python="/etc/certsync/python-recording-status",
        certsync_verify_timeout_seconds=60,
    )
    write_host_file(host, "/etc/certsync/restart-when-told", RESTART_WHEN_TOLD)
    write_host_file(host, "/etc/certsync/python-recording-status", PYTHON_RECORDING_STATUS)
    with (tmp_path / "deploy.log").open("wb") as out:
        pyinfra = subprocess.Popen(
            ["pyinfra", "-y", str(inventory), "deploy.py"],
            cwd=Path(__file__).resolve().parents[2],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for((host.run_dir / "restarting").exists, 60, "the sync to restart mox")
        assert host_processes(host, r"certsync\.pyz sync")
        assert host_processes(host, SSH_SESSION), "no SSH session to drop"
    finally:
        os.killpg(pyinfra.pid, signal.SIGKILL)
        pyinfra.wait()
    # The SSH session ends with the client: the host program's stdout is now a broken pipe.
    wait_for(
        lambda: not host_processes(host, SSH_SESSION),
        30,
        f"the SSH session on {host.name} to end",
    )
    assert host_processes(host, r"certsync\.pyz sync"), "the sync died with the SSH session"
    (host.run_dir / "go").touch()

    wait_until_no_sync_runs(host)

    assert (host.run_dir / "exit-status").read_text().strip() == "0"
    assert_serves_caddys(host, pki, name)
    assert any(f"{name}: installed" in line for line in log_lines(host))
    assert len({p.split("/")[0] for p in backup_files(host)}) == 1


# --- 9: the mox user plants symlinks ----------------------------------------------------------

TARGET = "/etc/certsync/target-file"  # a root-only file inside the host (its own /etc/certsync)


@pytest.mark.parametrize("where", [".crt", ".key", "temporary file"])
def test_symlink_planted_by_mox_is_neither_written_nor_chowned(make_fleet, pki, tmp_path, where):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    write_host_file(host, TARGET, "root:secret:19000:0:99999:7:::\n", 0o600)
    target = host.source_of(TARGET)
    target_before = (target.read_bytes(), target.stat().st_uid, target.stat().st_mode)
    folder = host.source_of(MOX_CERT_DIR)
    mox_uid, mox_gid = folder.stat().st_uid, folder.stat().st_gid
    planted = []
    if where == "temporary file":
        # certsync names its temporary files .<file>.certsync-<pid>.tmp: plant every pid the
        # host's PID namespace can give it during this test.
        for pid in range(2, 12000):
            for suffix in (".crt", ".key"):
                planted.append(folder / f".{name}{suffix}.certsync-{pid}.tmp")
    else:
        planted.append(folder / f"{name}{where}")
        result = host.run(f"runuser -u mox -- ln -sfn {TARGET} {MOX_CERT_DIR}/{name}{where}")
        assert result.returncode == 0, result.stderr
    for link in planted:
        if not link.is_symlink():
            link.symlink_to(TARGET)
            os.lchown(link, mox_uid, mox_gid)

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert (target.read_bytes(), target.stat().st_uid, target.stat().st_mode) == target_before
    assert_serves_caddys(host, pki, name)
    if where == "temporary file":
        # the names this sync used were planted too, and replaced rather than followed; the
        # others, a crash's leftovers as far as certsync knows, removed (never followed)
        assert [link for link in planted if link.is_symlink()] == []


@pytest.mark.parametrize(
    ("folder", "setting"),
    [
        (MOX_CERT_DIR, None),
        (BACKUP_DIR, None),
        ("/var/lib/certsync/locks", ("certsync_lock_file", "/var/lib/certsync/locks/lock")),
        ("/var/log/certsync/logs", ("certsync_log_file", "/var/log/certsync/logs/certsync.log")),
    ],
)
def test_symlinked_folder_is_refused_for_every_name(make_fleet, tmp_path, folder, setting):
    data = dict([setting]) if setting else {}
    fleet, host, name, inventory = one_host(make_fleet, tmp_path, **data)
    elsewhere = f"{folder}.elsewhere"
    relative = os.path.basename(elsewhere)  # a relative link also resolves outside the host
    if folder == MOX_CERT_DIR:  # the mox user owns /home/mox: it can do this
        command = f"runuser -u mox -- sh -c 'mv {folder} {elsewhere} && ln -s {relative} {folder}'"
    else:
        command = f"mkdir -p {elsewhere} && ln -s {relative} {folder}"
    result = host.run(command)
    assert result.returncode == 0, result.stderr
    before = mox_files(host)  # through the link: mox still reads its files there
    old = assert_serves_whole_pair(host, name)
    pid = host.mox_pid()

    run = deploy(inventory)

    assert_refused(run, host, name, re.escape(f"{folder} is a symlink; refusing"))
    assert "Traceback" not in run.output
    assert mox_files(host) == before
    assert host.mox_pid() == pid
    assert assert_serves_whole_pair(host, name) == old
    if folder != MOX_CERT_DIR:
        assert not any(host.source_of(elsewhere).iterdir())


def test_a_folder_of_roots_moved_into_the_place_of_mox_s_folder_is_not_handed_over(
    make_fleet, tmp_path
):
    """The mox user owns /home/mox: it can move a folder of root's there (holding something)
    into the place of its certificate folder. certsync refuses every name, in the preview and the
    run, and the folder stays root's."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    roots = "/home/mox/roots"
    setup = host.run(
        f"install -d -o root -g root -m 0755 {roots} && echo secret > {roots}/file"
        f" && runuser -u mox -- sh -c 'mv {MOX_CERT_DIR} {MOX_CERT_DIR}.old"
        f" && mv {roots} {MOX_CERT_DIR}'"
    )
    assert setup.returncode == 0, setup.stderr
    served = served_fingerprints(host, name)  # what mox loaded from its files before
    why = re.escape(
        f"{MOX_CERT_DIR} is root's, not mox's, and not empty, in a folder that mox can write"
    )

    shown = preview(inventory)
    run = deploy(inventory)

    assert re.search(rf"{re.escape(name)}.*refuse.*{why}", shown.output), shown.output
    assert_refused(run, host, name, why)
    folder = host.source_of(MOX_CERT_DIR)
    info = folder.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o755)
    assert sorted(p.name for p in folder.iterdir()) == ["file"]
    assert served_fingerprints(host, name) == served


def test_a_mox_cert_dir_naming_a_folder_of_roots_that_holds_more_is_not_handed_over(
    make_fleet, tmp_path
):
    """certsync_mox_cert_dir set by mistake to a folder of root's that holds more than mox's
    certificate files (as /etc/ssl/private does), in a folder only root can write: certsync
    refuses every name, and the folder keeps its owner, mode and entries (handed to mox, mox
    could replace what it holds)."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    private = "/home/ssl-private"  # /home: root's, 0755, and private to the test host
    setup = host.run(
        f"install -d -o root -g root -m 0710 {private}"
        f" && echo key > {private}/ssl-cert-snakeoil.key && echo x > {private}/other"
    )
    assert setup.returncode == 0, setup.stderr
    served = served_fingerprints(host, name)
    why = re.escape(
        f"{private} is root's, not mox's, and holds files other than mox's certificate files"
        f" for {name} (other, ssl-cert-snakeoil.key): certsync hands mox such a folder only"
        f" when it holds nothing else"
    )

    shown = preview(inventory, "--data", f"certsync_mox_cert_dir={private}")
    run = deploy(inventory, "--data", f"certsync_mox_cert_dir={private}")

    assert re.search(rf"{re.escape(name)}.*refuse.*{why}", shown.output), shown.output
    assert_refused(run, host, name, why)
    folder = host.source_of(private)
    info = folder.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o710)
    assert sorted(p.name for p in folder.iterdir()) == ["other", "ssl-cert-snakeoil.key"]
    assert served_fingerprints(host, name) == served

    # emptied (as /etc/ssl/private is without ssl-cert): certsync did not make it, so no
    assert host.run(f"rm {private}/other {private}/ssl-cert-snakeoil.key").returncode == 0
    run = deploy(inventory, "--data", f"certsync_mox_cert_dir={private}")
    why = re.escape(f"{private} is root's, not mox's, and empty: certsync makes such a folder")
    assert_refused(run, host, name, why)
    info = folder.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o710)
    assert served_fingerprints(host, name) == served


# --- 10: hostile settings ---------------------------------------------------------------------


def test_hostile_paths_are_refused_and_nothing_reaches_the_host(make_fleet, tmp_path):
    """test_deploy.py covers a name with `;`, `..`, a relative path and port 99999 on a synced
    fleet; here: spaces and quotes, on a fresh host, which must stay untouched."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    pwned = tmp_path / "pwned"
    for data, setting in (
        ("certsync_mox_cert_dir=/home/mox/my certs", "certsync_mox_cert_dir"),
        (f"certsync_caddy_data_dir=/var/lib/caddy'$(touch {pwned})'", "certsync_caddy_data_dir"),
        (f'certsync_backup_dir=/var/lib/"; touch {pwned}; "', "certsync_backup_dir"),
        (f"certsync_verify_address=127.0.0.11;touch {pwned}", "certsync_verify_address"),
        ("certsync_verify_ports=993 465", "certsync_verify_ports"),
        ("certsync_backups_keep=0", "certsync_backups_keep"),
    ):
        run = deploy(inventory, "--data", data)
        assert run.returncode != 0, data
        assert f"{host.name}: {setting}" in run.output, run.output
    assert not pwned.exists()
    for path in ("/etc/certsync", "/usr/local/lib/certsync", "/var/lib/certsync", "/etc/cron.d"):
        assert not any(host.source_of(path).iterdir()), path
    assert_serves_whole_pair(host, name)


# --- 11: the private key's bytes stay in mox's folder and the backups -------------------------


def test_private_key_bytes_are_in_no_other_file_of_the_host(make_fleet, pki, tmp_path):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    placeholder_key = (host.source_of(MOX_CERT_DIR) / f"{name}.key").read_bytes()
    assert deploy(inventory, "-vvv").returncode == 0
    pki.renew(name)
    host.copy_caddy_storage(pki)
    cron = host.run(SYNC_COMMAND)  # the cron job's command, output and log included
    assert cron.returncode == 0, cron.stderr
    assert_serves_caddys(host, pki, name)
    keys = (pki.key_path(name).read_bytes(), placeholder_key)
    assert leaked_secrets(cron.stdout + cron.stderr, *keys) == []
    secrets = [form.encode() for key in keys for form in secret_forms(key)]

    allowed = [
        host.source_of(MOX_CERT_DIR),
        host.source_of(BACKUP_DIR),
        host.source_of(host.caddy_data_dir),
        RUNS_ROOT,  # the real /tmp/certsync-e2e holds every host's folders and pebble's storage
    ]
    searched = [host.source_of(path) for path in host.private_dirs] + [host.run_dir, Path("/tmp")]
    found = []
    scanned = 0
    for top in (top for top in searched if top not in allowed):
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if here / d not in allowed]
            for filename in filenames:
                path = here / filename
                if path.is_symlink() or not path.is_file() or path.stat().st_size > 64 << 20:
                    continue
                data = path.read_bytes()
                scanned += 1
                found += [str(path) for secret in secrets if secret in data]
    assert scanned > 5
    assert not found, f"key material in {sorted(set(found))}"
    # The places that do hold keys are closed to other users.
    for stamp in host.source_of(BACKUP_DIR).iterdir():
        assert (stamp.stat().st_uid, stamp.stat().st_mode & 0o777) == (0, 0o700)
    assert host.source_of(BACKUP_DIR).stat().st_mode & 0o777 == 0o700
    assert host.source_of(MOX_CERT_DIR).stat().st_mode & 0o777 == 0o700


# --- 12: backups ------------------------------------------------------------------------------


def test_backups_are_pruned_to_the_setting_and_the_newest_is_kept(make_fleet, pki, tmp_path):
    """Two backup folders dated in the future (a clock set back) must not push out the one just
    taken; beyond certsync_backups_keep, the oldest go."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path, certsync_backups_keep=2)
    root = host.source_of(BACKUP_DIR)
    root.mkdir(mode=0o700)
    planted = ["20000101T000000000000Z", "29990101T000000000000Z", "29990102T000000000000Z"]
    for stamp in planted:
        (root / stamp).mkdir(mode=0o700)
        (root / stamp / "old.crt").write_text("old\n")

    def stamps():
        return sorted(entry.name for entry in root.iterdir())

    for round_ in range(3):
        before = set(stamps())
        if round_ == 0:
            had = mox_files(host)
            run = deploy(inventory)
            assert run.returncode == 0, run.output
        else:  # the cron job's command, after mox's files were changed behind its back
            host.write_placeholder(name)
            had = mox_files(host)
            result = host.run(SYNC_COMMAND)
            assert result.returncode == 0, result.stdout + result.stderr
        (new,) = set(stamps()) - before
        assert len(stamps()) == 2, stamps()
        assert new == max(set(stamps()) - set(planted))
        for suffix in (".crt", ".key"):
            backup = root / new / f"{name}{suffix}"
            assert backup_files(host)[f"{new}/{name}{suffix}"] == had[f"{name}{suffix}"][0]
            assert backup.stat().st_uid == 0
        assert ((root / new).stat().st_uid, (root / new).stat().st_mode & 0o777) == (0, 0o700)
        assert_serves_caddys(host, pki, name)
    assert root.stat().st_mode & 0o777 == 0o700


# --- 13: the state cannot be read on one host -------------------------------------------------

# Stands in for python3 on the host: kills the SSH session it runs in (its sshd ancestor).
DROP_SESSION = """#!/bin/sh
pid=$$
while [ "$pid" -gt 1 ]; do
    case $(cat /proc/$pid/comm) in sshd*) kill -KILL "$pid"; exit 1 ;; esac
    pid=$(cut -d' ' -f4 /proc/$pid/stat)
done
exit 1
"""
UNREADABLE_STATE = {
    # failure: (why, in the output)
    "shell fails": "nopython3': No such file or directory",  # said by the host's `timeout`
    "connection drops": "the connection dropped while reading the state",
    "sudo refuses": "not allowed to execute certsync's state command as root",
}


@pytest.mark.parametrize("failure", list(UNREADABLE_STATE))
def test_a_host_whose_state_cannot_be_read_fails_alone_with_the_reason(
    make_fleet, pki, tmp_path, failure
):
    fleet = make_fleet(2)
    good, bad = fleet.hosts
    data: dict[str, dict[str, object]] = {host.name: {} for host in fleet}
    if failure == "shell fails":
        data[bad.name] = {"certsync_python": "/usr/bin/nopython3"}
    elif failure == "connection drops":
        write_host_file(bad, f"{ADMIN_HOME}/drop-session", DROP_SESSION)
        data[bad.name] = {"certsync_python": f"{ADMIN_HOME}/drop-session"}
    else:
        data = {host.name: {"ssh_user": ADMIN_USER, "_sudo": True} for host in fleet}
        bad.grant_admin_sudo(False)
    inventory = fleet.write_inventory(tmp_path / "inventory.py", extra_host_data=data)
    before = (mox_files(bad), bad.mox_pid())

    shown = preview(inventory)  # says why, and does not stop to ask "continue?"
    run = deploy(inventory)

    reason = (
        rf"\[{bad.name}\] certsync could not read the host's state: .*{UNREADABLE_STATE[failure]}"
    )
    assert shown.returncode == 0, shown.output
    assert re.search(reason, shown.output), shown.output
    assert run.returncode != 0, run.output
    assert re.search(reason, run.output), run.output
    assert re.search(rf"\[{bad.name}\] Error", run.output), run.output
    assert_serves_caddys(good, pki, good.cert_names[0])
    assert (mox_files(bad), bad.mox_pid()) == before


# --- 14: certsync's own files are root's ------------------------------------------------------

OWN_FILE_PLANTS = {
    # what the mox user was let do: (refusal in the output)
    "link at the cron file": r"/etc/cron\.d/certsync: a link owned by root, .*refusing to write",
    "folder of the host program owned by mox": (
        r"/usr/local/lib/certsync/certsync\.pyz: /usr/local/lib/certsync is owned by mox:"
        r" whoever can replace it decides what root runs; refusing"
    ),
}


@pytest.mark.parametrize("plant", list(OWN_FILE_PLANTS))
def test_certsyncs_own_files_must_be_roots_alone(make_fleet, tmp_path, plant):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    key = f"{MOX_CERT_DIR}/{name}.key"
    cron_file = host.source_of(CRON_FILE)
    program_dir = host.source_of("/usr/local/lib/certsync")
    if plant == "link at the cron file":
        cron_file.symlink_to(key)
    else:
        os.chown(program_dir, pwd.getpwnam("mox").pw_uid, 0)
    before = mox_files(host)

    shown = preview(inventory, "--diff")
    run = deploy(inventory, "--diff")

    refusal = rf"\[{host.name}\] {OWN_FILE_PLANTS[plant]}"
    key_pem = host.source_of(key).read_bytes()
    for output in (shown.output, run.output):
        assert re.search(refusal, output), output
        assert leaked_secrets(output, key_pem) == [], "key material in the output"
    assert run.returncode != 0, run.output
    assert mox_files(host) == before
    assert list(program_dir.iterdir()) == []  # nothing installed
    assert cron_file.is_symlink() == (plant == "link at the cron file")
    assert host.run(f"test -e {BACKUP_DIR}").returncode != 0  # no sync ran
