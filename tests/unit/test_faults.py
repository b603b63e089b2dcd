"""The host program under faults: clean refusals instead of tracebacks, exit statuses, trusted
chains, backups pruning, output to a reader that is gone (the end-to-end cases are in
tests/e2e/test_faults.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.certs import LETSENCRYPT, NOW, Ca, cert_pem, write_caddy

NAME = "mail.example.com"
PROGRAM = Path(__file__).resolve().parents[2] / "files" / "certsync.py"


def test_open_dir_names_the_symlinked_folder(cs, tmp_path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(cs.SymlinkedFolder) as caught:
        cs.open_dir(str(tmp_path / "link" / "sub"), create_mode=0o700)
    assert str(caught.value) == f"{tmp_path / 'link'} is a symlink; refusing"
    assert isinstance(caught.value, OSError)


def test_sync_refuses_every_name_when_the_mox_folder_is_a_symlink(cs, make_config, tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "mox").mkdir()
    (tmp_path / "mox" / "certs").symlink_to(real)
    config = make_config(names=(NAME, "mta-sts.example.com"), mox_user="root", mox_group="root")

    outcomes = cs.Host(config, force=False).sync(list(config.names))

    detail = f"{tmp_path / 'mox' / 'certs'} is a symlink; refusing"
    assert [(o.status, o.detail) for o in outcomes] == [("refused", detail)] * 2
    assert {o.exit_status for o in outcomes} == {1}
    assert list(real.iterdir()) == []


def test_sync_refuses_when_the_backup_folder_is_a_symlink(cs, make_config, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "backups").symlink_to(tmp_path / "elsewhere")
    config = make_config(mox_user="root", mox_group="root")

    (outcome,) = cs.Host(config, force=False).sync([NAME])

    assert (outcome.status, outcome.detail) == (
        "refused",
        f"{tmp_path / 'backups'} is a symlink; refusing",
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("in sync", 0),
        ("installed", 0),
        ("repaired", 0),
        ("refused", 1),
        ("failed", 3),
        ("rolled back", 3),
        ("restore failed", 4),
    ],
)
def test_exit_status_of_each_outcome(cs, status, code):
    assert cs.Outcome(NAME, status).exit_status == code


def test_untrusted_chain_problem(cs, tmp_path):
    ca, other = Ca("trusted"), Ca("other")
    issued = ca.issue((NAME,))
    ders = [cs.pem_blocks(issued.cert_pem)[i][1] for i in range(2)]
    trusted = tmp_path / "trusted.pem"
    trusted.write_bytes(cert_pem(ca.root))
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(cert_pem(other.root))

    assert cs.untrusted_chain_problem(ders, str(trusted)) is None
    problem = cs.untrusted_chain_problem(ders, str(untrusted))
    assert problem.startswith(f"certificate chain is not trusted by {untrusted} (")
    # without the intermediate, the root alone cannot vouch for the leaf
    assert "not trusted" in cs.untrusted_chain_problem(ders[:1], str(trusted))
    assert "not trusted" in cs.untrusted_chain_problem(ders, str(tmp_path / "missing.pem"))


def test_caddy_pair_requires_a_trusted_chain_when_asked(cs, make_config, tmp_path):
    ca = Ca("caddy's")
    issued = ca.issue((NAME,))
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
    trusted = tmp_path / "ca.pem"
    trusted.write_bytes(cert_pem(ca.root))
    system = tmp_path / "system.pem"
    system.write_bytes(cert_pem(Ca("system").root))

    config = make_config(require_trusted_chain=True, trusted_ca_file=str(system))
    with pytest.raises(cs.Refused, match="not trusted by"):
        cs.caddy_pair(config, NAME, NOW)
    config = make_config(require_trusted_chain=True, trusted_ca_file=str(trusted))
    assert cs.caddy_pair(config, NAME, NOW).cert == issued.cert_pem
    config = make_config(require_trusted_chain=False, trusted_ca_file=str(system))
    assert cs.caddy_pair(config, NAME, NOW).cert == issued.cert_pem


def test_pruning_never_removes_the_backup_just_taken(cs, make_config, tmp_path):
    """Backups dated in the future (the clock was set back) sort after the new one."""
    config = make_config(backups_keep=2)
    root = tmp_path / "backups"
    root.mkdir(mode=0o700)
    stamps = ["20000101T000000000000Z", "29990101T000000000000Z", "29990102T000000000000Z"]
    for stamp in stamps:
        (root / stamp).mkdir()
        (root / stamp / "a.crt").write_text("old\n")
    host = cs.Host(make_config(mox_user="root", mox_group="root", backups_keep=2), force=False)
    assert config.backups_keep == 2

    path, note = host._backup({"a.crt": cs.FileState(b"cert\n", True, 0, 0, 0o644)})

    assert note == ""
    new = os.path.basename(path)
    assert sorted(p.name for p in root.iterdir()) == sorted([new, stamps[-1]])
    assert (root / new / "a.crt").read_bytes() == b"cert\n"


def _config_file(make_config, tmp_path, **overrides) -> Path:
    (tmp_path / "mox").mkdir()
    config = make_config(mox_user="root", mox_group="root", **overrides)
    raw = {
        field: list(value) if isinstance(value, tuple) else value
        for field, value in vars(config).items()
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return path


def _run_program(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROGRAM), *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def test_settings_errors_exit_2_without_a_traceback(make_config, tmp_path):
    missing = _run_program("sync", "--config", str(tmp_path / "nowhere.json"))
    assert missing.returncode == 2
    assert "settings error" in missing.stderr and "Traceback" not in missing.stderr
    path = _config_file(make_config, tmp_path)
    raw = json.loads(path.read_text())
    del raw["mox_binary"]
    path.write_text(json.dumps(raw))
    incomplete = _run_program("sync", "--config", str(path))
    assert incomplete.returncode == 2
    assert "missing settings ['mox_binary']" in incomplete.stderr
    assert "Traceback" not in incomplete.stderr


def test_refusal_exits_1_and_says_so_last(make_config, tmp_path):
    path = _config_file(make_config, tmp_path)  # Caddy's storage does not exist

    result = _run_program("sync", "--config", str(path))

    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert f"{NAME}: refused: Caddy's storage" in lines[0]
    assert lines[-1].endswith("exit 1: some names were refused; nothing changed for them")


def test_a_reader_gone_does_not_change_the_exit_status(make_config, tmp_path):
    """stdout and stderr are pipes whose reader has gone (a dropped SSH session): the run
    finishes, logs, and exits with its own status, without a traceback or Python's 120."""
    path = _config_file(make_config, tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, str(PROGRAM), "sync", "--config", str(path)],
            stdout=write_end,
            stderr=write_end,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    log = (tmp_path / "log" / "certsync.log").read_text()
    assert f"{NAME}: refused: Caddy's storage" in log


