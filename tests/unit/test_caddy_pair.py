"""choose_pair: the pair to install from Caddy's storage tree (on a tmp_path tree)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from certsync.host.caddy import Choice, Pair, choose_pair
from tests.unit.certs import (
    DAY,
    HOUR,
    LETSENCRYPT,
    NOW,
    ZEROSSL,
    caddy_key_pem,
    cert_pem,
    key_of,
    leaked_secrets,
    pem,
    write_caddy,
)

NAME = "mail.example.com"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "caddy"


MINIMUM = dt.timedelta(hours=24)  # the default min_validity_hours


def choose(data_dir: Path, name: str = NAME, trusted_ca_file: str | None = None) -> Choice:
    return choose_pair(str(data_dir), name, NOW, MINIMUM, trusted_ca_file)


def chosen(data_dir: Path, name: str = NAME) -> Pair:
    choice = choose(data_dir, name)
    assert choice.pair is not None, choice.refusal
    assert choice.refusal is None
    return choice.pair


def refusal(data_dir: Path, name: str = NAME) -> str:
    choice = choose(data_dir, name)
    assert choice.pair is None
    assert choice.refusal
    return choice.refusal


def test_single_valid_pair_is_chosen(ca, data_dir):
    issued = ca.issue([NAME])
    write_caddy(data_dir, LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    pair = chosen(data_dir)
    assert pair.cert == issued.cert_pem
    assert pair.key == issued.key_pem
    assert pair.issuer == LETSENCRYPT
    assert pair.info.sans == (NAME,)


@pytest.mark.parametrize("newer_issuer", [LETSENCRYPT, ZEROSSL])
def test_newest_not_before_wins_across_issuer_folders(ca, data_dir, newer_issuer):
    older_issuer = ZEROSSL if newer_issuer == LETSENCRYPT else LETSENCRYPT
    older = ca.issue([NAME], not_before=NOW - 30 * DAY, not_after=NOW + 60 * DAY)
    newer = ca.issue([NAME], key=key_of("ec256", 1), not_before=NOW - 2 * DAY)
    write_caddy(data_dir, older_issuer, NAME, older.cert_pem, older.key_pem)
    write_caddy(data_dir, newer_issuer, NAME, newer.cert_pem, newer.key_pem)
    pair = chosen(data_dir)
    assert pair.issuer == newer_issuer
    assert pair.cert == newer.cert_pem and pair.key == newer.key_pem


def test_newer_pair_with_mismatched_key_is_skipped_for_older_valid_one(ca, data_dir):
    older = ca.issue([NAME], not_before=NOW - 30 * DAY)
    newer = ca.issue([NAME], key=key_of("ec256", 1), not_before=NOW - HOUR)
    write_caddy(data_dir, LETSENCRYPT, NAME, older.cert_pem, older.key_pem)
    write_caddy(data_dir, ZEROSSL, NAME, newer.cert_pem, caddy_key_pem(key_of("ec256", 2)))
    pair = chosen(data_dir)
    assert pair.issuer == LETSENCRYPT and pair.cert == older.cert_pem


def test_mid_renewal_new_key_beside_old_cert_is_skipped(ca, data_dir):
    """Caddy writes the new key first, then the certificate: a reader may see them mixed."""
    old_other = ca.issue([NAME], not_before=NOW - 40 * DAY)
    write_caddy(data_dir, LETSENCRYPT, NAME, old_other.cert_pem, old_other.key_pem)
    renewing = ca.issue([NAME], key=key_of("ec256", 3), not_before=NOW - 20 * DAY)
    new_key = caddy_key_pem(key_of("ec256", 4))
    write_caddy(data_dir, ZEROSSL, NAME, renewing.cert_pem, new_key)
    pair = chosen(data_dir)
    assert pair.issuer == LETSENCRYPT


def test_mid_renewal_only_pair_is_refused(ca, data_dir):
    renewing = ca.issue([NAME])
    write_caddy(data_dir, LETSENCRYPT, NAME, renewing.cert_pem, caddy_key_pem(key_of("ec256", 5)))
    message = refusal(data_dir)
    assert LETSENCRYPT in message and "does not match" in message


def test_newer_truncated_certificate_is_skipped(ca, data_dir):
    older = ca.issue([NAME], not_before=NOW - 30 * DAY)
    newer = ca.issue([NAME], not_before=NOW - HOUR)
    write_caddy(data_dir, LETSENCRYPT, NAME, older.cert_pem, older.key_pem)
    write_caddy(data_dir, ZEROSSL, NAME, newer.cert_pem[:300], newer.key_pem)
    assert chosen(data_dir).issuer == LETSENCRYPT


def test_newer_but_expiring_pair_loses_to_valid_one(ca, data_dir):
    valid = ca.issue([NAME], not_before=NOW - 30 * DAY)
    expiring = ca.issue([NAME], not_before=NOW - HOUR, not_after=NOW + 2 * HOUR)
    write_caddy(data_dir, LETSENCRYPT, NAME, valid.cert_pem, valid.key_pem)
    write_caddy(data_dir, ZEROSSL, NAME, expiring.cert_pem, expiring.key_pem)
    assert chosen(data_dir).issuer == LETSENCRYPT


def test_wildcard_name_is_read_from_wildcard_folder(ca, data_dir):
    issued = ca.issue(["*.example.com"])
    folder = write_caddy(data_dir, LETSENCRYPT, "*.example.com", issued.cert_pem, issued.key_pem)
    assert folder.name == "wildcard_.example.com"
    assert (folder / "wildcard_.example.com.crt").is_file()
    pair = chosen(data_dir, "*.example.com")
    assert pair.cert == issued.cert_pem


def test_upper_case_name_finds_lower_case_folder(ca, data_dir):
    issued = ca.issue([NAME])
    write_caddy(data_dir, LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    assert chosen(data_dir, "Mail.Example.COM").cert == issued.cert_pem


def test_no_certificate_for_the_name_names_the_path(ca, data_dir):
    other = ca.issue(["www.example.com"])
    write_caddy(data_dir, LETSENCRYPT, "www.example.com", other.cert_pem, other.key_pem)
    message = refusal(data_dir)
    assert "no certificate" in message
    assert str(data_dir / "certificates") in message and "mail.example.com" in message


def test_empty_storage_is_refused(data_dir):
    (data_dir / "certificates").mkdir(parents=True)
    assert "no certificate" in refusal(data_dir)


def test_missing_data_dir_names_it(data_dir):
    message = refusal(data_dir)
    assert str(data_dir / "certificates") in message and "does not exist" in message


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("no key", "missing"),
        ("no cert", "missing"),
        ("truncated key", "truncated"),
        ("empty key", "empty"),
        ("truncated cert", "truncated"),
        ("other key", "does not match"),
        ("key in cert file", "something else than certificates"),
        ("out of order", "out of order"),
        ("expired", "expired"),
        ("not yet valid", "not valid yet"),
        ("expiring", "within the minimum validity of 24 h"),
        ("wrong name", "not valid for mail.example.com"),
    ],
)
def test_every_refusal_names_the_issuer_and_the_reason(ca, data_dir, damage, reason):
    dates = {
        "expired": (NOW - 90 * DAY, NOW - DAY),
        "not yet valid": (NOW + HOUR, NOW + 90 * DAY),
        "expiring": (NOW - 89 * DAY, NOW + 3 * HOUR),
    }
    not_before, not_after = dates.get(damage, (None, None))
    sans = ["www.example.com"] if damage == "wrong name" else [NAME]
    issued = ca.issue(sans, not_before=not_before, not_after=not_after)
    cert, key = issued.cert_pem, issued.key_pem
    cert = {
        "no cert": None,
        "truncated cert": cert[: len(cert) // 2],
        "key in cert file": cert + key,
        "out of order": cert_pem(issued.intermediates[0]) + cert_pem(issued.cert),
    }.get(damage, cert)
    key = {
        "no key": None,
        "truncated key": key[: len(key) // 2],
        "empty key": b"",
        "other key": caddy_key_pem(key_of("ec256", 1)),
    }.get(damage, key)
    write_caddy(data_dir, LETSENCRYPT, NAME, cert, key)
    message = refusal(data_dir)
    assert message.startswith(LETSENCRYPT + ": ")
    assert reason in message


def test_refusal_lists_every_issuer_problem(ca, data_dir):
    expired = ca.issue([NAME], not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    wrong = ca.issue(["www.example.com"])
    write_caddy(data_dir, LETSENCRYPT, NAME, expired.cert_pem, expired.key_pem)
    write_caddy(data_dir, ZEROSSL, NAME, wrong.cert_pem, wrong.key_pem)
    message = refusal(data_dir)
    assert f"{LETSENCRYPT}: certificate expired" in message
    assert f"{ZEROSSL}: certificate is not valid for {NAME}" in message


def test_refusal_and_candidates_never_show_the_private_key(ca, data_dir):
    issued = ca.issue([NAME], key="rsa")
    key = issued.key_pem
    write_caddy(data_dir, LETSENCRYPT, NAME, issued.cert_pem, key[: len(key) - 100])
    write_caddy(data_dir, ZEROSSL, NAME, issued.cert_pem + key, key)
    choice = choose(data_dir)
    assert choice.pair is None and choice.refusal
    text = choice.refusal + json.dumps([c.to_json() for c in choice.candidates])
    assert leaked_secrets(text, key) == []


def test_symlinked_key_file_is_not_followed(ca, data_dir, tmp_path):
    issued = ca.issue([NAME])
    folder = write_caddy(data_dir, LETSENCRYPT, NAME, issued.cert_pem, None)
    outside = tmp_path / "elsewhere.key"
    outside.write_bytes(issued.key_pem)
    (folder / f"{NAME}.key").symlink_to(outside)
    message = refusal(data_dir)
    assert LETSENCRYPT in message and "missing" in message


def test_stray_file_among_issuer_folders_is_ignored(ca, data_dir):
    issued = ca.issue([NAME])
    write_caddy(data_dir, LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    (data_dir / "certificates" / "README").write_text("not an issuer\n")
    assert chosen(data_dir).issuer == LETSENCRYPT


def test_data_dir_behind_a_symlink_is_read(ca, tmp_path):
    """Caddy's own folders may be links (a data dir moved to another disk)."""
    issued = ca.issue([NAME])
    write_caddy(tmp_path / "real", LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert chosen(tmp_path / "link").cert == issued.cert_pem


def test_corrupt_certificate_block_is_skipped_for_a_valid_pair(ca, data_dir):
    valid = ca.issue([NAME], not_before=NOW - 30 * DAY)
    write_caddy(data_dir, LETSENCRYPT, NAME, valid.cert_pem, valid.key_pem)
    corrupt = pem("CERTIFICATE", base64.b64decode(b"MIIBAgIBADANBgkqhkiG9w0BAQsFAA==") + b"x" * 64)
    write_caddy(data_dir, ZEROSSL, NAME, corrupt, valid.key_pem)
    assert chosen(data_dir).issuer == LETSENCRYPT


def test_every_issuer_folder_is_a_candidate_with_its_problem(ca, data_dir):
    valid = ca.issue([NAME], not_before=NOW - 30 * DAY)
    expired = ca.issue([NAME], not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    write_caddy(data_dir, LETSENCRYPT, NAME, valid.cert_pem, valid.key_pem)
    write_caddy(data_dir, ZEROSSL, NAME, expired.cert_pem, expired.key_pem)
    write_caddy(data_dir, "local", "www.example.com", valid.cert_pem, valid.key_pem)
    choice = choose(data_dir)
    assert [(c.issuer, c.problem is None) for c in choice.candidates] == [
        (LETSENCRYPT, True),
        (ZEROSSL, False),
    ]
    assert choice.candidates[1].info is not None
    assert choice.candidates[1].to_json()["cert"]["not_after"] == f"{NOW - DAY:%Y-%m-%dT%H:%M:%SZ}"
    assert choice.pair is not None and choice.pair.issuer == LETSENCRYPT


def test_equal_dates_choose_the_first_issuer_folder_in_name_order(ca, data_dir):
    first = ca.issue([NAME], not_before=NOW - 2 * DAY)
    second = ca.issue([NAME], key=key_of("ec256", 1), not_before=NOW - 2 * DAY)
    write_caddy(data_dir, ZEROSSL, NAME, second.cert_pem, second.key_pem)
    write_caddy(data_dir, LETSENCRYPT, NAME, first.cert_pem, first.key_pem)
    assert LETSENCRYPT < ZEROSSL
    assert chosen(data_dir).cert == first.cert_pem
