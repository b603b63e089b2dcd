"""The host's state, checked at the controller's boundary: the state read's JSON is the host's
word, and a compromised host (or a python3 that is not one) may answer anything. Every string in
it is made printable here, once (a terminal escape would write the operator's clipboard or erase
lines of the preview), and the fields the preview and the status report read are checked for
their types, hex digests, times and names; what does not fit is that host's error, never a
traceback. Fields this module does not know are kept, made printable too."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import Any

from certsync.host.actions import HOLD
from certsync.host.errors import printable
from certsync.host.names import is_host_name
from certsync.host.output import parse_utc

MAX_STRING = 4000  # characters of one string (a refusal names a few paths and reasons)
MAX_DEPTH = 12
HEX64_RE = re.compile(r"[0-9a-f]{64}")
HEX_RE = re.compile(r"[0-9a-f]{1,128}")
MODE_RE = re.compile(r"[0-7]{4}")
# in sync, repair, install, restart, refuse, and what later versions add ("held for DANE")
ACTION_RE = re.compile(r"[a-z][a-z ]{0,40}", re.IGNORECASE)
FILE_KINDS = frozenset({"file", "missing", "link", "other", "dir"})
SCALARS = frozenset({int, float, bool, type(None)})  # what json.loads makes, but str, list, dict
TIME_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})Z")

Check = Callable[[Any, str], None]


class SchemaError(ValueError):
    pass


def _clean(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise SchemaError(f"nested more than {MAX_DEPTH} levels")
    if isinstance(value, str):
        text = printable(value)
        return text if len(text) <= MAX_STRING else text[: MAX_STRING - 1] + "…"
    if depth == MAX_DEPTH and isinstance(value, (dict, list)) and value:  # its items: deeper
        raise SchemaError(f"nested more than {MAX_DEPTH} levels")
    # a dict's or list's plain strings and scalars inline: most of a state is leaves, and a call
    # for each was most of the cost
    if isinstance(value, dict):
        return {
            (k if type(k) is str and len(k) <= MAX_STRING and k.isprintable() else _clean(k)): (
                v
                if type(v) in SCALARS
                or (type(v) is str and len(v) <= MAX_STRING and v.isprintable())
                else _clean(v, depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [
            v
            if type(v) in SCALARS or (type(v) is str and len(v) <= MAX_STRING and v.isprintable())
            else _clean(v, depth + 1)
            for v in value
        ]
    return value  # int, float, bool, None: what json.loads makes


def _fail(where: str, why: str) -> SchemaError:
    return SchemaError(f"{where}: {why}")


def _is(*types: type) -> Check:
    def check(value: Any, where: str) -> None:
        # bool is an int in Python, not in the state
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise _fail(where, f"not {names}")

    return check


STR, BOOL, INT = _is(str), _is(bool), _is(int)
OPT_STR, OPT_BOOL = _is(str, type(None)), _is(bool, type(None))


def _match(pattern: re.Pattern[str], what: str, optional: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        if optional and value is None:
            return
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise _fail(where, f"not {what}")

    return check


def _time(optional: bool = False) -> Check:
    def check(value: Any, where: str) -> None:
        if optional and value is None:
            return
        try:
            match = TIME_RE.fullmatch(value) if isinstance(value, str) else None
            if match:  # what the host writes: strptime's answer, a tenth of its cost
                year, month, day, hour, minute, second = map(int, match.groups())
                dt.datetime(year, month, day, hour, minute, second)
            else:
                parse_utc(value)
        except (TypeError, ValueError):
            raise _fail(where, "not a time (YYYY-MM-DDTHH:MM:SSZ)") from None

    return check


def _one_of(values: Iterable[str]) -> Check:
    allowed = frozenset(values)

    def check(value: Any, where: str) -> None:
        if value not in allowed:
            raise _fail(where, f"not one of {', '.join(sorted(allowed))}")

    return check


def _list(item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise _fail(where, "not a list")
        for index, entry in enumerate(value):
            item(entry, f"{where}[{index}]")

    return check


def _dict(fields: dict[str, Check], optional: Iterable[str] = (), nullable: bool = False) -> Check:
    """A dict with these fields (more are kept); `optional` ones may be absent."""
    may_lack = frozenset(optional)

    def check(value: Any, where: str) -> None:
        if nullable and value is None:
            return
        if not isinstance(value, dict):
            raise _fail(where, "not an object")
        for key, field in fields.items():
            if key in value:
                field(value[key], f"{where}.{key}")
            elif key not in may_lack:
                raise _fail(where, f"no {key}")

    return check


def _mapping(key: Check, item: Check) -> Check:
    def check(value: Any, where: str) -> None:
        if not isinstance(value, dict):
            raise _fail(where, "not an object")
        for name, entry in value.items():
            key(name, f"{where} key {name!r}")
            item(entry, f"{where}.{name}")

    return check


def _all(*checks: Check) -> Check:
    def check(value: Any, where: str) -> None:
        for each in checks:
            each(value, where)

    return check


def _given(test: Callable[[dict[str, Any]], bool], why: str) -> Check:
    """An invariant of an object whose fields are already checked (a renderer relies on it);
    None passes (a nullable object)."""

    def check(value: Any, where: str) -> None:
        if value is not None and not test(value):
            raise _fail(where, why)

    return check


def _port(value: Any, where: str) -> None:
    INT(value, where)
    if not 0 < value < 65536:
        raise _fail(where, "not a port")


def _host_name(value: Any, where: str) -> None:
    if not isinstance(value, str) or not is_host_name(value):
        raise _fail(where, "not a host name")


HEX64 = _match(HEX64_RE, "a sha256 in hex")
OPT_HEX64 = _match(HEX64_RE, "a sha256 in hex", optional=True)
CERT = _dict(
    {
        "sha256": HEX64,
        "spki_sha256": HEX64,
        "not_before": _time(),
        "not_after": _time(),
        "sans": _list(STR),
        "serial": _match(HEX_RE, "a serial number in hex"),
        "subject": STR,
        "issuer": STR,
        "self_signed": BOOL,
    },
    nullable=True,
)
FILE_META = _all(
    _dict(
        {
            "kind": _one_of(FILE_KINDS),
            "target": OPT_STR,
            "user": OPT_STR,
            "group": OPT_STR,
            "mode": _match(MODE_RE, "a mode in octal", optional=True),
            "sha256": OPT_HEX64,
            "error": STR,
            "writable_by": _list(STR),
        },
        optional=("target", "user", "group", "mode", "sha256", "error", "writable_by"),
    ),
    # what exists has an owner and a mode (plan.file_meta_json), unless it could not be read
    _given(
        lambda meta: (
            meta["kind"] == "missing"
            or "error" in meta
            or all(meta.get(key) is not None for key in ("user", "group", "mode"))
        ),
        "exists without its user, group and mode",
    ),
)
SERVED = _all(
    _dict(
        {
            "target": STR,
            "port": _port,
            "error": OPT_STR,
            "sha256": HEX64,
            "spki_sha256": HEX64,
            "not_after": _time(),
        },
        optional=("sha256", "spki_sha256", "not_after"),
    ),
    _given(
        lambda entry: (
            entry["error"] is not None
            or all(key in entry for key in ("sha256", "spki_sha256", "not_after"))
        ),
        "neither an error nor a certificate (sha256, spki_sha256, not_after)",
    ),
)
# dane.Dane.to_json: a key change's DANE decision
DANE = _dict(
    {
        "held": BOOL,
        "detail": STR,
        "operator": BOOL,
        "published": BOOL,
        "since": _time(optional=True),
        "until": _time(optional=True),
        "added": _time(optional=True),
        "publish": _list(STR),
    },
    optional=("since", "until", "added"),
    nullable=True,
)
PLAN_FIELDS = _dict(
    {
        "action": _match(ACTION_RE, "an action (words)"),
        "detail": STR,
        "caddy": _dict(
            {
                "issuer": OPT_STR,
                "cert": CERT,
                "candidates": _list(
                    _dict({"issuer": STR, "cert": CERT, "problem": OPT_STR}, optional=("problem",))
                ),
            },
            optional=("candidates",),
        ),
        "mox": _dict(
            {
                "crt": FILE_META,
                "key": FILE_META,
                "cert": CERT,
                "unprotected": OPT_STR,
                "replaces": STR,
                "generation": OPT_STR,
            },
            optional=("unprotected", "generation"),
            nullable=True,
        ),
        "key_changes": BOOL,
        "targets": _list(STR),
        "served": _dict({"target": STR, "sha256": OPT_HEX64, "error": OPT_STR}, nullable=True),
        "warnings": _list(STR),
        "mox_conf": _dict({"names_files": OPT_BOOL, "detail": STR}, nullable=True),
        "files_equal": OPT_BOOL,
        "served_all": _list(SERVED),
        "dane": DANE,
        "dane_served": _dict({"ok": BOOL, "detail": STR}),
    },
    optional=(
        "targets",
        "served",
        "warnings",
        "mox_conf",
        "files_equal",
        "served_all",
        "dane",
        "dane_served",
    ),
)
PLAN = _all(
    PLAN_FIELDS,
    _given(
        lambda plan: not plan.get("files_equal") or plan["caddy"]["cert"] is not None,
        "files_equal without Caddy's certificate",
    ),
    _given(
        lambda plan: plan["action"] != HOLD or plan.get("dane") is not None,
        f"{HOLD} without its dane decision",
    ),
)
LAST_RUN = _dict({"time": STR, "status": STR, "detail": STR, "ok": BOOL})
STATE = _dict(
    {
        "certsync_state": _one_of([1]),  # type: ignore[list-item]
        "host": STR,
        "python": STR,
        "openssl": BOOL,
        "files": _mapping(STR, FILE_META),
        "warnings": _list(STR),
        "mox_dir": _dict({"kind": STR, "right": BOOL}, nullable=True),
        "names": _mapping(_host_name, PLAN),
        "last_runs": _mapping(STR, LAST_RUN),
        "watcher": BOOL,
    },
    optional=("host", "python", "mox_dir", "watcher"),
)


def checked_state(state: Any) -> dict[str, Any]:
    """`state` (json.loads of the host's answer) with every string printable, once its fields
    fit the state's schema; raises SchemaError saying where it does not."""
    state = _clean(state)
    if not isinstance(state, dict) or state.get("certsync_state") != 1:
        raise SchemaError("not certsync's state (unknown format)")
    error = state.get("error")
    OPT_STR(error, "error")
    if error is not None:  # a host that says why it cannot be read: nothing else is used
        return {"certsync_state": 1, "error": error, "names": {}}
    STATE(state, "state")
    return state
