"""Every certsync setting, declared once: name, default, check and one line of documentation.

The controller reads them from pyinfra's data (`certsync_<name>`) and checks them all before
anything runs; the host settings go to the host's config.json, which the host program checks
again with the same checks; README's settings table is rendered from here.
"""

from __future__ import annotations

from . import jsontext
from .names import is_host_name
from .record import Record

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

PREFIX = "certsync_"
# The characters each kind of value may hold (checked without `re` and `shlex`: importing them
# is a fifth of an in-sync state read, which checks its settings too)
LETTERS = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
ALNUM = LETTERS + LETTERS.upper() + DIGITS
CRON_FIELD_CHARACTERS = frozenset(DIGITS + "*/,-")
CRON_NICKNAMES = ("@reboot", "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly")
EMAIL_LOCAL_CHARACTERS = frozenset(ALNUM + "._%+-")
EMAIL_DOMAIN_CHARACTERS = frozenset(ALNUM + ".-")
ACCOUNT_FIRST = frozenset(LETTERS + "_")
ACCOUNT_CHARACTERS = frozenset(LETTERS + DIGITS + "_-")
MAX_ACCOUNT_CHARS = 32
SAFE_PATH_CHARACTERS = frozenset(ALNUM + "._/@+-")
IDENTIFIER_FIRST = frozenset(LETTERS + LETTERS.upper() + "_")
IDENTIFIER_CHARACTERS = frozenset(ALNUM + "_")
CONTROL_CHARACTERS = frozenset(map(chr, [*range(32), 127]))


def _all_in(value: str, allowed: frozenset[str]) -> bool:
    return allowed.issuperset(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    if not CONTROL_CHARACTERS.isdisjoint(value):
        raise ValueError(f"{value!r} has a control character")
    return value


def _list(value: Any) -> list[Any]:
    if isinstance(value, str):  # from `--data certsync_names=a.example,b.example`
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, int) and not isinstance(value, bool):  # `--data certsync_verify_ports=993`
        return [value]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{value!r} is not a list")
    return list(value)


def names(value: Any) -> list[str]:
    result = []
    for name in _list(value):
        if not isinstance(name, str) or not is_host_name(name):
            raise ValueError(f"{name!r} is not a host name")
        result.append(name.lower())
    if len(set(result)) != len(result):
        raise ValueError("a name is listed twice")
    return result


def path(value: Any) -> str:
    value = _text(value)
    if not (value.startswith("/") and _all_in(value, SAFE_PATH_CHARACTERS)):
        raise ValueError(f"{value!r} is not an absolute path of letters, digits and ._/@+-")
    if any(part in (".", "..") for part in value.split("/")) or "//" in value:
        raise ValueError(f"{value!r} has a '.', '..' or empty component")
    if len(value) > 1 and value.endswith("/"):
        raise ValueError(f"{value!r} ends with '/'")
    return value


def optional_path(value: Any) -> str:
    return path(value) if _text(value) else ""


def account(value: Any) -> str:
    value = _text(value)
    if not (
        0 < len(value) <= MAX_ACCOUNT_CHARS
        and value[0] in ACCOUNT_FIRST
        and _all_in(value, ACCOUNT_CHARACTERS)
    ):
        raise ValueError(f"{value!r} is not a user or group name")
    return value


def _command(value: Any, required: bool) -> str:
    value = _text(value).strip()
    if not value:
        if required:
            raise ValueError("is empty")
        return ""
    error = _split_error(value)
    if error is not None:
        raise ValueError(f"{value!r} does not split into words: {error}")
    return value


def _split_error(value: str) -> str | None:
    """shlex.split(value)'s error, or None (it splits into at least one word: `value` is not
    empty nor blank): a quote left open, or a backslash escaping nothing."""
    quote = None
    characters = iter(value)
    for character in characters:
        if quote == "'":  # nothing is escaped between single quotes
            if character == "'":
                quote = None
        elif character == "\\":
            if next(characters, None) is None:
                return "No escaped character"
        elif quote == '"':
            if character == '"':
                quote = None
        elif character in "'\"":
            quote = character
    return "No closing quotation" if quote else None


