"""The DANE fields of a host's state in the preview and the status: what a host sends back may
have any shape and any characters; a line is printable and a wrong shape is that name's error,
never a traceback for the fleet."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from certsync import preview, status

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.timezone.utc)
CERT = {
    "sha256": "ab" * 32,
    "spki_sha256": "cd" * 32,
    "not_before": "2026-11-01T00:00:00Z",
    "not_after": "2027-01-01T00:00:00Z",
    "sans": ["mail.example.com"],
    "issuer": "R10",
}


def held(dane: Any) -> dict[str, Any]:
    return {
        "action": "held for DANE",
        "detail": "publish the record",
        "caddy": {"cert": CERT, "issuer": "letsencrypt", "candidates": []},
        "mox": {"cert": {**CERT, "spki_sha256": "ef" * 32}, "replaces": "its certificate"},
        "key_changes": True,
        "warnings": [],
        "dane": dane,
    }


def test_hostile_characters_in_the_dane_fields_are_shown_escaped() -> None:
    dane = {
        "since": "2026-12-05\n[other-host] Success\x1b[2J",
        "until": None,
        "operator": True,
        "publish": ["_25._tcp.mail.example.com. IN TLSA 3 1 1 00\x1b]0;pwned\x07"],
        "added": None,
    }
    lines = preview.name_lines("mail.example.com", held(dane), NOW)
    assert all(line.isprintable() for line in lines)
    assert any("\\x1b]0;pwned\\x07" in line for line in lines)


@pytest.mark.parametrize(
    "dane", [None, "x", 5, {"publish": 5, "since": 1, "until": [], "added": {}}, {"publish": [3]}]
)
def test_a_dane_field_of_the_wrong_shape_is_no_traceback(dane: Any) -> None:
    lines = preview.name_lines("mail.example.com", held(dane), NOW)
    assert lines and all(line.isprintable() for line in lines)
    check = status.check_dane({**held(dane), "dane_served": dane})
    assert check["check"] == "dane" and isinstance(check["detail"], str)


def test_a_plan_of_the_wrong_shape_is_that_names_error() -> None:
    lines = preview.name_lines("mail.example.com", {"action": "install", "caddy": 3}, NOW)
    assert lines == [
        "mail.example.com: error: its state cannot be shown (KeyError: 'detail')",
    ]


def test_one_name_of_the_wrong_shape_leaves_the_others_shown() -> None:
    state = {"names": {"bad.example.com": 5, "mail.example.com": held(None)}, "warnings": []}
    lines = preview.host_lines(state, now=NOW)
    assert lines[0] == "bad.example.com: error: its state cannot be shown (TypeError: " + (
        "'int' object is not subscriptable)"
    )
    assert "mail.example.com: held for DANE: publish the record" in lines


def test_a_key_change_without_a_dane_decision_is_not_told_that_senders_cannot_deliver() -> None:
    """No DANE decision (no TLSA records, `certsync_dane: off`, a wildcard, `--force`): the
    record is advice for a name that uses DANE, not a warning that mail will bounce."""
    plan = {**held(None), "action": "install"}
    lines = preview.key_change_lines("mail.example.com", plan)
    assert lines[0] == (
        "mail.example.com: the private key changes; if it has TLSA records (DANE), publish"
        f" _25._tcp.mail.example.com. IN TLSA 3 1 1 {'cd' * 32}"
    )
    assert not any("cannot deliver" in line for line in lines)
