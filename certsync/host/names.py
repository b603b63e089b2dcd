"""Certificate names: the host-name grammar, Caddy's storage name, wildcard matching."""

from __future__ import annotations

import re
from collections.abc import Sequence

HOST_NAME_RE = re.compile(
    r"(\*\.)?(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*",
    re.IGNORECASE | re.ASCII,
)
# The label put in front of a wildcard's domain to make a name it covers (for SNI).
WILDCARD_PROBE_LABEL = "certsync-check"


def is_host_name(name: str) -> bool:
    return HOST_NAME_RE.fullmatch(name) is not None


def storage_name(name: str) -> str:
    """The folder and file name Caddy (certmagic) stores a certificate name under."""
    name = name.lower()
    return "wildcard_." + name[2:] if name.startswith("*.") else name


def server_name(name: str) -> str:
    """A name to send as SNI for `name`: itself, or for `*.example.com` a name under it."""
    return name.replace("*.", WILDCARD_PROBE_LABEL + ".", 1)


def name_covered(name: str, sans: Sequence[str]) -> bool:
    """Whether a certificate with these DNS SANs is valid for `name` (RFC 6125 wildcards)."""
    name = name.lower()
    for san in (s.lower() for s in sans):
        if san == name:
            return True
        if san.startswith("*.") and not name.startswith("*."):
            label, _, rest = name.partition(".")
            if label and rest == san[2:]:
                return True
    return False
