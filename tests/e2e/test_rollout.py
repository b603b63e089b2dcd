"""The fleet rollout on the real SSH test fleet: per-host data, canary first, unreachable hosts,
--limit, one name, and a second run that only reads.

The default fleet (tests/fleet): mail-1 carries mail.h1.test (Caddy in Docker), mail-2 mail.h2.test
(Caddy from Debian's package), mail-3 three names (mail., mta-sts., autoconfig.h3.test).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.deployrun import (
    MOX_CERT_DIR,
    backups,
    caddy_fingerprint,
    caddy_sha256,
    deploy,
    pyinfra,
    served_fingerprints,
    sha256_on_host,
)
from tests.e2e.faultkit import CRON_FILE
from tests.fleet import DEBIAN_CADDY_DATA_DIR, DOCKER_CADDY_DATA_DIR, Fleet, Pki, TestHost

CONFIG_FILE = "/etc/certsync/config.json"
# The fact's one command runs the host program's read-only `state` (certsync/facts.py).
FACT_MARKER = "state --settings"
COMMAND_RE = re.compile(r"^\[(?P<host>[^\]]+)\]\s+>>> ", re.M)
# sshd (LogLevel VERBOSE) logs every session it opens: a command, a shell or the sftp subsystem.
SESSION_RE = re.compile(r"Starting session: (?P<kind>.*?) for root from")


# -- helpers ---------------------------------------------------------------------------------------
def write_inventory(
    fleet: Fleet,
    path: Path,
    groups: Mapping[str, Sequence[str]],
    host_data: Mapping[str, Mapping[str, Any]] | None = None,
    group_data: Mapping[str, Mapping[str, Any]] | None = None,
    drop: Iterable[str] = (),
) -> Path:
    """An inventory as a user writes one: host data in the inventory (without the keys in `drop`,
    so that group data can set them), group data in `group_data/<group>.py` beside it (pyinfra
    reads that folder beside the inventory as well as the deploy's own group_data/)."""
    dropped = set(drop)
    lines = ["_hosts = {"]
    for host in fleet:
        merged = {**host.inventory_data(), **(host_data or {}).get(host.name, {})}
        data = {key: value for key, value in merged.items() if key not in dropped}
        lines.append(f"    {host.name!r}: ({host.name!r}, {data!r}),")
    lines.append("}")
    for group, names in groups.items():
        lines.append(f"{group} = [{', '.join(f'_hosts[{name!r}]' for name in names)}]")
    path.write_text("\n".join(lines) + "\n")
    if group_data:
        folder = path.parent / "group_data"
        folder.mkdir(exist_ok=True)
        for group, settings in group_data.items():
            body = "".join(f"{key} = {value!r}\n" for key, value in settings.items())
            (folder / f"{group}.py").write_text(body)
    return path


def host_config(host: TestHost) -> dict[str, Any]:
    return json.loads(host.run(f"cat {CONFIG_FILE}", check=True).stdout)


def snapshot(host: TestHost) -> dict[str, Any]:
    """What a deploy could change on a host: mox's files (content, inode, ctime, owner, mode),
    the files the deploy installs, the backups, and mox's pid."""
    listing = host.run(
        f"cd {MOX_CERT_DIR} && stat -c '%n %i %z %U %G %a' * && sha256sum *"
        f" && stat -c '%n %i %z' {CONFIG_FILE} {CRON_FILE} 2>&1",
    ).stdout
    return {"files": listing, "backups": backups(host), "pid": host.mox_pid()}


def cert_dir_names(host: TestHost) -> set[str]:
    return set(host.run(f"ls -1 {MOX_CERT_DIR}", check=True).stdout.split())


def assert_serves(host: TestHost, pki: Pki, names: Iterable[str]) -> None:
    """mox's files equal Caddy's and every port serves Caddy's certificate, for each name."""
    for name in names:
        for suffix in (".crt", ".key"):
            on_host = sha256_on_host(host, f"{MOX_CERT_DIR}/{name}{suffix}")
            assert on_host == caddy_sha256(pki, name, suffix), (host.name, name, suffix)
        served = served_fingerprints(host, name)
        assert set(served.values()) == {caddy_fingerprint(pki, name)}, (host.name, name, served)


def activity_lines(output: str) -> list[tuple[int, str]]:
    """(line number, host) of every line of the operation run that shows a host doing something:
    a command it runs (-vv) or an operation result; "Skipped" is not doing something."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Beginning operation run" in line)
    found = []
    for number, line in enumerate(lines[start:], start):
        if line.startswith("--> Results"):
            break
        match = re.match(r"^\s*\[(mail-\d+)\]\s+(.*)$", line)
        if match and match.group(2).strip() != "Skipped":
            found.append((number, match.group(1)))
    return found


def commands_by_host(output: str) -> dict[str, list[str]]:
    """The commands pyinfra ran (printed with -vv as `[host] >>> command`, maybe many lines)."""
    commands: dict[str, list[str]] = {}
    for match in COMMAND_RE.finditer(output):
        rest = output[match.end() :]
        end = re.search(r"^(\s*\[[\w.@-]+\]\s|-->)", rest, re.M)
        commands.setdefault(match.group("host"), []).append(rest[: end.start() if end else None])
    return commands


def newest_ctime_ns(host: TestHost, pattern: str) -> int:
    """The newest change time, in ns, of the host's files matching a shell glob."""
    script = "import os, sys; print(max(os.stat(p).st_ctime_ns for p in sys.argv[1:]))"
    return int(host.run(f"python3 -c '{script}' {pattern}", check=True).stdout)


def sessions_since(host: TestHost, offset: int) -> list[str]:
    """The SSH sessions the host's sshd opened since byte `offset` of its log."""
    with host.sshd_log.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return [match.group("kind") for match in SESSION_RE.finditer(text)]


# -- per-host names, paths and data ----------------------------------------------------------------
def test_each_host_gets_its_own_names_paths_and_data(fleet, pki, tmp_path):
    # Caddy's data dir comes from data, not from the host: mail-2 from the repository's
    # group_data/debian_caddy.py, the others from certsync's default. Groups `mail` and `tuned`
    # (group_data files beside the inventory) both set backups_keep: `tuned`, defined later in the
    # inventory, wins; mail-3's host data wins over both.
    inventory = write_inventory(
        fleet,
        tmp_path / "inventory.py",
        groups={
            "canary": ["mail-1"],
            "mail": [host.name for host in fleet],
            "debian_caddy": ["mail-2"],
            "tuned": ["mail-2", "mail-3"],
        },
        host_data={"mail-3": {"certsync_backups_keep": 3}},
        group_data={
            "mail": {"certsync_backups_keep": 4},
            "tuned": {"certsync_backups_keep": 2, "certsync_verify_ports": [993, 465]},
        },
        drop=["certsync_caddy_data_dir"],
    )

    run = deploy(inventory)

    assert run.returncode == 0, run.output
    for host in fleet:
        assert_serves(host, pki, host.cert_names)
        # exactly its own names: nothing of another host's in its certificate folder
        own = {f"{name}{suffix}" for name in host.cert_names for suffix in (".crt", ".key")}
        assert cert_dir_names(host) == own, host.name
    expected = {
        # host: (caddy data dir, backups kept, ports verified)
        "mail-1": (DOCKER_CADDY_DATA_DIR, 4, [993, 465, 587]),  # default, group mail
        "mail-2": (DEBIAN_CADDY_DATA_DIR, 2, [993, 465]),  # debian_caddy; tuned over mail
        "mail-3": (DOCKER_CADDY_DATA_DIR, 3, [993, 465]),  # host over group tuned
    }
    for host in fleet:
        config = host_config(host)
        got = (config["caddy_data_dir"], config["backups_keep"], config["verify_ports"])
        assert got == expected[host.name], host.name
        assert config["names"] == list(host.cert_names), host.name
    # mail-2 read Debian's path: it holds the only copy of Caddy's storage on that host.
    mail_2 = fleet["mail-2"]
    assert mail_2.run(f"test -e {DOCKER_CADDY_DATA_DIR}/certificates").returncode != 0
    assert mail_2.run(f"test -d {DEBIAN_CADDY_DATA_DIR}/certificates").returncode == 0


def test_names_the_deploys_code_gives_each_host_at_its_turn_are_that_hosts(fleet, pki, tmp_path):
    # No names in the inventory: the deploy's code gives each host its own, at that host's turn,
    # before certsync_deploy() (pyinfra runs the deploy file once per host).
    inventory = write_inventory(
        fleet,
        tmp_path / "inventory.py",
        groups={"canary": ["mail-1"], "mail": [host.name for host in fleet]},
        drop=["certsync_names"],
    )
    names = {host.name: list(host.cert_names) for host in fleet}
    user_deploy = tmp_path / "names_deploy.py"
    user_deploy.write_text(
        "from pyinfra import host\n\nfrom certsync.deploy import certsync_deploy\n\n"
        f"NAMES = {names!r}\nhost.data.certsync_names = NAMES[host.name]\ncertsync_deploy()\n"
        # what the deploy's code changes after the call is not the call's
        "host.data.certsync_names = ['after.h9.test']\n"
    )

    run = pyinfra("-y", str(inventory), str(user_deploy), timeout=RUN_BOUND)

    assert run.returncode == 0, run.output
    for host in fleet:
        assert_serves(host, pki, host.cert_names)
        assert host_config(host)["names"] == list(host.cert_names), host.name


# -- canary first, in every run mode --------------------------------------------------------------
def assert_canaries_went_first(run: Any, fleet: Fleet, canaries: set[str]) -> None:
    """The run (-vv) shows every canary host's work before any other host's, and the hosts agree:
    every canary's new files were in place before any other host's."""
    activity = activity_lines(run.output)
    assert {host for _, host in activity} == {host.name for host in fleet}, run.output
    last_canary = max(number for number, host in activity if host in canaries)
    first_other = min(number for number, host in activity if host not in canaries)
    assert last_canary < first_other, run.output
    installed = {host.name: newest_ctime_ns(host, f"{MOX_CERT_DIR}/*.crt") for host in fleet}
    assert max(installed[name] for name in canaries) < min(
        installed[host.name] for host in fleet if host.name not in canaries
    ), installed


@pytest.mark.parametrize(
    "mode", [(), ("--no-wait",), ("--parallel", "1")], ids=["default", "no-wait", "parallel-1"]
)
def test_canary_hosts_are_synced_before_any_other_host(fleet, pki, tmp_path, mode):
    # Two canaries, and not the first hosts of the inventory: the order is the deploy's doing.
    canaries = {"mail-2", "mail-3"}
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        groups={"canary": sorted(canaries), "mail": [host.name for host in fleet]},
    )

    run = deploy(inventory, "-vv", *mode)

    assert run.returncode == 0, run.output
    assert_canaries_went_first(run, fleet, canaries)
    for host in fleet:
        assert_serves(host, pki, host.cert_names)


