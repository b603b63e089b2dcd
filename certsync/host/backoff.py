"""Back-off: after a failed install or restart of one of Caddy's certificates (rolled back, or
failed), the cron job does not try that certificate again for an hour, then 4 hours, then a day
between tries: a check that fails at every run does not restart mox every few minutes for ever.
A new certificate from Caddy, a deploy (a run without --cron) or --force tries at once.

The record (backoff.json, beside the lock): name -> the certificate tried (sha256), how many
tries failed, when the last one did, and how it ended.
"""

from __future__ import annotations

import datetime as dt

from . import records
from .output import TIME_FORMAT
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

    from .outcome import Outcome

BACKOFF_FILE = "backoff.json"
DELAYS = (3600, 4 * 3600, 24 * 3600)  # after the 1st, 2nd, 3rd and later failed tries
FAILED = ("failed", "rolled back", "restore failed")


def next_try(entry: dict[str, Any]) -> int:
    return entry["tried"] + DELAYS[min(entry["failures"], len(DELAYS)) - 1]


def held(config: Config, name: str, sha256: str, now: dt.datetime) -> dict[str, Any] | None:
    """The record of `name` when the cron job holds Caddy's certificate `sha256` back now."""
    entry = records.load(config, BACKOFF_FILE).get(name)
    if entry is None or entry["sha256"] != sha256 or entry["failures"] < 1:
        return None
    return entry if now.timestamp() < next_try(entry) else None


def describe(entry: dict[str, Any]) -> str:
    """When the cron job tries again, and why it waits."""
    when = dt.datetime.fromtimestamp(next_try(entry), dt.timezone.utc).strftime(TIME_FORMAT)
    last = dt.datetime.fromtimestamp(entry["tried"], dt.timezone.utc).strftime(TIME_FORMAT)
    tries = "try" if entry["failures"] == 1 else "tries"
    return (
        f"Caddy's sha256={entry['sha256'][:16]} {entry['status']} at {entry['failures']} {tries}"
        f" (last at {last}); the cron job tries it again at {when} (back-off; a deploy, --force"
        f" or a new certificate from Caddy tries at once)"
    )


def note(
    config: Config, tried: dict[str, str], outcomes: dict[str, Outcome], now: dt.datetime
) -> None:
    """After a run (under the lock): `tried`, name -> Caddy's certificate this run installed or
    restarted mox for. A failure counts one more try of that certificate; a success, or a name
    now in sync, forgets it. Raises OSError or ValueError."""
    record = records.load(config, BACKOFF_FILE)
    changed = dict(record)
    for name, outcome in outcomes.items():
        if outcome.ok:
            changed.pop(name, None)
        elif name in tried and outcome.status in FAILED:
            before = record.get(name) or {}
            same = before.get("sha256") == tried[name]
            changed[name] = {
                "sha256": tried[name],
                "failures": (before["failures"] if same else 0) + 1,
                "tried": int(now.timestamp()),
                "status": outcome.status,
            }
    if changed != record:
        records.save(config, BACKOFF_FILE, changed)
