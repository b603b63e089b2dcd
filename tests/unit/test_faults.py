"""The host program under faults: clean refusals instead of tracebacks, exit statuses, trusted
chains, backups pruning, output to a reader that is gone (the end-to-end cases are in
tests/e2e/test_faults.py)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from certsync import program
from certsync.host import backup, cli, records
from certsync.host.backup import take_backup
from certsync.host.caddy import choose_pair
from certsync.host.files import FILE, FileState
from certsync.host.outcome import Outcome
from certsync.host.output import Log
from certsync.host.pem import pem_blocks
from certsync.host.transaction import Sync
from certsync.host.x509 import untrusted_chain_problem
from tests.unit.certs import HOUR, LETSENCRYPT, NOW, Ca, cert_pem, write_caddy
from tests.unit.hostrun import HOST_PYTHON, ISOLATED, run_host_program, write_config

NAME = "mail.example.com"


def sync(config) -> list[Outcome]:
    return Sync(config, False, Log(config.host, config.log_file)).run(list(config.names))


def test_sync_refuses_every_name_when_the_mox_folder_is_a_symlink(make_config, tmp_path, mox_ids):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "mox").mkdir()
    (tmp_path / "mox" / "certs").symlink_to(real)
    config = make_config(names=[NAME, "mta-sts.example.com"])

    outcomes = sync(config)

    detail = f"{tmp_path / 'mox' / 'certs'} is a symlink; refusing"
    assert [(o.status, o.detail) for o in outcomes] == [("refused", detail)] * 2
    assert {o.exit_status for o in outcomes} == {1}
    assert list(real.iterdir()) == []
    assert real.stat().st_uid == 0  # the link's target was not chowned to mox


def test_sync_refuses_when_the_backup_folder_is_a_symlink(make_config, tmp_path, mox_ids):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "backups").symlink_to(tmp_path / "elsewhere")

    (outcome,) = sync(make_config())

    assert (outcome.status, outcome.detail) == (
        "refused",
        f"{tmp_path / 'backups'} is a symlink; refusing",
    )
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("in sync", 0),
        ("installed", 0),
        ("repaired", 0),
        ("restarted", 0),
        ("refused", 1),
        ("failed", 3),
        ("rolled back", 3),
        ("restore failed", 4),
    ],
)
def test_exit_status_of_each_outcome(status, code):
    assert Outcome(NAME, status).exit_status == code
    assert Outcome(NAME, status).ok is (code == 0)


def test_untrusted_chain_problem(tmp_path):
    ca, other = Ca("trusted"), Ca("other")
    issued = ca.issue((NAME,))
    ders = [der for _, der in pem_blocks(issued.cert_pem)]
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(cert_pem(ca.root))
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(cert_pem(other.root))

    assert untrusted_chain_problem(ders, str(trusted)) is None
    problem = untrusted_chain_problem(ders, str(untrusted))
    assert problem is not None
    assert problem.startswith(f"certificate chain is not trusted by {untrusted} (")
    # without the intermediate, the root alone cannot vouch for the leaf
    assert "not trusted" in (untrusted_chain_problem(ders[:1], str(trusted)) or "")
    assert "not trusted" in (untrusted_chain_problem(ders, str(tmp_path / "missing.pem")) or "")


def test_choose_pair_requires_a_trusted_chain_when_asked(tmp_path):
    ca = Ca("caddy's")
    issued = ca.issue((NAME,))
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    trusted = tmp_path / "ca.pem"
    trusted.write_bytes(cert_pem(ca.root))
    system = tmp_path / "system.pem"
    system.write_bytes(cert_pem(Ca("system").root))

    def choose(trusted_ca_file: str | None):
        return choose_pair(str(tmp_path / "caddy"), NAME, NOW, 24 * HOUR, trusted_ca_file)

    refused = choose(str(system))
    assert refused.pair is None
    assert refused.refusal and f"{LETSENCRYPT}: certificate chain is not trusted by" in (
        refused.refusal
    )
    assert (pair := choose(str(trusted)).pair) and pair.cert == issued.cert_pem
    assert (pair := choose(None).pair) and pair.cert == issued.cert_pem


def test_pruning_never_removes_the_backup_just_taken(tmp_path):
    """Backups dated in the future (the clock was set back) sort after the new one."""
    root = tmp_path / "backups"
    root.mkdir(mode=0o700)
    stamps = ["20000101T000000000000Z", "29990101T000000000000Z", "29990102T000000000000Z"]
    for stamp in stamps:
        (root / stamp).mkdir()
        (root / stamp / "a.crt").write_text("old\n")
    (root / "not-a-backup").mkdir()

    path, note = take_backup(
        str(root), {"a.crt": FileState(FILE, b"cert\n", None, 995, 995, 0o644)}, keep=2
    )

    assert note == ""
    new = os.path.basename(path)
    assert sorted(p.name for p in root.iterdir()) == sorted([new, stamps[-1], "not-a-backup"])
    copy = root / new / "a.crt"
    assert copy.read_bytes() == b"cert\n"
    assert (copy.stat().st_uid, copy.stat().st_gid) == (0, 0)  # root's copy of mox's file
    assert oct(root.stat().st_mode & 0o777) == oct(0o700)


def test_a_backup_keeps_links_as_links_and_skips_what_was_not_there(tmp_path):
    path, _ = take_backup(
        str(tmp_path / "backups"),
        {
            "a.crt": FileState("link", None, "/var/lib/caddy/a.crt", 995, 995, 0o777),
            "a.key": FileState("missing"),
        },
        keep=5,
    )
    assert os.readlink(Path(path) / "a.crt") == "/var/lib/caddy/a.crt"
    assert sorted(os.listdir(path)) == ["a.crt"]


# --- the program as the hosts run it -----------------------------------------------------------


def config_file(make_config, tmp_path: Path, **overrides) -> Path:
    (tmp_path / "mox").mkdir(exist_ok=True)
    return write_config(make_config(**overrides), tmp_path / "config.json")


def test_settings_errors_exit_2_without_a_traceback(pyz, make_config, tmp_path, mox_ids):
    missing = run_host_program(pyz, "sync", "--config", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2
    assert "settings error" in missing.stderr and "Traceback" not in missing.stderr
    path = config_file(make_config, tmp_path)
    raw = json.loads(path.read_text())
    raw["mox_cert_dir"] = "/home/mox/../../etc"
    path.write_text(json.dumps(raw))
    hostile = run_host_program(pyz, "sync", "--config", str(path))
    assert hostile.returncode == 2
    assert "mail-1: certsync_mox_cert_dir: '/home/mox/../../etc'" in hostile.stderr
    assert "Traceback" not in hostile.stderr


def test_an_unknown_mox_user_exits_2(pyz, make_config, tmp_path):
    path = config_file(make_config, tmp_path, mox_user="nosuchuser")
    result = run_host_program(pyz, "sync", "--config", str(path))
    assert result.returncode == 2
    assert "no such user or group" in result.stderr and "Traceback" not in result.stderr


def test_refusal_exits_1_and_says_so_last(pyz, make_config, tmp_path, mox_ids):
    path = config_file(make_config, tmp_path)  # Caddy's storage does not exist

    result = run_host_program(pyz, "sync", "--config", str(path))

    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert f"{NAME}: refused: Caddy's storage" in lines[0]
    assert lines[-1].endswith("exit 1: some names were refused; nothing changed for them")


def test_a_reader_gone_does_not_change_the_exit_status(pyz, make_config, tmp_path, mox_ids):
    """stdout and stderr are pipes whose reader has gone (a dropped SSH session): the run
    finishes, logs, and exits with its own status, without a traceback or Python's 120."""
    path = config_file(make_config, tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = run_host_program(
            pyz, "sync", "--config", str(path), stdout=write_end, stderr=write_end
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    log = (tmp_path / "log" / "certsync.log").read_text()
    assert f"{NAME}: refused: Caddy's storage" in log


def test_emit_to_a_closed_pipe_is_dropped_also_at_exit(pyz):
    code = (
        f"import sys; sys.path.insert(0, {str(pyz)!r})\n"
        f"from {program.HOST_PACKAGE}.output import emit\n"
        "emit('x' * 200000)\nemit('more')\nsys.exit(0)\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [HOST_PYTHON, *ISOLATED, "-c", code],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""


def test_an_unexpected_error_is_reported_per_name_with_exit_4(
    make_config, tmp_path, monkeypatch, capsys, mox_ids
):
    """The last-resort net for a bug in the transaction: no traceback, a pointer to the backup."""
    path = config_file(make_config, tmp_path)

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(Sync, "run", bug)

    assert cli.main(["sync", "--config", str(path)]) == 4
    err = capsys.readouterr().err
    assert f"{NAME}: restore failed: unexpected error (KeyError: 'oops'); check mox's files" in err
    assert err.splitlines()[-1].endswith("exit 4: " + cli.EXIT_MEANINGS[4])


def test_a_backup_is_root_only_whatever_mode_mox_s_file_had(tmp_path):
    """A set-id program the mox user left as its .crt is backed up as root's 0600 copy, never as
    a root-owned set-id program."""
    olds = {"mail.example.com.crt": FileState(FILE, b"#!/bin/sh\n", None, 1000, 1000, 0o6755)}
    path, _ = take_backup(str(tmp_path / "backups"), olds, keep=5)
    info = os.stat(os.path.join(path, "mail.example.com.crt"))
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)


def test_a_record_nested_too_deep_to_read_is_no_record(make_config, tmp_path):
    config = make_config()
    records.save(config, "installed.json", {})
    folder = os.path.dirname(config.lock_file)
    with open(os.path.join(folder, "installed.json"), "w") as file:
        file.write("[" * 100_000 + "]" * 100_000)
    assert records.load(config, "installed.json") == {}


def test_the_test_trace_is_root_s_alone_and_never_written_through_a_link(tmp_path, monkeypatch):
    from certsync.host import crashpoint

    trace = tmp_path / "trace"
    monkeypatch.setattr(crashpoint, "_TRACE", str(trace))
    monkeypatch.setattr(crashpoint, "_seen", {})
    crashpoint.step("backup")
    crashpoint.step("backup")
    assert trace.read_text() == "backup#1\nbackup#2\n"
    assert stat.S_IMODE(trace.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere"
    target.write_text("kept")
    link = tmp_path / "link"
    link.symlink_to(target)
    monkeypatch.setattr(crashpoint, "_TRACE", str(link))
    with pytest.raises(OSError):
        crashpoint.step("install")
    assert target.read_text() == "kept"


def test_a_backup_a_crash_left_half_made_never_counts_and_is_removed(tmp_path, monkeypatch):
    root = tmp_path / "backups"
    whole = {"a.crt": FileState(FILE, b"cert\n", None, 995, 995, 0o644)}
    first, _ = take_backup(str(root), whole, keep=2)
    real = backup.put_entries

    def killed(fd, entries):  # type: ignore[no-untyped-def]
        real(fd, dict(list(entries.items())[:1]))  # the first file, then SIGKILL
        raise KeyboardInterrupt

    monkeypatch.setattr(backup, "put_entries", killed)
    two = {**whole, "a.key": FileState(FILE, b"key\n", None, 995, 995, 0o600)}
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            take_backup(str(root), two, keep=2)
    # no half-made backup looks like one: the whole one is there
    assert [p.name for p in root.iterdir() if backup.STAMP_RE.fullmatch(p.name)] == [
        os.path.basename(first)
    ]
    monkeypatch.setattr(backup, "put_entries", real)

    second, _ = take_backup(str(root), two, keep=2)

    assert sorted(p.name for p in root.iterdir()) == sorted(
        [os.path.basename(first), os.path.basename(second)]
    )
    assert sorted(os.listdir(second)) == ["a.crt", "a.key"]


def test_old_backups_are_not_pruned_while_a_restore_failed(tmp_path):
    root = tmp_path / "backups"
    whole = {"a.crt": FileState(FILE, b"cert\n", None, 995, 995, 0o644)}
    first, _ = take_backup(str(root), whole, keep=1)
    second, note = take_backup(str(root), whole, keep=1, hold_pruning="a restore failed for a")
    assert note == " (old backups not pruned: a restore failed for a)"
    assert os.path.isdir(first) and os.path.isdir(second)
    third, note = take_backup(str(root), whole, keep=1)
    assert note == "" and sorted(os.listdir(root)) == [os.path.basename(third)]
