"""What the fleet needs from this machine, so fixtures can skip (or fail) with a clear reason."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

MOX_ENV = "CERTSYNC_MOX"
DEFAULT_MOX = Path("/usr/local/lib/certsync-test/bin/mox")  # where scripts/setup.sh installs it
CADDY_ENV = "CERTSYNC_CADDY"
DEFAULT_CADDY = Path("/usr/local/lib/certsync-test/bin/caddy")  # Caddy 2.11, built by setup.sh
DEBIAN_CADDY = Path("/usr/bin/caddy")  # Debian 12's package: Caddy 2.6
# The fleet's Caddy must make a new key at each renewal (>= 2.7) and know reuse_private_keys.
MIN_CADDY = (2, 8)
TOOLS = (
    "pebble",
    str(DEBIAN_CADDY),
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


def caddy_binary() -> Path:
    """$CERTSYNC_CADDY, else the setup.sh location (never Debian's caddy on PATH: that is 2.6)."""
    return Path(os.environ.get(CADDY_ENV, DEFAULT_CADDY))


def caddy_version(binary: Path) -> tuple[int, int, int]:
    """What `<binary> version` prints ("v2.11.9 h1:..." or Debian's "2.6.2"), as numbers."""
    out = subprocess.run(
        [str(binary), "version"], check=True, capture_output=True, text=True, timeout=20
    ).stdout
    found = re.match(r"v?(\d+)\.(\d+)\.(\d+)", out.strip())
    if found is None:
        raise ValueError(f"{binary} version printed {out.strip()[:80]!r}")
    major, minor, patch = (int(part) for part in found.groups())
    return major, minor, patch


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
    caddy = caddy_binary()
    try:
        version = caddy_version(caddy)
    except (OSError, subprocess.SubprocessError, ValueError):
        missing.append(f"caddy not runnable at {caddy} (set ${CADDY_ENV} or run scripts/setup.sh)")
    else:
        if version[:2] < MIN_CADDY:
            found, needed = (".".join(map(str, v)) for v in (version, MIN_CADDY))
            missing.append(
                f"caddy at {caddy} is {found}, the fleet needs {needed} or later"
                f" (set ${CADDY_ENV} or run scripts/setup.sh)"
            )
    return missing
