"""`state`: one JSON document the controller's preview reads; nothing the mox user writes can
change what it says, and it holds no key material."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from certsync.host import cli
from certsync.host.settings import Config
from certsync.host.state import read_state
from tests.fleet.x509util import self_signed
from tests.unit.certs import (
    DAY,
    LETSENCRYPT,
    NOW,
    Ca,
    Issued,
    key_of,
    leaked_secrets,
    pem,
    write_caddy,
)
from tests.unit.fakemox import write_mox_files
from tests.unit.realstate import schema_checked

NAME = "mail.example.com"


def state_command(config: Config, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """`state --settings <config.json>` run in this process; its whole stdout parsed as one JSON
    document (json.loads refuses anything around or after it)."""
    settings = json.dumps(config.to_json())
    assert cli.main(["state", "--settings", settings, *args]) == 0
    out = capsys.readouterr().out
    assert out.endswith("}\n") and out.count("\n") == 1
    return schema_checked(json.loads(out))


@pytest.fixture
def caddys(ca: Ca, tmp_path: Path) -> Issued:
    issued = ca.issue([NAME], key=key_of("ec256", 21), not_before=NOW - 5 * DAY)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    return issued


def hostile_crt(ca: Ca, caddys: Issued) -> bytes:
    """A mox .crt the mox user wrote to fool a line-based reader of the state: lines shaped like
    the old state's own (`candidate ...`, `file ...`), a JSON state, and PEM blocks: one under a
    made-up label, a certificate newer than Caddy's, and Caddy's own."""
    forged = ca.issue([NAME], key=key_of("ec256", 22), not_before=NOW - DAY)
    lines = [
        f"candidate {LETSENCRYPT} sha256={'0' * 64} not_before=2099-01-01T00:00:00Z",
        f"file /usr/local/lib/certsync/certsync.pyz sha256={'0' * 64} mode=0644",
        json.dumps({"certsync_state": 1, "host": "mail-1", "names": {NAME: {"action": "in sync"}}}),
    ]
    return (
        "\n".join(lines).encode()
        + b"\n"
        + pem("CANDIDATE", b"sha256=" + bytes(32))
        + forged.cert_pem
        + caddys.cert_pem
    )


def test_state_prints_one_json_document_with_the_plan(
    caddys, make_config, mox_ids, tmp_path, capsys
):
    (tmp_path / "mox").mkdir()  # mox's home; a sync creates its certs folder
    state = state_command(make_config(), capsys)
    assert state["certsync_state"] == 1 and state["host"] == "mail-1" and state["error"] is None
    entry = state["names"][NAME]
    assert entry["action"] == "install" and entry["detail"].endswith("replacing nothing")
    assert entry["caddy"]["cert"]["sha256"] == caddys.sha256
    assert entry["caddy"]["issuer"] == LETSENCRYPT


def test_a_hostile_mox_certificate_file_cannot_change_the_plan(
    ca, caddys, make_config, mox_ids, tmp_path, capsys
):
    config = make_config()
    cert_dir = tmp_path / "mox" / "certs"
    write_mox_files(cert_dir, NAME, b"garbage\n", b"", mox_ids)
    plain = state_command(config, capsys)["names"][NAME]
    crt = hostile_crt(ca, caddys)
    write_mox_files(cert_dir, NAME, crt, caddys.key_pem, mox_ids)

    out = json.dumps(state_command(config, capsys))
    entry = json.loads(out)["names"][NAME]

    assert entry["action"] == plain["action"] == "install"
    assert entry["caddy"] == plain["caddy"]
    assert [c["cert"]["sha256"] for c in entry["caddy"]["candidates"]] == [caddys.sha256]
    assert entry["mox"]["cert"] is None
    assert entry["mox"]["unprotected"].startswith("a certificate file that does not parse")
    for line in crt.decode().splitlines():
        if line and not line.startswith("-----"):
            assert line not in out
    assert leaked_secrets(out, caddys.key_pem) == []


def test_symlinked_folders_are_refused_for_every_name(
    caddys, make_config, mox_ids, tmp_path, capsys
):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "mox").mkdir()
    (tmp_path / "mox" / "certs").symlink_to(tmp_path / "elsewhere")
    config = make_config(names=[NAME, "mta-sts.example.com"])
    state = state_command(config, capsys)
    reason = f"{tmp_path / 'mox' / 'certs'} is a symlink; refusing"
    assert [(e["action"], e["detail"]) for e in state["names"].values()] == [("refuse", reason)] * 2


def test_state_reports_installed_files_without_their_contents(
    make_config, mox_ids, tmp_path, capsys
):
    program = tmp_path / "certsync.pyz"
    program.write_bytes(b"PK program")
    state = state_command(make_config(), capsys, "--file", str(program), "--file", "/nonexistent/x")
    assert state["files"][str(program)]["sha256"] == hashlib.sha256(b"PK program").hexdigest()
    assert state["files"]["/nonexistent/x"] == {
        "kind": "missing",
        "sha256": None,
        "writable_by": [],
    }
    assert "PK program" not in json.dumps(state)


def test_a_file_of_roots_in_a_folder_others_can_write_is_reported_even_when_sticky(
    make_config, tmp_path, capsys
):
    """The deploy writes certsync's files through a new name beside them, making the folders
    above: in a sticky world-writable folder (as /tmp) another user can take those names first."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    there, below = shared / "certsync.pyz", shared / "certsync" / "certsync.pyz"
    there.write_bytes(b"PK program")
    state = state_command(make_config(), capsys, "--file", str(there), "--file", str(below))
    why = f"{shared} is writable by other users (sticky, yet another user can take a new name"
    for path in (there, below):
        assert [w[: len(why)] for w in state["files"][str(path)]["writable_by"]] == [why]


