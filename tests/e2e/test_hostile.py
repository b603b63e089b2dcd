"""Nothing one host can do stops the fleet (issue 16): a key that would cost OpenSSL minutes, a
host that answers a poisoned state, a host that never answers. Each on the real fleet, with the
real deploy and `certsync status`."""

from __future__ import annotations

import json
import re
import time

from tests.e2e.deployrun import deploy, preview, status
from tests.e2e.faultkit import (
    HOST_RUN_DIR,
    assert_serves_caddys,
    caddy_name_dir,
    host_processes,
    put_mox_files,
)
from tests.fleet.x509util import hostile_dsa_key_pem

# Every control character but newline and tab (pyinfra's colours are removed by deployrun).
CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]")
ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b[1A\x1b[2K"
POISONED_PYTHON = f"{HOST_RUN_DIR}/poisoned-python3"  # private to each host


def test_a_huge_dsa_key_is_refused_at_once_and_the_other_hosts_sync(fleet, pki, inventory):
    """A 15 kB PKCS#8 DSA key (label `PRIVATE KEY`) costs OpenSSL about 10 s of CPU per decoding:
    in Caddy's folder of mail-2's name, and as the mox user's .key of one of mail-3's names."""
    caddy_side, mox_side = fleet["mail-2"], fleet["mail-3"]
    caddy_name = caddy_side.cert_names[0]
    (caddy_name_dir(caddy_side, caddy_name) / f"{caddy_name}.key").write_bytes(
        hostile_dsa_key_pem()
    )
    mox_name = mox_side.cert_names[0]
    put_mox_files(mox_side, mox_name, pki.cert_path(mox_name).read_bytes(), hostile_dsa_key_pem())

    started = time.monotonic()
    run = deploy(inventory)
    took = time.monotonic() - started

    assert run.returncode != 0, run.output  # mail-2's name is refused
    assert re.search(
        rf"\[mail-2\].*{re.escape(caddy_name)}: refused: .*refusing the private key: DSA",
        run.output,
    ), run.output
    assert took < 60, f"the run took {took:.0f} s"  # decoding the two keys: about 20 s of CPU
    for host in (fleet["mail-1"], mox_side):
        for name in host.cert_names:
            assert_serves_caddys(host, pki, name)  # mox's unusable key replaced by Caddy's
    for host in fleet:
        assert host_processes(host, r"python3 -I -S ") == [], host.name  # none left running


def poisoned_state(name: str, not_after: str, key_changes: object) -> dict[str, object]:
    """A state as the host program prints it, with terminal escapes in every string the preview
    and the status report show, and the given certificate expiry and key_changes."""
    cert = {
        "sha256": "ab" * 32,
        "spki_sha256": "cd" * 32,
        "not_before": "2025-01-01T00:00:00Z",
        "not_after": not_after,
        "sans": [name + ESCAPES],
        "serial": "1f",
        "subject": "CN=" + ESCAPES,
        "issuer": "CN=" + ESCAPES,
        "self_signed": False,
    }
    plan = {
        "action": "install",
        "detail": "install" + ESCAPES,
        "caddy": {"issuer": "issuer" + ESCAPES, "cert": cert, "candidates": []},
        "mox": None,
        "key_changes": key_changes,
        "targets": ["127.0.0.1:993" + ESCAPES],
        "served": None,
        "warnings": ["warning" + ESCAPES],
        "mox_conf": {"names_files": True, "detail": "mox.conf" + ESCAPES},
        "files_equal": False,
        "served_all": [
            {"target": "t" + ESCAPES, "port": 993, "error": "error" + ESCAPES},
        ],
    }
    return {
        "certsync_state": 1,
        "host": "h" + ESCAPES,
        "error": None,
        "python": "3.11.2",
        "openssl": True,
        "files": {},
        "warnings": ["host warning" + ESCAPES],
        "mox_dir": {"kind": "dir", "right": True},
        "names": {name: plan},
        "last_runs": {name: {"time": ESCAPES, "status": ESCAPES, "detail": ESCAPES, "ok": False}},
        "watcher": False,
    }


def put_script(host, script: str) -> None:
    path = host.run_dir / POISONED_PYTHON.rsplit("/", 1)[1]  # HOST_RUN_DIR inside the host
    path.write_text(script)
    path.chmod(0o755)


def answer_with(host, state: dict[str, object]) -> None:
    """The host's `certsync_python`: a script that prints `state` whatever it is asked."""
    script = f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(state)}\nEOF\n"
    put_script(host, script)


def test_a_host_answering_a_poisoned_state_fails_alone_and_nothing_reaches_the_terminal(
    fleet, inventory, tmp_path
):
    """mail-2 answers a state that fits the schema, with escapes in its strings (shown made
    printable); mail-3 one with a malformed date and a wrong type (that host's error)."""
    escaped, malformed = fleet["mail-2"], fleet["mail-3"]
    answer_with(escaped, poisoned_state(escaped.cert_names[0], "2031-01-01T00:00:00Z", True))
    answer_with(malformed, poisoned_state(malformed.cert_names[0], "2031-02-30T99:00:00Z", "yes"))
    data = {"certsync_python": POISONED_PYTHON}
    poisoned = fleet.write_inventory(
        tmp_path / "poisoned.py",
        extra_host_data={escaped.name: data, malformed.name: data},
        groups={"canary": ["mail-1"], "mail": [host.name for host in fleet]},
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    shown = preview(poisoned)
    table = status(poisoned, cwd=elsewhere)
    as_json = status(poisoned, "--json", cwd=elsewhere)

    for output in (shown.output, table.stdout + table.stderr, as_json.stdout + as_json.stderr):
        assert not CONTROL_RE.search(output), CONTROL_RE.findall(output)
        assert "Traceback" not in output, output
    assert shown.returncode == 0, shown.output
    assert re.search(r"\[mail-1\] .*install", shown.output), shown.output  # the others go on
    assert re.search(r"\[mail-2\] .*install\\x1b\]52;c;cHduZWQ=\\x07", shown.output), shown.output
    assert re.search(
        r"\[mail-3\] certsync could not read the host's state: certsync state: .*not_after: not a"
        r" time",
        shown.output,
    ), shown.output
    assert table.returncode == 2, table.stdout + table.stderr  # a host could not be checked
    assert re.search(r"^mail-3\s+-\s+-\s+UNKNOWN .*not_after", table.stdout, re.M), table.stdout
    assert re.search(r"^mail-2\s+\S+\s+.*FAIL", table.stdout, re.M), table.stdout
    report = as_json.json()
    assert report["hosts"]["mail-1"]["error"] is None
    assert "not_after: not a time" in report["hosts"]["mail-3"]["error"]
    assert report["hosts"]["mail-2"]["ok"] is False
    assert "\x1b" not in json.dumps(report, ensure_ascii=False)


SYNC_FAILS_SAYING = (
    "#!/bin/sh\n"
    'case " $* " in *" sync --config "*)\n'
    "  printf 'sync says \\033]52;c;cHduZWQ=\\007\\033[2K\\n'\n"
    "  printf 'sync fails \\033[1A\\n' >&2\n"
    "  exit 1;;\n"
    "esac\n"
)


def test_a_failing_sync_is_shown_printable_and_fails_its_host_alone(fleet, pki, tmp_path):
    """mail-2 answers a state that plans an install and says its config file is root's (so
    --diff reads it, and it is not there), and its sync fails printing escapes on stdout and
    stderr: the deploy shows each line made printable, fails mail-2, and syncs the others."""
    bad = fleet["mail-2"]
    state = poisoned_state(bad.cert_names[0], "2031-01-01T00:00:00Z", True)
    config = "/etc/certsync/config.json"
    state["files"] = {
        config: {
            "kind": "file",
            "user": "root",
            "group": "root",
            "mode": "0644",
            "sha256": "00" * 32,
            "writable_by": [],
        }
    }
    put_script(bad, f"{SYNC_FAILS_SAYING}cat <<'EOF'\n{json.dumps(state)}\nEOF\n")
    poisoned = fleet.write_inventory(
        tmp_path / "poisoned.py",
        extra_host_data={bad.name: {"certsync_python": POISONED_PYTHON}},
        groups={"canary": ["mail-1"], "mail": [host.name for host in fleet]},
    )

    run = deploy(poisoned, "--diff")

    assert not CONTROL_RE.search(run.output), CONTROL_RE.findall(run.output)
    assert "Traceback" not in run.output, run.output
    assert run.returncode != 0, run.output
    assert re.search(r"\[mail-2\] sync says \\x1b\]52;c;cHduZWQ=\\x07", run.output), run.output
    assert re.search(r"\[mail-2\] sync fails \\x1b\[1A", run.output), run.output
    assert f"[mail-2] cannot read {config} to show its diff: " in run.output, run.output
    for host in fleet:
        if host is not bad:
            for name in host.cert_names:
                assert_serves_caddys(host, pki, name)


def test_a_host_whose_state_read_never_ends_fails_alone_within_its_deadline(
    fleet, inventory, tmp_path
):
    """mail-3's python never answers: the preview names it after certsync_state_timeout_seconds,
    the other hosts are shown, and the host's command is ended on the host too."""
    stuck = fleet["mail-3"]
    put_script(stuck, "#!/bin/sh\nexec sleep 3600\n")
    slow = fleet.write_inventory(
        tmp_path / "slow.py",
        extra_host_data={
            stuck.name: {"certsync_python": POISONED_PYTHON, "certsync_state_timeout_seconds": 5}
        },
        groups={"canary": ["mail-1"], "mail": [host.name for host in fleet]},
    )

    started = time.monotonic()
    shown = preview(slow)
    took = time.monotonic() - started

    assert took < 60, f"the preview took {took:.0f} s"
    assert re.search(r"\[mail-1\] .*install", shown.output), shown.output
    assert re.search(r"\[mail-3\] certsync could not read the host's state", shown.output), (
        shown.output
    )
    assert host_processes(stuck, r"sleep 3600") == []