REFUSED_MODES = {
    # name: (arguments, what certsync says)
    "serial": (("--serial",), "certsync: --serial runs each host's whole deploy before the next"),
    "no-wait-2-slots": (
        ("--no-wait", "--parallel", "2"),
        "certsync: with --no-wait each of the 2 hosts outside the canary group waits for it in"
        " one of pyinfra's 2 parallel slots",
    ),
}


@pytest.mark.parametrize("mode", list(REFUSED_MODES))
def test_a_mode_where_the_canary_group_might_not_go_first_is_refused(fleet, inventory, mode):
    arguments, message = REFUSED_MODES[mode]
    before = {host.name: snapshot(host) for host in fleet}

    run = deploy(inventory, *arguments)

    assert run.returncode != 0, run.output
    assert message in run.output, run.output
    for host in fleet:  # refused before anything ran on any host
        assert snapshot(host) == before[host.name], host.name


def test_serial_syncs_the_canary_group_alone_then_the_others(fleet, pki, inventory):
    # What the refusal of --serial says to do instead.
    canary, others = fleet["mail-1"], [host for host in fleet if host.name != "mail-1"]
    before = {host.name: snapshot(host) for host in others}

    first = deploy(inventory, "--serial", "--limit", "canary")

    assert first.returncode == 0, first.output
    assert_serves(canary, pki, canary.cert_names)
    for host in others:
        assert snapshot(host) == before[host.name], host.name

    rest = deploy(inventory, "--serial", "--exclude", "canary")

    assert rest.returncode == 0, rest.output
    for host in others:
        assert_serves(host, pki, host.cert_names)


