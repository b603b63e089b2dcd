"""What the host program tells monitoring and people after a sync: the node-exporter textfile
(parsed with prometheus_client), the runs it remembers, and the alert mail (to a real SMTP
server, aiosmtpd, on 127.0.0.1), with the cron job's stderr only for what was not mailed."""

from __future__ import annotations

import json
import os
import socket

from prometheus_client.parser import text_string_to_metric_families

from certsync.host import alert, cli, metrics
from certsync.host.outcome import Outcome
from certsync.host.output import Log
from certsync.host.settings import Config
from tests.smtpsink import free_port, smtp_sink
from tests.unit.certs import DAY, NOW, key_of
from tests.unit.fakemox import write_mox_files
from tests.unit.hostrun import write_config

NAME = "mail.example.com"
SMTP_HOST = "127.0.0.1"  # where the tests' SMTP servers listen


def parsed(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_runs_keep_the_last_success_across_failures(make_config, tmp_path):
    config = make_config()
    (tmp_path / "run").mkdir()
    first = metrics.record_runs(config, [Outcome(NAME, "installed")], NOW)
    later = metrics.record_runs(config, [Outcome(NAME, "refused", "no pair")], NOW + DAY)
    assert first[NAME] == {
        "ok": True,
        "time": int(NOW.timestamp()),
        "last_success": int(NOW.timestamp()),
        "held": False,
    }
    assert later[NAME] == {
        "ok": False,
        "time": int((NOW + DAY).timestamp()),
        "last_success": int(NOW.timestamp()),
        "held": False,
    }
    runs = tmp_path / "run" / metrics.RUNS_FILE
    assert json.loads(runs.read_text()) == later and runs.stat().st_mode & 0o777 == 0o600


def test_the_textfile_has_expiry_per_served_port_and_the_last_run_per_name(
    ca, fake_mox, mox_ids, tmp_path
):
    # other.example.com: no listener names its files, no run yet: nothing to say about it
    mox, mox_config = fake_mox((NAME,))
    config = Config("mail-1", {**mox_config.to_json(), "names": [NAME, "other.example.com"]})
    served = ca.issue([NAME], key=key_of("ec256", 3), not_before=NOW - DAY)
    write_mox_files(tmp_path / "mox" / "certs", NAME, served.cert_pem, served.key_pem, mox_ids)
    mox.start()
    runs = {NAME: {"ok": False, "time": 5, "last_success": 3}}

    samples = parsed(metrics.render(config, runs))

    expiry = served.cert.not_valid_after_utc.timestamp()
    assert samples == {
        (
            "certsync_certificate_expiry_timestamp_seconds",
            (("name", NAME), ("port", str(mox.port))),
        ): expiry,
        ("certsync_last_success_timestamp_seconds", (("name", NAME),)): 3,
        ("certsync_last_run_ok", (("name", NAME),)): 0,
        ("certsync_dane_held", (("name", NAME),)): 0,
    }


def test_the_textfile_replaces_a_link_and_is_skipped_without_its_folder(make_config, tmp_path):
    config = make_config()
    assert metrics.write_metrics(config, "x 1\n") is None  # no folder: no node-exporter here
    assert not (tmp_path / "metrics").exists()
    (tmp_path / "metrics").mkdir()
    (tmp_path / "target").write_text("someone's file\n")
    os.symlink(tmp_path / "target", tmp_path / "metrics" / "certsync.prom")

    assert metrics.write_metrics(config, "x 1\n") is None

    written = tmp_path / "metrics" / "certsync.prom"
    assert not written.is_symlink() and written.read_text() == "x 1\n"
    assert (tmp_path / "target").read_text() == "someone's file\n"
    assert sorted(p.name for p in (tmp_path / "metrics").iterdir()) == ["certsync.prom"]
    os.rename(tmp_path / "metrics", tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "metrics")
    assert "is a symlink; refusing" in (metrics.write_metrics(config, "x 2\n") or "")


def test_the_alert_mail_says_host_name_outcome_why_and_what_was_kept(make_config, tmp_path):
    with smtp_sink(SMTP_HOST) as sink:
        config = make_config(alert_email="a@example.com, b@example.com", alert_smtp=sink.relay)
        failures = [
            Outcome(NAME, "refused", "certificate expired at 2026-01-01", "sha256=ab not_after=x"),
            Outcome("other.example.com", "restore failed", "install failed (disk full)\n\x1b[31m"),
        ]
        log = Log("mail-1", str(tmp_path / "log"))
        mail = (alert.subject(config, failures), alert.body(config, failures))
        assert alert.send_mail(config, *mail, log) is True
    (received,) = sink.received
    assert received.recipients == ["a@example.com", "b@example.com"]
    assert received.sender == f"certsync@{socket.getfqdn()}"
    message = received.message
    assert (
        message["Subject"] == f"certsync mail-1: {NAME} refused; other.example.com restore failed"
    )
    text = message.get_content()
    assert "why:  certificate expired at 2026-01-01" in text
    assert "kept: mox's files, unchanged: sha256=ab not_after=x" in text
    assert "kept: nothing certain: mox's previous files are in the newest backup under" in text
    assert "\x1b" not in text and "install failed (disk full)\\n\\x1b[31m" in text


def test_a_failure_is_told_once_a_refusal_when_it_persists_and_again_a_day_later():
    record: dict = {}

    def told(outcomes: list[Outcome], now: int) -> list[str]:
        """What alert() tells at `now` (and records as told)."""
        found = alert.due(record, outcomes, now)
        for outcome in found:
            record[outcome.name]["told"] = now
        return [outcome.name for outcome in found]

    rolled_back = Outcome(NAME, "rolled back", "mox config test failed")
    refused = Outcome("other.example.com", "refused", "Caddy's pair is mid-renewal")
    minutes, hours = 60, 3600
    assert told([rolled_back, refused], 1) == [NAME]  # a refusal waits for the next run
    assert told([rolled_back, refused], 5 * minutes) == ["other.example.com"]
    assert told([rolled_back, refused], 2 * hours) == []
    assert told([rolled_back, refused], 24 * hours + 5 * minutes) == [NAME, "other.example.com"]
    assert told([Outcome(NAME, "installed"), refused], 25 * hours) == []
    assert set(record) == {"other.example.com"}  # synced: its next failure is new again
    assert told([rolled_back], 25 * hours) == [NAME]
    assert told([Outcome("other.example.com", "rolled back", "")], 25 * hours) == [
        "other.example.com"  # another failure than the one told
    ]


def test_an_alert_that_cannot_be_sent_is_logged_and_goes_to_crons_mail(
    make_config, tmp_path, capsys
):
    unused = f"{SMTP_HOST}:{free_port(SMTP_HOST)}"  # no SMTP server listens there
    config = make_config(alert_email="a@example.com", alert_smtp=unused)
    (tmp_path / "run").mkdir()
    log = Log("mail-1", str(tmp_path / "certsync.log"))
    rolled_back = Outcome(NAME, "rolled back", "mox config test failed")

    alert.alert(config, [rolled_back], log, cron=True)

    logged = (tmp_path / "certsync.log").read_text()
    assert "alert mail to a@example.com via 127.0.0.1:" in logged and " failed: " in logged
    assert (
        f"certsync mail-1: {NAME}: rolled back: mox config test failed" in capsys.readouterr().err
    )
    alert.alert(config, [rolled_back], log, cron=True)  # told (to cron): not again today
    assert capsys.readouterr().err == ""


def test_the_cron_job_mails_a_lasting_refusal_once_and_nothing_to_stderr(
    make_config, mox_ids, tmp_path, capsys
):
    """No Caddy storage: the name is refused (exit 1) at every run. The first run waits (a pair
    caught mid-renewal is synced by the next one), the second mails it, the third is quiet;
    cron's stderr stays empty: no double mail."""
    with smtp_sink(SMTP_HOST) as sink:
        config = make_config(alert_email="a@example.com", alert_smtp=sink.relay)
        path = write_config(config, tmp_path / "config.json")
        mailed = []
        for _ in range(3):
            assert cli.main(["sync", "--config", str(path), "--cron"]) == 1
            run = capsys.readouterr()
            assert f"{NAME}: refused: " in run.out and run.err == ""
            mailed.append(len(sink.received))
    assert mailed == [0, 1, 1]