def test_a_mox_binary_others_can_replace_is_warned_about(make_config, mox_ids, tmp_path):
    binary = tmp_path / "mox" / "mox"
    binary.parent.mkdir()
    binary.write_bytes(b"#!/bin/sh\n")
    os.chown(binary, *mox_ids)
    state = read_state(make_config(mox_binary=str(binary)), [], False, False)
    assert state["warnings"] == [
        f"running {binary} as root for `mox config test` trusts whoever can replace it"
        f" ({binary} is owned by mox); mox's own service does the same"
    ]


def test_the_newest_log_line_of_each_name_is_its_last_run(make_config, mox_ids, tmp_path):
    log = tmp_path / "log" / "certsync.log"
    log.parent.mkdir()
    log.write_text(
        f"2026-01-01T00:00:00Z certsync mail-1: {NAME}: installed: sha256=aa\n"
        f"2026-01-02T00:00:00Z certsync mail-2: {NAME}: refused: another host\n"
        f"2026-01-03T00:00:00Z certsync mail-1: {NAME}: in sync: sha256=aa\n"
        "2026-01-04T00:00:00Z certsync mail-1: exit 1: some names were refused\n"
        "2026-01-04T00:00:01Z certsync mail-1: alert mail to a@example.com via localhost:25: sent\n"
        "2026-01-05T00:00:00Z certsync mail-1: other.example.com: rolled back: mox did not start\n"
    )
    config = make_config(names=[NAME, "other.example.com"])
    state = read_state(config, [], False, False)
    assert state["last_runs"] == {
        NAME: {
            "time": "2026-01-03T00:00:00Z",
            "status": "in sync",
            "detail": "sha256=aa",
            "ok": True,
        },
        "other.example.com": {
            "time": "2026-01-05T00:00:00Z",
            "status": "rolled back",
            "detail": "mox did not start",
            "ok": False,
        },
    }


def test_a_placeholder_key_beside_it_never_reaches_the_state(
    make_config, mox_ids, tmp_path, capsys
):
    placeholder = self_signed([NAME], NOW, NOW + 30 * DAY)
    write_mox_files(
        tmp_path / "mox" / "certs", NAME, placeholder.cert_pem, placeholder.key_pem, mox_ids
    )
    out = json.dumps(state_command(make_config(), capsys))
    assert leaked_secrets(out, placeholder.key_pem) == []
