"""Host names: what is accepted as a name, how Caddy stores it, which SANs cover it."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "name",
    [
        "mail.example.com",
        "*.example.com",
        "MAIL.Example.COM",
        "mta-sts.example.com",
        "localhost",
        "a" * 63 + ".example.com",
        ".".join(["a" * 49] * 5),  # 249 characters
    ],
)
def test_is_host_name_accepts(cs, name):
    assert cs.is_host_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "mail.example.com;touch /tmp/pwned",
        "mail.example.com && reboot",
        "$(reboot).example.com",
        "`id`.example.com",
        "mail example.com",
        " mail.example.com",
        "mail.example.com ",
        "'mail.example.com'",
        '"mail.example.com"',
        "mail..example.com",
        "..",
        "../etc",
        "mail.example.com/../../etc",
        ".example.com",
        "mail.example.com.",
        "",
        "a" * 64 + ".example.com",
        "-mail.example.com",
        "mail-.example.com",
        "mail_1.example.com",
        "*",
        "*.",
        "**.example.com",
        "mail.*.example.com",
        "m*.example.com",
        "*example.com",
        ".".join(["a" * 49] * 5) + ".abcd",  # 254 characters
        "mail.example.com\x00",
        "mail\nexample.com",
    ],
)
def test_is_host_name_rejects(cs, name):
    assert not cs.is_host_name(name)


def test_is_host_name_rejects_trailing_newline(cs):
    # '$' would also match before a final newline
    assert not cs.is_host_name("mail.example.com\n")


@pytest.mark.parametrize(
    "name",
    [
        "\u212a.example.com",  # KELVIN SIGN, case-folds to 'k'
        "mail.exampl\u017fe.com",  # LONG S, case-folds to 's'
        "ma\u0131l.example.com",  # DOTLESS I, case-folds to 'i'
        "m\u00e4il.example.com",
        "xn--mil-via.example.com\u200b",
    ],
)
def test_is_host_name_rejects_non_ascii(cs, name):
    assert not cs.is_host_name(name)


def test_is_host_name_accepts_punycode(cs):
    assert cs.is_host_name("xn--mil-via.example.com")


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("mail.example.com", "mail.example.com"),
        ("Mail.Example.COM", "mail.example.com"),
        ("*.example.com", "wildcard_.example.com"),
        ("*.Example.com", "wildcard_.example.com"),
    ],
)
def test_storage_name_is_how_caddy_stores_it(cs, name, stored):
    assert cs.storage_name(name) == stored


@pytest.mark.parametrize(
    ("name", "sans", "covered"),
    [
        ("mail.example.com", ["mail.example.com"], True),
        ("mail.example.com", ["example.com", "mail.example.com"], True),
        ("mail.example.com", ["example.com"], False),
        ("mail.example.com", ["mail.example.org"], False),
        ("mail.example.com", ["mail.example.com.evil.test"], False),
        ("mail.example.com", [], False),
        # a wildcard SAN covers exactly one label
        ("mail.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("a.b.example.com", ["*.example.com"], False),
        ("mail.example.org", ["*.example.com"], False),
        ("mail.example.com", ["*.com"], False),
        # a wildcard name is covered by the same wildcard SAN only
        ("*.example.com", ["*.example.com"], True),
        ("*.example.com", ["mail.example.com", "example.com"], False),
        ("*.example.com", ["*.b.example.com"], False),
        ("*.b.example.com", ["*.example.com"], False),
        # names are case-insensitive, on both sides
        ("MAIL.Example.com", ["mail.example.com"], True),
        ("mail.example.com", ["Mail.EXAMPLE.com"], True),
        ("Mail.Example.Com", ["*.EXAMPLE.COM"], True),
        ("*.EXAMPLE.com", ["*.example.COM"], True),
    ],
)
def test_name_covered(cs, name, sans, covered):
    assert cs.name_covered(name, sans) is covered