def command(value: Any) -> str:
    return _command(value, required=True)


def optional_command(value: Any) -> str:
    return _command(value, required=False)


def is_ip(value: str) -> bool:
    import ipaddress  # only here: most settings name no address

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def address(value: Any) -> str:
    value = _text(value)
    if value and not (is_host_name(value) and not value.startswith("*")) and not is_ip(value):
        raise ValueError(f"{value!r} is neither a host name nor an IP address")
    return value


def port(value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a port number") from None
    if isinstance(value, bool) or not 1 <= number <= 65535:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return number


def ports(value: Any) -> list[int]:
    result = [port(item) for item in _list(value)]
    if not result:
        raise ValueError("no port to verify")
    return result


def host_port(value: Any) -> str:
    value = _text(value).strip()
    host, sep, number = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port")
    address(host)
    port(number)
    return value


def integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a whole number") from None
        if isinstance(value, bool) or not low <= number <= high:
            raise ValueError(f"{value!r} is not between {low} and {high}")
        return number

    return check


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "on"):
        return True
    if text in ("false", "no", "0", "off", ""):
        return False
    raise ValueError(f"{value!r} is not true or false")


def cron(value: Any) -> str:
    value = " ".join(_text(value).split())
    fields = value.split(" ")
    if value in CRON_NICKNAMES or (
        len(fields) == 5 and all(f and _all_in(f, CRON_FIELD_CHARACTERS) for f in fields)
    ):
        return value
    raise ValueError(f"{value!r} is not a cron schedule (five fields, or @daily etc.)")


def choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return text

    return check


def dane_ports(value: Any) -> list[int]:
    result = [port(item) for item in _list(value)]
    if not result:
        raise ValueError("no port (set certsync_dane to off instead)")
    if len(set(result)) != len(result):
        raise ValueError("a port is listed twice")
    return result


def emails(value: Any) -> list[str]:
    result = [str(item).strip() for item in _list(value)]
    for item in result:
        _text(item)
        local, at, domain = item.partition("@")
        if not (
            at
            and local
            and domain
            and _all_in(local, EMAIL_LOCAL_CHARACTERS)
            and _all_in(domain, EMAIL_DOMAIN_CHARACTERS)
        ):
            raise ValueError(f"{item!r} is not a mail address")
    return result


def group(value: Any) -> str:
    value = _text(value)
    if not (value and value[0] in IDENTIFIER_FIRST and _all_in(value, IDENTIFIER_CHARACTERS)):
        raise ValueError(f"{value!r} is not a pyinfra group name")
    return value


def email(value: Any) -> str:
    value = _text(value).strip()
    if value:
        emails([value])
    return value


