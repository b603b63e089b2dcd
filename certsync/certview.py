"""A certificate's public facts (as the host program's state gives them) in words for the
operator: short fingerprint, expiry and days left, names, issuer, and the DANE record of its key."""

from __future__ import annotations

import datetime as dt
from typing import Any

from certsync.host.output import ago, parse_utc

SHORT = 16  # hex digits of a fingerprint shown
MAX_SANS = 3


def expiry(cert: dict[str, Any], now: dt.datetime) -> str:
    """'2026-03-01 (89 days left)', or '2026-03-01 (expired 3 days ago)'."""
    not_after = parse_utc(cert["not_after"])
    when = not_after.strftime("%Y-%m-%d")
    if not_after <= now:
        return f"{when} (expired {ago(now - not_after)} ago)"
    left = int((not_after - now).total_seconds() // 86400)
    return f"{when} ({left} day{'s' if left != 1 else ''} left)"


def sans(cert: dict[str, Any]) -> str:
    names = list(cert["sans"])
    if not names:
        return "(none)"
    shown = ", ".join(names[:MAX_SANS])
    return shown if len(names) <= MAX_SANS else f"{shown} +{len(names) - MAX_SANS} more"


def short(fingerprint: str) -> str:
    return fingerprint[:SHORT]


def tlsa_record(name: str, spki_sha256: str) -> str:
    """The DANE-EE record that pins this key for SMTP to `name` (`3 1 1`: the SHA-256 of the
    public key), as a zone file line; for a wildcard, the value and where it goes."""
    if name.startswith("*."):
        return f"TLSA 3 1 1 {spki_sha256} (at _25._tcp.<host> for each MX host under {name})"
    return f"_25._tcp.{name}. IN TLSA 3 1 1 {spki_sha256}"
