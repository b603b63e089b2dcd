"""Settings from pyinfra data: every inventory name pyinfra accepts is accepted. The host name only
labels the host (config.json, log lines) and reaches the host's shell only quoted."""

from __future__ import annotations

import json
import shlex

import pytest

from certsync.facts import CertsyncState
from certsync.host.settings import Config
from certsync.hostdata import SettingsError, settings_from_data

INVENTORY_NAMES = [
    "@local",
    "@docker/mox",
    "@docker/debian:12",
    "@dockerssh/mail.example.com:debian:12",
    "@chroot/srv/mail-root",
    "2001:db8::25",
    "[2001:db8::25]",
    "192.0.2.25",
    "admin@mail.example.com",
    "mail.example.com",
    "Mail_1",
]
DATA = {"certsync_names": ["mail.example.com"]}


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_every_inventory_name_pyinfra_accepts_is_accepted(name):
    settings = settings_from_data(name, DATA)

    config = json.loads(settings.config_json())
    assert config["host"] == name
    assert Config.from_json(config, "config.json").host == name  # the host program takes it


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_the_host_name_reaches_the_state_read_inside_its_quoted_settings(name):
    settings = settings_from_data(name, DATA)

    argv = shlex.split(CertsyncState().command(settings=settings).get_raw_value())

    assert json.loads(argv[argv.index("--settings") + 1])["host"] == name


def test_a_bad_setting_names_the_inventory_host():
    with pytest.raises(SettingsError, match=r"^@docker/mox: certsync_verify_ports: "):
        settings_from_data("@docker/mox", {**DATA, "certsync_verify_ports": [99999]})


def test_a_misspelled_setting_is_refused_with_the_one_meant():
    with pytest.raises(
        SettingsError, match=r"mail-1: certsync_namez: .*did you mean certsync_names"
    ):
        settings_from_data("mail-1", {"certsync_namez": "mail.example.com"})


def test_a_misspelled_argument_of_certsync_deploy_is_refused_with_the_one_meant():
    with pytest.raises(SettingsError, match=r"^mail-1: nmes: .*did you mean names\?"):
        settings_from_data("mail-1", {}, defaults={"nmes": ["mail.example.com"]})


def test_values_checked_before_are_each_hosts_own_and_refusals_are_not_remembered():
    first = settings_from_data("mail-1", DATA)
    second = settings_from_data("mail-2", DATA)
    assert first.names == second.names and first.names is not second.names

    class Looks(str):  # a repr like a good name's: never taken for it
        def __repr__(self) -> str:
            return repr("mail.example.com")

    with pytest.raises(SettingsError, match="mail-3: certsync_names"):
        settings_from_data("mail-3", {"certsync_names": ["mail..example.com"]})
    with pytest.raises(SettingsError, match="mail-3: certsync_names"):
        settings_from_data("mail-3", {"certsync_names": ["mail..example.com"]})
    assert settings_from_data("mail-4", {"certsync_names": [Looks("x")]}).names == ["x"]
