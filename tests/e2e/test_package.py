"""certsync added to a deploy of one's own: a folder elsewhere with its own deploy.py (which does
something else too) and its own inventory with no certsync group data, certsync installed from the
built wheel into a fresh virtual environment, run with that environment's pyinfra against the
test fleet. And the state fact from the command line, as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.e2e.deployrun import pyinfra
from tests.e2e.faultkit import CONFIG_FILE, CRON_FILE, PROGRAM, assert_serves_caddys, mox_files
from tests.fleet import TestHost
from tests.fleet.hostspec import ADMIN_HOME
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
