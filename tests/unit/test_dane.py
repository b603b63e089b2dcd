"""The DANE decision of a key change (dane.py) through the sync and the state read, with the
TLSA lookup faked (the DNS client itself has its own tests; the fleet's tests use a real
authoritative server): held until published everywhere and two TTLs later, a DNS failure holds,
no TLSA records installs, the deadline installs with an alert, a kept key or an in-sync run
looks nothing up; the publish command adds once and deletes the old record after the install."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from certsync import preview
from certsync.host import alert, dane
from certsync.host.cli import run_sync
from certsync.host.output import Log
from certsync.host.plan import INSTALLED
from certsync.host.tlsa import TlsaLookup
from tests.unit.certs import (
    DAY,
    LETSENCRYPT,
    NOW,
    caddy_key_pem,
    key_of,
    remember_installed,
    write_caddy,
)
from tests.unit.conftest import MakeFakeMox
from tests.unit.fakemox import write_mox_files
from tests.unit.realstate import real_state

NAME = "mail.example.com"
OWNER = f"_25._tcp.{NAME}."
SERVERS = ("127.0.0.53", "127.0.0.54")
TTL = 5


class FakeDns:
    """The TLSA RRsets as the authoritative servers and the resolver answer them."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}  # owner -> records, the same everywhere
        self.lagging: set[str] = set()  # servers that still answer without the last record
        self.error: str | None = None
        self.asked: list[str] = []
        self.ttl = TTL

    def lookup(self, owner: str, deadline: float) -> TlsaLookup:
        self.asked.append(owner)
        found = self.records.get(owner, [])
        servers = {s: found[:-1] if s in self.lagging else list(found) for s in SERVERS}
        return TlsaLookup(
            owner=owner,
            exists=bool(found),
            resolver_records=list(found),
            servers=servers,
            ttl=self.ttl,
            error=self.error,
        )


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns()
    monkeypatch.setattr(dane, "lookup", fake.lookup)
    return fake


def r311(spki: str) -> str:
    return f"3 1 1 {spki}"


class Host:
    """mox serving an old certificate (issued 40 days ago, key A), Caddy holding a renewal."""

    def __init__(self, ca, fake_mox: MakeFakeMox, mox_ids, tmp_path: Path, **settings: Any):
        self.mox, self.config = fake_mox(**{"dane": "auto", **settings})
        self.tmp_path = tmp_path
        self.mox_ids = mox_ids
        self.old = ca.issue([NAME], key=key_of("ec256", 50), not_before=NOW - 40 * DAY)
        write_mox_files(
            tmp_path / "mox" / "certs", NAME, self.old.cert_pem, self.old.key_pem, mox_ids
        )
        remember_installed(self.config, NAME, self.old.cert_pem)
        Path(self.config.metrics_file).parent.mkdir()  # node-exporter's folder: metrics on
        self.mox.start()
        self.ca = ca

    def caddy_renews(self, new_key: bool = True, **kwargs: Any):
        key = key_of("ec256", 51) if new_key else self.old.key
        issued = self.ca.issue([NAME], key=key, not_before=NOW - DAY, **kwargs)
        write_caddy(self.tmp_path / "caddy", LETSENCRYPT, NAME, issued.cert_pem, issued.key_pem)
        return issued

    def plan(self) -> dict[str, Any]:
        return real_state(self.config, all_ports=False)["names"][NAME]

    def sync(self):
        (outcome,) = run_sync(
            self.config, [NAME], False, Log(self.config.host, self.config.log_file)
        )
        return outcome

    def metrics(self) -> str:
        return Path(self.config.metrics_file).read_text()

    def memory(self) -> dict[str, Any]:
        path = Path(self.config.lock_file).parent / dane.DANE_FILE
        return json.loads(path.read_text()) if path.exists() else {}

    def write_memory(self, record: dict[str, Any]) -> None:
        (Path(self.config.lock_file).parent / dane.DANE_FILE).write_text(json.dumps(record))


@pytest.fixture
def host(ca, fake_mox, mox_ids, tmp_path):
    return lambda **settings: Host(ca, fake_mox, mox_ids, tmp_path, **settings)


