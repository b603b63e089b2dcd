"""The usage of the commands a user runs by hand: `certsync status --help` and
`scripts/dane-nsupdate` (-h, --help, an unknown option)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from certsync import cli

NSUPDATE = Path(__file__).resolve().parents[2] / "scripts" / "dane-nsupdate"
USAGE = "usage: dane-nsupdate -s SERVER -k KEYFILE [-z ZONE] [-t TTL] < records"


def test_certsync_status_help_names_every_check(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for check in ("Caddy's certificate", "mox's files", "mox.conf", "cron job", "DANE"):
        assert check in text


@pytest.mark.parametrize("option", ["-h", "--help"])
def test_dane_nsupdate_help_prints_the_usage(option: str) -> None:
    result = subprocess.run(
        ["sh", str(NSUPDATE), option], capture_output=True, text=True, timeout=10
    )
    assert (result.returncode, result.stdout.strip()) == (0, USAGE), result.stderr


@pytest.mark.parametrize("option", ["-x", "--bogus"])
def test_dane_nsupdate_unknown_option_prints_the_usage_and_exits_2(option: str) -> None:
    result = subprocess.run(
        ["sh", str(NSUPDATE), option], input="", capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2 and USAGE in result.stderr and result.stdout == ""
