"""certsync added to a deploy of one's own: a folder elsewhere with its own deploy.py (which does
something else too) and its own inventory with no certsync group data, certsync installed from the
built wheel into a fresh virtual environment, run with that environment's pyinfra against the
test fleet. And the state fact from the command line, as JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.e2e.deployrun import DeployRun, pyinfra
from tests.e2e.faultkit import CONFIG_FILE, CRON_FILE, PROGRAM, assert_serves_caddys, mox_files
from tests.fleet import HostSpec, TestHost
from tests.fleet.hostspec import ADMIN_HOME, DEBIAN_CADDY_DATA_DIR, MOX_BINARY
from tests.fleet.x509util import sha256_fingerprint

NOTE = f"{ADMIN_HOME}/NOTE"
NOTE_TEXT = "mox's certificates are Caddy's, kept equal by certsync.\n"
USER_DEPLOY = f'''\
"""Our mail servers: a note for the admins, and mox's certificates from Caddy."""

from io import StringIO

from pyinfra.operations import files

from certsync.deploy import certsync_deploy

files.put(name="Note for the admins", src=StringIO({NOTE_TEXT!r}), dest={NOTE!r})
certsync_deploy({{arguments}})
'''
LEFT_ALONE = "certsync: no certificate names (certsync_names): left alone"
STATE_FACT = "certsync.facts.CertsyncState"
OWN_CADDY_DATA_DIR = "/srv/caddy"


def user_folder(
    tmp_path: Path, hosts: Mapping[TestHost, Mapping[str, Any]], arguments: str = ""
) -> Path:
    """deploy.py (calling certsync_deploy(arguments)) and inventory.py: each host with its
    connection data (and DNS) and the given data, nothing else: no group_data, no config.py."""
    folder = tmp_path / "our-deploy"
    folder.mkdir()
    (folder / "deploy.py").write_text(USER_DEPLOY.format(arguments=arguments))
    entries = []
    for host, data in hosts.items():
        # (and certsync_dane: a host of the fleet without DNS servers has nothing to ask)
        connection = {
            key: value
            for key, value in host.inventory_data().items()
            if not key.startswith("certsync_") or key == "certsync_dane"
        }
        entries.append(f"    ({host.name!r}, {{**{connection!r}, **{dict(data)!r}}}),")
    (folder / "inventory.py").write_text("mail_servers = [\n" + "\n".join(entries) + "\n]\n")
    return folder


def host_file(host: TestHost, path: str) -> str | None:
    result = host.run(f"cat {path}")
    return result.stdout if result.returncode == 0 else None


def test_a_deploy_of_ones_own_adds_certsync_with_one_call(make_fleet, pki, certsync_venv, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    folder = user_folder(
        tmp_path, {host: {}}, f"names=[{name!r}], restart_command={host.restart_command!r}"
    )

    run = pyinfra("-y", "inventory.py", "deploy.py", cwd=folder, python=certsync_venv)

    assert run.returncode == 0, run.output
    assert host_file(host, NOTE) == NOTE_TEXT
    assert_serves_caddys(host, pki, name)
    config = json.loads(host_file(host, CONFIG_FILE) or "{}")
    assert (config["names"], config["restart_command"]) == ([name], host.restart_command)
    assert config["backups_keep"] == 5  # certsync's own default: nothing in the user's data


def test_host_data_alone_syncs_the_hosts_with_names_and_leaves_the_others_alone(
    make_fleet, pki, certsync_venv, tmp_path
):
    fleet = make_fleet(2)
    mail, web = fleet.hosts  # web: a host of the same inventory that does not serve mail
    name = mail.cert_names[0]
    folder = user_folder(
        tmp_path,
        {
            mail: {"certsync_names": [name], "certsync_restart_command": mail.restart_command},
            web: {},
        },
    )
    web_before = (mox_files(web), web.mox_pid())

    run = pyinfra("-y", "inventory.py", "deploy.py", cwd=folder, python=certsync_venv)

    assert run.returncode == 0, run.output
    assert_serves_caddys(mail, pki, name)
    assert f"[{web.name}] {LEFT_ALONE}" in run.output, run.output
    assert (mox_files(web), web.mox_pid()) == web_before
    for path in (PROGRAM, CONFIG_FILE, CRON_FILE):
        assert host_file(web, path) is None, path
    for host in fleet:  # the user's own operation ran everywhere
        assert host_file(host, NOTE) == NOTE_TEXT, host.name


def test_the_state_fact_prints_each_hosts_state_as_json(make_fleet, pki, certsync_venv, tmp_path):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    folder = user_folder(tmp_path, {host: {"certsync_names": [name]}})
    before = mox_files(host)

    as_json = pyinfra(
        "--json", "inventory.py", "fact", STATE_FACT, cwd=folder, python=certsync_venv
    )
    plain = pyinfra("inventory.py", "fact", STATE_FACT, cwd=folder, python=certsync_venv)

    assert as_json.returncode == 0, as_json.output
    state = json.loads(as_json.stdout)[STATE_FACT][host.name]
    plan = state["names"][name]
    assert plan["action"] == "install", plan  # mox has its placeholder: Caddy's would replace it
    assert plan["caddy"]["cert"]["sha256"] == sha256_fingerprint(pki.certificate(name))
    assert plan["mox"]["cert"]["self_signed"] is True
    assert plain.returncode == 0, plain.output
    shown = plain.output.split(f"--> Fact data for: {STATE_FACT}\n", 1)[1]
    assert json.loads(shown[: shown.index("\n}\n") + 2]) == {host.name: state}
    assert mox_files(host) == before  # a read: nothing changed
    # a setting certsync refuses: the state says so, naming host and setting, no traceback
    (tmp_path / "wrong").mkdir()
    data = {"certsync_names": [name], "certsync_verify_ports": [99999]}
    wrong = user_folder(tmp_path / "wrong", {host: data})
    refused = pyinfra("--json", "inventory.py", "fact", STATE_FACT, cwd=wrong, python=certsync_venv)
    assert refused.returncode == 0, refused.output
    error = json.loads(refused.stdout)[STATE_FACT][host.name]["error"]
    assert error.startswith(f"{host.name}: certsync_verify_ports: 99999"), error
    assert "Traceback" not in refused.output


def certsync_status(python: Path, *args: str, cwd: Path) -> DeployRun:
    """The installed `certsync status ARGS`, started in the user's folder."""
    result = subprocess.run(
        [str(python.parent / "certsync"), "status", *args],
        cwd=cwd,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return DeployRun(result.returncode, result.stderr, result.stdout)


def host_verdicts(run: DeployRun) -> dict[str, dict[str, list[str]]]:
    """Per host and name of a `--json` report, the checks that failed."""
    assert run.stdout, run.output
    return {
        host: {
            name: [check["check"] for check in entry["checks"] if not check["ok"]]
            for name, entry in report["names"].items()
        }
        for host, report in json.loads(run.stdout)["hosts"].items()
    }


def test_status_reads_what_the_users_deploy_reads(make_fleet, pki, certsync_venv, tmp_path):
    """A deploy folder of one's own: Caddy's data dir from certsync_deploy(caddy_data_dir=...)
    for mail-1, from the group data beside the deploy for mail-2 (data wins over the deploy's
    defaults); status, run in that folder, reads the same and runs nothing of the deploy."""
    fleet = make_fleet(
        [
            HostSpec(index=1, cert_names=("mail.h1.test",), caddy_data_dir=OWN_CADDY_DATA_DIR),
            HostSpec(index=2, cert_names=("mail.h2.test",), caddy_data_dir=DEBIAN_CADDY_DATA_DIR),
        ]
    )
    first, second = fleet.hosts
    hosts = {
        host: {
            "certsync_names": list(host.cert_names),
            "certsync_restart_command": host.restart_command,
        }
        for host in fleet
    }
    folder = user_folder(tmp_path, hosts, f"caddy_data_dir={OWN_CADDY_DATA_DIR!r}")
    with (folder / "inventory.py").open("a") as inventory:
        inventory.write("debian_caddy = [mail_servers[1]]\n")
    (folder / "group_data").mkdir()
    (folder / "group_data" / "all.py").write_text(f"certsync_mox_binary = {MOX_BINARY!r}\n")
    (folder / "group_data" / "debian_caddy.py").write_text(
        f"certsync_caddy_data_dir = {DEBIAN_CADDY_DATA_DIR!r}\n"
    )
    (folder / "plain.py").write_text(
        "from certsync.deploy import certsync_deploy\n\ncertsync_deploy()\n"
    )
    run = pyinfra("-y", "inventory.py", "deploy.py", cwd=folder, python=certsync_venv)
    assert run.returncode == 0, run.output
    for host in fleet:
        assert_serves_caddys(host, pki, host.cert_names[0])
        host.run(f"rm {NOTE}", check=True)  # the deploy's own operation: status must not run it
    all_ok: dict[str, dict[str, list[str]]] = {h.name: {h.cert_names[0]: []} for h in fleet}

    with_deploy = certsync_status(certsync_venv, "inventory.py", "deploy.py", "--json", cwd=folder)
    working_folders = certsync_status(certsync_venv, "inventory.py", cwd=folder)  # its deploy.py
    without_defaults = certsync_status(
        certsync_venv, "inventory.py", "plain.py", "--json", cwd=folder
    )
    data_wins = certsync_status(
        certsync_venv, "inventory.py", "deploy.py", "--json", "--limit", second.name,
        "--data", "certsync_caddy_data_dir=/srv/nowhere", cwd=folder,
    )  # fmt: skip

    assert with_deploy.returncode == 0, with_deploy.output
    assert host_verdicts(with_deploy) == all_ok
    details = {
        check["check"]: check["detail"]
        for check in json.loads(with_deploy.stdout)["hosts"][first.name]["names"]["mail.h1.test"][
            "checks"
        ]
    }
    fingerprint = sha256_fingerprint(pki.certificate("mail.h1.test"))[:16]
    assert f"sha256={fingerprint}" in details["caddy"], details
    assert working_folders.returncode == 0, working_folders.output
    assert working_folders.output == ""  # the report alone: none of pyinfra's progress lines
    for host in fleet:
        assert re.search(
            rf"^{host.name}\s+{re.escape(host.cert_names[0])}\s.*\sok$",
            working_folders.stdout,
            re.M,
        )
    # without the deploy's default, mail-1's Caddy is looked for where it is not
    assert without_defaults.returncode == 1, without_defaults.output
    verdicts = host_verdicts(without_defaults)
    assert "caddy" in verdicts[first.name]["mail.h1.test"], verdicts
    assert verdicts[second.name] == {"mail.h2.test": []}
    assert data_wins.returncode == 1, data_wins.output
    assert list(host_verdicts(data_wins)) == [second.name]
    assert "caddy" in host_verdicts(data_wins)[second.name]["mail.h2.test"]
    for host in fleet:  # nothing of the deploy ran
        assert host_file(host, NOTE) is None, host.name


def test_deploy_and_status_with_the_lowest_and_the_highest_pyinfra(
    certsync_with_pyinfra, make_fleet, pki, tmp_path
):
    fleet = make_fleet(1)
    host = fleet.hosts[0]
    name = host.cert_names[0]
    fleet.write_inventory(tmp_path / "inventory.py")
    (tmp_path / "deploy.py").write_text(
        "from certsync.deploy import certsync_deploy\n\ncertsync_deploy()\n"
    )

    run = certsync_with_pyinfra.run(
        "-m", "pyinfra", "-y", "inventory.py", "deploy.py", cwd=tmp_path
    )
    report = certsync_with_pyinfra.run(
        "-m", "certsync.cli", "status", "inventory.py", "--json", cwd=tmp_path
    )

    assert run.returncode == 0, run.stdout + run.stderr
    assert_serves_caddys(host, pki, name)
    assert report.returncode == 0, report.stdout + report.stderr
    assert host_verdicts(DeployRun(0, report.stderr, report.stdout)) == {host.name: {name: []}}