CANARY_ONLY = """
if "canary" in host.groups:
    server.shell(name="canary hosts only", commands=["true"])
"""
OTHERS_ONLY = CANARY_ONLY.replace('"canary" in', '"canary" not in').replace(
    "canary hosts", "others"
)
USER_DEPLOYS = {
    # name: (what runs before certsync_deploy(), after it, how many calls)
    "canary-only op before": (CANARY_ONLY, "", 1),
    "canary-only op after": ("", CANARY_ONLY, 1),
    "others-only op before": (OTHERS_ONLY, "", 1),
    "two calls": ("", "", 2),
}
RUN_BOUND = 120  # seconds: a run of three hosts takes about ten


def user_deploy(tmp_path: Path, before: str, after: str, calls: int) -> Path:
    """A user's own deploy file that calls certsync_deploy() among operations of its own."""
    path = tmp_path / "user_deploy.py"
    body = "from pyinfra import host\nfrom pyinfra.operations import server\n\n"
    body += "from certsync.deploy import certsync_deploy\n" + before
    body += "certsync_deploy()\n" * calls + after
    path.write_text(body)
    return path


@pytest.mark.parametrize("mode", [(), ("--no-wait",)], ids=["default", "no-wait"])
@pytest.mark.parametrize("case", list(USER_DEPLOYS))
def test_canary_first_holds_whatever_else_the_deploy_runs(fleet, pki, tmp_path, case, mode):
    canaries = {"mail-2", "mail-3"}
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        groups={"canary": sorted(canaries), "mail": [host.name for host in fleet]},
    )

    run = pyinfra(
        "-y",
        *mode,
        str(inventory),
        str(user_deploy(tmp_path, *USER_DEPLOYS[case])),
        timeout=RUN_BOUND,
    )

    assert run.returncode == 0, run.output
    for host in fleet:
        assert_serves(host, pki, host.cert_names)
    installed = {host.name: newest_ctime_ns(host, f"{MOX_CERT_DIR}/*.crt") for host in fleet}
    assert max(installed[name] for name in canaries) < installed["mail-1"], installed


