"""Whether a certificate may be installed, and whether mox's current one deserves to be kept."""

from __future__ import annotations

import datetime as dt

from .names import name_covered
from .output import ago
from .x509 import CertInfo


def validity_problem(
    info: CertInfo, name: str, now: dt.datetime, min_validity: dt.timedelta
) -> str | None:
    """Why Caddy's certificate may not be installed for `name` now, or None."""
    if not name_covered(name, info.sans):
        return f"certificate is not valid for {name} (names: {', '.join(info.sans) or 'none'})"
    if info.not_before > now:
        return f"certificate is not valid yet (not before {info.not_before:%Y-%m-%d %H:%M} UTC)"
    if info.not_after <= now:
        return f"certificate expired at {info.not_after:%Y-%m-%d %H:%M} UTC"
    if info.not_after - now < min_validity:
        hours = int(min_validity.total_seconds() // 3600)
        return (
            f"certificate expires at {info.not_after:%Y-%m-%d %H:%M} UTC,"
            f" within the minimum validity of {hours} h"
        )
    return None


def unprotected_because(info: CertInfo, name: str, now: dt.datetime) -> str | None:
    """Why mox's current certificate does not deserve protection from a downgrade (a
    placeholder, an expired or wrong-name one), or None when it is a current one for `name`."""
    if info.self_signed:
        return "a self-signed placeholder"
    if not name_covered(name, info.sans):
        return f"a certificate for other names ({', '.join(info.sans) or 'none'})"
    if info.not_after <= now:
        return f"a certificate that expired {ago(now - info.not_after)} ago"
    if info.not_before > now:
        return f"a certificate not valid before {info.not_before:%Y-%m-%d %H:%M} UTC"
    return None


def downgrade_problem(new: CertInfo, current: CertInfo) -> str | None:
    if new.not_before < current.not_before:
        return (
            f"Caddy's certificate (issued {new.not_before:%Y-%m-%d %H:%M} UTC) is older than"
            f" mox's (issued {current.not_before:%Y-%m-%d %H:%M} UTC); not downgrading"
        )
    return None


def describe(info: CertInfo) -> str:
    return f"sha256={info.fingerprint[:16]} not_after={info.not_after:%Y-%m-%d}"