def test_a_key_change_is_held_until_published_everywhere_then_two_ttls(host, dns):
    h = host()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    new = h.caddy_renews()

    planned = h.plan()
    outcome = h.sync()

    assert planned["action"] == "held for DANE"
    assert (outcome.status, outcome.detail) == ("held for DANE", planned["detail"])
    assert f"publish {OWNER} IN TLSA {r311(new.spki_sha256)}" in outcome.detail
    assert outcome.exit_status == 0 and outcome.notify is True
    assert planned["dane"]["operator"] and planned["dane"]["publish"] == [
        f"{OWNER} IN TLSA {r311(new.spki_sha256)}"
    ]
    assert h.mox.restarts == 0 and h.mox.served(NAME) == h.old.sha256
    since = h.memory()["held"][NAME]["since"]
    assert f'certsync_dane_held{{name="{NAME}"}} 1' in h.metrics()
    assert f'certsync_last_run_ok{{name="{NAME}"}} 1' in h.metrics()  # nothing is broken yet

    # published at one authoritative server only: still held, and it says where it is missing
    dns.records[OWNER].append(r311(new.spki_sha256))
    dns.lagging = {SERVERS[1]}
    outcome = h.sync()
    assert outcome.status == "held for DANE" and f"{SERVERS[1]} (authoritative)" in outcome.detail
    assert SERVERS[0] not in outcome.detail

    # everywhere: the first run that sees it starts the wait of two TTLs (not the operator's)
    dns.lagging = set()
    outcome = h.sync()
    assert outcome.status == "held for DANE" and "waiting two TTLs" in outcome.detail
    assert outcome.notify is False and h.mox.restarts == 0
    remembered = h.memory()["held"][NAME]
    assert remembered["since"] == since and remembered["ttl"] == TTL
    assert h.plan()["action"] == "held for DANE"

    # two TTLs after the first run that saw it everywhere
    h.write_memory(
        {"held": {NAME: {**remembered, "seen": remembered["seen"] - 2 * TTL}}, "delete": []}
    )
    assert h.plan()["action"] == "install"
    outcome = h.sync()
    assert outcome.status == "installed", outcome.detail
    assert h.mox.served(NAME) == new.sha256
    assert h.memory().get("held") == {}
    assert f'certsync_dane_held{{name="{NAME}"}} 0' in h.metrics()


def test_the_wait_starts_again_when_the_record_disappears(host, dns):
    h = host()
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256), r311(new.spki_sha256)]
    h.sync()
    seen = h.memory()["held"][NAME]["seen"]
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    h.sync()
    assert "seen" not in h.memory()["held"][NAME]
    dns.records[OWNER].append(r311(new.spki_sha256))
    h.write_memory({"held": {NAME: {**h.memory()["held"][NAME]}}, "delete": []})
    outcome = h.sync()
    assert outcome.status == "held for DANE" and h.memory()["held"][NAME]["seen"] >= seen


def test_a_ttl_lowered_during_the_hold_does_not_shorten_the_wait(host, dns):
    h = host()
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    dns.ttl = 86400  # what resolvers may have cached the old RRset for
    assert h.sync().status == "held for DANE"
    # the new record published, and the TTL lowered with it
    dns.records[OWNER].append(r311(new.spki_sha256))
    dns.ttl = 5
    assert h.sync().status == "held for DANE"
    remembered = h.memory()["held"][NAME]
    h.write_memory({"held": {NAME: {**remembered, "seen": remembered["seen"] - 10}}})
    planned = h.plan()
    assert h.sync().status == "held for DANE" and h.mox.served(NAME) == h.old.sha256
    assert planned["dane"]["until"] == _stamp(remembered["seen"] - 10 + 2 * 86400)
    # a TTL beyond 7 days counts as 7 days
    dns.ttl = 2**31 - 1
    h.sync()
    assert h.memory()["held"][NAME]["ttl"] == 7 * 86400


def test_times_in_the_record_outside_one_to_now_start_anew(host, dns):
    h = host()
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256), r311(new.spki_sha256)]
    for since, seen in ((10**18, -5), (True, 0), ("1", 10**18)):
        h.write_memory({"held": {NAME: {"spki": new.spki_sha256, "since": since, "seen": seen}}})
        assert h.plan()["action"] == "held for DANE"
        assert h.sync().status == "held for DANE" and h.mox.served(NAME) == h.old.sha256
        assert 1 <= h.memory()["held"][NAME]["since"] <= h.memory()["held"][NAME]["seen"]