def test_hosts_that_disagree_on_the_canary_group_are_refused_before_anything_runs(fleet, tmp_path):
    inventory = fleet.write_inventory(
        tmp_path / "inventory.py",
        extra_host_data={"mail-3": {"certsync_canary_group": "early"}},
        groups={"canary": ["mail-1"], "early": ["mail-2"], "mail": [h.name for h in fleet]},
    )
    before = {host.name: snapshot(host) for host in fleet}

    run = deploy(inventory, timeout=RUN_BOUND)

    assert run.returncode != 0, run.output
    # refused as soon as a host of each group has reached certsync_deploy() (pyinfra runs the
    # hosts' deploy code in no fixed order): those named, in inventory order
    assert re.search(
        r"certsync_canary_group differs .*\('canary' for (mail-1|mail-2|mail-1, mail-2);"
        r" 'early' for mail-3\)",
        run.output,
    ), run.output
    for host in fleet:
        assert snapshot(host) == before[host.name], host.name


def test_with_no_wait_a_failed_canary_fails_the_run_naming_it_without_tracebacks(fleet, tmp_path):
    inventory = failing_canary_inventory(fleet, tmp_path, refused_name=True)

    run = deploy(inventory, "--no-wait", timeout=RUN_BOUND)

    assert run.returncode != 0, run.output
    assert "Traceback" not in run.output, run.output
    assert re.search(r"\[mail-1\].*nocert\.h9\.test: refused", run.output), run.output
    for host in fleet.hosts[1:]:
        assert re.search(rf"\[{host.name}\].*held back: canary host mail-1 failed", run.output)
        assert host.run(f"test -e {CONFIG_FILE}").returncode != 0, host.name


