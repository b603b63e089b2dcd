"""Test-only: stop (or fail) the host program at a named step of a sync, to test what every crash
leaves. Nothing happens unless CERTSYNC_TEST_STEPS is set; the product never sets it.

CERTSYNC_TEST_STEPS="ACTION@STEP[#N]" (ACTION: KILL or TERM, a signal the program sends itself;
FAIL, the step raises as a failed check would; N: the Nth time STEP is reached, 1 by default).
CERTSYNC_TEST_TRACE=FILE appends the name of every step reached to FILE.
"""

from __future__ import annotations

import os

_SPEC = os.environ.get("CERTSYNC_TEST_STEPS")
_TRACE = os.environ.get("CERTSYNC_TEST_TRACE")
_seen: dict[str, int] = {}


class InjectedFailure(Exception):
    """A failure CERTSYNC_TEST_STEPS asked for."""


def step(name: str) -> None:
    """The sync reaches step `name`."""
    if _SPEC is None and _TRACE is None:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _TRACE:
        # as root: never through a link, never readable by others
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(_TRACE, flags, 0o600)
        try:
            os.write(fd, f"{name}#{_seen[name]}\n".encode())
        finally:
            os.close(fd)
    if _SPEC is None:
        return
    for item in _SPEC.split(","):
        action, _, where = item.partition("@")
        at, _, count = where.partition("#")
        if at != name or _seen[name] != int(count or 1):
            continue
        if action == "FAIL":
            raise InjectedFailure(f"injected failure at {name}")
        import signal

        os.kill(os.getpid(), signal.SIGKILL if action == "KILL" else signal.SIGTERM)
