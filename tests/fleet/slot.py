"""Which loopback block this test process uses, so that two test runs on one machine don't clash.

Slot s uses 127.0.s.1 for pebble and Caddy and 127.0.s.(10+i) for host i. A slot is held by an
flock on a file for the life of the process; the first free one is taken (slot 0 when alone:
127.0.0.11, 127.0.0.12, ...). Under pytest-xdist each process takes one, the parent of the
workers too (it imports the conftest), though it runs no test.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

PROBE_PORT = 14000  # pebble's, the first thing a test run starts


def _in_use(address: str) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((address, PROBE_PORT)) == 0


SLOTS_DIR = Path("/tmp/certsync-e2e-slots")
MAX_SLOTS = 32  # test processes at once on one machine


def _acquire() -> int:
    SLOTS_DIR.mkdir(mode=0o700, exist_ok=True)
    for slot in range(MAX_SLOTS):
        fd = os.open(SLOTS_DIR / str(slot), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _in_use(f"127.0.{slot}.1"):  # by a process that does not take slots
            os.close(fd)
            continue
        return slot  # the fd stays open (and the lock held) until the process exits
    raise RuntimeError(f"all {MAX_SLOTS} test slots in {SLOTS_DIR} are in use")


SLOT = _acquire()


def loopback(last: int) -> str:
    """The address 127.0.<slot>.<last> of this process's block."""
    return f"127.0.{SLOT}.{last}"
