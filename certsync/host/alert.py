"""Telling someone about a failed sync: a mail sent by SMTP (`alert_email`), the report on the
standard input of `alert_command` (ntfy, healthchecks...), and under cron, when neither told,
stderr for cron's own mail. Once per failure (and a reminder a day), not at every run of a cron
job that runs every few minutes. An alert that fails is logged; it never fails the sync nor
changes its exit status."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Callable

from . import jsontext, records, wire
from .errors import printable, reason
from .outcome import HELD, INTERRUPTED
from .output import Log, emit, utc_stamp
from .settings import Config

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

    from .outcome import Outcome

SMTP_TIMEOUT = 30  # the whole conversation
REMIND_SECONDS = 24 * 3600
ALERTS_FILE = "alerts.json"  # a record beside the lock file (records.py)
MAX_SUBJECT_CHARS = 200


def kept(config: Config, outcome: Outcome) -> str:
    """What mox was left with, by the outcome's status."""
    if outcome.status == "restore failed":
        return (
            f"nothing certain: mox's previous files are in the newest backup under"
            f" {config.backup_dir}; look at the host now"
        )
    if outcome.status == "rolled back":
        base = "mox's previous files, restored"
    elif outcome.status == HELD:
        base = "mox's current certificate, until the new key's TLSA record is published"
    elif outcome.ok:
        return "Caddy's new certificate, installed"
    elif outcome.status == "refused":
        base = "mox's files, unchanged"
    else:
        base = "mox's files, unchanged or restored"
    return f"{base}: {outcome.kept}" if outcome.kept else base


def subject(config: Config, failures: list[Outcome]) -> str:
    text = f"certsync {config.host}: " + "; ".join(f"{o.name} {o.status}" for o in failures)
    text = printable(text)
    return text if len(text) <= MAX_SUBJECT_CHARS else text[: MAX_SUBJECT_CHARS - 1] + "…"


def body(config: Config, failures: list[Outcome]) -> str:
    lines = [f"certsync on {config.host} could not sync at {utc_stamp()}:", ""]
    for outcome in failures:
        lines += [
            f"{outcome.name}: {outcome.status}",
            f"  why:  {outcome.detail}",
            f"  kept: {kept(config, outcome)}",
            "",
        ]
    lines += [
        f"The host's log: {config.log_file}. `certsync status` shows every check of the host;",
        'the README says what to do ("Troubleshooting").',
    ]
    return "\n".join(printable(line) for line in lines) + "\n"


def send_mail(config: Config, subject_text: str, text: str, log: Log) -> bool:
    """Mail `text` to alert_email through alert_smtp (plain SMTP: no login, no TLS, so that a
    broken certificate of mox itself cannot stop the alert about it), all within SMTP_TIMEOUT
    seconds. True when the server took it for every recipient."""
    from email.message import EmailMessage  # only here: the email package costs an import
    from email.policy import SMTP
    from email.utils import formatdate, make_msgid

    recipients = list(config.alert_email)
    server, _, port = config.alert_smtp.rpartition(":")
    server = server[1:-1] if server.startswith("[") else server
    fqdn = socket.getfqdn()
    sender = config.alert_from or f"certsync@{fqdn}"
    # One header line up to RFC 5322's limit: Python folds a long subject right after
    # "Subject:", and readers then show it with a leading space. 7-bit: the relay need not
    # announce 8BITMIME.
    message = EmailMessage(policy=SMTP.clone(max_line_length=998, cte_type="7bit"))
    message["Subject"] = subject_text
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid("certsync", domain=fqdn)
    message.set_content(text)
    where = f"alert mail to {', '.join(recipients)} via {config.alert_smtp}"
    try:
        refused = wire.send(
            (server, int(port)), fqdn, sender, recipients, message.as_bytes(), SMTP_TIMEOUT
        )
    except (OSError, ValueError) as error:
        log.line(f"{where} failed: {printable(reason(error))}", failed=True)
        return False
    if refused:
        log.line(f"{where}: refused for {', '.join(sorted(refused))}", failed=True)
        return False
    log.line(f"{where}: sent")
    return True


def run_alert_command(config: Config, failures: list[Outcome], log: Log) -> bool:
    report = "\n".join(
        f"certsync {config.host}: {o.name}: {o.status}: {o.detail}" for o in failures
    )
    try:
        result = subprocess.run(
            shlex.split(config.alert_command),
            input=report + "\n",
            text=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired, ValueError) as error:
        log.line(f"alert command failed: {reason(error)}", failed=True)
        return False
    if result.returncode != 0:
        log.line(f"alert command failed (exit {result.returncode})", failed=True)
        return False
    return True


def _guarded(log: Log, what: str, action: Callable[[], object]) -> object:
    try:
        return action()
    except Exception as error:  # a bug: logged, and it never fails the sync
        log.line(f"{what} failed: unexpected error ({type(error).__name__}: {error})", failed=True)
        return None


def due(record: dict[str, Any], outcomes: list[Outcome], now: int) -> list[Outcome]:
    """The failures to tell about now; `record` (name -> status, told) is updated. A failed
    install at once; a refusal once the next run refuses it again (a pair caught mid-renewal is
    synced by the next run); the same failure again a day after it was told. A name synced
    leaves the record; an interrupted run (a shutdown) changes nothing."""
    found = []
    for outcome in outcomes:
        if outcome.status == INTERRUPTED:
            continue  # (a shutdown: nothing to tell, and what was told still stands)
        if not (not outcome.ok if outcome.notify is None else outcome.notify):
            record.pop(outcome.name, None)
            continue
        before = record.get(outcome.name)
        before = before if isinstance(before, dict) else {}
        same = before.get("status") == outcome.status
        told = int(before.get("told") or 0) if same else 0
        record[outcome.name] = {"status": outcome.status, "told": told}
        if outcome.status == "refused" and not same:
            continue
        if told and now - told < REMIND_SECONDS:
            continue
        found.append(outcome)
    return found


def alert(
    config: Config, outcomes: list[Outcome], log: Log, cron: bool = False, remember: bool = True
) -> None:
    """Tell about this run's failures when they are due: by mail, through the alert command, and
    run by cron (`cron`) on stderr, which cron mails, when neither told. `remember`: record what
    was told (only under the lock)."""
    told_record = records.load(config, ALERTS_FILE)
    before = jsontext.dumps(told_record, sort_keys=True)
    failures = due(told_record, outcomes, int(time.time()))
    told = False
    if failures and config.alert_email:
        mail = (subject(config, failures), body(config, failures))
        told = _guarded(log, "alert mail", lambda: send_mail(config, *mail, log)) is True
    if failures and config.alert_command:
        ran = _guarded(log, "alert command", lambda: run_alert_command(config, failures, log))
        told = told or ran is True
    if failures and cron and not told:
        for outcome in failures:
            emit(
                f"certsync {config.host}: {outcome.name}: {outcome.status}: {outcome.detail}",
                failed=True,
            )
        told = True
    if told:
        for outcome in failures:
            told_record[outcome.name]["told"] = int(time.time())
    if not remember or jsontext.dumps(told_record, sort_keys=True) == before:
        return  # an in-sync run writes nothing
    try:
        records.save(config, ALERTS_FILE, told_record)
    except (OSError, ValueError) as error:
        log.line(f"warning: alerts not recorded: {reason(error)}")
