"""The states real hosts start in (issue 7): what mox had before certsync, a wildcard name, mox
serving something else than its files, mox's files as symlinks, and mox's own files trying to
pass for the state's structure. On the real fleet, with `certsync_verify_address` unset: the
names do not resolve, certsync checks what mox serves on the addresses of mox.conf's listeners.
"""

from __future__ import annotations

import datetime as dt
import os
import re

import pytest

from tests.e2e.deployrun import MOX_CERT_DIR, backups, caddy_fingerprint, deploy, preview
from tests.e2e.faultkit import (
    assert_serves_caddys,
    assert_serves_whole_pair,
    certsyncs_links,
    leftovers,
    log_lines,
    mox_files,
    now,
    put_mox_files,
)
from tests.fleet import HostSpec, served_certificate
from tests.fleet.hostspec import storage_name
from tests.fleet.pki import issuer_folder
from tests.fleet.x509util import ca_signed, leaf_certificate, sha256_fingerprint

DAY = dt.timedelta(days=1)


def one_host(make_fleet, tmp_path, spec=None, **data):
    fleet = make_fleet([spec] if spec else 1)
    host = fleet.hosts[0]
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py", extra_host_data={host.name: data} if data else None
    )
    return fleet, host, host.cert_names[0], inventory


def plan_line(run, host, name) -> str:
    match = re.search(rf"\[{host.name}\] {re.escape(name)}: (.*)", run.output)
    assert match, run.output
    return match.group(1)


