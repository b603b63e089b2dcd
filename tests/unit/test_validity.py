"""Validity of a certificate for a name at a time, and the no-downgrade rule."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from tests.unit.certs import DAY, HOUR, NOW

MINIMUM = dt.timedelta(hours=24)  # the default min_validity_hours


def info_of(cs, issued):
    info, _ = cs.parse_chain(issued.cert_pem)
    return info


def test_valid_certificate_has_no_problem(cs, ca):
    info = info_of(cs, ca.issue(["mail.example.com"]))
    assert cs.validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


def test_parse_chain_reads_names_and_dates(cs, ca):
    issued = ca.issue(
        ["mail.example.com", "mta-sts.example.com"],
        not_before=NOW - 3 * DAY,
        not_after=NOW + 87 * DAY,
    )
    info = info_of(cs, issued)
    assert info.sans == ("mail.example.com", "mta-sts.example.com")
    assert info.not_before == NOW - 3 * DAY
    assert info.not_after == NOW + 87 * DAY
    assert info.serial == format(issued.cert.serial_number, "x")
    assert len(info.fingerprint) == 64


def test_expired_certificate_is_refused(cs, ca):
    info = info_of(cs, ca.issue(not_before=NOW - 90 * DAY, not_after=NOW - HOUR))
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "expired" in problem


def test_certificate_expiring_now_is_expired(cs, ca):
    info = info_of(cs, ca.issue(not_before=NOW - 90 * DAY, not_after=NOW))
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "expired" in problem


def test_not_yet_valid_certificate_is_refused(cs, ca):
    info = info_of(cs, ca.issue(not_before=NOW + HOUR, not_after=NOW + 90 * DAY))
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "not valid yet" in problem


def test_certificate_valid_from_this_second_is_fine(cs, ca):
    info = info_of(cs, ca.issue(not_before=NOW, not_after=NOW + 90 * DAY))
    assert cs.validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


@pytest.mark.parametrize(
    "left", [dt.timedelta(minutes=1), 23 * HOUR, MINIMUM - dt.timedelta(seconds=1)]
)
def test_certificate_expiring_inside_the_minimum_is_refused(cs, ca, left):
    info = info_of(cs, ca.issue(not_before=NOW - 89 * DAY, not_after=NOW + left))
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None
    assert "within the minimum validity of 24 h" in problem


@pytest.mark.parametrize("left", [MINIMUM, MINIMUM + dt.timedelta(seconds=1), MINIMUM + HOUR])
def test_certificate_valid_just_beyond_the_minimum_is_fine(cs, ca, left):
    info = info_of(cs, ca.issue(not_before=NOW - 89 * DAY, not_after=NOW + left))
    assert cs.validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


def test_minimum_validity_is_a_setting(cs, ca):
    info = info_of(cs, ca.issue(not_before=NOW - 80 * DAY, not_after=NOW + 5 * DAY))
    assert cs.validity_problem(info, "mail.example.com", NOW, 4 * DAY) is None
    problem = cs.validity_problem(info, "mail.example.com", NOW, 7 * DAY)
    assert problem is not None and "168 h" in problem


def test_certificate_for_another_name_is_refused(cs, ca):
    info = info_of(cs, ca.issue(["www.example.com", "example.com"]))
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None
    assert "not valid for mail.example.com" in problem
    assert "www.example.com" in problem  # says which names it has


def test_wrong_name_is_reported_before_dates(cs, ca):
    info = info_of(
        cs, ca.issue(["www.example.com"], not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    )
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
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
def test_wildcard_certificate(cs, ca, name, valid):
    info = info_of(cs, ca.issue(["*.example.com"]))
    assert (cs.validity_problem(info, name, NOW, MINIMUM) is None) is valid


def test_wildcard_name_needs_the_wildcard_san(cs, ca):
    info = info_of(cs, ca.issue(["example.com", "mail.example.com", "www.example.com"]))
    problem = cs.validity_problem(info, "*.example.com", NOW, MINIMUM)
    assert problem is not None and "not valid for *.example.com" in problem


def test_names_are_case_insensitive(cs, ca):
    info = info_of(cs, ca.issue(["Mail.Example.COM"]))
    assert cs.validity_problem(info, "MAIL.example.com", NOW, MINIMUM) is None


def test_certificate_without_common_name_but_with_sans_works(cs, ca):
    issued = ca.issue(["mail.example.com"], common_name=None)
    assert issued.cert.subject.rdns == []  # no CN at all
    info = info_of(cs, issued)
    assert cs.validity_problem(info, "mail.example.com", NOW, MINIMUM) is None


def test_common_name_alone_does_not_count(cs, ca):
    info = info_of(cs, ca.issue([], common_name="mail.example.com"))
    assert info.sans == ()
    problem = cs.validity_problem(info, "mail.example.com", NOW, MINIMUM)
    assert problem is not None and "names: none" in problem


# --- no downgrade ------------------------------------------------------------------------------


def test_downgrade_older_than_mox_is_refused(cs, ca):
    current = info_of(cs, ca.issue(not_before=NOW - DAY))
    older = info_of(cs, ca.issue(not_before=NOW - 10 * DAY))
    problem = cs.downgrade_problem(older, current)
    assert problem is not None
    assert "older than mox's" in problem and "not downgrading" in problem


def test_downgrade_by_one_second_is_refused(cs, ca):
    current = info_of(cs, ca.issue(not_before=NOW - DAY))
    older = dataclasses.replace(current, not_before=current.not_before - dt.timedelta(seconds=1))
    assert cs.downgrade_problem(older, current) is not None


@pytest.mark.parametrize("newer_by", [dt.timedelta(0), dt.timedelta(seconds=1), 30 * DAY])
def test_same_or_newer_than_mox_is_fine(cs, ca, newer_by):
    current = info_of(cs, ca.issue(not_before=NOW - 40 * DAY))
    new = info_of(cs, ca.issue(not_before=NOW - 40 * DAY + newer_by))
    assert cs.downgrade_problem(new, current) is None


def test_no_current_certificate_is_no_downgrade(cs, ca):
    assert cs.downgrade_problem(info_of(cs, ca.issue()), None) is None
