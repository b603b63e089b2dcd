"""certsync's settings: read from a host's data, checked before anything connects or runs."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import shlex
from collections import ChainMap
from typing import Any

from pyinfra.api.exceptions import PyinfraError

from files.certsync import Config, is_host_name

PREFIX = "certsync_"
CRON_FIELD_RE = re.compile(r"^[0-9*/,-]+$")
CRON_NICKNAMES = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly")
EMAIL_RE = re.compile(r"^[A-Za-z0-9._%+-]+(@[A-Za-z0-9.-]+)?$")
ACCOUNT_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
INVENTORY_NAME_RE = re.compile(r"^[@A-Za-z0-9._-]{1,253}$")
SAFE_PATH_RE = re.compile(r"^/[A-Za-z0-9._/@+-]*$")


# The settings the host program reads; the others are the deploy's own.
HOST_CONFIG_FIELDS = frozenset(field.name for field in dataclasses.fields(Config))


class SettingsError(PyinfraError):
    """A setting that certsync refuses; the message names the host and the setting."""


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    names: tuple[str, ...]  # to sync in this run
    configured_names: tuple[str, ...]  # the host's own, for its cron job (not a --data one-off)
    caddy_data_dir: str
    mox_cert_dir: str
    mox_user: str
    mox_group: str
    mox_binary: str
    mox_config: str
    restart_command: str
    verify_address: str
    verify_ports: tuple[int, ...]
    verify_timeout_seconds: int
    min_validity_hours: int
    backups_keep: int
    backup_dir: str
    cron_schedule: str
    alert_email: str
    alert_command: str
    log_file: str
    force: bool
    install_dir: str
    config_file: str
    cron_file: str
    lock_file: str
    python: str
    require_trusted_chain: bool
    trusted_ca_file: str

    @property
    def program(self) -> str:
        return f"{self.install_dir}/certsync.py"

    def host_config(self) -> dict[str, Any]:
        """The settings the host program reads (files/certsync.py `Config`), as JSON values."""
        values = {field: _json_value(getattr(self, field)) for field in sorted(HOST_CONFIG_FIELDS)}
        values["names"] = list(self.configured_names)
        return values


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def settings_from_data(host: str, data: Any) -> Settings:
    """Build and check the Settings of `host` from its pyinfra data (host > group > all)."""
    if not INVENTORY_NAME_RE.fullmatch(host):
        raise SettingsError(f"{host!r}: the inventory name has other characters than @A-Za-z0-9._-")
    check = _Checker(host, data)
    names = check.names("names")
    return Settings(
        host=host,
        names=names,
        configured_names=names,
        caddy_data_dir=check.path("caddy_data_dir"),
        mox_cert_dir=check.path("mox_cert_dir"),
        mox_user=check.account("mox_user"),
        mox_group=check.account("mox_group"),
        mox_binary=check.path("mox_binary"),
        mox_config=check.path("mox_config"),
        restart_command=check.command("restart_command", required=True),
        verify_address=check.address("verify_address"),
        verify_ports=check.ports("verify_ports"),
        verify_timeout_seconds=check.integer("verify_timeout_seconds", 1, 3600),
        min_validity_hours=check.integer("min_validity_hours", 0, 24 * 365),
        backups_keep=check.integer("backups_keep", 1, 1000),
        backup_dir=check.path("backup_dir"),
        cron_schedule=check.cron("cron_schedule"),
        alert_email=check.email("alert_email"),
        alert_command=check.command("alert_command", required=False),
        log_file=check.path("log_file"),
        force=check.boolean("force"),
        install_dir=check.path("install_dir"),
        config_file=check.path("config_file"),
        cron_file=check.path("cron_file"),
        lock_file=check.path("lock_file"),
        python=check.path("python"),
        require_trusted_chain=check.boolean("require_trusted_chain"),
        trusted_ca_file=check.path("trusted_ca_file"),
    )


class _Checker:
    def __init__(self, host: str, data: Any) -> None:
        self.host = host
        self.data = data

    def _raw(self, key: str) -> Any:
        value = self.data.get(PREFIX + key)
        if value is None:
            raise self.error(key, "is not set (group_data/all.py has the defaults)")
        return value

    def error(self, key: str, message: str) -> SettingsError:
        return SettingsError(f"{self.host}: {PREFIX}{key}: {message}")

    def _text(self, key: str) -> str:
        value = self._raw(key)
        if not isinstance(value, str):
            raise self.error(key, f"{value!r} is not a string")
        if any(ord(c) < 32 for c in value):
            raise self.error(key, f"{value!r} has a control character")
        return value

    def _list(self, key: str) -> list[Any]:
        value = self._raw(key)
        if isinstance(value, str):  # from `--data certsync_names=a.example,b.example`
            return [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise self.error(key, f"{value!r} is not a list")
        return list(value)

    def names(self, key: str) -> tuple[str, ...]:
        names = self._list(key)
        if not names:
            raise self.error(key, "no certificate names for this host")
        for name in names:
            if not isinstance(name, str) or not is_host_name(name):
                raise self.error(key, f"{name!r} is not a host name")
        if len({name.lower() for name in names}) != len(names):
            raise self.error(key, "a name is listed twice")
        return tuple(name.lower() for name in names)

    def path(self, key: str) -> str:
        value = self._text(key)
        if not SAFE_PATH_RE.fullmatch(value):
            raise self.error(
                key, f"{value!r} is not an absolute path of letters, digits and ._/@+-"
            )
        if any(part in (".", "..") for part in value.split("/")) or "//" in value:
            raise self.error(key, f"{value!r} has a '.', '..' or empty component")
        if len(value) > 1 and value.endswith("/"):
            raise self.error(key, f"{value!r} ends with '/'")
        return value

    def account(self, key: str) -> str:
        value = self._text(key)
        if not ACCOUNT_RE.fullmatch(value):
            raise self.error(key, f"{value!r} is not a user or group name")
        return value

    def command(self, key: str, required: bool) -> str:
        value = self._text(key).strip()
        if not value:
            if required:
                raise self.error(key, "is empty")
            return ""
        try:
            argv = shlex.split(value)
        except ValueError as error:
            raise self.error(key, f"{value!r} does not split into words: {error}") from None
        if not argv:
            raise self.error(key, "is empty")
        return value

    def address(self, key: str) -> str:
        value = self._text(key)
        if value and not (is_host_name(value) and not value.startswith("*")) and not _is_ip(value):
            raise self.error(key, f"{value!r} is neither a host name nor an IP address")
        return value

    def ports(self, key: str) -> tuple[int, ...]:
        ports = []
        for value in self._list(key):
            try:
                port = int(value)
            except (TypeError, ValueError):
                raise self.error(key, f"{value!r} is not a port number") from None
            if isinstance(value, bool) or not 1 <= port <= 65535:
                raise self.error(key, f"{value!r} is not a port number (1-65535)")
            ports.append(port)
        if not ports:
            raise self.error(key, "no port to verify")
        return tuple(ports)

    def integer(self, key: str, low: int, high: int) -> int:
        value = self._raw(key)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise self.error(key, f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or not low <= number <= high:
            raise self.error(key, f"{value!r} is not between {low} and {high}")
        return number

    def boolean(self, key: str) -> bool:
        value = self._raw(key)
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "1", "on"):
            return True
        if text in ("false", "no", "0", "off", ""):
            return False
        raise self.error(key, f"{value!r} is not true or false")

    def cron(self, key: str) -> str:
        value = " ".join(self._text(key).split())
        fields = value.split(" ")
        if value in CRON_NICKNAMES or (
            len(fields) == 5 and all(CRON_FIELD_RE.fullmatch(f) for f in fields)
        ):
            return value
        raise self.error(key, f"{value!r} is not a cron schedule (five fields, or @daily etc.)")

    def email(self, key: str) -> str:
        value = self._text(key).strip()
        if value and not EMAIL_RE.fullmatch(value):
            raise self.error(key, f"{value!r} is not a mail address")
        return value


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def settings_of_hosts(inventory: Any) -> dict[str, Settings]:
    """The settings of every host the run targets; raise SettingsError naming the first bad
    host and setting. `--data certsync_names=...` selects names for this run only: the host's
    cron job keeps the names its host, group and all data give."""
    one_off_names = PREFIX + "names" in inventory.get_override_data()
    result = {}
    for host in inventory.iter_activated_hosts():
        settings = settings_from_data(host.name, host.data)
        if one_off_names:
            configured = ChainMap(
                inventory.get_host_data(host.name),
                inventory.get_groups_data(host.groups),
                inventory.get_data(),
            )
            if configured.get(PREFIX + "names"):
                names = _Checker(host.name, configured).names("names")
                settings = dataclasses.replace(settings, configured_names=names)
        result[host.name] = settings
    return result
