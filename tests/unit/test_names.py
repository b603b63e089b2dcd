"""Host names: what is accepted as a name, how Caddy stores it, which SANs cover it."""

from __future__ import annotations

import random
import re

import pytest

from certsync.host.names import is_host_name, name_covered, server_name, storage_name


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
def test_is_host_name_accepts(name):
    assert is_host_name(name)


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
def test_is_host_name_rejects(name):
    assert not is_host_name(name)


def test_is_host_name_rejects_trailing_newline():
    # '$' would also match before a final newline
    assert not is_host_name("mail.example.com\n")


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
def test_is_host_name_rejects_non_ascii(name):
    assert not is_host_name(name)


def test_is_host_name_accepts_punycode():
    assert is_host_name("xn--mil-via.example.com")


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("mail.example.com", "mail.example.com"),
        ("Mail.Example.COM", "mail.example.com"),
        ("*.example.com", "wildcard_.example.com"),
        ("*.Example.com", "wildcard_.example.com"),
    ],
)
def test_storage_name_is_how_caddy_stores_it(name, stored):
    assert storage_name(name) == stored


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
def test_name_covered(name, sans, covered):
    assert name_covered(name, sans) is covered


@pytest.mark.parametrize(
    ("name", "sni"),
    [
        ("mail.example.com", "mail.example.com"),
        ("*.example.com", "certsync-check.example.com"),
        ("*.mail.example.com", "certsync-check.mail.example.com"),
    ],
)
def test_server_name_is_a_name_the_certificate_covers(name, sni):
    assert server_name(name) == sni
    assert is_host_name(sni) and not sni.startswith("*")
    assert name_covered(sni, [name])


HOST_NAME_GRAMMAR = re.compile(  # RFC 1123 labels, as a regular expression
    r"(\*\.)?(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE | re.ASCII,
)


def test_is_host_name_is_the_grammar_s_regular_expression():
    """Checked by hand on the host (importing `re` costs the state read), the same answers."""
    rng = random.Random(18)
    alphabet = "aZ09-.*_\n é\u212a\x00"
    names = ["*.a", "*.", "a" * 63, "a" * 64, ".".join(["a" * 63] * 3) + "." + "a" * 61]
    names += [".".join(["a" * 63] * 3) + "." + "a" * 62, "*." + "b" * 253, "a..b", "-a.b", "a-.b"]
    names += [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(50_000)
    ]
    assert [n for n in names if is_host_name(n) != bool(HOST_NAME_GRAMMAR.fullmatch(n))] == []
