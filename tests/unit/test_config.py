"""Config.load: the host's settings file."""

from __future__ import annotations

import dataclasses
import json

import pytest


@pytest.fixture
def settings(make_config) -> dict:
    config = make_config(names=("mail.example.com", "*.example.com"))
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def write(tmp_path, settings) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings))
    return str(path)


def test_load_reads_every_setting(cs, tmp_path, settings):
    config = cs.Config.load(write(tmp_path, settings))
    assert config.names == ("mail.example.com", "*.example.com")
    assert config.verify_ports == (993, 465, 587)
    assert config.min_validity_hours == 24


def test_load_refuses_unknown_settings(cs, tmp_path, settings):
    settings["min_validty_hours"] = 48  # a typo must not be ignored
    with pytest.raises(ValueError, match="min_validty_hours"):
        cs.Config.load(write(tmp_path, settings))


@pytest.mark.parametrize(
    "name", ["mail.example.com;touch /tmp/pwned", "mail example.com", "../etc", "", "a..b"]
)
def test_load_refuses_a_name_that_is_not_a_host_name(cs, tmp_path, settings, name):
    settings["names"] = ["mail.example.com", name]
    with pytest.raises(ValueError, match="is not a host name"):
        cs.Config.load(write(tmp_path, settings))


def test_load_refuses_a_missing_setting(cs, tmp_path, settings):
    del settings["caddy_data_dir"]
    with pytest.raises((TypeError, ValueError, KeyError)):
        cs.Config.load(write(tmp_path, settings))


def test_load_refuses_names_given_as_a_string(cs, tmp_path, settings):
    settings["names"] = "localhost"
    with pytest.raises(ValueError):
        cs.Config.load(write(tmp_path, settings))