def _stamp(seconds: int) -> str:
    return dane._stamp(seconds) or ""


def test_files_certsync_did_not_install_are_judged_by_the_key_mox_serves(host, dns):
    """The mox user writes a certificate of the new key into the files: mox still serves the
    old key, which is what the TLSA records pin."""
    h = host()
    new = h.caddy_renews()
    planted = h.ca.issue([NAME], key=new.key, not_before=NOW - 2 * DAY)
    write_mox_files(
        h.tmp_path / "mox" / "certs", NAME, planted.cert_pem, planted.key_pem, h.mox_ids
    )
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    assert h.plan()["action"] == "held for DANE"
    outcome = h.sync()
    assert outcome.status == "held for DANE" and h.mox.served(NAME) == h.old.sha256
    assert f"publish {OWNER} IN TLSA {r311(new.spki_sha256)}" in outcome.detail


def test_every_dane_port_must_have_the_record(host, dns):
    h = host(dane_ports=[25, 465])
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256), r311(new.spki_sha256)]
    other = f"_465._tcp.{NAME}."
    dns.records[other] = [r311(h.old.spki_sha256)]
    outcome = h.sync()
    assert outcome.status == "held for DANE"
    assert f"publish {other} IN TLSA" in outcome.detail and f"publish {OWNER}" not in outcome.detail
    assert dns.asked == [OWNER, other]


def test_no_tlsa_records_means_no_dane_and_an_install(host, dns):
    h = host()
    new = h.caddy_renews()
    outcome = h.sync()
    assert outcome.status == "installed" and h.mox.served(NAME) == new.sha256
    assert dns.asked == [OWNER]


def test_a_dns_failure_holds_with_the_reason(host, dns):
    h = host()
    h.caddy_renews()
    dns.error = "no answer from 127.0.0.53 within the time left"
    planned = h.plan()
    outcome = h.sync()
    assert planned["action"] == outcome.status == "held for DANE"
    assert f"DNS lookup of {OWNER} failed (no answer from 127.0.0.53" in outcome.detail
    assert outcome.notify is True and h.mox.restarts == 0


def test_the_deadline_installs_anyway_with_an_alert_naming_the_record(host, dns, tmp_path):
    h = host(dane_deadline_days=7, alert_command=f"tee {tmp_path}/alert")
    h.old = h.ca.issue(
        [NAME], key=key_of("ec256", 50), not_before=NOW - 80 * DAY, not_after=NOW + 6 * DAY
    )
    write_mox_files(tmp_path / "mox" / "certs", NAME, h.old.cert_pem, h.old.key_pem, h.mox_ids)
    remember_installed(h.config, NAME, h.old.cert_pem)
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]

    outcome = h.sync()
    alert.alert(h.config, [outcome], Log(h.config.host, h.config.log_file))

    assert outcome.status == "installed" and h.mox.served(NAME) == new.sha256
    assert outcome.notify is True
    record = f"{OWNER} IN TLSA {r311(new.spki_sha256)}"
    assert "installed without waiting for DANE" in outcome.detail and record in outcome.detail
    assert record in (tmp_path / "alert").read_text()


def test_the_preview_at_the_deadline_with_dns_failing_asks_for_the_record(host, dns):
    h = host(dane_deadline_days=7)
    h.old = h.ca.issue(
        [NAME], key=key_of("ec256", 50), not_before=NOW - 80 * DAY, not_after=NOW + 6 * DAY
    )
    write_mox_files(h.tmp_path / "mox" / "certs", NAME, h.old.cert_pem, h.old.key_pem, h.mox_ids)
    remember_installed(h.config, NAME, h.old.cert_pem)
    new = h.caddy_renews()
    dns.error = "timed out"
    planned = h.plan()
    lines = preview.name_lines(NAME, planned, dt.datetime.now(dt.timezone.utc))
    assert planned["action"] == "install" and planned["dane"]["published"] is False
    assert not any("published everywhere" in line for line in lines)
    assert any(f"publish _25._tcp.{NAME}. IN TLSA 3 1 1 {new.spki_sha256}" in x for x in lines)


