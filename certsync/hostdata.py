"""A host's certsync settings, from pyinfra's data (what the deploy's code assigns, `host.data.x =
...` > `--data` > host > group > all > the arguments of certsync_deploy() or of the `synced`
operation > certsync's defaults), checked before anything runs on the host."""

from __future__ import annotations

import copy
import difflib
import json
from collections import ChainMap
from collections.abc import Callable, Mapping
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from certsync.host.settings import (
    BY_NAME,
    HOST_SETTINGS,
    PREFIX,
    SETTINGS,
    Config,
    SettingError,
    check_settings,
)
from certsync.pyinfra_compat import assigned_data


class SettingsError(PyinfraError):
    """A setting that certsync refuses; the message names the host and the setting."""


class HostSettings:
    """Every setting of one host, checked. `names` are the names to sync in this run;
    `configured_names` the host's own (for its cron job), which differ after a one-off
    `--data certsync_names=...`."""

    def __init__(self, host: str, values: dict[str, Any], configured_names: list[str]) -> None:
        self.host = host
        self.values = values
        self.configured_names = configured_names
        self._made: dict[str, Any] = {}  # what is made of the settings, once per host and run

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self) -> str:  # how pyinfra shows it among an operation's or a fact's arguments
        return f"<certsync settings of {self.host}>"

    @property
    def program(self) -> str:
        return f"{self.install_dir}/certsync.pyz"

    @property
    def installed_files(self) -> list[str]:
        """The files the deploy installs on the host (operations.host_files makes them)."""
        return [self.program, self.config_file, self.cron_file, self.logrotate_file]

    def made(self, what: str, make: Callable[[], Any]) -> Any:
        """make(), once per these settings (the settings are not changed once checked)."""
        if what not in self._made:
            self._made[what] = make()
        return self._made[what]

    def host_config(self) -> Config:
        """The settings the host program reads: config.json, with the host's own names."""

        def make() -> Config:
            values = {setting.name: self.values[setting.name] for setting in HOST_SETTINGS}
            values["names"] = self.configured_names
            return Config(self.host, values, checked=True)

        return self.made("host_config", make)

    def run_config(self) -> Config:
        """The settings of this run (its names), for the state read."""
        return self.made(
            "run_config",
            lambda: Config(
                self.host, {s.name: self.values[s.name] for s in HOST_SETTINGS}, checked=True
            ),
        )

    def run_config_json(self) -> str:
        return self.made("run_config_json", lambda: json.dumps(self.run_config().to_json()))

    def config_json(self) -> str:
        return self.made(
            "config_json",
            lambda: json.dumps(self.host_config().to_json(), indent=2, sort_keys=True) + "\n",
        )


def _values(data: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for setting in SETTINGS:
        value = data.get(setting.key)
        if value is None:
            value = defaults.get(setting.name)
        if value is not None:
            values[setting.name] = copy.copy(value)  # as pyinfra's data.get gives it
    return values


def _refuse_unknown(host: str, names: list[str], prefix: str) -> None:
    """Raise SettingsError for the first of `names` that is no setting, with the closest one."""
    unknown = next((name for name in names if name not in BY_NAME), None)
    if unknown is None:
        return
    close = difflib.get_close_matches(unknown, list(BY_NAME), n=1)
    hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
    raise SettingsError(f"{host}: {prefix}{unknown}: certsync has no such setting{hint}")


PLAIN = (str, int, float, bool)  # and lists or tuples of them: what a repr tells apart
MAX_CHECKED = 1024
# repr of the values -> check_settings' result: a fleet's hosts mostly share their values, and
# each host's are checked at its deploy call and at each operation call
_checked_before: dict[str, dict[str, Any]] = {}


def _is_plain(value: Any) -> bool:
    """Of these types exactly: a subclass may have a repr of its own."""
    if type(value) in (list, tuple):
        return all(type(item) in PLAIN for item in value)
    return type(value) in PLAIN


def _checked(host: str, values: dict[str, Any]) -> dict[str, Any]:
    """check_settings(host, values), each set of plain values checked once per process."""
    if not all(_is_plain(value) for value in values.values()):
        return check_settings(host, values)
    key = repr(sorted(values.items()))
    known = _checked_before.get(key)
    if known is None:
        known = check_settings(host, values)  # raises for a refused value: not kept
        if len(_checked_before) >= MAX_CHECKED:
            _checked_before.clear()
        _checked_before[key] = known
    # each host its own lists (the checked values hold no deeper ones)
    return {name: list(v) if isinstance(v, list) else v for name, v in known.items()}


def settings_from_data(
    host: str, data: Any, defaults: Mapping[str, Any] | None = None, configured: Any = None
) -> HostSettings:
    """The checked settings of `host` from its pyinfra data; `configured`: its data without
    `--data` overrides (for the cron job's names)."""
    defaults = defaults or {}
    keys = data.dict() if hasattr(data, "dict") else data
    _refuse_unknown(host, sorted(defaults), "")
    _refuse_unknown(host, sorted(k[len(PREFIX) :] for k in keys if k.startswith(PREFIX)), PREFIX)
    try:
        # pyinfra's data merged once: the same values as data.get(key) for each setting (its
        # first layer that has the key), without walking the layers for each of 40 settings
        values = _checked(host, _values(keys, defaults))
        names = values["names"]
        if configured is not None:
            names = check_settings(host, _values(configured, defaults), (SETTINGS[0],))["names"]
    except SettingError as error:
        raise SettingsError(str(error)) from None
    return HostSettings(host, values, names)


def targeted_hosts(state: Any) -> list[Any]:
    """The hosts this run targets (--limit), reachable or not, in inventory order."""
    return [host for host in state.inventory if state.is_host_in_limit(host)]


def settings_of_host(
    state: Any, host: Any, defaults: Mapping[str, Any] | None = None
) -> HostSettings:
    """The settings of `host`; raise SettingsError naming the host and setting.
    `--data certsync_names=...` selects names for this run only: the host's cron job keeps the
    names its host, group and all data give (and the deploy's code, `host.data.certsync_names =
    ...`, which pyinfra puts above `--data`)."""
    inventory = state.inventory
    configured = None
    if PREFIX + "names" in inventory.get_override_data():
        configured = ChainMap(
            assigned_data(host),
            inventory.get_host_data(host.name),
            inventory.get_groups_data(host.groups),
            inventory.get_data(),
        )
    return settings_from_data(host.name, host.data, defaults, configured)
