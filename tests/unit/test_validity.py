"""Validity of a certificate for a name at a time, and the no-downgrade rule."""

from __future__ import annotations

import datetime as dt

import pytest

from certsync.host.output import ago
from certsync.host.validity import (
    describe,
    downgrade_problem,
    unprotected_because,
    validity_problem,
)
from certsync.host.x509 import CertInfo, parse_chain
from tests.fleet.x509util import PemPair, self_signed
from tests.unit.certs import DAY, HOUR, NOW, Issued

MINIMUM = dt.timedelta(hours=24)  # the default min_validity_hours


def info_of(issued: Issued | PemPair) -> CertInfo:
    info, _ = parse_chain(issued.cert_pem)
    return info


def test_valid_certificate_has_no_problem(ca):
    info = info_of(ca.issue(["mail.example.com"]))
    assert validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


def test_parse_chain_reads_names_and_dates(ca):
    issued = ca.issue(
        ["mail.example.com", "mta-sts.example.com"],
        not_before=NOW - 3 * DAY,
        not_after=NOW + 87 * DAY,
    )
    info = info_of(issued)
    assert info.sans == ("mail.example.com", "mta-sts.example.com")
    assert info.not_before == NOW - 3 * DAY
    assert info.not_after == NOW + 87 * DAY
    assert info.serial == format(issued.cert.serial_number, "x")
    assert len(info.fingerprint) == 64


def test_expired_certificate_is_refused(ca):
    info = info_of(ca.issue(not_before=NOW - 90 * DAY, not_after=NOW - HOUR))
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "expired" in problem


def test_certificate_expiring_now_is_expired(ca):
    info = info_of(ca.issue(not_before=NOW - 90 * DAY, not_after=NOW))
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "expired" in problem


def test_not_yet_valid_certificate_is_refused(ca):
    info = info_of(ca.issue(not_before=NOW + HOUR, not_after=NOW + 90 * DAY))
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "not valid yet" in problem


def test_certificate_valid_from_this_second_is_fine(ca):
    info = info_of(ca.issue(not_before=NOW, not_after=NOW + 90 * DAY))
    assert validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


@pytest.mark.parametrize(
    "left", [dt.timedelta(minutes=1), 23 * HOUR, MINIMUM - dt.timedelta(seconds=1)]
)
def test_certificate_expiring_inside_the_minimum_is_refused(ca, left):
    info = info_of(ca.issue(not_before=NOW - 89 * DAY, not_after=NOW + left))
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None
    assert "within the minimum validity of 24 h" in problem


@pytest.mark.parametrize("left", [MINIMUM, MINIMUM + dt.timedelta(seconds=1), MINIMUM + HOUR])
def test_certificate_valid_just_beyond_the_minimum_is_fine(ca, left):
    info = info_of(ca.issue(not_before=NOW - 89 * DAY, not_after=NOW + left))
    assert validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


def test_minimum_validity_is_a_setting(ca):
    info = info_of(ca.issue(not_before=NOW - 80 * DAY, not_after=NOW + 5 * DAY))
    assert validity_problem(info, "mail.example.com", NOW, 4 * DAY) is None
    problem = validity_problem(info, "mail.example.com", NOW, 7 * DAY)
    assert problem is not None and "168 h" in problem


def test_certificate_for_another_name_is_refused(ca):
    info = info_of(ca.issue(["www.example.com", "example.com"]))
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None
    assert "not valid for mail.example.com" in problem
    assert "www.example.com" in problem  # says which names it has


def test_wrong_name_is_reported_before_dates(ca):
    info = info_of(ca.issue(["www.example.com"], not_before=NOW - 90 * DAY, not_after=NOW - DAY))
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "not valid for mail.example.com" in problem


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("mail.example.com", True),
        ("autoconfig.example.com", True),
        ("example.com", False),
        ("a.b.example.com", False),
        ("*.example.com", True),
    ],
)
def test_wildcard_certificate(ca, name, valid):
    info = info_of(ca.issue(["*.example.com"]))
    assert (validity_problem(info, name, NOW, MINIMUM) is None) is valid


def test_wildcard_name_needs_the_wildcard_san(ca):
    info = info_of(ca.issue(["example.com", "mail.example.com", "www.example.com"]))
    problem = validity_problem(info, "*.example.com", NOW, MINIMUM)
    assert problem is not None and "not valid for *.example.com" in problem


def test_names_are_case_insensitive(ca):
    info = info_of(ca.issue(["Mail.Example.COM"]))
    assert validity_problem(info, "MAIL.example.com", NOW, MINIMUM) is None