class Setting(Record):
    name: str  # in pyinfra's data: certsync_<name>
    default: Any
    check: Callable[[Any], Any]  # the value as certsync uses it; ValueError says what is wrong
    doc: str
    on_host: bool = True  # written to the host's config.json for the host program

    @property
    def key(self) -> str:
        return PREFIX + self.name


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "names",
        [],
        names,
        "certificate names whose files mox serves; a host without names is left alone",
    ),
    Setting(
        "caddy_data_dir",
        "/var/lib/docker/volumes/docker_caddy-data/_data/caddy",
        path,
        "Caddy's data dir, holding `certificates/`"
        " (Debian's caddy: `/var/lib/caddy/.local/share/caddy`)",
    ),
    Setting(
        "mox_cert_dir",
        "/home/mox/certs",
        path,
        "where certsync writes `<name>.crt` and `<name>.key` for mox",
    ),
    Setting("mox_user", "mox", account, "owner of mox's certificate files and folder"),
    Setting("mox_group", "mox", account, "group of mox's certificate files and folder"),
    Setting(
        "mox_binary",
        "/home/mox/mox",
        path,
        "the mox binary; `mox config test` runs before every restart",
    ),
    Setting(
        "mox_config",
        "/home/mox/config/mox.conf",
        path,
        "mox's config: its listeners tell where to check what mox serves",
    ),
    Setting(
        "restart_command",
        "systemctl restart mox",
        command,
        "how to restart mox (it has no reload); run without a shell",
    ),
    Setting(
        "verify_address",
        "",
        address,
        "where to check what mox serves; empty: the addresses of mox's listeners"
        " (loopback for 0.0.0.0 and ::)",
    ),
    Setting(
        "verify_ports",
        [993, 465, 587],
        ports,
        "ports to check after a restart; 25 and 587 by SMTP STARTTLS, 143 by IMAP STARTTLS",
    ),
    Setting(
        "verify_timeout_seconds",
        60,
        integer(1, 3600),
        "how long mox may take to serve the new certificate before certsync rolls back",
    ),
    Setting(
        "min_validity_hours",
        24,
        integer(0, 24 * 365),
        "refuse a certificate that expires sooner than this",
    ),
    Setting(
        "backups_keep", 5, integer(1, 1000), "how many backups of mox's previous files to keep"
    ),
    Setting("backup_dir", "/var/lib/certsync/backups", path, "the backups (root only, 0700)"),
    Setting(
        "lock_file",
        "/var/lib/certsync/lock",
        path,
        "the lock that keeps a cron run and a deploy apart",
    ),
    Setting("log_file", "/var/log/certsync/certsync.log", path, "one line per name per run"),
    Setting(
        "require_trusted_chain",
        False,
        boolean,
        "refuse a chain that `certsync_trusted_ca_file` does not trust (`openssl verify` on the"
        " host)",
    ),
    Setting(
        "trusted_ca_file",
        "/etc/ssl/certs/ca-certificates.crt",
        path,
        "the CA bundle that chain must lead to",
    ),
    Setting(
        "alert_command",
        "",
        optional_command,
        "also run this command with the failure report on its standard input (empty: none)",
    ),
    Setting(
        "alert_email",
        "",
        emails,
        "mail a failed sync to these addresses, comma-separated (empty, the default: no mail)",
    ),
    Setting(
        "alert_smtp",
        "localhost:25",
        host_port,
        "the SMTP server (`host:port`) that takes the alert mail; the default works only when a"
        " listener of mox's has SMTP on loopback (`mox quickstart`'s has not): set mox's public"
        " address, or a relay on another machine",
    ),
    Setting(
        "alert_from",
        "",
        email,
        "the alert mail's sender (empty: `certsync@` and the host's FQDN)",
    ),
    Setting(
        "metrics_file",
        "/var/lib/prometheus/node-exporter/certsync.prom",
        optional_path,
        "Prometheus node-exporter textfile, written when its folder exists (empty: none)",
    ),
    Setting(
        "watch",
        False,
        boolean,
        "also sync seconds after Caddy writes (a watcher on Caddy's folders, which the cron job"
        " starts and restarts); off: the cron job alone",
    ),
    Setting(
        "dane",
        "auto",
        choice("auto", "off"),
        "`auto`: hold a key change for a name whose TLSA records (`_<port>._tcp.<name>`) do not"
        " have the new key's `3 1 1` record yet; `off`: no DNS lookups at all",
    ),
    Setting(
        "dane_ports",
        [25],
        dane_ports,
        "the ports whose TLSA records (`_<port>._tcp.<name>`) a key change waits for",
    ),
    Setting(
        "dane_publish_command",
        "",
        optional_command,
        "run without a shell with the TLSA records to add (and later to delete) on its standard"
        " input, one per line; exit 0: done (empty: the operator publishes them)",
    ),
    Setting(
        "dane_deadline_days",
        7,
        integer(0, 365),
        "install a held key change anyway, with an alert, once mox's certificate expires within"
        " this many days",
    ),
    Setting(
        "force",
        False,
        boolean,
        "install and restart even when mox's files already equal Caddy's",
        on_host=False,
    ),
    Setting(
        "canary_group",
        "canary",
        group,
        "hosts of this group are synced first; the others only if none of them failed",
        on_host=False,
    ),
    Setting(
        "cron_schedule",
        "*/5 * * * *",
        cron,
        "when the cron job syncs (five fields, or @hourly and the like)",
        on_host=False,
    ),
    Setting(
        "install_dir",
        "/usr/local/lib/certsync",
        path,
        "where the deploy puts the host program",
        on_host=False,
    ),
    Setting(
        "config_file",
        "/etc/certsync/config.json",
        path,
        "the host program's settings",
        on_host=False,
    ),
    Setting("cron_file", "/etc/cron.d/certsync", path, "the cron job", on_host=False),
    Setting(
        "logrotate_file",
        "/etc/logrotate.d/certsync",
        path,
        "rotates `log_file` (weekly, 12 kept)",
        on_host=False,
    ),
    Setting(
        "python", "/usr/bin/python3", path, "the python3 that runs the host program", on_host=False
    ),
    Setting(
        "state_timeout_seconds",
        120,
        integer(5, 3600),
        "how long the deploy and `certsync status` wait for a host's state; a host that takes"
        " longer fails alone",
        on_host=False,
    ),
    Setting(
        "sync_timeout_seconds",
        1800,
        integer(60, 86400),
        "how long the deploy waits for a host's sync (all its names); a host that takes longer"
        " fails alone",
        on_host=False,
    ),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}