def test_the_deadline_cutting_the_ttl_wait_short_is_told(host, dns):
    h = host(dane_deadline_days=7)
    h.old = h.ca.issue(
        [NAME], key=key_of("ec256", 50), not_before=NOW - 80 * DAY, not_after=NOW + 6 * DAY
    )
    write_mox_files(h.tmp_path / "mox" / "certs", NAME, h.old.cert_pem, h.old.key_pem, h.mox_ids)
    remember_installed(h.config, NAME, h.old.cert_pem)
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256), r311(new.spki_sha256)]
    dns.ttl = 3600
    outcome = h.sync()
    assert outcome.status == "installed" and outcome.notify is True
    assert "installed before two TTLs (7200 s)" in outcome.detail


def test_a_renewal_that_keeps_the_key_and_an_in_sync_run_look_nothing_up(host, dns):
    h = host()
    dns.error = "must not be asked"
    renewed = h.caddy_renews(new_key=False)
    assert h.sync().status == "installed" and h.mox.served(NAME) == renewed.sha256
    assert h.sync().status == "in sync"
    assert dns.asked == []


@pytest.mark.parametrize(("name", "dane_setting"), [(NAME, "off"), ("*.example.com", "auto")])
def test_dane_off_or_a_wildcard_looks_nothing_up(
    ca, fake_mox, mox_ids, tmp_path, dns, name, dane_setting
):
    mox, config = fake_mox((name,), dane=dane_setting)
    old = ca.issue([name], key=key_of("ec256", 52), not_before=NOW - 40 * DAY)
    write_mox_files(tmp_path / "mox" / "certs", name, old.cert_pem, old.key_pem, mox_ids)
    new = ca.issue([name], key=key_of("ec256", 53), not_before=NOW - DAY)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, name, new.cert_pem, new.key_pem)
    mox.start()
    (outcome,) = run_sync(config, [name], False, Log(config.host, config.log_file))
    assert outcome.status == "installed" and dns.asked == []


def publish_script(tmp_path: Path, exit_status: int = 0) -> str:
    """A publish command that appends what it gets to calls.txt, then exits `exit_status`
    (read from exit.txt when that exists)."""
    script = tmp_path / "publish"
    script.write_text(
        "#!/bin/sh\n"
        f"cat >> {tmp_path}/calls.txt\necho --- >> {tmp_path}/calls.txt\n"
        f"[ -f {tmp_path}/exit.txt ] && exit $(cat {tmp_path}/exit.txt)\nexit {exit_status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def calls(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "calls.txt"
    text = path.read_text() if path.exists() else ""
    return [chunk.strip().splitlines() for chunk in text.split("---\n") if chunk.strip()]


def test_the_publish_command_adds_once_and_deletes_the_old_record_after_the_install(
    host, dns, tmp_path
):
    h = host(dane_publish_command=publish_script(tmp_path))
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    new = h.caddy_renews()
    add = f"add {OWNER} TLSA {r311(new.spki_sha256)}"

    first = h.sync()
    second = h.sync()  # the record is not visible yet: not sent again

    assert first.status == second.status == "held for DANE"
    assert first.notify is False and second.notify is False  # nothing waits for the operator
    assert calls(tmp_path) == [[add]]
    assert h.plan()["dane"]["operator"] is False

    dns.records[OWNER].append(r311(new.spki_sha256))
    h.sync()
    remembered = h.memory()["held"][NAME]
    h.write_memory({"held": {NAME: {**remembered, "seen": remembered["seen"] - 2 * TTL}}})
    assert h.sync().status == "installed"
    assert calls(tmp_path) == [[add], [f"delete {OWNER} TLSA {r311(h.old.spki_sha256)}"]]
    assert h.memory() == {"held": {}, "delete": []}
    assert h.sync().status == "in sync" and len(calls(tmp_path)) == 2


def test_a_failing_publish_command_is_retried_and_so_is_the_delete(host, dns, tmp_path):
    h = host(dane_publish_command=publish_script(tmp_path, exit_status=1))
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    new = h.caddy_renews()

    outcome = h.sync()
    assert outcome.status == "held for DANE" and outcome.notify is True
    assert "the DANE publish command failed (exit 1)" in outcome.detail
    h.sync()
    assert len(calls(tmp_path)) == 2  # retried at the next run

    (tmp_path / "exit.txt").write_text("1")
    dns.records[OWNER].append(r311(new.spki_sha256))
    h.write_memory({"held": {NAME: {"spki": new.spki_sha256, "seen": 1, "ttl": TTL}}})
    assert h.sync().status == "installed"
    delete = [f"delete {OWNER} TLSA {r311(h.old.spki_sha256)}"]
    assert calls(tmp_path)[-1] == delete and h.memory()["delete"] == delete
    (tmp_path / "exit.txt").write_text("0")
    assert h.sync().status == "in sync"  # an in-sync run retries the delete, without DNS
    assert calls(tmp_path)[-1] == delete and h.memory()["delete"] == []
    assert dns.asked.count(OWNER) == 3  # the two holds and the install


def test_the_record_of_holds_is_roots_alone(host, dns):
    h = host()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    h.caddy_renews()
    h.sync()
    info = os.stat(Path(h.config.lock_file).parent / dane.DANE_FILE)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600)


