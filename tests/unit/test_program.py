"""The host program as the hosts get it: a zipapp built the same byte for byte, run by the
system's python3 isolated, and the `python3 -c` bootstrap that runs `state` from memory."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from certsync import program
from certsync.facts import CertsyncState
from certsync.host import cli
from certsync.hostdata import settings_from_data
from tests.fleet.x509util import self_signed
from tests.unit.certs import DAY, LETSENCRYPT, NOW, key_of, leaked_secrets, write_caddy
from tests.unit.fakemox import write_mox_files
from tests.unit.hostrun import HOST_PYTHON, ISOLATED, run_host_program, write_config

NAME = "mail.example.com"
HOST_SOURCES = Path(program.__file__).parent / "host"
MAX_ARG_STRLEN = 131072  # Linux: the longest single argument of a command


def build_in_a_new_interpreter(hash_seed: str) -> str:
    code = "from certsync import program; print(program.zipapp_sha256())"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=HOST_SOURCES.parents[1],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_zipapp_is_the_same_byte_for_byte_across_builds():
    first = program.zipapp()
    program.zipapp.cache_clear()
    try:
        assert program.zipapp() == first
    finally:
        program.zipapp.cache_clear()
    digest = hashlib.sha256(first).hexdigest()
    assert build_in_a_new_interpreter("1") == build_in_a_new_interpreter("2") == digest


def test_the_zipapp_holds_every_host_module_and_nothing_else():
    with zipfile.ZipFile(io.BytesIO(program.zipapp())) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    modules = {
        f"{program.HOST_PACKAGE}/{path.name}": path.read_bytes()
        for path in HOST_SOURCES.glob("*.py")
        if path.name != "__main__.py"
    }
    assert members == {"__main__.py": program.main_source().encode(), **modules}


def test_the_zipapp_runs_isolated_with_the_system_python(pyz):
    result = run_host_program(pyz, "--help")
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:] if line[2:3] != " "] == [
        "sync",
        "state",
        "watch",
        "FILE",
    ]
    assert run_host_program(pyz, "frobnicate").returncode == 2


def fact_command(all_ports: bool = False, carry: bool = True) -> list[str]:
    """The state read's command as the host's shell gets it (the real fact's, unmasked)."""
    settings = settings_from_data("mail-1", {"certsync_names": [NAME]})
    fact = CertsyncState()
    raw = fact.command(settings=settings, all_ports=all_ports, carry=carry).get_raw_value()
    return shlex.split(raw)


def test_the_state_read_command_stays_far_below_the_kernels_limits():
    """Linux refuses a command with an argument past 128 KiB ("Argument list too long"), or all
    of them past a quarter of the stack (2 MiB by default)."""
    command = fact_command(all_ports=True)
    longest = max(len(arg.encode()) for arg in command)
    assert longest <= 100 * 1024 < MAX_ARG_STRLEN
    assert sum(len(arg.encode()) + 1 for arg in command) <= 1024 * 1024
    assert "".join(program.carried_parts()) in "".join(command)


def test_the_bootstrap_runs_the_program_from_its_parts(monkeypatch):
    """Cut in many parts, the carried program still runs (the unpacked folder is missing)."""
    monkeypatch.setattr(program, "PART_CHARS", 1000)
    program.carried_parts.cache_clear()
    try:
        command = fact_command()
    finally:
        program.carried_parts.cache_clear()
    count = command.index(program.BOOTSTRAP) + 3
    program_args = count + 1 + int(command[count])
    parts = command[count + 1 : program_args]
    assert len(parts) > 50 and all(len(part) <= 1000 for part in parts)
    assert base64.b64decode("".join(parts)) == program.carried()
    assert command[program_args] == "state"

    assert command[0] == "exec"  # (a shell's builtin)
    result = subprocess.run(
        [*command[1:program_args], "--help"], capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: certsync.pyz COMMAND [OPTIONS]")


TYPE_NAMES = {"int", "str", "bytes", "float", "bool", "list", "dict", "tuple", "set", "Any"}


def _type_like(node: ast.expr) -> bool:
    """None, a builtin type, a class name (CamelCase) or a generic such as list[str]."""
    if isinstance(node, ast.Constant):
        return node.value is None
    if isinstance(node, ast.Name):
        return node.id in TYPE_NAMES or (node.id[:1].isupper() and not node.id.isupper())
    return isinstance(node, ast.Subscript)


def runtime_unions(tree: ast.AST) -> list[int]:
    """Lines with `X | None` or `int | str` evaluated at run time (outside annotations): a
    TypeError on Python 3.9."""
    annotations = {
        id(node.annotation)
        for node in ast.walk(tree)
        if isinstance(node, (ast.AnnAssign, ast.arg)) and node.annotation is not None
    } | {id(node.returns) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    found: list[int] = []

    def visit(node: ast.AST) -> None:
        if id(node) in annotations:
            return
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.BitOr)
            and (_type_like(node.left) or _type_like(node.right))
        ):
            found.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


@pytest.mark.parametrize("module", sorted(p.name for p in HOST_SOURCES.glob("*.py")))
def test_every_host_module_is_python_3_9(module):
    """The hosts' python3 may be 3.9: no `match` or other 3.10 syntax, no `X | Y` at run time
    (annotations stay strings under `from __future__ import annotations`)."""
    source = (HOST_SOURCES / module).read_text()
    tree = ast.parse(source, feature_version=(3, 9))  # a SyntaxError for 3.10 syntax
    assert runtime_unions(tree) == []
    if any(isinstance(node, (ast.AnnAssign, ast.FunctionDef)) for node in ast.walk(tree)):
        assert "from __future__ import annotations" in source


@pytest.mark.parametrize("code", ["BOOTSTRAP", "INSTALLED", "INSTALLED_SOURCE"])
def test_the_state_read_commands_are_python_3_9_and_one_line(code):
    source = getattr(program, code)
    assert runtime_unions(ast.parse(source, feature_version=(3, 9))) == []
    assert "\n" not in source or code == "INSTALLED_SOURCE"


def test_the_3_9_check_finds_match_and_runtime_unions():
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 9))
    source = [
        "X = int | None",
        "isinstance(y, str | Pair)",
        "def f(a: int | None) -> str | None: ...",
        "flags = os.O_RDONLY | 1 | FLAG",
    ]
    assert runtime_unions(ast.parse("\n".join(source))) == [1, 2]