def test_certificate_without_common_name_but_with_sans_works(ca):
    issued = ca.issue(["mail.example.com"], common_name=None)
    assert issued.cert.subject.rdns == []  # no CN at all
    info = info_of(issued)
    assert validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


def test_common_name_alone_does_not_count(ca):
    info = info_of(ca.issue([], common_name="mail.example.com"))
    assert info.sans == ()
    problem = validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "names: none" in problem


# --- no downgrade ------------------------------------------------------------------------------


def test_downgrade_older_than_mox_is_refused(ca):
    current = info_of(ca.issue(not_before=NOW - DAY))
    older = info_of(ca.issue(not_before=NOW - 10 * DAY))
    problem = downgrade_problem(older, current)
    assert problem is not None
    assert "older than mox's" in problem and "not downgrading" in problem


def test_downgrade_by_one_second_is_refused(ca):
    current = info_of(ca.issue(not_before=NOW - DAY))
    older = current.replace(not_before=current.not_before - dt.timedelta(seconds=1))
    assert downgrade_problem(older, current) is not None


@pytest.mark.parametrize("newer_by", [dt.timedelta(0), dt.timedelta(seconds=1), 30 * DAY])
def test_same_or_newer_than_mox_is_fine(ca, newer_by):
    current = info_of(ca.issue(not_before=NOW - 40 * DAY))
    new = info_of(ca.issue(not_before=NOW - 40 * DAY + newer_by))
    assert downgrade_problem(new, current) is None


# --- whether mox's current certificate deserves protection from a downgrade --------------------


def test_a_current_certificate_for_the_name_is_protected(ca):
    assert (
        unprotected_because(info_of(ca.issue(["mail.example.com"])), "mail.example.com", NOW)
        is None
    )
    wildcard = info_of(ca.issue(["*.example.com"]))
    assert unprotected_because(wildcard, "mail.example.com", NOW) is None


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (
            lambda ca: self_signed(["mail.example.com"], NOW - DAY, NOW + 30 * DAY),
            "a self-signed placeholder",
        ),
        (
            lambda ca: ca.issue(not_before=NOW - 90 * DAY, not_after=NOW - 3 * DAY - HOUR),
            "a certificate that expired 3 days ago",
        ),
        (
            lambda ca: ca.issue(not_before=NOW - 90 * DAY, not_after=NOW - 5 * HOUR),
            "a certificate that expired 5 hours ago",
        ),
        (
            lambda ca: ca.issue(["www.example.com", "example.com"]),
            "a certificate for other names (www.example.com, example.com)",
        ),
        (
            lambda ca: ca.issue([], common_name="mail.example.com"),
            "a certificate for other names (none)",
        ),
        (
            lambda ca: ca.issue(not_before=NOW + 2 * DAY, not_after=NOW + 90 * DAY),
            f"a certificate not valid before {NOW + 2 * DAY:%Y-%m-%d %H:%M} UTC",
        ),
    ],
    ids=["placeholder", "expired days", "expired hours", "other names", "no names", "not yet"],
)
def test_a_certificate_that_does_not_deserve_protection_says_why(ca, make, why):
    assert unprotected_because(info_of(make(ca)), "mail.example.com", NOW) == why


def test_a_self_signed_placeholder_is_unprotected_even_when_current_and_newer(ca):
    placeholder = info_of(self_signed(["mail.example.com"], NOW - HOUR, NOW + 365 * DAY))
    caddys = info_of(ca.issue(not_before=NOW - 10 * DAY))
    assert downgrade_problem(caddys, placeholder) is not None  # older, by the dates alone
    assert unprotected_because(placeholder, "mail.example.com", NOW) == "a self-signed placeholder"


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (dt.timedelta(seconds=0), "0 seconds"),
        (dt.timedelta(seconds=59), "59 seconds"),
        (dt.timedelta(minutes=1), "1 minute"),
        (dt.timedelta(minutes=119), "1 hour"),
        (dt.timedelta(minutes=59, seconds=59), "59 minutes"),
        (2 * HOUR, "2 hours"),
        (DAY - dt.timedelta(seconds=1), "23 hours"),
        (DAY, "1 day"),
        (-3 * DAY, "3 days"),
    ],
)
def test_ago_in_whole_units(delta, text):
    assert ago(delta) == text


def test_describe_shows_fingerprint_and_expiry_only(ca):
    info = info_of(ca.issue(not_after=dt.datetime(2031, 5, 4, tzinfo=dt.timezone.utc)))
    assert describe(info) == f"sha256={info.fingerprint[:16]} not_after=2031-05-04"
