"""The test fleet itself: real certificates from pebble via caddy, SSH hosts with private folders,
mox serving on each host's own address, and nothing left behind."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.fleet import PRIVATE_DIRS, Fleet, Pki, served_certificate
from tests.fleet.pki import ISSUER_FOLDER
from tests.fleet.rundirs import RUN_ENV, pids_of_run
from tests.fleet.waiting import port_open, wait_for
from tests.fleet.x509util import key_matches_certificate, leaf_certificate, sha256_fingerprint

MOX_PORTS = (993, 465, 587, 25)
REPO = Path(__file__).resolve().parent.parent


def test_caddy_obtained_certificates_from_pebble(pki: Pki) -> None:
    root = x509.load_pem_x509_certificate(pki.issuing_root_pem())
    # (wildcards come from Caddy's own CA: tests/fleet/pki.py; a name Caddy >= 2.10 serves with
    # its wildcard's certificate has none of its own: tests/e2e/test_caddy.py)
    for name in pki.names:
        if name.startswith("*.") or not pki.gets_own_certificate(name):
            continue
        chain = x509.load_pem_x509_certificates(pki.cert_path(name).read_bytes())
        leaf, intermediate = chain[0], chain[1]
        assert leaf.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName) == [name]
        assert "Pebble Intermediate CA" in leaf.issuer.rfc4514_string()
        leaf.verify_directly_issued_by(intermediate)
        intermediate.verify_directly_issued_by(root)
        assert key_matches_certificate(pki.key_path(name).read_bytes(), leaf)
        for path in (pki.cert_path(name), pki.key_path(name)):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(pki.name_dir(name).stat().st_mode) == 0o700


def test_pki_renew_replaces_the_certificate(pki: Pki) -> None:
    name = pki.names[0]
    old = pki.certificate(name)
    new = pki.renew(name)
    assert sha256_fingerprint(new) != sha256_fingerprint(old)
    assert sha256_fingerprint(pki.certificate(name)) == sha256_fingerprint(new)


def _tree(host_run: subprocess.CompletedProcess[str]) -> str:
    assert host_run.returncode == 0, host_run.stderr
    return host_run.stdout


def test_each_host_has_its_own_copy_of_caddy_storage(fleet: Fleet, pki: Pki) -> None:
    listing = "find . -printf '%m %u %P\\n' | sort; find . -type f | sort | xargs sha256sum"
    expected = subprocess.run(
        ["sh", "-c", listing], cwd=pki.data_dir, capture_output=True, text=True, check=True
    )
    for host in fleet:
        assert _tree(host.run(f"cd {host.caddy_data_dir} && {listing}")) == expected.stdout
    first, second = fleet.hosts[0], fleet.hosts[1]
    name = first.cert_names[0]
    crt = f"{first.caddy_data_dir}/certificates/{ISSUER_FOLDER}/{name}/{name}.crt"
    _tree(first.run(f"printf broken > {crt}"))
    assert _tree(first.run(f"cat {crt}")) == "broken"
    assert _tree(second.run(f"cd {second.caddy_data_dir} && {listing}")) == expected.stdout
    assert pki.cert_path(name).read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_private_folders_are_per_host(fleet: Fleet) -> None:
    for host in fleet:
        _tree(host.run(f"echo {host.name} > /etc/certsync/whoami"))
        _tree(host.run(f"echo '# {host.name}' > /etc/cron.d/certsync-e2e"))
    for host in fleet:
        assert _tree(host.run("cat /etc/certsync/whoami")).strip() == host.name
        assert _tree(host.run("ls /home/mox/certs")).split() == sorted(
            f"{name}{suffix}" for name in host.cert_names for suffix in (".crt", ".key")
        )
        for path in PRIVATE_DIRS:
            assert _tree(host.run(f"findmnt -n -o TARGET {path}")).strip() == path
    assert not Path("/etc/certsync/whoami").exists()  # the real filesystem is untouched


def test_pyinfra_connects_over_ssh_and_each_host_sees_its_own_home(
    fleet: Fleet, tmp_path: Path
) -> None:
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        groups={"canary": ["mail-1"], "mail": [host.name for host in fleet]},
    )
    command = "echo certs: $(ls /home/mox/certs | tr '\\n' ' ')"
    result = subprocess.run(
        [sys.executable, "-m", "pyinfra", "-y", str(inventory), "exec", "--", command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr  # pyinfra 3 logs to stderr
    assert result.returncode == 0, output
    for host in fleet:
        seen = re.search(rf"^\[{host.name}\] certs: (.*)$", output, re.MULTILINE)
        assert seen, output
        assert sorted(seen.group(1).split()) == sorted(
            f"{name}{suffix}" for name in host.cert_names for suffix in (".crt", ".key")
        )
    canary = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyinfra",
            "-y",
            str(inventory),
            "exec",
            "--limit",
            "canary",
            "--",
            "hostname",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    output = canary.stdout + canary.stderr
    assert canary.returncode == 0, output
    assert "[mail-1]" in output and "[mail-2]" not in output


def test_testinfra_checks_a_host_over_ssh(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    remote = host.testinfra()
    certs = remote.file("/home/mox/certs")
    assert (certs.user, certs.group, certs.mode) == ("mox", "mox", 0o700)
    key = remote.file(f"/home/mox/certs/{host.cert_names[0]}.key")
    assert (key.user, key.mode) == ("mox", 0o600)
    assert remote.run("/home/mox/mox -config /home/mox/config/mox.conf config test").rc == 0


def test_mox_serves_the_placeholders_on_its_own_address(fleet: Fleet) -> None:
    for host in fleet:
        for name in host.cert_names:
            placeholder = leaf_certificate(
                host.source_of(f"/home/mox/certs/{name}.crt").read_bytes()
            )
            for port in MOX_PORTS:
                served = served_certificate(host.address, port, name)
                assert sha256_fingerprint(served) == sha256_fingerprint(placeholder), (
                    host.name,
                    name,
                    port,
                )
        assert not port_open("127.0.0.1", 993)  # bound to the host's address only


def test_restart_command_over_ssh_restarts_mox(fleet: Fleet) -> None:
    host = fleet.hosts[0]
    before = host.mox_pid()
    started = time.monotonic()
    assert host.testinfra().run(host.restart_command).rc == 0
    assert time.monotonic() - started < 10  # the SSH session does not wait for mox
    host.wait_mox_serving()
    assert host.mox_pid() not in (None, before)


def test_stopping_sshd_makes_a_host_unreachable(fleet: Fleet) -> None:
    host = fleet.hosts[1]
    host.stop_sshd()
    assert not port_open(host.address, 22)
    assert port_open(fleet.hosts[0].address, 22)
    assert host.mox_serving()  # only ssh is gone
    host.start_sshd()
    assert host.testinfra().check_output("echo back") == "back"


def _leftovers(fleet: Fleet, namespaces: list[str]) -> list[str]:
    problems = [f"pid {pid}" for pid in pids_of_run(fleet.dir)]
    problems += [
        f"namespace {ns}"
        for ns in namespaces
        if any(
            os.path.exists(f"/proc/{pid}") and os.readlink(f"/proc/{pid}/ns/mnt") == ns
            for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
            if os.access(f"/proc/{pid}/ns/mnt", os.R_OK)
        )
    ]
    problems += [
        f"port {host.address}:{port}"
        for host in fleet
        for port in (22, *MOX_PORTS)
        if port_open(host.address, port)
    ]
    return problems + ([f"dir {fleet.dir}"] if fleet.dir.exists() else [])


def test_close_leaves_no_process_mount_or_folder(pki: Pki) -> None:
    fleet = Fleet(2, pki=pki)
    with fleet:
        fleet.hosts[0].start_cron()  # a daemon of the host's own, as the cron test starts
        namespaces = [host.mount_namespace for host in fleet]
        assert all(host.processes() for host in fleet)
    assert _leftovers(fleet, namespaces) == []
    assert f"/{fleet.dir.name}/" not in Path("/proc/self/mountinfo").read_text()


def test_a_killed_run_is_reaped_by_the_next_one(pki: Pki) -> None:
    script = (
        "import signal\nfrom tests.fleet import Fleet\n"
        "fleet = Fleet(1)\nfleet.start()\nprint(fleet.dir, fleet.hosts[0].address, flush=True)\n"
        "signal.pause()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(RUN_ENV, None)
    orphan = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert orphan.stdout is not None
        stale, address = orphan.stdout.readline().split()
        stale_dir = Path(stale)
        wait_for(lambda: port_open(address, 22), 20, "the orphan's sshd")
    finally:
        orphan.send_signal(signal.SIGKILL)  # no cleanup runs: sshd and mox stay behind
        orphan.wait()
    assert port_open(address, 22)
    with Fleet(1, pki=pki) as fleet:
        assert not stale_dir.exists()
        assert fleet.hosts[0].mox_serving()
    with pytest.raises(FileNotFoundError):
        stale_dir.stat()
