"""Settings: every check refuses hostile values naming host and setting; config.json loads."""

from __future__ import annotations

import json
import random
import shlex
from pathlib import Path
from typing import Any

import pytest

from certsync.host.settings import (
    BY_NAME,
    HOST_SETTINGS,
    SETTINGS,
    Config,
    SettingError,
    check_settings,
)
from certsync.hostdata import SettingsError, settings_from_data

HOST = "mail-7"
PATH_SETTINGS = [s.name for s in SETTINGS if s.check is BY_NAME["mox_cert_dir"].check]
HOSTILE_TEXT = [
    "a;touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a b",
    "'a'",
    '"a"',
    "a\nb",
    "a\x00b",
    "a\x1b[31mb",
    "a\x7fb",
]
HOSTILE_PATHS = [
    "/a;touch /tmp/pwned",
    "/home/mox/../../etc/shadow",
    "/home/mox/..",
    "/home/./mox",
    "/home//mox",
    "/home/mox/",
    "home/mox",
    "..",
    "",
    "/home/my mox",
    "/home/'mox'",
    '/home/"mox"',
    "/home/mox\n/etc",
    "/home/mox\t",
    "/home/$(id)",
    "/home/m\u00f6x",
]


def refusal(values: dict[str, Any]) -> str:
    with pytest.raises(SettingError) as caught:
        check_settings(HOST, values)
    return str(caught.value)


def test_defaults_are_valid():
    checked = check_settings(HOST, {})
    assert checked["verify_ports"] == [993, 465, 587]
    assert checked["restart_command"] == "systemctl restart mox"
    assert checked["verify_address"] == ""
    assert checked["names"] == []


@pytest.mark.parametrize("value", HOSTILE_PATHS)
@pytest.mark.parametrize("setting", PATH_SETTINGS)
def test_every_path_setting_refuses_hostile_paths(setting, value):
    assert refusal({setting: value}).startswith(f"{HOST}: certsync_{setting}: ")


@pytest.mark.parametrize("value", [*HOSTILE_TEXT, "*", "..", "mail..example.com"])
def test_names_refuse_what_is_not_a_host_name(value):
    message = refusal({"names": ["mail.example.com", value]})
    assert message.startswith(f"{HOST}: certsync_names: ")
    assert "is not a host name" in message


@pytest.mark.parametrize("value", [*HOSTILE_TEXT, "*.example.com", "1.2.3.4; id", "::1 x"])
def test_verify_address_refuses_what_is_neither_a_name_nor_an_ip(value):
    assert refusal({"verify_address": value}).startswith(f"{HOST}: certsync_verify_address: ")


@pytest.mark.parametrize("value", ["", "127.0.0.1", "::1", "mail.example.com"])
def test_verify_address_accepts_empty_an_ip_or_a_name(value):
    assert check_settings(HOST, {"verify_address": value})["verify_address"] == value


