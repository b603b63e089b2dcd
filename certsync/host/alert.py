"""Telling someone about a failed sync: a mail sent by SMTP (`alert_email`), and the report on
the standard input of `alert_command` (ntfy, healthchecks...). An alert that fails is logged; it
never fails the sync nor changes its exit status."""

from __future__ import annotations

import shlex
import socket
import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import printable, reason
from .output import Log, utc_stamp
from .settings import Config

if TYPE_CHECKING:
    from .transaction import Outcome

SMTP_TIMEOUT = 30
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
    broken certificate of mox itself cannot stop the alert about it). True when the server took
    it for every recipient."""
    import smtplib  # only here: it pulls in the email package
    from email.message import EmailMessage
    from email.policy import SMTP
    from email.utils import formatdate, make_msgid

    recipients = list(config.alert_email)
    server, _, port = config.alert_smtp.rpartition(":")
    server = server[1:-1] if server.startswith("[") else server
    fqdn = socket.getfqdn()
    # One header line up to RFC 5322's limit: Python folds a long subject right after
    # "Subject:", and readers then show it with a leading space.
    message = EmailMessage(policy=SMTP.clone(max_line_length=998))
    message["Subject"] = subject_text
    message["From"] = config.alert_from or f"certsync@{fqdn}"
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid("certsync", domain=fqdn)
    message.set_content(text)
    where = f"alert mail to {', '.join(recipients)} via {config.alert_smtp}"
    try:
        with smtplib.SMTP(server, int(port), local_hostname=fqdn, timeout=SMTP_TIMEOUT) as smtp:
            refused = smtp.send_message(message)
    except (OSError, ValueError) as error:  # smtplib's errors are OSErrors
        log.line(f"{where} failed: {printable(reason(error))}", failed=True)
        return False
    if refused:
        log.line(f"{where}: refused for {', '.join(sorted(refused))}", failed=True)
        return False
    log.line(f"{where}: sent")
    return True


def run_alert_command(config: Config, failures: list[Outcome], log: Log) -> None:
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
        return
    if result.returncode != 0:
        log.line(f"alert command failed (exit {result.returncode})", failed=True)


def _guarded(log: Log, what: str, action: Callable[[], object]) -> object:
    try:
        return action()
    except Exception as error:  # a bug: logged, and it never fails the sync
        log.line(f"{what} failed: unexpected error ({type(error).__name__}: {error})", failed=True)
        return None


def alert(config: Config, failures: list[Outcome], log: Log) -> bool:
    """Tell about the failures; True when they were mailed (to every recipient)."""
    mailed = False
    if config.alert_email:
        mail = (subject(config, failures), body(config, failures))
        mailed = _guarded(log, "alert mail", lambda: send_mail(config, *mail, log)) is True
    if config.alert_command:
        _guarded(log, "alert command", lambda: run_alert_command(config, failures, log))
    return mailed