def test_the_old_record_is_deleted_even_when_the_installing_run_died_before_remembering(
    host, dns, tmp_path
):
    h = host(dane_publish_command=publish_script(tmp_path))
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256), r311(new.spki_sha256)]
    assert h.sync().status == "held for DANE"  # waiting out the TTLs
    waiting = h.memory()["held"][NAME]
    delete = [f"delete {OWNER} TLSA {r311(h.old.spki_sha256)}"]
    assert waiting["deletes"] == delete
    # the run that installed it was killed before it wrote its record: mox has the new pair
    write_mox_files(h.tmp_path / "mox" / "certs", NAME, new.cert_pem, new.key_pem, h.mox_ids)

    outcome = h.sync()

    assert outcome.status == "restarted", outcome.detail  # mox serves the new key from now on
    assert h.mox.served(NAME) == new.sha256
    assert calls(tmp_path)[-1] == delete
    assert h.memory() == {"held": {}, "delete": []}


def test_records_the_command_took_that_never_show_are_sent_again_a_day_later_and_told(
    host, dns, tmp_path
):
    h = host(dane_publish_command=publish_script(tmp_path))
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    new = h.caddy_renews()
    assert h.sync().notify is False
    remembered = h.memory()["held"][NAME]
    day_ago = remembered["added"] - dane.REPUBLISH_SECONDS
    h.write_memory({"held": {NAME: {**remembered, "added": day_ago}}, "delete": []})

    outcome = h.sync()

    add = [f"add {OWNER} TLSA {r311(new.spki_sha256)}"]
    assert calls(tmp_path) == [add, add]
    assert outcome.status == "held for DANE" and outcome.notify is True
    assert "still not answered everywhere" in outcome.detail


def test_a_hold_is_told_once_and_a_day_later_and_not_while_it_waits_out_the_ttls():
    from certsync.host.outcome import Outcome

    record: dict[str, Any] = {}
    waits = Outcome(NAME, "held for DANE", "publish ...", notify=True)
    assert alert.due(record, [waits], 1000) == [waits]
    record[NAME]["told"] = 1000
    assert alert.due(record, [waits], 2000) == []
    assert alert.due(record, [waits], 1000 + alert.REMIND_SECONDS) == [waits]
    ttl = Outcome(NAME, "held for DANE", "waiting two TTLs", notify=False)
    assert alert.due(record, [ttl], 5000) == [] and record == {}
    assert waits.exit_status == 0 and not waits.ok and waits.fine


def test_the_publish_command_is_killed_whole_at_the_timeout_and_not_quoted(
    host, tmp_path, monkeypatch
):
    helper = tmp_path / "helper.pid"
    script = tmp_path / "publish"
    script.write_text(f"#!/bin/sh\nsleep 60 &\necho $! > {helper}\ncat > /dev/null\nsleep 60\n")
    script.chmod(0o755)
    h = host(dane_publish_command=f"{script} --secret hmac-sha256:c2VjcmV0")
    monkeypatch.setattr(dane, "PUBLISH_TIMEOUT", 1)
    failure = dane.run_publish(h.config, [f"add {OWNER} TLSA {r311('ab' * 32)}"])
    assert failure == "the DANE publish command timed out after 1 s"
    pid = int(helper.read_text())
    for _ in range(50):  # reaped by pytest's process? gone once killed: wait for it, bounded
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the command's helper {pid} still runs")


