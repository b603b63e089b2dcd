"""What monitoring reads after each sync: a Prometheus node-exporter textfile (`metrics_file`).

Per name: when the certificate mox serves on each checked port expires, when a run last synced
the name, and whether the last run did. The runs are remembered in a root-only file beside the
lock (the log is rotated away); the textfile is replaced by rename, never through a link: its
folder may belong to another user (node-exporter's, or mox's).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable

from . import records
from .errors import reason
from .files import FILE, FileState, open_dir, put_entries
from .outcome import HELD
from .output import parse_utc
from .plan import probe_all, verify_targets
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

    from .outcome import Outcome

    Runs = dict[str, dict[str, Any]]

RUNS_FILE = "runs.json"  # a record beside the lock file (records.py)
METRICS = (
    (
        "certsync_certificate_expiry_timestamp_seconds",
        "When the certificate mox serves for the name on the port expires (Unix time).",
    ),
    (
        "certsync_last_success_timestamp_seconds",
        "When a certsync run last ended with the name synced (Unix time; 0: never).",
    ),
    (
        "certsync_last_run_ok",
        "1 when certsync's last run synced the name or held it for DANE, else 0.",
    ),
    ("certsync_dane_held", "1 while a key change of the name waits for its DANE TLSA record."),
)


def record_runs(
    config: Config, outcomes: Iterable[Outcome], now: dt.datetime, save: bool = True
) -> Runs:
    """Remember this run's outcome of each name (`save`: in the record; only under the lock);
    every name's record."""
    stamp = int(now.timestamp())
    runs = records.load(config, RUNS_FILE)
    for outcome in outcomes:
        before = runs.get(outcome.name)
        last_success = before.get("last_success", 0) if isinstance(before, dict) else 0
        runs[outcome.name] = {
            "ok": outcome.fine,  # a hold for DANE is not a failure: nothing is broken yet
            "time": stamp,
            "last_success": stamp if outcome.ok else last_success,
            "held": outcome.status == HELD,
        }
    if save:
        records.save(config, RUNS_FILE, runs)
    return runs


def _label(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def render(config: Config, runs: Runs) -> str:
    """The textfile: every configured name, what mox serves for it now and its last run."""
    samples: dict[str, list[str]] = {metric: [] for metric, _ in METRICS}
    expiry, last_success, last_ok, held = (metric for metric, _ in METRICS)
    for name in sorted(config.names):
        # the first port checked (mox serves one pair per name on all of a listener's ports):
        # a probe of each port at every cron run would cost more than the rest of the run
        targets = verify_targets(config, name)[0][:1]
        for served in probe_all(targets, name):
            if served["error"] is None:
                labels = f"name={_label(name)},port={_label(served['port'])}"
                seconds = int(parse_utc(served["not_after"]).timestamp())
                samples[expiry].append(f"{expiry}{{{labels}}} {seconds}")
        run = runs.get(name)
        if isinstance(run, dict):
            labels = f"name={_label(name)}"
            samples[last_success].append(
                f"{last_success}{{{labels}}} {int(run.get('last_success') or 0)}"
            )
            samples[last_ok].append(f"{last_ok}{{{labels}}} {1 if run.get('ok') else 0}")
            samples[held].append(f"{held}{{{labels}}} {1 if run.get('held') else 0}")
    lines = []
    for metric, help_text in METRICS:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *samples[metric]]
    return "\n".join(lines) + "\n"


def write_metrics(config: Config, text: str) -> str | None:
    """Replace the textfile by rename (0644, root's); why not, or None. A missing folder means
    no node-exporter here: nothing is written and nothing said."""
    folder, name = os.path.split(config.metrics_file)
    try:
        dir_fd = open_dir(folder)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        return f"metrics not written: {reason(error)}"
    try:
        put_entries(dir_fd, {name: FileState(FILE, text.encode(), None, 0, 0, 0o644)})
    except OSError as error:
        return f"metrics not written to {config.metrics_file}: {reason(error)}"
    finally:
        os.close(dir_fd)
    return None


def update_metrics(
    config: Config, outcomes: Iterable[Outcome], now: dt.datetime, record: bool = True
) -> str | None:
    """Record this run (`record`: under the lock) and rewrite the textfile; why that failed, or
    None."""
    try:
        runs = record_runs(config, outcomes, now, record)
    except (OSError, ValueError) as error:
        return f"runs not recorded in {os.path.dirname(config.lock_file)}: {reason(error)}"
    if not config.metrics_file or not os.path.lexists(os.path.dirname(config.metrics_file)):
        return None  # no node-exporter here: nothing to probe for it (write_metrics says so too)
    return write_metrics(config, render(config, runs))
