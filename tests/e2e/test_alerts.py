"""Alert mail: the host program mails a failed sync itself, by SMTP, to a real SMTP server on
loopback; from the cron job's own command and from a deploy. A mail that cannot be sent is
logged, and only then does cron get the failure on stderr (no double mail)."""

from __future__ import annotations

import re
import shutil

from tests.e2e.deployrun import deploy
from tests.e2e.faultkit import CRON_FILE, cron_command, log_lines, one_host
from tests.e2e.mailsink import mail_sink
from tests.unit.certs import leaked_secrets

RECIPIENTS = ["postmaster@h1.test", "ops@example.net"]


def alerting_host(make_fleet, tmp_path, relay, **data):
    """one_host whose alerts go to RECIPIENTS through the SMTP relay `relay`."""
    settings = {
        "certsync_alert_email": ",".join(RECIPIENTS),
        "certsync_alert_smtp": relay,
        **data,
    }
    return one_host(make_fleet, tmp_path, **settings)


def assert_no_key_material(pki, name, text):
    assert leaked_secrets(text, pki.key_path(name).read_bytes()) == [], (
        f"key material of {name} in the alert"
    )


def test_a_failed_cron_run_mails_the_alert_once(make_fleet, pki, tmp_path):
    """Caddy's storage is gone: every run of the cron job refuses the name. The first run waits
    (a pair caught mid-renewal is synced by the next run), the second mails, later runs do not
    (cron runs every few minutes); cron's stderr stays empty: no double mail."""
    with mail_sink() as sink:
        fleet, host, name, inventory = alerting_host(make_fleet, tmp_path, sink.relay)
        assert deploy(inventory).returncode == 0
        cron = host.run(f"cat {CRON_FILE}", check=True).stdout
        assert f"MAILTO={','.join(RECIPIENTS)}" in cron
        caddy = host.source_of(host.caddy_data_dir) / "certificates"
        shutil.rmtree(caddy)

        seen = []  # per run: exit status, stderr (what cron would mail), mails received
        for _ in range(3):
            run = host.run(cron_command(host))
            seen.append((run.returncode, run.stderr, len(sink.received)))

        assert seen == [(1, "", 0), (1, "", 1), (1, "", 1)]
        (mail,) = sink.received
    assert sorted(mail.recipients) == sorted(RECIPIENTS)
    assert re.fullmatch(r"certsync@\S+", mail.sender)
    message = mail.message
    assert message["Subject"] == f"certsync {host.name}: {name} refused"
    assert message["From"] == mail.sender and message["To"] == ", ".join(RECIPIENTS)
    body = message.get_content()
    assert f"{name}: refused" in body
    assert re.search(r"why:  Caddy's storage \S+/certificates does not exist", body), body
    assert re.search(r"kept: mox's files, unchanged: sha256=\w{16} not_after=", body), body
    assert_no_key_material(pki, name, body)
    assert any(
        f"alert mail to {', '.join(RECIPIENTS)} via {sink.relay}: sent" in line
        for line in log_lines(host)
    )

    # Synced again, then refused again with the relay gone: logged, and left to cron's mail.
    host.copy_caddy_storage(pki)
    assert host.run(cron_command(host)).returncode == 0
    shutil.rmtree(caddy)
    assert host.run(cron_command(host)).stderr == ""
    again = host.run(cron_command(host))

    assert again.returncode == 1
    assert re.search(rf"certsync {host.name}: {re.escape(name)}: refused: ", again.stderr)
    assert any(f"via {sink.relay} failed: " in line for line in log_lines(host))


def test_a_failed_deploy_mails_what_was_kept(make_fleet, pki, tmp_path):
    """mox does not come back with the new certificate (the restart command does nothing): the
    install is rolled back, and the alert says so and what mox kept."""
    with mail_sink() as sink:
        fleet, host, name, inventory = alerting_host(
            make_fleet,
            tmp_path,
            sink.relay,
            certsync_restart_command="true",
            certsync_verify_timeout_seconds=3,
        )

        run = deploy(inventory)

        assert run.returncode != 0, run.output
        (mail,) = sink.wait_for_messages(1)
    message = mail.message
    assert message["Subject"] == f"certsync {host.name}: {name} rolled back"
    body = message.get_content()
    assert re.search(r"why:  mox does not serve the expected certificate after 3 s: ", body), body
    assert re.search(
        r"kept: mox's previous files, restored: a self-signed placeholder \(sha256=\w{16}", body
    ), body
    assert_no_key_material(pki, name, body + run.output)