def failing_canary_inventory(fleet: Fleet, tmp_path: Path, refused_name: bool) -> Path:
    canary = fleet["mail-1"]
    # a name Caddy has no certificate for makes the canary fail
    names = [*canary.cert_names, "nocert.h9.test"] if refused_name else list(canary.cert_names)
    return fleet.write_inventory(
        tmp_path / "inventory.py",
        extra_host_data={canary.name: {"certsync_names": names}},
        groups={"canary": [canary.name], "mail": [host.name for host in fleet]},
    )


@pytest.mark.parametrize("failure", ["refused name", "unreachable"])
def test_failing_canary_stops_the_rollout_before_the_other_hosts(fleet, pki, tmp_path, failure):
    canary = fleet["mail-1"]
    inventory = failing_canary_inventory(fleet, tmp_path, refused_name=failure == "refused name")
    others = [host for host in fleet if host is not canary]
    before = {host.name: snapshot(host) for host in others}
    if failure == "unreachable":
        canary.stop_sshd()

    run = deploy(inventory)

    assert run.returncode != 0, run.output
    for host in others:  # never synced: placeholders, same mox, no backup, no config
        assert snapshot(host) == before[host.name], host.name
        assert host.run(f"test -e {CONFIG_FILE}").returncode != 0, host.name
    if failure == "unreachable":
        assert re.search(rf"\[{canary.name}\]\s+Could not connect", run.output), run.output
        return
    assert re.search(
        rf"\[{canary.name}\].*nocert\.h9\.test: refused: .*no certificate", run.output
    ), run.output
    # the canary's good name was still synced; its bad one left nothing behind
    assert_serves(canary, pki, canary.cert_names)
    assert not any(name.startswith("nocert.") for name in cert_dir_names(canary))


@pytest.mark.parametrize("first", ["canary", "others"])
def test_a_failed_canary_holds_back_hosts_that_call_certsync_deploy_elsewhere(
    fleet, tmp_path, first
):
    # the canary host and the others reach certsync_deploy() from two lines of the deploy
    inventory = failing_canary_inventory(fleet, tmp_path, refused_name=True)
    test = '"canary" in host.groups' if first == "canary" else '"canary" not in host.groups'
    user_deploy = tmp_path / "two_places.py"
    user_deploy.write_text(
        "from pyinfra import host\n\nfrom certsync.deploy import certsync_deploy\n\n"
        f"if {test}:\n    certsync_deploy()\nelse:\n    certsync_deploy()\n"
    )

    run = pyinfra("-y", str(inventory), str(user_deploy), timeout=RUN_BOUND)

    assert run.returncode != 0, run.output
    for host in fleet.hosts[1:]:
        assert re.search(rf"\[{host.name}\].*held back: canary host mail-1", run.output)
        assert host.run(f"test -e {CONFIG_FILE}").returncode != 0, host.name


@pytest.mark.parametrize("preview", [False, True], ids=["yes", "preview"])
def test_an_operation_before_certsync_is_seen_by_its_state_read(fleet, inventory, preview):
    assert deploy(inventory).returncode == 0
    user_deploy = inventory.parent / "cron_removed_first.py"
    user_deploy.write_text(
        "from pyinfra.operations import server\n\nfrom certsync.deploy import certsync_deploy\n\n"
        f"server.shell(name='remove the cron job', commands=['rm -f {CRON_FILE}'])\n"
        "certsync_deploy()\n"
    )
    command = [str(inventory), str(user_deploy)]

    # the preview (its read before the removal), then Enter at pyinfra's question; or --yes
    run = pyinfra(*command, answers="\n") if preview else pyinfra("-y", *command)

    assert run.returncode == 0, run.output
    for host in fleet:  # certsync read the host after the removal, and installed it again
        assert host.run(f"test -f {CRON_FILE}").returncode == 0, host.name


