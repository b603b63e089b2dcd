"""plan_name: the one decision per name that the preview shows and the sync carries out."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from certsync import preview
from certsync.host.plan import IN_SYNC, INSTALL, REFUSE, REPAIR, RESTART, NamePlan, plan_name
from certsync.host.settings import Config
from certsync.host.x509 import parse_chain
from tests.fleet.x509util import self_signed
from tests.unit.certs import (
    DAY,
    HOUR,
    LETSENCRYPT,
    NOW,
    Ca,
    Issued,
    caddy_key_pem,
    key_of,
    leaked_secrets,
    remember_installed,
    write_caddy,
)
from tests.unit.fakemox import write_mox_files

NAME = "mail.example.com"
CADDY_NOT_BEFORE = NOW - 10 * DAY


@pytest.fixture
def caddys(ca: Ca, tmp_path: Path) -> Issued:
    """Caddy's current pair for NAME, issued 10 days ago."""
    issued = ca.issue([NAME], key=key_of("ec256", 7), not_before=CADDY_NOT_BEFORE)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    return issued


@pytest.fixture
def cert_dir(tmp_path: Path) -> Path:
    return tmp_path / "mox" / "certs"


@pytest.fixture
def config(make_config) -> Config:
    return make_config()


@pytest.fixture
def mox_dir_fd(cert_dir: Path, mox_ids) -> Iterator[int]:
    cert_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(cert_dir, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def plan(config: Config, dir_fd: int | None, **kwargs) -> NamePlan:
    return plan_name(config, NAME, dir_fd, NOW, check_served=False, **kwargs)


# --- the no-downgrade rule protects only a certificate that deserves it ------------------------


@pytest.mark.parametrize(
    ("mox_cert", "replaces"),
    [
        (
            lambda ca: self_signed([NAME], NOW - HOUR, NOW + 365 * DAY),
            "a self-signed placeholder",
        ),
        (
            lambda ca: ca.issue([NAME], not_before=NOW - 5 * DAY, not_after=NOW - 3 * DAY - HOUR),
            "a certificate that expired 3 days ago",
        ),
        (
            lambda ca: ca.issue(["www.example.com"], not_before=NOW - DAY),
            "a certificate for other names (www.example.com)",
        ),
        (
            lambda ca: ca.issue([NAME], not_before=NOW + DAY, not_after=NOW + 90 * DAY),
            f"a certificate not valid before {NOW + DAY:%Y-%m-%d %H:%M} UTC",
        ),
    ],
    ids=["placeholder", "expired", "wrong name", "not yet valid"],
)
def test_a_newer_certificate_that_deserves_no_protection_is_replaced(
    ca, caddys, config, cert_dir, mox_dir_fd, mox_ids, mox_cert, replaces
):
    current = mox_cert(ca)
    assert parse_chain(current.cert_pem)[0].not_before > CADDY_NOT_BEFORE  # newer than Caddy's
    write_mox_files(cert_dir, NAME, current.cert_pem, current.key_pem, mox_ids)

    result = plan(config, mox_dir_fd)

    assert result.action == INSTALL
    fingerprint = parse_chain(current.cert_pem)[0].fingerprint
    assert f"replacing {replaces} (sha256={fingerprint[:16]} " in result.detail
    assert result.to_json()["mox"]["unprotected"] == replaces


@pytest.mark.parametrize(
    ("key", "replaces"),
    [
        (lambda: caddy_key_pem(key_of("ec256", 8)), "private key does not match the certificate"),
        (lambda: None, "its key is nothing"),
        (lambda: b"-----BEGIN EC PRIVATE KEY-----\nMHcC\n", "incomplete PEM block"),
    ],
    ids=["other key", "no key", "truncated key"],
)
def test_a_newer_certificate_whose_key_is_unusable_is_replaced(
    ca, caddys, config, cert_dir, mox_dir_fd, mox_ids, key, replaces
):
    current = ca.issue([NAME], not_before=NOW - DAY)
    write_mox_files(cert_dir, NAME, current.cert_pem, key(), mox_ids)
    result = plan(config, mox_dir_fd)
    assert result.action == INSTALL
    assert f"replacing a certificate whose key is unusable ({replaces}" in result.detail


def test_a_certificate_file_that_does_not_parse_is_replaced(
    caddys, config, cert_dir, mox_dir_fd, mox_ids
):
    write_mox_files(cert_dir, NAME, b"not a certificate\n", b"", mox_ids)
    result = plan(config, mox_dir_fd)
    assert result.action == INSTALL
    assert "replacing a certificate file that does not parse (no PEM block)" in result.detail


def test_a_current_certificate_for_the_name_is_not_downgraded(
    ca, caddys, config, cert_dir, mox_dir_fd, mox_ids
):
    current = ca.issue([NAME], key=key_of("ec256", 9), not_before=NOW - DAY)
    write_mox_files(cert_dir, NAME, current.cert_pem, current.key_pem, mox_ids)
    remember_installed(config, NAME, current.cert_pem)
    result = plan(config, mox_dir_fd)
    assert result.action == REFUSE
    assert "is older than mox's" in result.detail and "not downgrading" in result.detail


def test_a_newer_certificate_certsync_did_not_install_is_replaced(
    ca, caddys, config, cert_dir, mox_dir_fd, mox_ids
):
    """The mox user can put any certificate there, one from a CA of its own making too: only
    the one certsync installed is kept from a downgrade."""
    forged = ca.issue([NAME], key=key_of("ec256", 9), not_before=NOW - DAY)
    write_mox_files(cert_dir, NAME, forged.cert_pem, forged.key_pem, mox_ids)
    result = plan(config, mox_dir_fd)
    assert result.action == INSTALL
    assert "replacing a certificate certsync did not install (sha256=" in result.detail


def test_an_older_certificate_in_mox_is_replaced_by_caddys(
    ca, caddys, config, cert_dir, mox_dir_fd, mox_ids
):
    old = ca.issue([NAME], key=key_of("ec256", 9), not_before=NOW - 40 * DAY)
    write_mox_files(cert_dir, NAME, old.cert_pem, old.key_pem, mox_ids)
    remember_installed(config, NAME, old.cert_pem)
    result = plan(config, mox_dir_fd)
    assert result.action == INSTALL
    assert result.key_changes
    info = parse_chain(caddys.cert_pem)[0]
    assert result.detail.startswith(f"sha256={info.fingerprint[:16]} not_after=")
    assert f"from {LETSENCRYPT}, replacing sha256=" in result.detail


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_nothing_in_mox_is_replaced(caddys, config, cert_dir, mox_ids, folder):
    dir_fd = None
    if folder == "empty":
        cert_dir.mkdir(parents=True)
        dir_fd = os.open(cert_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = plan(config, dir_fd)
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    assert result.action == INSTALL and result.detail.endswith("replacing nothing")


def test_symlinks_in_mox_are_replaced_and_described(
    caddys, config, cert_dir, mox_dir_fd, tmp_path, mox_ids
):
    """People link mox's files into Caddy's storage before adopting certsync."""
    stored = tmp_path / "caddy" / "certificates" / LETSENCRYPT / NAME / NAME
    (cert_dir / f"{NAME}.crt").symlink_to(f"{stored}.crt")
    (cert_dir / f"{NAME}.key").symlink_to(f"{stored}.key")
    result = plan(config, mox_dir_fd)
    assert result.action == INSTALL
    assert result.detail.endswith(f"replacing a symlink to {stored}.crt")
    assert result.to_json()["mox"]["crt"]["kind"] == "link"


# --- in sync, repair, force ---------------------------------------------------------------------


def test_equal_files_with_right_owner_and_mode_are_in_sync(
    caddys, config, cert_dir, mox_dir_fd, mox_ids
):
    write_mox_files(cert_dir, NAME, caddys.cert_pem, caddys.key_pem, mox_ids)
    result = plan(config, mox_dir_fd)
    assert (result.action, result.key_changes) == (IN_SYNC, False)


def test_owner_or_mode_drift_is_a_repair(caddys, config, cert_dir, mox_dir_fd, mox_ids):
    write_mox_files(cert_dir, NAME, caddys.cert_pem, caddys.key_pem, mox_ids)
    (cert_dir / f"{NAME}.key").chmod(0o644)
    os.chown(cert_dir / f"{NAME}.crt", 0, 0)
    result = plan(config, mox_dir_fd)
    assert result.action == REPAIR
    assert result.detail.startswith(f"owner or mode of {NAME}.crt, {NAME}.key (")
    assert plan(config, mox_dir_fd, dir_right=False).detail.startswith(
        f"owner or mode of {cert_dir}, {NAME}.crt"
    )


def test_force_installs_equal_files(caddys, config, cert_dir, mox_dir_fd, mox_ids):
    write_mox_files(cert_dir, NAME, caddys.cert_pem, caddys.key_pem, mox_ids)
    result = plan(config, mox_dir_fd, force=True)
    assert result.action == INSTALL and result.detail.startswith("forced; ")


def test_no_pair_in_caddy_is_refused_with_the_reason(config, mox_dir_fd, tmp_path):
    result = plan(config, mox_dir_fd)
    assert result.action == REFUSE
    assert result.detail == f"Caddy's storage {tmp_path / 'caddy' / 'certificates'} does not exist"


# --- what mox serves ----------------------------------------------------------------------------


def test_equal_files_but_another_certificate_served_is_a_restart(
    ca, caddys, fake_mox, cert_dir, mox_ids
):
    """The files were copied by hand (or the program was killed before the restart)."""
    old = ca.issue([NAME], not_before=NOW - 40 * DAY)
    mox, config = fake_mox()
    write_mox_files(cert_dir, NAME, old.cert_pem, old.key_pem, mox_ids)
    mox.start()
    write_mox_files(cert_dir, NAME, caddys.cert_pem, caddys.key_pem, mox_ids)
    dir_fd = os.open(cert_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = plan_name(config, NAME, dir_fd, NOW)
    finally:
        os.close(dir_fd)
    served = parse_chain(old.cert_pem)[0].fingerprint
    assert result.action == RESTART
    assert result.detail.startswith(
        f"mox serves sha256={served[:16]} on 127.0.0.1:{mox.port}, not its files' sha256="
    )
    assert result.to_json()["served"]["sha256"] == served


def test_mox_answering_on_none_of_its_ports_is_a_restart(caddys, fake_mox, cert_dir, mox_ids):
    mox, config = fake_mox()
    write_mox_files(cert_dir, NAME, caddys.cert_pem, caddys.key_pem, mox_ids)
    dir_fd = os.open(cert_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        result = plan_name(config, NAME, dir_fd, NOW)  # mox not started: nothing answers
    finally:
        os.close(dir_fd)
    assert result.action == RESTART
    assert result.detail.startswith(
        f"mox answers on none of its checked ports (127.0.0.1:{mox.port}): "
    )
    assert result.warnings and result.warnings[0].startswith(
        f"mox does not answer on 127.0.0.1:{mox.port}: "
    )


def test_the_plan_as_json_holds_no_key_material(ca, caddys, config, cert_dir, mox_dir_fd, mox_ids):
    current = ca.issue([NAME], key=key_of("ec256", 8), not_before=NOW - DAY)
    write_mox_files(cert_dir, NAME, current.cert_pem + current.key_pem, current.key_pem, mox_ids)
    text = json.dumps(plan(config, mox_dir_fd).to_json())
    assert leaked_secrets(text, caddys.key_pem, current.key_pem) == []


def test_plan_dates_are_taken_at_the_given_time(ca, caddys, config, cert_dir, mox_dir_fd, mox_ids):
    """The same files, planned a month later: Caddy's certificate is still valid, mox's not."""
    current = ca.issue([NAME], not_before=NOW - DAY, not_after=NOW + 20 * DAY)
    write_mox_files(cert_dir, NAME, current.cert_pem, current.key_pem, mox_ids)
    remember_installed(config, NAME, current.cert_pem)
    assert plan(config, mox_dir_fd).action == REFUSE
    later = plan_name(config, NAME, mox_dir_fd, NOW + 21 * DAY, check_served=False)
    assert later.action == INSTALL
    assert "a certificate that expired 1 day ago" in later.detail
    assert later.choice is not None and later.choice.pair is not None
    assert later.choice.pair.info.not_after - (NOW + 21 * DAY) > dt.timedelta(days=20)


def test_names_mox_s_certificate_carries_are_shown_escaped(
    ca, caddys, config, cert_dir, mox_dir_fd, mox_ids
):
    """The preview prints the plan's detail line by line: mox's own certificate cannot add one."""
    forged = ca.issue([f"www.example.com\n{NAME}: in sync: \x1b[32mok"], not_before=NOW - DAY)
    write_mox_files(cert_dir, NAME, forged.cert_pem, forged.key_pem, mox_ids)
    result = plan(config, mox_dir_fd)
    assert result.action == INSTALL
    assert "replacing a certificate for other names (www.example.com\\nmail.example.com" in (
        result.detail
    )
    assert result.detail.isprintable()
    assert all(line.isprintable() for line in preview.name_lines(NAME, result.to_json(), NOW))