def test_emit_to_a_closed_pipe_is_dropped_also_at_exit(tmp_path):
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import certsync\n"
        "certsync.emit('x' * 200000)\ncertsync.emit('more')\nsys.exit(0)\n"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, str(PROGRAM.parent)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""


def _data(**overrides):
    import group_data.all as defaults

    data = {k: v for k, v in vars(defaults).items() if k.startswith("certsync_")}
    data["certsync_names"] = [NAME]
    data.update(overrides)
    return data


def test_trusted_chain_settings_default_off_and_reach_the_host_config():
    from operations.settings import settings_from_data

    settings = settings_from_data("mail-1", _data())
    assert settings.require_trusted_chain is False
    assert settings.trusted_ca_file == "/etc/ssl/certs/ca-certificates.crt"
    on = settings_from_data(
        "mail-1",
        _data(certsync_require_trusted_chain="yes", certsync_trusted_ca_file="/etc/ca.pem"),
    ).host_config()
    assert (on["require_trusted_chain"], on["trusted_ca_file"]) == (True, "/etc/ca.pem")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("certsync_require_trusted_chain", "maybe"),
        ("certsync_trusted_ca_file", "ca.pem"),
        ("certsync_trusted_ca_file", "/etc/ssl/../shadow"),
        ("certsync_trusted_ca_file", "/etc/ssl/my ca.pem"),
    ],
)
def test_trusted_chain_settings_are_validated(setting, value):
    from operations.settings import SettingsError, settings_from_data

    with pytest.raises(SettingsError, match=f"mail-1: {setting}: "):
        settings_from_data("mail-1", _data(**{setting: value}))


def test_an_unexpected_error_is_reported_per_name_with_exit_4(
    cs, make_config, tmp_path, monkeypatch, capsys
):
    """The last-resort net for a bug in the transaction: no traceback, a pointer to the backup."""
    path = _config_file(make_config, tmp_path)

    def bug(*args, **kwargs):
        raise KeyError("oops")

    monkeypatch.setattr(cs, "run_sync", bug)

    assert cs.main(["sync", "--config", str(path)]) == 4
    err = capsys.readouterr().err
    assert f"{NAME}: restore failed: unexpected error (KeyError: 'oops'); check mox's files" in err
    assert err.splitlines()[-1].endswith("exit 4: " + cs.EXIT_MEANINGS[4])
