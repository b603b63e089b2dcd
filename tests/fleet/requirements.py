"""What the fleet needs from this machine, so fixtures can skip (or fail) with a clear reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

MOX_ENV = "CERTSYNC_MOX"
DEFAULT_MOX = Path("/usr/local/lib/certsync-test/bin/mox")  # where scripts/setup.sh installs it
TOOLS = (
    "pebble",
    "caddy",
    "/usr/sbin/sshd",
    "/usr/sbin/cron",
    "/usr/sbin/logrotate",
    "unshare",
    "nsenter",
    "mount",
    "setsid",
    "useradd",
    "sudo",
    "knotd",  # tests/fleet/dnsserver.py: knot, knot-dnsutils
    "knotc",
    "kdig",
    "knsupdate",
)


def mox_binary() -> Path:
    """$CERTSYNC_MOX, else the setup.sh location, else `mox` on PATH."""
    if MOX_ENV in os.environ:
        return Path(os.environ[MOX_ENV])
    if DEFAULT_MOX.exists():
        return DEFAULT_MOX
    found = shutil.which("mox")
    return Path(found) if found else DEFAULT_MOX


def missing_components() -> list[str]:
    """Reasons the fleet cannot run here; empty when it can."""
    missing = []
    if os.geteuid() != 0:
        missing.append("not root (the fleet needs mount namespaces, sshd on :22 and mox)")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            missing.append(f"{tool} not found (run scripts/setup.sh)")
    mox = mox_binary()
    try:
        subprocess.run([str(mox), "version"], check=True, capture_output=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        missing.append(f"mox not runnable at {mox} (set ${MOX_ENV} or run scripts/setup.sh)")
    return missing
