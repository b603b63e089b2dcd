"""What monitoring reads on a host: the node-exporter textfile, parsed with prometheus_client's
own parser, after a deploy and after a failed cron run; the textfile's folder owned by mox (a
link planted there is replaced, never followed); and the log rotated by the logrotate file the
deploy installs."""

from __future__ import annotations

import os
import shutil
import time

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.deployrun import LOG_FILE, PORTS, deploy
from tests.e2e.faultkit import cron_command, log_lines
from tests.unit.certs import leaked_secrets

METRICS_FILE = "/var/lib/prometheus/node-exporter/certsync.prom"
LOGROTATE_FILE = "/etc/logrotate.d/certsync"


def samples(host) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = host.source_of(METRICS_FILE).read_text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_a_deploy_and_after_a_failed_cron_run(make_fleet, pki, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    folder = host.source_of(os.path.dirname(METRICS_FILE))
    shutil.chown(folder, "mox", "mox")  # not root's: anything in it is the mox user's
    target = host.source_of("/home/mox/target")
    target.write_text("mox's own file\n")
    shutil.chown(target, "mox", "mox")
    os.symlink("/home/mox/target", folder / "certsync.prom")
    started = time.time()

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    assert not (folder / "certsync.prom").is_symlink()
    assert target.read_text() == "mox's own file\n"
    info = (folder / "certsync.prom").stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o644)
    expiry = pki.certificate(name).not_valid_after_utc.timestamp()
    after_deploy = samples(host)
    expiries = {
        labels: value
        for (metric, labels), value in after_deploy.items()
        if metric == "certsync_certificate_expiry_timestamp_seconds"
    }
    # the first port certsync checks for the name (993)
    assert expiries == {(("name", name), ("port", str(PORTS[0]))): expiry}
    success = after_deploy[("certsync_last_success_timestamp_seconds", (("name", name),))]
    assert started - 1 <= success <= time.time()
    assert after_deploy[("certsync_last_run_ok", (("name", name),))] == 1

    shutil.rmtree(host.source_of(host.caddy_data_dir) / "certificates")
    assert host.run(cron_command(host)).returncode == 1

    after_failure = samples(host)
    assert after_failure[("certsync_last_run_ok", (("name", name),))] == 0
    assert after_failure[("certsync_last_success_timestamp_seconds", (("name", name),))] == success
    text = host.source_of(METRICS_FILE).read_text()
    assert leaked_secrets(text, pki.key_path(name).read_bytes()) == []


def test_the_log_is_rotated_by_the_installed_logrotate_file(make_fleet, pki, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    assert deploy(inventory).returncode == 0
    assert log_lines(host)

    checked = host.run(f"logrotate -d {LOGROTATE_FILE}")
    rotated = host.run(f"logrotate -f -s /run/certsync-e2e/logrotate.state {LOGROTATE_FILE}")

    assert checked.returncode == 0 and "error" not in checked.stderr.lower(), checked.stderr
    assert rotated.returncode == 0, rotated.stderr
    assert host.run(f"test -s {LOG_FILE}.1").returncode == 0
    assert log_lines(host) == []
    assert host.run(cron_command(host)).returncode == 0
    assert any(f"{host.cert_names[0]}: in sync" in line for line in log_lines(host))
