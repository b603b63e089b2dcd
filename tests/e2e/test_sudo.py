"""Not root: `ssh_user: admin` with `_sudo: True`, pyinfra's own way, works end to end; without
`_sudo` the host fails with what to do, and nothing changes on it.

The test hosts' `admin` logs in with the fleet's key and may run anything as root through sudo
(tests/fleet: its sudoers file is the host's own)."""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.deployrun import deploy, preview
from tests.e2e.faultkit import CONFIG_FILE, CRON_FILE, PROGRAM, assert_serves_caddys, mox_files
from tests.fleet import Fleet
from tests.fleet.hostspec import ADMIN_USER

LOGROTATE_FILE = "/etc/logrotate.d/certsync"
# sshd (LogLevel VERBOSE) logs every session it opens, with the user
SESSION_RE = re.compile(r"Starting session: \S+ for (?P<user>\S+) from")
NEEDS_ROOT = "needs root to read the keys (set _sudo)"


def admin_inventory(fleet: Fleet, path: Path, sudo: bool) -> Path:
    data = {"ssh_user": ADMIN_USER, **({"_sudo": True} if sudo else {})}
    return fleet.write_inventory(path, extra_host_data={host.name: data for host in fleet})


def test_admin_with_sudo_syncs_end_to_end(make_fleet, pki, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    inventory = admin_inventory(fleet, tmp_path / "inventory.py", sudo=True)
    log_start = host.sshd_log.stat().st_size

    run = deploy(inventory)
    again = deploy(inventory)

    assert run.returncode == 0, run.output
    for name in host.cert_names:
        assert_serves_caddys(host, pki, name)
    owners = host.run(f"stat -c '%U:%G %a' {PROGRAM} {CONFIG_FILE} {CRON_FILE}", check=True)
    assert owners.stdout.split("\n")[:3] == ["root:root 755", "root:root 644", "root:root 644"]
    assert again.returncode == 0, again.output
    assert re.search(rf"\[{host.name}\]\s+No changes", again.output), again.output
    sessions = SESSION_RE.findall(host.sshd_log.read_bytes()[log_start:].decode())
    assert sessions and set(sessions) == {ADMIN_USER}, sessions  # never logged in as root


def test_without_sudo_the_host_fails_saying_it_needs_root(make_fleet, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    inventory = admin_inventory(fleet, tmp_path / "inventory.py", sudo=False)
    before = (mox_files(host), host.mox_pid())

    shown = preview(inventory)
    run = deploy(inventory)

    assert shown.returncode == 0, shown.output
    assert f"[{host.name}] {NEEDS_ROOT}" in shown.output, shown.output
    assert run.returncode != 0, run.output
    assert f"[{host.name}] {NEEDS_ROOT}" in run.output, run.output
    assert (mox_files(host), host.mox_pid()) == before
    assert host.run(f"test -e {CONFIG_FILE}").returncode != 0


def upload_traps(host) -> list[str]:
    """The names pyinfra 3.10 uploads through under `_sudo` (/tmp/pyinfra-<sha1 of the
    destination>), created first by the mox user, mode 0666, empty."""
    paths = [PROGRAM, CONFIG_FILE, CRON_FILE, LOGROTATE_FILE]
    traps = [f"/tmp/pyinfra-{hashlib.sha1(path.encode()).hexdigest()}" for path in paths]
    made = " && ".join(f": > {trap} && chmod 0666 {trap}" for trap in traps)
    host.run(f"runuser -u mox -- sh -c {shlex.quote(made)}", check=True)
    return traps


@contextlib.contextmanager
def protected_regular(value: str) -> Iterator[None]:
    """fs.protected_regular set for the test (a global sysctl), put back whatever happens."""
    path = Path("/proc/sys/fs/protected_regular")
    before = path.read_text().strip()
    path.write_text(value)
    try:
        yield
    finally:
        path.write_text(before)


@pytest.mark.parametrize("protected", ["0", "2"])
def test_upload_names_the_mox_user_made_first_stay_untouched_and_the_host_syncs(
    make_fleet, pki, tmp_path, protected
):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    inventory = admin_inventory(fleet, tmp_path / "inventory.py", sudo=True)
    traps = upload_traps(host)
    try:
        with protected_regular(protected):
            run = deploy(inventory, "--diff")
        found = host.run(f"stat -c '%U %a %s' {' '.join(traps)}", check=True).stdout.split("\n")
    finally:  # /tmp is the machine's, not the host's own: leave nothing of the mox user's there
        host.run(f"rm -f {' '.join(traps)}")

    assert run.returncode == 0, run.output
    for name in host.cert_names:
        assert_serves_caddys(host, pki, name)
    assert found[: len(traps)] == ["mox 666 0"] * len(traps)
    assert f"Will create {CONFIG_FILE}" in run.output, run.output  # --diff still shows it
