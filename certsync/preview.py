"""What the deploy shows for a host, from the host's own plan (`state`): each name that changes,
with mox's current certificate and Caddy's side by side; a key change flagged with the DANE
record to publish; names in sync in one line (one line each with `-v`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from certsync.certview import expiry, sans, short, tlsa_record
from certsync.host.actions import HOLD, IN_SYNC, INSTALL
from certsync.host.errors import printable

LABEL_WIDTH = 12
MAX_COLUMN = 48


def _cut(text: str) -> str:
    return text if len(text) <= MAX_COLUMN else text[: MAX_COLUMN - 1] + "…"


def _column(cert: dict[str, Any] | None, now: dt.datetime, missing: str) -> list[str]:
    if cert is None:
        return [_cut(missing), "-", "-", "-"]
    return [
        _cut(f"sha256={short(cert['sha256'])}"),
        _cut(expiry(cert, now)),
        _cut(sans(cert)),
        _cut(cert["issuer"] or "(none)"),
    ]


def side_by_side(name: str, plan: dict[str, Any], now: dt.datetime) -> list[str]:
    """mox's certificate next to Caddy's, row by row, and whether the private key changes."""
    mox = plan.get("mox") or {}
    old = mox.get("cert")
    new = plan["caddy"]["cert"]
    left = _column(old, now, mox.get("replaces") or "nothing")
    right = _column(new, now, "-")
    key = "new" if old is None else "CHANGES" if plan["key_changes"] else "same"
    rows = [("", "mox now", f"Caddy's ({plan['caddy']['issuer']})")]
    rows += list(zip(("certificate", "not after", "names", "issuer"), left, right, strict=True))
    rows.append(("private key", "", key))
    width = max(len(row[1]) for row in rows) + 2
    return [f"{name}:   {label:<{LABEL_WIDTH}} {a:<{width}}{b}".rstrip() for label, a, b in rows]


def key_change_lines(name: str, plan: dict[str, Any]) -> list[str]:
    """For an install of Caddy's certificate, the DANE record to publish when the key changes
    (mox's TLSA 3 1 1 pins the key)."""
    new = plan["caddy"]["cert"]
    if not plan.get("key_changes"):
        return []
    dane = plan.get("dane")
    if isinstance(dane, dict) and dane.get("published") is True:
        return [
            f"{name}: the private key changes: its TLSA record 3 1 1 {new['spki_sha256']} is"
            " published everywhere (checked in DNS); remove the old record once mox serves the"
            " new key"
        ]
    old = (plan.get("mox") or {}).get("cert")
    current = f" (3 1 1 {short(old['spki_sha256'])}…)" if old else ""
    return [
        f"{name}: the private key changes; if it has TLSA records (DANE), publish"
        f" {tlsa_record(name, new['spki_sha256'])}",
        f"{name}: next to the record of the current key{current} before this sync, and remove"
        " the old record once mox serves the new key",
    ]


def hold_lines(name: str, dane: Any) -> list[str]:
    """Since when a key change is held for DANE, and what it waits for."""
    dane = dane_fields(dane)
    since = f"held for DANE since {dane['since']}"
    if dane["until"]:
        return [f"{name}: {since}; installed from {dane['until']} on (two TTLs)"]
    lines = [f"{name}: {since}; mox keeps its current certificate until then"]
    lines += [f"{name}: publish {record}" for record in dane["publish"]]
    if dane["added"]:
        lines.append(f"{name}: the DANE publish command took the records at {dane['added']}")
    return lines


def dane_fields(dane: Any) -> dict[str, Any]:
    """A host's DANE decision as the preview and the status show it: a field of a wrong type
    reads as absent (what a host sends back is not trusted to have the right shape)."""
    dane = dane if isinstance(dane, dict) else {}
    publish = dane.get("publish")
    found: dict[str, Any] = {
        key: dane.get(key) if isinstance(dane.get(key), str) else None
        for key in ("since", "until", "added")
    }
    found["publish"] = (
        [r for r in publish if isinstance(r, str)] if isinstance(publish, list) else []
    )
    found["operator"] = dane.get("operator") is not False
    return found


def name_lines(name: str, plan: Any, now: dt.datetime) -> list[str]:
    """The preview of one name; every line printable; a state of the wrong shape is one line
    that says so, never a traceback for the fleet."""
    try:
        lines = _name_lines(name, plan, now)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        lines = [f"{name}: error: its state cannot be shown ({type(error).__name__}: {error})"]
    return [printable(line) for line in lines]


def _name_lines(name: str, plan: dict[str, Any], now: dt.datetime) -> list[str]:
    lines = [f"{name}: {plan['action']}: {plan['detail']}"]
    if plan["action"] == HOLD:
        lines += side_by_side(name, plan, now)
        lines += hold_lines(name, plan["dane"])
    if plan["action"] == INSTALL and plan["caddy"]["cert"]:
        lines += side_by_side(name, plan, now)
        lines += key_change_lines(name, plan)
    lines += [f"{name}: warning: {warning}" for warning in plan.get("warnings", [])]
    return lines


def host_lines(
    state: dict[str, Any], verbose: bool = False, now: dt.datetime | None = None
) -> list[str]:
    """The preview of one host. `verbose` (pyinfra's -v): a line per name in sync too, and the
    host's warnings also when no install runs mox's binary."""
    now = now or dt.datetime.now(dt.timezone.utc)
    names = state["names"]
    lines = []
    actions = {
        name: plan.get("action") if isinstance(plan, dict) else None for name, plan in names.items()
    }
    if verbose or INSTALL in actions.values():
        lines += [printable(f"warning: {warning}") for warning in state.get("warnings", [])]
    quiet = [name for name, action in actions.items() if action == IN_SYNC]
    if quiet and not verbose:
        lines.append(printable(f"in sync: {', '.join(quiet)}"))
    for name, plan in names.items():
        if name in quiet and not verbose:
            lines += [printable(f"{name}: warning: {w}") for w in plan.get("warnings", [])]
        else:
            lines += name_lines(name, plan, now)
    return lines
