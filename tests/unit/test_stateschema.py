"""The host's state is checked at the controller: real states pass unchanged, a poisoned one is
that host's error, and no control character gets through."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.exceptions import FactProcessError

from certsync import preview, status
from certsync.facts import MAX_STATE_CHARS, CertsyncState
from certsync.host.output import parse_utc
from certsync.host.settings import SETTINGS
from certsync.hostdata import HostSettings
from certsync.stateschema import MAX_DEPTH, MAX_STRING, SchemaError, checked_state
from tests.unit.certs import DAY, NOW, key_of
from tests.unit.fakemox import write_mox_files
from tests.unit.test_state import NAME, caddys, state_command  # noqa: F401 (fixture)

HELD = {
    "held": True,
    "detail": "publish the record",
    "operator": True,
    "published": False,
    "since": "2026-12-01T00:00:00Z",
    "until": None,
    "added": None,
    "publish": ["_25._tcp.mail.example.com. IN TLSA 3 1 1 " + "ab" * 32],
}
ESCAPES = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[1A\x1b[2K"


@pytest.fixture
def real_state(caddys, ca, make_config, mox_ids, tmp_path, capsys):  # noqa: F811
    config = make_config()
    old = ca.issue([NAME], key=key_of("ec256", 23), not_before=NOW - 9 * DAY)
    write_mox_files(Path(config.mox_cert_dir), NAME, old.cert_pem, old.key_pem, mox_ids)
    return state_command(config, capsys, "--file", config.log_file)


def test_a_real_state_passes_unchanged(real_state):
    assert real_state["names"][NAME]["mox"]["cert"] is not None
    assert checked_state(copy.deepcopy(real_state)) == real_state


def _poisoned(state, path, value):
    state = copy.deepcopy(state)
    *parents, last = path
    target = state
    for key in parents:
        target = target[key]
    target[last] = value
    return state


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("names", NAME, "caddy", "cert", "not_after"), "2031-13-45", "not_after: not a time"),
        (("names", NAME, "caddy", "cert", "sha256"), "zz" * 32, "sha256: not a sha256"),
        (("names", NAME, "caddy", "cert", "sans"), "mail.example.com", "sans: not a list"),
        (("names", NAME, "action"), "rm -rf /", "action: not an action"),
        (("names", NAME, "key_changes"), 1, "key_changes: not bool"),
        (("names", NAME, "mox"), [], "mox: not an object"),
        (("names", NAME, "mox", "cert", "serial"), 12, "serial: not a serial"),
        (("names", NAME, "mox", "crt", "mode"), "rwxrwxrwx", "mode: not a mode"),
        (("files",), [], "files: not an object"),
        (("openssl",), "yes", "openssl: not bool"),
        (("names",), {"x" + ESCAPES: {}}, "not a host name"),
        # what the preview and the status report read, and the invariants they rely on
        (("names", NAME, "dane"), "x", "dane: not an object"),
        (("names", NAME, "dane"), {}, "dane: no held"),
        (("names", NAME, "dane"), {**HELD, "since": "yesterday"}, "since: not a time"),
        (("names", NAME, "dane"), {**HELD, "publish": 5}, "publish: not a list"),
        (("names", NAME, "dane_served"), 5, "dane_served: not an object"),
        (("names", NAME, "dane_served"), {"ok": True}, "dane_served: no detail"),
        (("names", NAME, "action"), "held for DANE", "held for DANE without its dane decision"),
        (("names", NAME, "mox", "crt"), {"kind": "file"}, "crt: exists without its user"),
        (("names", NAME, "mox", "generation"), 5, "generation: not str"),
        (("files",), {"/x": {"kind": "file", "user": "root"}}, "exists without its user"),
        (
            ("names", NAME, "served_all"),
            [{"target": "127.0.0.1:993", "port": 993, "error": None}],
            r"served_all\[0\]: neither an error nor a certificate",
        ),
    ],
)
def test_a_poisoned_state_fails_saying_where(real_state, path, value, where):
    with pytest.raises(SchemaError, match=where) as caught:
        checked_state(_poisoned(real_state, path, value))
    assert "\x1b" not in str(caught.value)


def test_every_string_is_made_printable(real_state):
    state = _poisoned(real_state, ("names", NAME, "detail"), f"install{ESCAPES}\u202e")
    state["names"][NAME]["caddy"]["cert"]["issuer"] = ESCAPES
    state["warnings"] = [ESCAPES]
    state["new_field_of_a_later_version"] = {ESCAPES: [ESCAPES]}
    checked = json.dumps(checked_state(state), ensure_ascii=False)
    assert not any(ord(c) < 32 or c in "\x7f\u202e" for c in checked)
    assert "\\x1b]52" in checked


def test_a_state_that_says_why_it_cannot_be_read_keeps_only_that():
    said = checked_state({"certsync_state": 1, "error": f"no{ESCAPES}", "names": {"x": 1}})
    assert said == {
        "certsync_state": 1,
        "error": "no\\x1b]52;c;ZWNobyBwd25lZA==\\x07\\x1b[1A\\x1b[2K",
        "names": {},
    }


def _nested(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize("leaf", ["x", 1, None, {"k": "v"}])
def test_nesting_is_refused_past_its_limit_whatever_the_leaf(real_state, leaf):
    # the state is level 0, its field level 1: MAX_DEPTH levels of lists below it pass
    within = _poisoned(
        real_state, ("later",), _nested(MAX_DEPTH - 1 - isinstance(leaf, dict), leaf)
    )
    assert checked_state(within)["later"] == within["later"]
    deeper = _poisoned(real_state, ("later",), _nested(MAX_DEPTH - isinstance(leaf, dict), leaf))
    with pytest.raises(SchemaError, match=f"nested more than {MAX_DEPTH} levels"):
        checked_state(deeper)
    empty = _poisoned(real_state, ("later",), _nested(MAX_DEPTH - 1, []))
    assert checked_state(empty)["later"] == empty["later"]


def test_a_long_string_is_cut_wherever_it_is(real_state):
    long = "a" * (MAX_STRING + 5)
    state = _poisoned(real_state, ("names", NAME, "detail"), long)
    state["warnings"] = [long]
    state["later"] = {long: long}
    checked = checked_state(state)
    cut = "a" * (MAX_STRING - 1) + "…"
    assert checked["names"][NAME]["detail"] == cut and checked["warnings"] == [cut]
    assert checked["later"] == {cut: cut}


TIME_EDGES = [
    f"{year}-{month}-{day}T{hour}:{minute}:{second}Z"
    for year in ("0000", "0001", "2031", "2032", "9999", "２０３１")
    for month in ("00", "01", "02", "2", "12", "13")
    for day in ("00", "28", "29", "30", "31", "32")
    for hour, minute, second in (
        ("00", "00", "00"),
        ("23", "59", "59"),
        ("24", "00", "00"),
        ("23", "60", "00"),
        ("23", "59", "60"),
        ("23", "59", "61"),
    )
] + ["2031-02-28T23:59:59", "2031-02-28 23:59:59Z", " 2031-02-28T23:59:59Z", "", "Z"]


def test_a_time_is_what_the_renderers_can_read(real_state):
    """The schema's check of a time agrees with parse_utc, which the preview, the status report
    and the metrics read times with."""
    seen = set()
    for value in TIME_EDGES:
        try:
            parse_utc(value)
            fits = True
        except ValueError:
            fits = False
        seen.add(fits)
        state = _poisoned(real_state, ("names", NAME, "caddy", "cert", "not_after"), value)
        if fits:
            assert checked_state(state)["names"][NAME]["caddy"]["cert"]["not_after"] == value
        else:
            with pytest.raises(SchemaError, match="not_after: not a time"):
                checked_state(state)
    assert seen == {True, False}


@pytest.mark.parametrize("answer", [[], "x", None, {"certsync_state": 2}, {"error": "x"}])
def test_not_a_state_at_all(answer):
    with pytest.raises(SchemaError, match="not certsync's state"):
        checked_state(answer)


def test_files_equal_needs_caddys_certificate(real_state):
    state = _poisoned(real_state, ("names", NAME, "files_equal"), True)
    state["names"][NAME]["caddy"]["cert"] = None
    with pytest.raises(SchemaError, match="files_equal without Caddy's certificate"):
        checked_state(state)


def test_a_state_without_its_last_runs_is_refused(real_state):
    state = copy.deepcopy(real_state)
    del state["last_runs"]
    with pytest.raises(SchemaError, match="state: no last_runs"):
        checked_state(state)


def test_a_held_key_change_of_the_right_shape_passes_and_is_shown(real_state):
    state = _poisoned(real_state, ("names", NAME, "dane"), HELD)
    state["names"][NAME]["action"] = "held for DANE"
    checked = checked_state(copy.deepcopy(state))
    assert checked == state
    lines = preview.host_lines(checked, now=NOW)
    assert f"{NAME}: held for DANE since 2026-12-01T00:00:00Z;" in "\n".join(lines)


def _settings() -> HostSettings:
    values = {setting.name: setting.default for setting in SETTINGS}
    return HostSettings("mail-1", {**values, "names": [NAME]}, [NAME])


def test_the_status_of_a_real_state_reports_every_check(real_state):
    state = checked_state(copy.deepcopy(real_state))
    report = status.fleet_report({"mail-1": _settings()}, {"mail-1": state}, NOW)
    assert report["hosts"]["mail-1"]["error"] is None
    assert len(report["hosts"]["mail-1"]["names"][NAME]["checks"]) == len(status.CHECKS)


def test_a_host_whose_state_cannot_be_reported_is_that_hosts_line(real_state):
    """What no schema case foresaw (here: a plan without its fields) is the host's UNKNOWN line,
    printable, and the other hosts are reported."""
    bad = checked_state(copy.deepcopy(real_state))
    bad["names"][NAME] = {"action": f"install{ESCAPES}"}
    good = checked_state(copy.deepcopy(real_state))
    states: dict[str, dict[str, Any] | str] = {"bad-1": bad, "mail-1": good}
    report = status.fleet_report({"bad-1": _settings(), "mail-1": _settings()}, states, NOW)
    assert report["hosts"]["bad-1"] == {
        "ok": False,
        "error": "its state cannot be reported (KeyError: 'caddy')",
        "names": {},
    }
    assert report["hosts"]["mail-1"]["error"] is None
    assert status.exit_status(report) == status.EXIT_UNKNOWN
    table = status.as_table(report, states, NOW)
    rows = [line.split() for line in table.splitlines()]
    assert rows[1][:5] == ["bad-1", "-", "-", "UNKNOWN", "its"]
    assert rows[2][:2] == ["mail-1", NAME] and "\x1b" not in table


@pytest.mark.parametrize(
    ("output", "why"),
    [
        (["[" * 100_000], "not JSON that can be read \\(RecursionError\\)"),
        (['{"certsync_state": 1, "x": "' + "a" * MAX_STATE_CHARS + '"}'], "larger than 4 MB"),
        (["{"], "not JSON"),
    ],
    ids=["nested past the stack", "too large", "cut short"],
)
def test_an_answer_that_cannot_be_read_is_the_hosts_error(output, why):
    with pytest.raises(FactProcessError, match=f"certsync state (is|:) {why}"):
        CertsyncState().process(output)