def test_state_through_the_bootstrap_prints_json_without_key_bytes(
    ca, fake_mox, mox_ids, pyz, tmp_path
):
    """As the deploy reads a host: `python3 -I -S -c BOOTSTRAP <app> <tree> <N> <N parts> state
    ...`, after a sync (run by the zipapp) replaced a placeholder. Neither key shows in what either
    prints, nor in the log."""
    mox, config = fake_mox()
    caddys = ca.issue([NAME], key=key_of("rsa"), not_before=NOW - DAY)
    write_caddy(tmp_path / "caddy", LETSENCRYPT, NAME, caddys.cert_pem, caddys.key_pem)
    placeholder = self_signed([NAME], NOW, NOW + 30 * DAY)
    cert_dir = tmp_path / "mox" / "certs"
    write_mox_files(cert_dir, NAME, placeholder.cert_pem, placeholder.key_pem, mox_ids)
    mox.start()
    synced = run_host_program(pyz, "sync", "--config", str(write_config(config, tmp_path / "c")))
    assert synced.returncode == 0, synced.stderr

    read = subprocess.run(
        [HOST_PYTHON, *ISOLATED, "-c", program.BOOTSTRAP]
        + program.bootstrap_arguments(str(tmp_path / "no-app"))
        + ["state", "--settings", json.dumps(config.to_json()), "--all-ports"],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert read.returncode == 0, read.stderr
    entry = json.loads(read.stdout)["names"][NAME]
    assert entry["action"] == "in sync"
    assert entry["served_all"] == [
        {
            "target": f"127.0.0.1:{mox.port}",
            "port": mox.port,
            "sha256": caddys.sha256,
            "spki_sha256": caddys.spki_sha256,
            "not_after": f"{caddys.cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
            "error": None,
        }
    ]
    log = Path(config.log_file).read_text()
    assert f"{NAME}: installed: " in log
    everything = "\n".join([synced.stdout, synced.stderr, read.stdout, read.stderr, log])
    assert leaked_secrets(everything, caddys.key_pem, placeholder.key_pem) == []


@pytest.mark.parametrize(
    "args",
    [["state"], ["state", "--settings"], ["state", "--settings", "{}", "--frobnicate"]],
)
def test_a_state_command_without_its_settings_or_with_another_flag_is_a_usage_error(pyz, args):
    result = run_host_program(pyz, *args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: certsync.pyz COMMAND [OPTIONS]")


def test_the_command_line_takes_repeated_names_and_flags():
    assert cli.parse(["sync", "--name", "a.example", "--force", "--name", "b.example"]) == (
        "sync",
        {"config": "/etc/certsync/config.json", "name": ["a.example", "b.example"], "force": True},
    )
    for wrong in (["sync", "--name"], ["watch", "--force"], ["sync", "extra"], []):
        with pytest.raises(cli.Usage):
            cli.parse(wrong)
