"""Crashes, a down mox, a check that fails at every run (issue 15).

The host program killed at every step of a sync with a key change.

The host program names its steps (certsync/host/crashpoint.py: each file staged and renamed, the
generation made, the switch, before and after `mox config test`, the restart and the check, each
step of a rollback); CERTSYNC_TEST_TRACE lists them, CERTSYNC_TEST_STEPS makes the program send
itself SIGKILL (or SIGTERM) when it reaches one. After each kill, mox's folder holds a pair that
loads (`mox config test`, and openssl: the key's public key is the certificate's), and the next
run of the cron job's command converges: mox serves Caddy's certificate on every port, and no
staged file, old generation or stray link is left.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import time

from tests.e2e.deployrun import MOX_CERT_DIR, deploy
from tests.e2e.faultkit import (
    HOST_RUN_DIR,
    SYNC_COMMAND,
    assert_serves_caddys,
    certsyncs_links,
    cron_command,
    leftovers,
    log_lines,
    mox_files,
    one_host,
    put_mox_files,
    write_host_file,
)
from tests.fleet import TestHost
from tests.fleet.fleet import MOXCTL
from tests.fleet.hostspec import MOX_BINARY, MOX_CONFIG, storage_name

TRACE = "crash-trace.txt"  # in the host's run folder (HOST_RUN_DIR)
# Steps after the transaction: records and metrics. Killed there, only a record is older.
BACKOFF_FILE = "/var/lib/certsync/backoff.json"
RECORD_FILES = ("runs.json", "alerts.json", "installed.json", "backoff.json", "certsync.prom")


def placeholder(host: TestHost, name: str) -> tuple[bytes, bytes]:
    """The self-signed pair mox was set up with (the fleet's starting state)."""
    folder = host.source_of(MOX_CERT_DIR)
    stored = storage_name(name)
    return (folder / f"{stored}.crt").read_bytes(), (folder / f"{stored}.key").read_bytes()


def reset(host: TestHost, name: str, pair: tuple[bytes, bytes], layout: bool) -> None:
    """mox has `pair` and serves it: as regular files (mox's setup, or certsync before its
    layout) or in certsync's layout (a renewal); whatever an earlier crash left is gone."""
    folder = host.source_of(MOX_CERT_DIR)
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    put_mox_files(host, name, *pair)
    if layout:
        stored = storage_name(name)
        gen = folder / f"..{stored}.g{'0' * 15}1"
        gen.mkdir(mode=0o700)
        shutil.chown(gen, "mox", "mox")
        (folder / f"..{stored}.data").symlink_to(gen.name)
        for suffix in (".crt", ".key"):
            (folder / f"{stored}{suffix}").rename(gen / f"{stored}{suffix}")
            (folder / f"{stored}{suffix}").symlink_to(f"..{stored}.data/{stored}{suffix}")
        mox = pwd.getpwnam("mox")
        for link in folder.iterdir():
            if link.is_symlink():
                os.lchown(link, mox.pw_uid, mox.pw_gid)
        assert certsyncs_links(host, name)
    host.restart_mox()


def sync(host: TestHost, env: str = "") -> tuple[int, str]:
    result = host.run(f"{env} {SYNC_COMMAND}", timeout=180)
    return result.returncode, result.stdout + result.stderr


def steps(host: TestHost, env: str = "") -> list[str]:
    """The steps a sync reaches (STEP#N), in order."""
    trace = host.run_dir / TRACE
    trace.unlink(missing_ok=True)
    sync(host, f"CERTSYNC_TEST_TRACE={HOST_RUN_DIR}/{TRACE} {env}")
    found = trace.read_text().splitlines()
    trace.unlink()
    return found


def assert_pair_loads(host: TestHost, name: str, why: str) -> None:
    """mox's .crt and .key for `name`, read as mox reads them (following certsync's links),
    belong together: mox's own config test, and openssl."""
    test = host.run(f"{MOX_BINARY} -config {MOX_CONFIG} config test")
    assert test.returncode == 0, (why, test.stdout + test.stderr)
    crt, key = (f"{MOX_CERT_DIR}/{storage_name(name)}{suffix}" for suffix in (".crt", ".key"))
    keys = host.run(
        f"openssl x509 -in {crt} -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum;"
        f" openssl pkey -in {key} -pubout -outform DER | sha256sum",
        check=True,
    ).stdout.split("\n")
    assert keys[0] == keys[1] and len(keys[0]) > 64, (why, keys)


def assert_converges(host: TestHost, pki, name: str, why: str, command: str) -> None:
    result = host.run(command, timeout=180)
    if result.returncode != 0:  # all it said, and mox's own words (pytest shortens the message)
        mox_log = host.run(
            "grep -v -e 'new connection' -e 'connection closed' -e 'command ioerror'"
            " /run/certsync-e2e/mox.log | tail -n 40; ps -eo pid,sid,stat,args | grep '[m]ox'"
        ).stdout
        print(f"{why}: exit {result.returncode}\n{result.stdout}{result.stderr}\nmox:\n{mox_log}")
    assert result.returncode == 0, (why, result.stdout + result.stderr)
    assert_serves_caddys(host, pki, name)
    assert certsyncs_links(host, name), why
    assert leftovers(host) == [], why


def test_a_sync_killed_at_every_step_leaves_a_pair_that_loads_and_the_next_run_converges(
    make_fleet, pki, tmp_path
):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    first = placeholder(host, name)
    assert deploy(inventory).returncode == 0  # installs the program, its settings, the cron job
    cron = cron_command(host)
    started = time.monotonic()
    cases = 0

    def kill_at(
        step: str, signal: str, layout: bool, fail: str = "", before_restart: bool = False
    ) -> None:
        nonlocal cases
        cases += 1
        why = f"{signal} at {step}" + (f" (after {fail})" if fail else "")
        reset(host, name, first, layout)
        spec = ",".join(filter(None, [fail, f"{signal}@{step}"]))
        status, output = sync(host, f"CERTSYNC_TEST_STEPS={shlex.quote(spec)}")
        assert_pair_loads(host, name, why)
        if signal == "TERM" and before_restart:
            # SIGTERM (a shutdown) before the restart: nothing changed, or the previous pair
            # switched back
            assert status == 1, (why, output)
            assert f"{name}: interrupted: interrupted by SIGTERM; " in output, (why, output)
            assert placeholder(host, name) == first, why
        elif signal == "TERM":
            # after the restart, the transaction ends installed, or rolled back
            assert status == (3 if fail else 0), (why, output)
            assert f"{name}: {'rolled back' if fail else 'installed'}" in output, (why, output)
        # a rolled-back install is held back from the cron job (backoff.py): a deploy tries it
        held = name in host.run(f"cat {BACKOFF_FILE}").stdout
        assert_converges(host, pki, name, why, SYNC_COMMAND if held else cron)

    def transaction(found: list[str]) -> list[str]:
        """The steps of the transaction (not the records written after it)."""
        return [s for s in found if not any(record in s for record in RECORD_FILES)]

    # A renewal with a new key, mox's files in certsync's layout: SIGKILL at every step of the
    # transaction, SIGTERM at each of its own steps (files staged and renamed go on the same).
    reset(host, name, first, True)
    renewal = transaction(steps(host))
    assert any(s.startswith("generation:") for s in renewal), renewal
    assert {"config-test#1", "config-tested#1", "restart#1", "restarted#1", "checked#1"} <= set(
        renewal
    )
    for step in renewal:
        kill_at(step, "KILL", layout=True)
    for step in renewal:
        if ":" not in step or step.startswith(("generation:", "rename:..")):
            early = renewal.index(step) < renewal.index("restart#1")
            kill_at(step, "TERM", layout=True, before_restart=early)

    # The first sync after certsync's upgrade: regular files become links into a generation
    # holding a copy of mox's pair, then the renewal's steps: SIGKILL at each step of that.
    reset(host, name, first, False)
    first_sync = transaction(steps(host))
    stored = storage_name(name)
    # the copy's generation, the switch to it, the links (staged, then each renamed over a file)
    migration = first_sync[
        first_sync.index("backup#1") + 1 : first_sync.index(f"stage:{stored}.crt#4")
    ]
    assert f"rename:{stored}.key#3" in migration, first_sync
    for step in migration:
        kill_at(step, "KILL", layout=False)

    # A rollback: the check after the restart fails; killed at each of the rollback's steps.
    fail = "FAIL@restarted#1"
    reset(host, name, first, True)
    rollback = transaction(steps(host, f"CERTSYNC_TEST_STEPS={fail}"))
    after = rollback[rollback.index("restarted#1") + 1 :]
    assert "restore#1" in after and "restore-restarted#1" in after, rollback
    for step in after:
        kill_at(step, "KILL", layout=True, fail=fail)
    for step in after:
        if ":" not in step:
            kill_at(step, "TERM", layout=True, fail=fail)

    elapsed = time.monotonic() - started
    print(f"crash test: {cases} kills in {elapsed:.0f} s")  # the figure for the report


# --- mox down, a check that fails at every run, certsync's own state --------------------------


def last_line(host: TestHost, name: str) -> str:
    return next(line for line in reversed(log_lines(host)) if f": {name}: " in line)


def test_mox_stopped_is_restarted_by_the_next_run_and_never_in_sync(make_fleet, pki, tmp_path):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    host.stop_mox()

    result = host.run(cron_command(host), timeout=180)

    assert result.returncode == 0, result.stderr
    assert "restarted: mox answers on none of its checked ports" in last_line(host, name)
    assert_serves_caddys(host, pki, name)


def test_mox_stopped_that_cannot_start_fails_loudly(make_fleet, pki, tmp_path):
    """mox is down and its config no longer loads: nothing is restarted, the run fails with the
    reason, and (no alert mail set) cron's mail gets it."""
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    host.stop_mox()
    config = host.source_of(MOX_CONFIG)
    config.write_text(config.read_text() + "NotASetting: 1\n")

    result = host.run(cron_command(host), timeout=180)

    assert result.returncode == 3, result.stderr
    line = last_line(host, name)
    assert f"{name}: failed: mox config test failed (exit 1)" in line, line
    assert "mox not restarted" in line and "in sync" not in line
    assert f"certsync {host.name}: {name}: failed: mox config test failed" in result.stderr
    assert host.mox_pid() is None


def test_a_check_that_fails_at_every_run_restarts_mox_once_per_back_off_step(
    make_fleet, pki, tmp_path
):
    """The check after the restart can never pass (the verify address's port serves nothing):
    the deploy's install is rolled back; then the cron job holds Caddy's certificate back for
    1 h, then 4 h, then a day, whatever the number of its runs in between. The restarts are
    counted on the host, by the restart command itself; time passes by moving the record of
    the last try back."""
    counter, restart = f"{HOST_RUN_DIR}/restarts", "/home/restart-mox"
    fleet, host, name, inventory = one_host(
        make_fleet,
        tmp_path,
        certsync_verify_address="127.0.0.1",
        certsync_verify_ports=[2999],
        certsync_verify_timeout_seconds=2,
        certsync_restart_command=restart,
    )
    write_host_file(host, restart, f"#!/bin/sh\necho restart >>{counter}\nexec {MOXCTL} restart\n")

    def restarts() -> int:
        return len(host.run(f"cat {counter}").stdout.split())

    def cron_runs(count: int) -> None:
        for _ in range(count):
            result = host.run(cron_command(host), timeout=180)
            assert result.returncode == 4, result.stderr

    def time_passes(seconds: int) -> None:
        program = (
            "import json, sys; p, n, s = sys.argv[1:]; r = json.load(open(p));"
            ' r[n]["tried"] -= int(s); json.dump(r, open(p, "w"))'
        )
        host.run(f"python3 -c {shlex.quote(program)} {BACKOFF_FILE} {name} {seconds}", check=True)

    run = deploy(inventory)
    assert run.returncode != 0 and f"{name}: restore failed" in run.output, run.output
    assert restarts() == 2  # the install's, and the rollback's
    cron_runs(3)
    assert restarts() == 2
    line = last_line(host, name)
    assert "restore failed: held back: Caddy's sha256=" in line, line
    assert "at 1 try" in line and "the cron job tries it again at " in line, line
    for step, delay in enumerate((3600, 4 * 3600, 24 * 3600, 24 * 3600), start=1):
        time_passes(delay - 60)
        cron_runs(2)  # a minute early: still held
        assert restarts() == 2 * step, step
        time_passes(60)
        cron_runs(3)  # one try, then held again
        assert restarts() == 2 * (step + 1), step
        assert f"at {step + 1} tries" in last_line(host, name)
    assert_pair_loads(host, name, "after the tries")


def test_certsyncs_state_folder_of_another_user_is_refused(make_fleet, pki, tmp_path):
    fleet, host, name, inventory = one_host(make_fleet, tmp_path)
    assert deploy(inventory).returncode == 0
    before = mox_files(host)
    host.run("chown mox /var/lib/certsync", check=True)

    result = host.run(cron_command(host), timeout=180)

    assert result.returncode == 1, result.stderr
    line = last_line(host, name)
    assert f"{name}: refused: certsync's state folder /var/lib/certsync is not root's alone" in line
    assert "/var/lib/certsync is owned by mox" in line, line
    assert mox_files(host) == before