def test_the_publish_commands_output_is_bytes_and_only_its_end_is_kept(host, tmp_path):
    script = tmp_path / "publish"
    script.write_text(
        "#!/bin/sh\ncat > /dev/null\nhead -c 100000 /dev/zero | tr '\\0' x\n"
        "printf 'refused \\377\\n'\nexit 3\n"
    )
    script.chmod(0o755)
    h = host(dane_publish_command=str(script))
    failure = dane.run_publish(h.config, [f"add {OWNER} TLSA {r311('ab' * 32)}"])
    assert failure is not None and failure.startswith("the DANE publish command failed (exit 3)")
    assert failure.endswith("refused \ufffd") and len(failure) < 400


def test_pending_deletes_never_delete_a_key_in_use_nor_anything_but_a_configured_record(
    host, dns, tmp_path
):
    h = host(dane_publish_command=publish_script(tmp_path))
    assert h.caddy_renews(new_key=False) and h.sync().status == "installed"
    other = "cd" * 32
    h.write_memory(
        {
            "held": {},
            "delete": [
                f"delete {OWNER} TLSA {r311(h.old.spki_sha256)}",  # the key mox serves now
                f"add evil.example. TLSA 3 1 1 {other}\ndelete {OWNER} TLSA 3 1 1 {other}",
                f"delete _25._tcp.other.example. TLSA 3 1 1 {other}",  # not a configured name
                f"delete _26._tcp.{NAME}. TLSA 3 1 1 {other}",  # not a DANE port
                f"delete {OWNER} TLSA 3 0 1 {other}",
                f"delete {OWNER} TLSA 3 1 1 {other}",
            ],
        }
    )
    assert h.sync().status == "in sync"
    assert calls(tmp_path) == [[f"delete {OWNER} TLSA 3 1 1 {other}"]]
    assert h.memory()["delete"] == []


def test_pending_deletes_wait_while_dane_is_off(host, dns, tmp_path):
    h = host(dane_publish_command=publish_script(tmp_path), dane="off")
    assert h.caddy_renews(new_key=False) and h.sync().status == "installed"
    h.write_memory({"held": {}, "delete": [f"delete {OWNER} TLSA 3 1 1 {'cd' * 32}"]})
    assert h.sync().status == "in sync"
    assert calls(tmp_path) == []


def test_the_old_record_is_deleted_only_once_a_check_saw_the_new_key_served(host, dns, tmp_path):
    h = host(dane_publish_command=publish_script(tmp_path), verify_ports=[1])  # no listener
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256), r311(new.spki_sha256)]
    h.write_memory({"held": {NAME: {"spki": new.spki_sha256, "seen": 1, "since": 1}}})
    outcome = h.sync()
    assert outcome.status == "installed" and "not checked" in outcome.detail
    assert calls(tmp_path) == []
    assert h.sync().status == "in sync" and calls(tmp_path) == []  # still nothing checks
    h.config.__dict__["values"]["verify_ports"] = [h.mox.port]
    assert h.sync().status == "in sync"
    assert calls(tmp_path) == [[f"delete {OWNER} TLSA {r311(h.old.spki_sha256)}"]]
    assert h.memory() == {"held": {}, "delete": []}


def test_a_pending_delete_of_the_key_mox_serves_is_dropped_whatever_its_files_hold(
    host, dns, tmp_path
):
    """The `mox` user wrote other files; mox still serves the old key; a key change is held."""
    h = host(dane_publish_command=publish_script(tmp_path))
    new = h.caddy_renews()
    planted = h.ca.issue([NAME], key=key_of("ec256", 52), not_before=NOW - 2 * DAY)
    write_mox_files(
        h.tmp_path / "mox" / "certs", NAME, planted.cert_pem, planted.key_pem, h.mox_ids
    )
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    served = f"delete {OWNER} TLSA {r311(h.old.spki_sha256)}"
    h.write_memory({"held": {}, "delete": [served]})
    assert h.sync().status == "held for DANE"
    assert calls(tmp_path) == [[f"add {OWNER} TLSA {r311(new.spki_sha256)}"]]
    assert h.memory()["delete"] == []