@pytest.mark.parametrize(
    "value", [[99999], [0], [-1], [993, 65536], ["993;id"], [True], [], "99999", [993.5, "x"]]
)
def test_verify_ports_refuse_what_is_not_a_port(value):
    assert refusal({"verify_ports": value}).startswith(f"{HOST}: certsync_verify_ports: ")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("restart_command", "systemctl restart 'mox"),
        ("restart_command", "systemctl restart mox\ntouch /tmp/pwned"),
        ("restart_command", ""),
        ("restart_command", "   "),
        ("alert_command", "mail -s 'certsync root"),
        ("alert_command", "logger\x00x"),
        ("cron_schedule", "17 */6 * * *\n* * * * * root touch /tmp/pwned"),
        ("cron_schedule", "17 */6 * * * root touch /tmp/pwned"),
        ("cron_schedule", "@every 5m"),
        ("alert_email", "root@localhost\nMAILTO=x@evil.test"),
        ("alert_email", "root@localhost; touch /tmp/pwned"),
        ("alert_email", "'root'@localhost"),
        ("mox_user", "mox;id"),
        ("mox_user", "mox user"),
        ("mox_user", "../mox"),
        ("mox_group", "mox\n"),
        ("canary_group", "canary;id"),
        ("min_validity_hours", "24;id"),
        ("min_validity_hours", -1),
        ("backups_keep", 0),
        ("backups_keep", True),
        ("verify_timeout_seconds", "60 s"),
        ("require_trusted_chain", "maybe"),
        ("force", "yes please"),
    ],
)
def test_every_other_check_refuses_hostile_values(setting, value):
    assert refusal({setting: value}).startswith(f"{HOST}: certsync_{setting}: ")


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"mox_cert_dir": "/var/lib/certsync/backups"}, "is the folder of certsync_backup_dir"),
        ({"mox_cert_dir": "/var/lib/certsync"}, "holds the folder of certsync_backup_dir"),
        ({"mox_cert_dir": "/"}, "holds the folder of certsync_backup_dir"),
        (
            {"mox_cert_dir": "/srv/run", "lock_file": "/srv/run/lock"},
            "is the folder of certsync_lock",
        ),
        ({"mox_cert_dir": "/var/log/certsync/mox"}, "is inside the folder of certsync_log_file"),
        (
            {"mox_cert_dir": "/srv/m", "backup_dir": "/srv/m/b"},
            "holds the folder of certsync_backup",
        ),
        ({"mox_cert_dir": "/etc/certsync"}, "is the folder of certsync_config_file"),
        ({"mox_cert_dir": "/etc/cron.d"}, "is the folder of certsync_cron_file"),
        ({"mox_cert_dir": "/usr/local"}, "holds the folder of certsync_install_dir"),
        ({"mox_cert_dir": "/etc/logrotate.d/x"}, "is inside the folder of certsync_logrotate"),
        (
            {"mox_cert_dir": "/var/lib/prometheus/node-exporter"},
            "is the folder of certsync_metrics_file",
        ),
    ],
)
def test_mox_s_folder_is_apart_from_certsync_s_own(values, said):
    """mox's folder becomes mox's: at, in or above one of certsync's own folders, mox could
    replace the backups, the lock, the log, or what root runs (the program, its config, the cron
    job); and the sync makes its own folders first (then refuses mox's forever)."""
    message = refusal(values)
    assert message.startswith(f"{HOST}: certsync_mox_cert_dir: {values['mox_cert_dir']} {said}")
    assert message.endswith("set it apart from certsync's own folders")


@pytest.mark.parametrize(
    "values",
    [
        {"mox_cert_dir": "/var/lib/certsync-mox"},  # a name that starts the same
        {"mox_cert_dir": "/home/mox/certs", "backup_dir": "/home/mox-backups"},
        {"mox_cert_dir": "/var/lib/prometheus/node-exporter", "metrics_file": ""},
    ],
)
def test_folders_beside_each_other_are_apart(values):
    assert check_settings(HOST, {"names": ["mail.example.com"], **values})


def test_a_refusal_shows_the_value_escaped():
    """Control characters are shown as escapes: the message is one line on the terminal."""
    message = refusal({"restart_command": "systemctl restart mox\ntouch /tmp/pwned"})
    assert "\n" not in message and "\\n" in message


def test_a_restart_command_without_a_shell_may_hold_a_semicolon():
    """It is run without a shell, split into words: ';' is a word character there."""
    checked = check_settings(HOST, {"restart_command": "systemctl restart mox; touch /x"})
    assert checked["restart_command"] == "systemctl restart mox; touch /x"


@pytest.mark.parametrize("setting", ["restart_command", "alert_command"])
def test_a_command_is_refused_where_shlex_cannot_split_it(setting):
    """Checked without shlex on the host (its import costs the state read): shlex's verdicts."""
    rng = random.Random(18)
    alphabet = "a '\"\\;$ "
    values = ["a 'b c", 'a "b\\" c', "a \\", "'a\\'", '"a\\"', "a\\ b", "'' \"\""]
    values += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8))) for _ in range(5000)]
    for value in filter(str.strip, values):  # (blank: "is empty", or no command)
        expected: str | None = None
        try:
            shlex.split(value.strip())  # as the setting is checked
        except ValueError as error:
            expected = f"does not split into words: {error}"
        if expected is None:
            assert check_settings(HOST, {setting: value})[setting] == value.strip()
        else:
            assert expected in refusal({setting: value}), value