HOST_SETTINGS = tuple(setting for setting in SETTINGS if setting.on_host)


class SettingError(ValueError):
    """A setting certsync refuses; the message names the host and the setting."""


def check_settings(
    host: str, values: Mapping[str, Any], only: tuple[Setting, ...] = SETTINGS
) -> dict[str, Any]:
    """Every setting of `only`, checked: `values` by name (missing ones take their default)."""
    checked: dict[str, Any] = {}
    for setting in only:
        value = values.get(setting.name)
        if value is None:
            value = setting.default
        try:
            checked[setting.name] = setting.check(value)
        except ValueError as error:
            raise SettingError(f"{host}: {setting.key}: {error}") from None
    _mox_folder_apart(host, checked)
    return checked


def _folder(value: str) -> str:
    return value.rsplit("/", 1)[0] or "/"


# certsync's own folders: the setting, and its folder from the setting's value ("": unset). The
# sync makes the backup, lock and log folders; the deploy writes the others' files, which decide
# what root runs.
CERTSYNC_FOLDERS = (
    ("backup_dir", lambda value: value),
    ("lock_file", _folder),
    ("log_file", _folder),
    ("install_dir", lambda value: value),
    ("config_file", _folder),
    ("cron_file", _folder),
    ("logrotate_file", _folder),
    ("metrics_file", lambda value: _folder(value) if value else ""),
)


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip("/") + "/")


def _mox_folder_apart(host: str, checked: Mapping[str, Any]) -> None:
    """Refuse mox's certificate folder at, in or above one of certsync's own folders: mox's
    folder becomes mox's, and mox could then replace what they hold."""
    mox = checked.get("mox_cert_dir")
    if mox is None:
        return
    for name, folder_of in CERTSYNC_FOLDERS:
        if name not in checked:
            continue
        folder = folder_of(checked[name])
        if not folder:
            continue
        if mox == folder:
            where = "is"
        elif _inside(folder, mox):
            where = "holds"
        elif _inside(mox, folder):
            where = "is inside"
        else:
            continue
        raise SettingError(
            f"{host}: {PREFIX}mox_cert_dir: {mox} {where} the folder of {PREFIX}{name} ({folder}):"
            f" mox's certificate folder becomes mox's; set it apart from certsync's own folders"
        )


class Config:
    """The host program's settings, as config.json holds them (`host` and every host setting)."""

    def __init__(self, host: str, values: Mapping[str, Any], checked: bool = False) -> None:
        """`checked`: `values` are check_settings' own result (the controller's, per host)."""
        self.host = host
        self.values = dict(values) if checked else check_settings(host, values, HOST_SETTINGS)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, **self.values}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Config:
        if not isinstance(raw, dict) or not isinstance(raw.get("host"), str):
            raise ValueError(f"{where}: not a certsync settings object")
        unknown = set(raw) - {"host"} - {setting.name for setting in HOST_SETTINGS}
        if unknown:
            raise ValueError(f"{where}: unknown settings {sorted(unknown)}")
        return cls(raw["host"], raw)

    @classmethod
    def load(cls, file: str) -> Config:
        with open(file, encoding="utf-8") as handle:
            return cls.from_json(jsontext.loads(handle.read()), file)
