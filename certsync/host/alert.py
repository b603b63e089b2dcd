"""Telling someone about a failed sync."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
from typing import TYPE_CHECKING

from .output import Log
from .settings import Config

if TYPE_CHECKING:
    from .transaction import Outcome


def alert(config: Config, failures: list[Outcome], log: Log) -> None:
    """Hand the failures to the configured alert command, if any."""
    if not config.alert_command:
        return
    message = "\n".join(
        f"certsync {config.host}: {o.name}: {o.status}: {o.detail}" for o in failures
    )
    with contextlib.suppress(OSError, subprocess.TimeoutExpired, ValueError):
        subprocess.run(
            shlex.split(config.alert_command),
            input=message + "\n",
            text=True,
            capture_output=True,
            timeout=60,
        )
