"""At boot, mox may still be starting when the cron job's @reboot run reads its state: the run
waits (bounded) for mox to answer before judging it down."""

from __future__ import annotations

import threading
import time

from certsync.host.boot import wait_for_mox
from tests.unit.certs import DAY, NOW
from tests.unit.fakemox import write_mox_files

NAME = "mail.example.com"


def test_the_boot_run_waits_for_mox_to_answer(ca, fake_mox, mox_ids, tmp_path):
    mox, config = fake_mox()
    issued = ca.issue([NAME], not_before=NOW - DAY)
    write_mox_files(tmp_path / "mox" / "certs", NAME, issued.cert_pem, issued.key_pem, mox_ids)
    starting = threading.Timer(1.5, mox.start)  # mox's own start, at boot, takes a while
    starting.start()
    began = time.monotonic()
    try:
        assert wait_for_mox(config, [NAME], seconds=30)
    finally:
        starting.cancel()
    assert 1.5 <= time.monotonic() - began < 30
    assert mox.served(NAME) == issued.sha256


def test_the_boot_wait_is_bounded(fake_mox):
    _, config = fake_mox()  # never started: answers nothing
    began = time.monotonic()
    assert not wait_for_mox(config, [NAME], seconds=1.5)
    assert 1.5 <= time.monotonic() - began < 10


def test_the_reboot_line_of_the_cron_job_passes_boot():
    from certsync.hostdata import settings_from_data
    from certsync.operations import cron_file
    from tests.unit.test_hostdata import DATA

    lines = [line for line in cron_file(settings_from_data("mail-1", DATA)).splitlines()]
    jobs = [line for line in lines if " root " in line and not line.startswith("#")]
    assert len(jobs) == 2 and jobs[1].startswith("@reboot root ")
    assert jobs[1].endswith(" --boot >/dev/null") and "--boot" not in jobs[0]


def test_each_hosts_cron_job_mails_its_own_alert_addresses():
    from certsync.hostdata import settings_from_data
    from certsync.operations import cron_file
    from tests.unit.test_hostdata import DATA

    def mailto(email: str) -> list[str]:
        data = {**DATA, "certsync_alert_email": email}
        lines = cron_file(settings_from_data("mail-1", data)).splitlines()
        return [line for line in lines if line.startswith("MAILTO=")]

    assert mailto("a@example.com,b@example.com") == ["MAILTO=a@example.com,b@example.com"]
    assert mailto("c@example.com") == ["MAILTO=c@example.com"]  # not the first one's, cached


def test_the_cron_folder_is_changed_in_a_later_second_than_the_job_written_into_it(tmp_path):
    # cron rereads /etc/cron.d when its mtime in whole seconds changed since its last look: a
    # job renamed in during the second of a look must still change the folder's mtime after it
    import base64
    import subprocess
    import sys

    from certsync.operations import WRITE_FILES

    folder = tmp_path / "cron.d"
    folder.mkdir()
    job = folder / "certsync"
    line = f"{job} 644 {base64.b64encode(b'* * * * * root true').decode()}\n"

    subprocess.run(
        [sys.executable, "-I", "-S", "-c", WRITE_FILES], input=line, text=True, check=True
    )

    assert job.read_bytes() == b"* * * * * root true"
    assert int(folder.stat().st_mtime) > int(job.stat().st_mtime)