def test_certsync_deploy_from_an_operation_is_refused_and_changes_nothing(fleet, inventory):
    # the settings, the canary order and the state reads are made as the deploy's code runs
    user_deploy = inventory.parent / "from_python_call.py"
    user_deploy.write_text(
        "from pyinfra.operations import python\n\nfrom certsync.deploy import certsync_deploy\n\n"
        "python.call(name='certsync from an operation', function=certsync_deploy)\n"
    )
    before = {host.name: snapshot(host) for host in fleet}

    run = pyinfra("-y", str(inventory), str(user_deploy))

    assert run.returncode != 0, run.output
    for host in fleet:
        assert f"{host.name}: certsync_deploy() is called while pyinfra runs operations" in (
            run.output
        ), run.output
        assert snapshot(host) == before[host.name], host.name


def test_hosts_held_back_by_a_failed_canary_are_reported_as_held_back(fleet, tmp_path):
    inventory = failing_canary_inventory(fleet, tmp_path, refused_name=True)

    run = deploy(inventory)

    assert run.returncode != 0, run.output
    for host in fleet.hosts[1:]:
        assert not re.search(rf"\[{host.name}\]\s+No changes", run.output), run.output
        assert re.search(rf"\[{host.name}\].*canary.*mail-1", run.output), run.output


# -- unreachable hosts and config.py's FAIL_PERCENT (50) ------------------------------------------
def test_unreachable_host_fails_alone_and_converges_on_the_next_run(fleet, pki, inventory):
    down = fleet["mail-2"]  # not the canary (mail-1)
    down.stop_sshd()
    before = snapshot(down)

    run = deploy(inventory)

    # 1 of 3 hosts (33%) failed, under FAIL_PERCENT: the run goes on, the others converge
    assert run.returncode != 0, run.output
    assert re.search(rf"\[{down.name}\]\s+Could not connect", run.output), run.output
    for host in fleet:
        if host is not down:
            assert_serves(host, pki, host.cert_names)
    assert snapshot(down) == before

    down.start_sshd()
    pids = {host.name: host.mox_pid() for host in fleet}
    again = deploy(inventory)

    assert again.returncode == 0, again.output
    assert_serves(down, pki, down.cert_names)
    for host in fleet:
        restarted = host.mox_pid() != pids[host.name]
        assert restarted == (host is down), host.name


def two_of_three_down(fleet: Fleet) -> tuple[TestHost, dict[str, Any]]:
    for name in ("mail-2", "mail-3"):
        fleet[name].stop_sshd()
    reachable = fleet["mail-1"]
    return reachable, snapshot(reachable)


def test_fail_percent_stops_the_run_when_two_of_three_hosts_are_unreachable(fleet, inventory):
    # pyinfra's mechanism, given on the command line: 67% > 50% failed at connect, nothing runs.
    reachable, before = two_of_three_down(fleet)

    run = deploy(inventory, "--fail-percent", "50")

    assert run.returncode != 0, run.output
    assert "Over 50% of hosts failed (67%)" in run.output, run.output
    assert snapshot(reachable) == before


def test_config_fail_percent_stops_the_run_when_two_of_three_hosts_are_unreachable(
    fleet, inventory
):
    reachable, before = two_of_three_down(fleet)

    run = deploy(inventory)

    assert run.returncode != 0, run.output
    assert "Over 50% of hosts failed (67%)" in run.output, run.output
    assert snapshot(reachable) == before