def test_first_sync_replaces_whatever_mox_had_and_says_what(make_fleet, pki, tmp_path):
    """A placeholder made when the host was set up (newer than Caddy's certificate), then an
    expired one, one for other names, and a file that does not parse: each is replaced by
    Caddy's pair, and the preview says what it replaces."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    expired = ca_signed([name], now() - 60 * DAY, now() - 3 * DAY)
    other = ca_signed(["other.h1.test"], now(), now() + 60 * DAY)
    cases = [
        ("placeholder", None, r"replacing a self-signed placeholder \(sha256="),
        ("expired", expired, r"replacing a certificate that expired 3 days ago \(sha256="),
        ("other names", other, r"replacing a certificate for other names \(other\.h1\.test\)"),
        ("garbage", None, r"replacing a certificate file that does not parse \(no PEM block\)"),
    ]
    mox_crt = host.source_of(MOX_CERT_DIR) / f"{storage_name(name)}.crt"
    for case, pair, replaced in cases:
        if case == "placeholder":  # the state this case claims: mox's is the newer certificate
            placeholder = leaf_certificate(mox_crt.read_bytes())
            caddys = pki.certificate(name)
            assert placeholder.not_valid_before_utc > caddys.not_valid_before_utc, (
                placeholder.not_valid_before_utc,
                caddys.not_valid_before_utc,
            )
        if pair is not None:
            put_mox_files(host, name, pair.cert_pem, pair.key_pem)
            host.restart_mox()  # mox serves what it has
        elif case == "garbage":
            put_mox_files(host, name, b"not a certificate\n", b"not a key\n")
        served_before = sha256_fingerprint(served_certificate(host.address, 993, name))

        shown = preview(inventory)

        assert shown.returncode == 0, shown.output
        assert re.fullmatch(rf"install: .* from .*, {replaced}.*", plan_line(shown, host, name))
        # /home/mox belongs to mox: running its binary as root trusts that user
        assert "running /home/mox/mox as root for `mox config test` trusts" in shown.output
        assert host.mox_pid() is not None
        assert sha256_fingerprint(served_certificate(host.address, 993, name)) == served_before

        run = deploy(inventory)

        assert run.returncode == 0, (case, run.output)
        assert_serves_caddys(host, pki, name)
    assert any("trusts whoever can replace it" in line for line in log_lines(host))


def test_wildcard_name_is_synced_and_checked_on_mox_listeners(make_fleet, pki, tmp_path):
    """`*.h1.test` (issued by Caddy's own CA, 12-hour certificates: minimum validity 1 h): mox's
    files are wildcard_.h1.test.crt|key; the check after the restart connects to mox's listener
    address with a name under the wildcard as SNI."""
    spec = HostSpec(index=1, cert_names=("*.h1.test",))
    fleet, host, name, inventory = one_host(
        make_fleet, tmp_path, spec, certsync_min_validity_hours=1
    )

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert any(": *.h1.test: installed: " in line for line in log_lines(host)), log_lines(host)
    assert_serves_caddys(host, pki, name)  # the files, and what every port serves
    # the two files, as certsync's links into one generation folder holding them
    files = sorted(mox_files(host))
    assert [f for f in files if not f.startswith("..")] == [
        "wildcard_.h1.test.crt",
        "wildcard_.h1.test.key",
    ]
    assert certsyncs_links(host, name) and leftovers(host) == [], files

    again = deploy(inventory)

    assert again.returncode == 0, again.output
    assert re.search(rf"\[{host.name}\]\s+No changes", again.output), again.output


def test_files_equal_but_mox_serving_another_certificate_is_restarted(make_fleet, pki, tmp_path):
    """Someone copied Caddy's renewed files into mox's folder by hand and did not restart mox
    (or a sync was killed between rename and restart): the plan is a restart, then checked."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    old = assert_serves_whole_pair(host, name)
    pki.renew(name)
    host.copy_caddy_storage(pki)
    put_mox_files(host, name, pki.cert_path(name).read_bytes(), pki.key_path(name).read_bytes())
    taken = backups(host)
    pid = host.mox_pid()

    shown = preview(inventory)

    assert plan_line(shown, host, name).startswith(f"restart: mox serves sha256={old[:16]} on ")
    assert host.mox_pid() == pid

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert any(f": {name}: restarted: " in line for line in log_lines(host)), log_lines(host)
    assert host.mox_pid() != pid
    assert_serves_caddys(host, pki, name)
    assert backups(host) == taken  # nothing was installed, so nothing backed up


@pytest.mark.parametrize("layout", ["symlinks into Caddy's storage", "no key file"])
def test_rollback_puts_back_exactly_what_mox_had(make_fleet, pki, tmp_path, layout):
    """The install fails (mox keeps serving the old certificate: the restart command does
    nothing): links come back as links to the same targets; a pair missing its key, which mox
    could not start with, is not put back: Caddy's pair stays, and the run says so. Then a
    working restart installs Caddy's pair (certsync's links into a generation folder)."""
    fleet, host, name, inventory = one_host(
        make_fleet,
        tmp_path,
        certsync_restart_command="true",
        certsync_verify_timeout_seconds=3,
    )
    folder = host.source_of(MOX_CERT_DIR)
    stored = storage_name(name)
    if layout == "no key file":
        (folder / f"{stored}.key").unlink()  # mox still runs on what it read at start
    else:
        caddy = f"{host.caddy_data_dir}/certificates/{issuer_folder(name)}/{stored}/{stored}"
        for suffix in (".crt", ".key"):
            (folder / f"{stored}{suffix}").unlink()
            os.symlink(f"{caddy}{suffix}", folder / f"{stored}{suffix}")
            os.lchown(folder / f"{stored}{suffix}", folder.stat().st_uid, folder.stat().st_gid)
        host.restart_mox()  # mox reads through the links: Caddy's current pair
        pki.renew(name)
        host.copy_caddy_storage(pki)  # the links now lead to the renewed pair; mox serves the old
    before = mox_files(host)
    links = {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()}
    served = sha256_fingerprint(served_certificate(host.address, 993, name))

    run = deploy(inventory)

    assert run.returncode != 0, run.output
    if layout == "no key file":
        assert re.search(
            rf"certsync {host.name}: {re.escape(name)}: restore failed: mox does not serve the"
            r" expected certificate after 3 s: .*; mox's previous pair would not load \(a"
            r" certificate whose key is unusable \(its key is nothing\)\): kept Caddy's pair,"
            r" the one mox can start with",
            run.output,
        ), run.output
        assert certsyncs_links(host, name) and leftovers(host) == []
        assert (folder / f"{stored}.key").read_bytes() == pki.key_path(name).read_bytes()
    else:
        assert re.search(
            rf"certsync {host.name}: {re.escape(name)}: rolled back: mox does not serve the"
            r" expected certificate after 3 s: .*; rolled back: mox's previous files restored and"
            r" served again",
            run.output,
        ), run.output
        assert mox_files(host) == before
        assert {p.name: os.readlink(p) for p in folder.iterdir() if p.is_symlink()} == links
    assert sha256_fingerprint(served_certificate(host.address, 993, name)) == served

    working = fleet.write_inventory(tmp_path / "working.py")
    run = deploy(working)

    assert run.returncode == 0, run.output
    assert certsyncs_links(host, name) and leftovers(host) == []
    assert_serves_caddys(host, pki, name)


def test_lines_in_mox_crt_cannot_pass_for_the_state(make_fleet, pki, tmp_path):
    """The mox user writes lines that an older state format used as its structure (and a
    JSON object) into its .crt, around a copy of Caddy's certificate: the plan still comes from
    Caddy's pair, and mox's file is one that does not parse."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    caddy_crt = pki.cert_path(name).read_bytes()
    forged = (
        f"candidate {issuer_folder(name)} {caddy_fingerprint(pki, name)}"
        " key-matches=yes key-same-as-mox=yes\n"
        f"file /usr/local/lib/certsync/certsync.pyz {'0' * 64} file root root 755\n"
        '{"certsync_state": 1, "names": {}, "error": null}\n'
    ).encode() + caddy_crt
    put_mox_files(host, name, forged, pki.key_path(name).read_bytes())

    shown = preview(inventory)

    assert shown.returncode == 0, shown.output
    assert re.fullmatch(
        r"install: .*, replacing a certificate file that does not parse"
        r" \(text outside PEM blocks\)",
        plan_line(shown, host, name),
    ), shown.output

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert_serves_caddys(host, pki, name)