def test_names_from_a_comma_separated_string_are_lower_cased():
    checked = check_settings(HOST, {"names": "Mail.Example.com, *.example.com"})
    assert checked["names"] == ["mail.example.com", "*.example.com"]


def test_a_name_listed_twice_is_refused():
    assert "listed twice" in refusal({"names": ["mail.example.com", "MAIL.example.com"]})


# --- config.json --------------------------------------------------------------------------------


def write(tmp_path: Path, raw: dict[str, Any]) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return str(path)


@pytest.fixture
def raw(make_config) -> dict[str, Any]:
    """config.json as the deploy writes it."""
    return make_config(names=["mail.example.com", "*.example.com"]).to_json()


def test_load_reads_every_setting(tmp_path, raw):
    config = Config.load(write(tmp_path, raw))
    assert config.host == "mail-1"
    assert config.names == ["mail.example.com", "*.example.com"]
    assert config.verify_ports == [993, 465, 587]
    assert config.min_validity_hours == 24
    assert config.to_json() == raw
    assert sorted(raw) == sorted(["host", *(s.name for s in HOST_SETTINGS)])


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("min_validty_hours", 48, "unknown settings \\['min_validty_hours'\\]"),  # a typo
        ("cron_schedule", "17 */6 * * *", "unknown settings \\['cron_schedule'\\]"),
        ("mox_cert_dir", "/home/mox/../../etc", "mail-1: certsync_mox_cert_dir: "),
        *(
            ("names", ["mail.example.com", name], "mail-1: certsync_names: .* is not a host name")
            for name in ["mail.example.com;touch /tmp/pwned", "mail example.com", "../etc", ""]
        ),
    ],
)
def test_load_checks_every_setting_again(tmp_path, raw, setting, value, error):
    raw[setting] = value
    with pytest.raises(ValueError, match=error):
        Config.load(write(tmp_path, raw))


@pytest.mark.parametrize("text", ["[]", '"mail-1"', '{"names": []}', '{"host": 7}'])
def test_load_refuses_what_is_not_a_settings_object(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="not a certsync settings object"):
        Config.load(str(path))


def test_a_missing_setting_takes_its_default(tmp_path, raw):
    del raw["verify_ports"]
    assert Config.load(write(tmp_path, raw)).verify_ports == [993, 465, 587]


def test_an_unknown_attribute_is_an_attribute_error(make_config):
    with pytest.raises(AttributeError):
        make_config().cron_schedule  # noqa: B018


# --- from pyinfra's data to the host's config.json ---------------------------------------------


def test_trusted_chain_settings_default_off_and_reach_the_host_config():
    settings = settings_from_data("mail-1", {"certsync_names": ["mail.example.com"]})
    assert settings.require_trusted_chain is False
    assert settings.trusted_ca_file == "/etc/ssl/certs/ca-certificates.crt"
    on = settings_from_data(
        "mail-1",
        {
            "certsync_names": ["mail.example.com"],
            "certsync_require_trusted_chain": "yes",
            "certsync_trusted_ca_file": "/etc/ca.pem",
        },
    ).host_config()
    assert (on.require_trusted_chain, on.trusted_ca_file) == (True, "/etc/ca.pem")


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
    with pytest.raises(SettingsError, match=f"mail-1: {setting}: "):
        settings_from_data("mail-1", {"certsync_names": ["mail.example.com"], setting: value})


def test_one_port_from_the_command_line_is_a_list_of_one():
    # `--data certsync_verify_ports=993` reaches certsync as the number 993
    assert check_settings("mail-1", {"verify_ports": 993})["verify_ports"] == [993]
    assert check_settings("mail-1", {"verify_ports": "993,465"})["verify_ports"] == [993, 465]