def test_without_yes_pyinfra_asks_at_the_first_failure_whatever_fail_percent(
    make_fleet, pki, tmp_path
):
    # 1 of 2 hosts unreachable (50%) is under --fail-percent 90: with --yes the run would go on
    # without a word. Without --yes pyinfra asks; anything but Enter stops the run.
    fleet = make_fleet(2)
    up, down = fleet.hosts
    inventory = fleet.write_inventory(tmp_path / "inventory.py")
    down.stop_sshd()
    before = snapshot(up)
    command = ("--fail-percent", "90", str(inventory), "deploy.py")

    stopped = pyinfra(*command, answers="no\n")

    assert stopped.returncode != 0, stopped.output
    assert "One of more hosts failed to connect, continue?" in stopped.output, stopped.output
    assert snapshot(up) == before

    # Enter at the question, then Enter at "Press enter to execute" after the preview
    went_on = pyinfra(*command, answers="\n\n")

    assert "One of more hosts failed to connect, continue?" in went_on.output, went_on.output
    assert went_on.returncode != 0, went_on.output  # the unreachable host failed
    assert_serves(up, pki, up.cert_names)


# -- one host, one name ----------------------------------------------------------------------------
def test_limit_syncs_only_that_host(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    target, other = fleet["mail-1"], fleet["mail-2"]
    pki.renew(target.cert_names[0])
    pki.renew(other.cert_names[0])  # the other host has a renewal waiting too
    fleet.copy_caddy_storage(pki)
    pid = target.mox_pid()
    stamps = backups(target)
    before = {host.name: snapshot(host) for host in fleet if host is not target}

    run = deploy(inventory, "--limit", target.name)

    assert run.returncode == 0, run.output
    assert_serves(target, pki, target.cert_names)
    assert target.mox_pid() != pid
    assert len(backups(target)) == len(stamps) + 1
    for host in fleet:
        if host is not target:
            assert snapshot(host) == before[host.name], host.name
            assert f"[{host.name}]" not in run.output, run.output
    stale = served_fingerprints(other, other.cert_names[0])
    assert caddy_fingerprint(pki, other.cert_names[0]) not in stale.values()


def test_data_names_syncs_only_that_name(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    host = fleet["mail-3"]
    first, second, third = host.cert_names
    old = {name: sha256_on_host(host, f"{MOX_CERT_DIR}/{name}.crt") for name in host.cert_names}
    pki.renew(first)
    pki.renew(second)
    host.copy_caddy_storage(pki)

    run = deploy(inventory, "--limit", host.name, "--data", f"certsync_names={second}")

    assert run.returncode == 0, run.output
    assert_serves(host, pki, [second, third])
    assert sha256_on_host(host, f"{MOX_CERT_DIR}/{first}.crt") == old[first]
    assert caddy_fingerprint(pki, first) not in served_fingerprints(host, first).values()
    assert sha256_on_host(host, f"{MOX_CERT_DIR}/{third}.crt") == old[third]


def test_data_names_leaves_the_cron_jobs_names_alone(fleet, inventory):
    assert deploy(inventory).returncode == 0
    host = fleet["mail-3"]

    run = deploy(inventory, "--limit", host.name, "--data", f"certsync_names={host.cert_names[1]}")

    assert run.returncode == 0, run.output
    assert host_config(host)["names"] == list(host.cert_names)


# -- a second run only reads -----------------------------------------------------------------------
def test_second_run_runs_only_the_state_command_on_each_host(fleet, inventory):
    assert deploy(inventory).returncode == 0
    before = {host.name: snapshot(host) for host in fleet}
    log_sizes = {host.name: host.sshd_log.stat().st_size for host in fleet}

    run = deploy(inventory, "-vv")

    assert run.returncode == 0, run.output
    commands = commands_by_host(run.output)
    for host in fleet:
        # pyinfra's view (-vv prints every command it runs): one, the fact's
        (command,) = commands[host.name]
        assert FACT_MARKER in command, command
        # sshd's view: one session, a command (no sftp upload, no other command)
        assert sessions_since(host, log_sizes[host.name]) == ["command"], host.name
        assert snapshot(host) == before[host.name], host.name
