"""Certificate names: the host-name grammar, Caddy's storage name, wildcard matching."""

from __future__ import annotations

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from collections.abc import Sequence

LABEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
# The label put in front of a wildcard's domain to make a name it covers (for SNI).
WILDCARD_PROBE_LABEL = "certsync-check"


def is_host_name(name: str) -> bool:
    """An optional `*.`, then 1 to 253 characters: labels of 1 to 63 ASCII letters, digits and
    hyphens, neither first nor last, joined by dots (without `re`: its import is a fifth of an
    in-sync state read)."""
    rest = name[2:] if name.startswith("*.") else name
    if not 1 <= len(rest) <= 253:
        return False
    return all(
        1 <= len(label) <= 63
        and LABEL_CHARACTERS.issuperset(label)
        and not label.startswith("-")
        and not label.endswith("-")
        for label in rest.split(".")
    )


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