def test_a_key_change_with_records_is_held_when_the_key_mox_has_is_not_known(host, dns, tmp_path):
    h = host(verify_ports=[1])  # nothing to probe
    for suffix in (".crt", ".key"):  # links of the mox user's: certsync never follows them
        (h.tmp_path / "mox" / "certs" / f"{NAME}{suffix}").unlink()
        (h.tmp_path / "mox" / "certs" / f"{NAME}{suffix}").symlink_to(f"/elsewhere/{suffix}")
    h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]
    outcome = h.sync()
    assert outcome.status == "held for DANE" and "the key mox has is not known" in outcome.detail


def test_a_first_sync_from_mox_quickstart_is_judged_by_the_key_mox_serves(host, dns, tmp_path):
    """Plain `mox quickstart`: mox serves its own certificate (ACME, its host key, which the
    TLSA records pin) and certsync never wrote its files. The key mox serves decides: the key
    change waits for DANE until that certificate comes within the deadline."""
    h = host()
    shutil.rmtree(tmp_path / "mox" / "certs")
    (Path(h.config.lock_file).parent / INSTALLED).unlink()
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]

    planned, outcome = h.plan(), h.sync()

    assert planned["action"] == outcome.status == "held for DANE", outcome.detail
    assert f"publish {OWNER} IN TLSA {r311(new.spki_sha256)}" in outcome.detail
    assert h.mox.restarts == 0 and h.mox.served(NAME) == h.old.sha256
    assert not (tmp_path / "mox" / "certs" / f"{NAME}.crt").exists()

    expires = f"{h.old.cert.not_valid_after_utc:%Y-%m-%d}"  # in 60 days
    h.config.__dict__["values"]["dane_deadline_days"] = 61
    outcome = h.sync()
    assert outcome.status == "installed" and h.mox.served(NAME) == new.sha256
    assert (
        f"installed without waiting for DANE (mox's certificate expires {expires}, within 61"
        f" days): publish {OWNER} IN TLSA {r311(new.spki_sha256)}"
    ) in outcome.detail


@pytest.mark.parametrize("broken", ["missing", "another key"])
def test_a_pair_that_does_not_load_is_held_while_mox_serves_and_installed_once_mox_is_down(
    host, dns, broken
):
    # mox still serves the key the records pin: the hold keeps it. Once mox is down (it could
    # not start again with that pair: a reboot), waiting would keep it down: installed, told
    h = host()
    certs = h.tmp_path / "mox" / "certs"
    if broken == "missing":
        for suffix in (".crt", ".key"):
            (certs / f"{NAME}{suffix}").unlink()
    else:
        gen = os.readlink(certs / f"..{NAME}.data")
        (certs / gen / f"{NAME}.key").write_bytes(caddy_key_pem(key_of("ec256", 52)))
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]

    assert h.plan()["action"] == h.sync().status == "held for DANE"
    assert h.mox.served(NAME) == h.old.sha256

    h.mox.close()  # (the fake mox cannot be restarted once closed: the plan is what counts)
    planned = h.plan()

    assert planned["action"] == "install", planned["detail"]
    assert "mox answers on none of its checked ports" in planned["detail"]
    assert r311(new.spki_sha256) in planned["detail"]


def test_a_key_change_is_not_held_for_dane_while_mox_answers_on_none_of_its_ports(host, dns):
    h = host()
    h.mox.close()  # mox is down: a hold would end the run at exit 0 with nothing served
    new = h.caddy_renews()
    dns.records[OWNER] = [r311(h.old.spki_sha256)]

    planned = h.plan()

    assert planned["action"] == "install", planned["detail"]
    assert "mox answers on none of its checked ports" in planned["detail"]
    assert r311(new.spki_sha256) in planned["detail"]


def test_a_delete_of_a_record_an_add_of_the_run_sent_is_dropped(host):
    h = host()
    run = dane.DaneRun(h.config, dt.datetime.now(dt.timezone.utc))
    again, other = f"{OWNER} TLSA 3 1 1 {'cd' * 32}", f"{OWNER} TLSA 3 1 1 {'ef' * 32}"
    assert run.lines([f"add {again}"], set()) == [f"add {again}"]
    run.added.add(f"add {again}")
    assert run.lines([f"delete {again}", f"delete {other}"], set()) == [f"delete {other}"]
