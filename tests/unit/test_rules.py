"""The Prometheus alerting rules shipped with the package (certsync/files/certsync.rules.yml),
run by `promtool test rules` on series named and labelled as the host program's own metrics
renderer writes them (metrics.render, with a mox that serves a certificate)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certsync.host import metrics
from certsync.host.settings import Config
from tests.conftest import REQUIRE_E2E_ENV
from tests.unit.certs import DAY, NOW, key_of
from tests.unit.fakemox import write_mox_files

RULES = Path(__file__).resolve().parents[2] / "certsync" / "files" / "certsync.rules.yml"
NAME = "mail.example.com"
INSTANCE = "mx1.example.org:9100"  # what Prometheus adds when it scrapes node-exporter
DANE_HELD = "certsync_dane_held"  # the DANE hold's gauge (per name)
DAYS = 86400


@pytest.fixture
def series(ca, fake_mox, mox_ids, tmp_path) -> dict[str, dict[str, str]]:
    """metric -> its labels, as the host program's textfile has them once Prometheus scraped it."""
    mox, mox_config = fake_mox((NAME,))
    config = Config("mail-1", {**mox_config.to_json(), "names": [NAME]})
    served = ca.issue([NAME], key=key_of("ec256", 3), not_before=NOW - DAY)
    write_mox_files(tmp_path / "mox" / "certs", NAME, served.cert_pem, served.key_pem, mox_ids)
    mox.start()
    text = metrics.render(config, {NAME: {"ok": True, "time": 5, "last_success": 5}})
    found = {
        sample.name: {**sample.labels, "instance": INSTANCE}
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    found.setdefault(DANE_HELD, {"name": NAME, "instance": INSTANCE})
    assert set(found) == {
        "certsync_certificate_expiry_timestamp_seconds",
        "certsync_last_success_timestamp_seconds",
        "certsync_last_run_ok",
        DANE_HELD,
    }
    return found


def selector(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def promtool() -> str:
    """promtool's path; skips (or fails, with CERTSYNC_REQUIRE_E2E=1) without it."""
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool not found (Debian's prometheus package: run scripts/setup.sh)"
        if os.environ.get(REQUIRE_E2E_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_E2E_ENV}=1)", pytrace=False)
        pytest.skip(reason)
    return found


def promtool_test(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess[str]:
    test_file = tmp_path / "rules_test.yml"
    rules = tmp_path / "certsync.rules.yml"
    shutil.copy(RULES, rules)
    test_file.write_text(
        json.dumps({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests})
    )
    return subprocess.run(
        [promtool(), "test", "rules", str(test_file)], capture_output=True, text=True, timeout=60
    )


def rule_annotations() -> dict[str, dict[str, str]]:
    """alert -> its annotations, as the rules file writes them (one line each)."""
    found: dict[str, dict[str, str]] = {}
    alert = ""
    for line in RULES.read_text().splitlines():
        key, _, value = line.strip().removeprefix("- ").partition(": ")
        if key == "alert":
            alert = value
            found[alert] = {}
        elif key in ("summary", "description"):
            found[alert][key] = json.loads(value)
    return found


def expected_alert(alert: str, labels: dict[str, str]) -> dict:
    """What promtool must find firing: the labels, and the annotations filled in with them."""
    filled = {}
    for key, text in rule_annotations()[alert].items():
        for label, value in labels.items():
            text = text.replace("{{ $labels." + label + " }}", value)
        filled[key] = text
    return {"exp_labels": labels, "exp_annotations": filled}


def alerts(*expected: tuple[str, dict[str, str]], at: str, names: list[str]) -> list[dict]:
    """alert_rule_test entries: every alert of `names` at `at`, firing with `expected` labels."""
    return [
        {
            "eval_time": at,
            "alertname": name,
            "exp_alerts": [
                expected_alert(name, labels) for alert, labels in expected if alert == name
            ],
        }
        for name in names
    ]


ALL = [
    "CertsyncRunFailed",
    "CertsyncNoSuccess",
    "CertsyncCertificateExpiresSoon",
    "CertsyncDaneChangeHeld",
    "CertsyncRunOkAbsent",
    "CertsyncLastSuccessAbsent",
    "CertsyncCertificateExpiryAbsent",
    "CertsyncDaneHeldAbsent",
    "CertsyncNoMetrics",
]


def test_the_rules_file_is_valid():
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_the_series_the_host_program_writes_and_only_then(series, tmp_path):
    expiry, success, run_ok = (
        "certsync_certificate_expiry_timestamp_seconds",
        "certsync_last_success_timestamp_seconds",
        "certsync_last_run_ok",
    )
    # values every 5 minutes (the cron job), for 3 days; time() starts at 0
    samples = 3 * DAYS // 300

    def steady(value: float) -> str:
        return f"{value}+0x{samples}"

    def labels_of(metric: str, severity: str) -> dict[str, str]:
        return {**series[metric], "severity": severity}

    healthy = [
        {"series": selector(expiry, series[expiry]), "values": steady(80 * DAYS)},
        # a success at every run: its time is the run's time
        {"series": selector(success, series[success]), "values": f"0+300x{samples}"},
        {"series": selector(run_ok, series[run_ok]), "values": steady(1)},
        {"series": selector(DANE_HELD, series[DANE_HELD]), "values": steady(0)},
    ]
    # a name that fails at every run and never synced
    failing = [
        {"series": selector(expiry, series[expiry]), "values": steady(10 * DAYS)},
        {"series": selector(success, series[success]), "values": steady(0)},
        {"series": selector(run_ok, series[run_ok]), "values": steady(0)},
        {"series": selector(DANE_HELD, series[DANE_HELD]), "values": steady(0)},
    ]
    # a key change held for DANE since the first run, as the host program reports it: the run
    # is ok (nothing is broken), no success yet (mox keeps its certificate), held 1
    held = [
        {"series": selector(expiry, series[expiry]), "values": steady(80 * DAYS)},
        {"series": selector(success, series[success]), "values": steady(0)},
        {"series": selector(run_ok, series[run_ok]), "values": steady(1)},
        {"series": selector(DANE_HELD, series[DANE_HELD]), "values": steady(1)},
    ]
    # reported for a day, then the textfile stopped (the cron job, or the host, is gone)
    day = DAYS // 300
    stopped = [
        {"series": item["series"], "values": f"{item['values'].split('x')[0]}x{day}"}
        for item in healthy
    ]
    # a scrape gap of 10 minutes after a day (two samples missing), then reported again
    resumed = day * 300 + 3 * 300
    gap = [
        {
            "series": item["series"],
            "values": f"{item['values'].split('x')[0]}x{day} _x2 "
            + (
                f"{resumed}+300x{day}"
                if item["series"].startswith(success)
                else f"{item['values'].split('+')[0]}+0x{day}"
            ),
        }
        for item in healthy
    ]
    tests = [
        {
            "interval": "5m",
            "input_series": healthy,
            "alert_rule_test": alerts(at="2d12h", names=ALL),
        },
        {
            "interval": "5m",
            "input_series": failing,
            "alert_rule_test": alerts(
                ("CertsyncRunFailed", labels_of(run_ok, "warning")),
                ("CertsyncNoSuccess", labels_of(success, "warning")),
                ("CertsyncCertificateExpiresSoon", labels_of(expiry, "critical")),
                at="2d12h",
                names=ALL,
            ),
        },
        {
            "interval": "5m",
            "input_series": held,
            # the hold alerts once it lasted a day; no success for two days is no alert then
            "alert_rule_test": alerts(at="12h", names=ALL)
            + alerts(
                ("CertsyncDaneChangeHeld", labels_of(DANE_HELD, "warning")),
                at="2d12h",
                names=ALL,
            ),
        },
        {
            "interval": "5m",
            "input_series": stopped,
            "alert_rule_test": alerts(
                ("CertsyncRunOkAbsent", labels_of(run_ok, "warning")),
                ("CertsyncLastSuccessAbsent", labels_of(success, "warning")),
                ("CertsyncCertificateExpiryAbsent", labels_of(expiry, "critical")),
                ("CertsyncDaneHeldAbsent", labels_of(DANE_HELD, "warning")),
                ("CertsyncNoMetrics", {"severity": "warning"}),
                at="2d12h",
                names=ALL,
            ),
        },
        {
            "interval": "5m",
            "input_series": gap,
            # 10 minutes without samples: the series are absent, not for 15 minutes
            "alert_rule_test": alerts(at=f"{day * 300 + 600}s", names=ALL)
            + alerts(at="2d", names=ALL),
        },
        {
            "interval": "5m",
            "input_series": failing,
            # a failed run alerts after 10 minutes, not at the first one
            "alert_rule_test": alerts(at="5m", names=["CertsyncRunFailed"]),
        },
    ]
    result = promtool_test(tmp_path, tests)
    assert result.returncode == 0, result.stdout + result.stderr
