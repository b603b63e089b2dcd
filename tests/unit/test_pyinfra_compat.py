"""certsync with the installed pyinfra: a version certsync supports, the internals
certsync/pyinfra_compat.py wraps still there, the state fact's command built, a setting refused.
CHECKS also runs with the lowest and the highest pyinfra pyproject.toml declares, each in its own
virtual environment (tests/test_package.py)."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from certsync import pyinfra_compat
from tests.packaging import declared_dependencies

CHECKS = """
import os
import subprocess
import sys
from importlib.metadata import version

import gevent
from pyinfra.api import Config, Inventory, State
from pyinfra.api.operation import OperationMeta, add_op
from pyinfra.context import ctx_state
from pyinfra.operations import server

import contextlib
import importlib

from pyinfra.api import util

from certsync import pyinfra_compat as compat
from certsync.facts import CertsyncState
from certsync.hostdata import SettingsError, settings_from_data

assert compat.unsupported() is None, compat.unsupported()
# what compat.cheaper_operation_calls replaces
operation = importlib.import_module("pyinfra.api.operation")
assert operation.get_operation_order_from_stack is util.get_operation_order_from_stack
from pyinfra.api import arguments as pyinfra_arguments
for module in (operation, importlib.import_module("pyinfra.api.deploy")):
    assert module.pop_global_arguments is pyinfra_arguments.pop_global_arguments
assert compat.operation_hash(OperationMeta("op-hash", False)) == "op-hash"
assert compat.cli_state() is None  # no command line ran in this process
with ctx_state.use(State()):
    assert type(compat.current_state()) is State
assert compat.has_exclude() == (compat.pyinfra_version() >= (3, 10))
# in a process of its own: pyinfra_cli patches the standard library for gevent when imported
cli_params = (
    "from certsync.pyinfra_compat import cli_params;"
    "print(cli_params(['inventory.py', 'deploy.py', '--serial'])['serial'], end=' ');"
    "print(cli_params(['inventory.py', 'deploy.py'])['no_wait'])"
)
where = os.path.dirname(os.path.dirname(compat.__file__))
env = {**os.environ, "PYTHONPATH": os.pathsep.join([where, os.environ.get("PYTHONPATH", "")])}
parsed = subprocess.run(
    [sys.executable, "-c", cli_params], env=env, capture_output=True, text=True, timeout=60
)
assert parsed.stdout.split() == ["True", "False"], (parsed.stdout, parsed.stderr)

inventory = Inventory((["mail-1"], {}))
state = State(inventory, Config())
host = inventory.get_host("mail-1")
host.current_op_global_arguments = {"_sudo": True, "_sudo_user": "mox", "_ignore_errors": True}
arguments = compat.connector_arguments(host)
assert arguments["_sudo"] is True and arguments["_sudo_user"] == "mox", arguments
assert "_ignore_errors" not in arguments and arguments["_timeout"] is None, arguments
assert compat.current_operation_hash(host) is None  # outside an operation
# in a @deploy function, outside an operation: what pyinfra's popping gives there
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS, pop_global_arguments
host.current_op_global_arguments = None
host.data._use_sudo_login = True
deploy_kwargs, _ = pop_global_arguments(state, host, {"_sudo": True, "_env": {"A": "1"}})
with host.deploy("a deploy", deploy_kwargs, None):
    popped, _ = pop_global_arguments(state, host, {})
    wanted = {k: v for k, v in popped.items() if k in CONNECTOR_ARGUMENT_KEYS}
    in_deploy = compat.connector_arguments(host)
    assert in_deploy == wanted and in_deploy["_sudo"] and in_deploy["_use_sudo_login"], in_deploy
    assert in_deploy["_env"]["A"] == "1", in_deploy
del host.data.override_datas["_use_sudo_login"]
# popping with the data merged once: pyinfra's answer, with every layer of data in play
layered = Inventory(
    (["mail-2"], {"_sudo_user": "from-all", "_shell_executable": "from-all"}),
    canary=(["mail-2"], {"_sudo": True, "_success_exit_codes": [0, 3], "_chdir": "/group"}),
    mail=(["mail-2"], {"_chdir": "/mail-group", "_su_user": None}),
)
layered_state = State(layered, Config(SUDO_USER="from-config", ENV={"FROM_CONFIG": "1"}))
other = layered.get_host("mail-2")
other.data._timeout = 7
popping = compat._popping_with_data_merged_once(pop_global_arguments)
outer, _ = pop_global_arguments(layered_state, other, {"_if": lambda: True, "_env": {"B": "2"}})
contexts = {
    "no deploy": lambda: contextlib.nullcontext(),
    "a deploy's data": lambda: other.deploy("a deploy", None, {"_retries": 2}),
    "a deploy's arguments": lambda: other.deploy("a deploy", outer, {"_chdir": "/deploy"}),
    "host.when": lambda: other.when(lambda: True),
    "host.arguments": lambda: other.arguments(_sudo_user="from-arguments", _env={"C": "3"}),
}
for given in ({}, {"_sudo": False, "_timeout": 9, "_env": {"D": "4"}}):
    for where, context in contexts.items():
        with context():
            ours, ours_keys = popping(layered_state, other, dict(given))
            theirs, their_keys = pop_global_arguments(layered_state, other, dict(given))
            in_context = compat.connector_arguments(other)  # outside an operation
        assert (ours, ours_keys) == (theirs, their_keys), (where, ours, theirs)
        if not given:
            assert in_context == {k: theirs[k] for k in CONNECTOR_ARGUMENT_KEYS}, where
        assert ours["_chdir"] == "/mail-group" and ours["_env"]["FROM_CONFIG"] == "1", ours
        assert ours["_timeout"] == given.get("_timeout", 7), ours
        # each call its own copy of a list in the data, as pyinfra's HostData gives it
        ours["_success_exit_codes"].append(9)
        assert other.data._success_exit_codes == [0, 3]
# a layer that is a mapping of its own (it may answer a key it does not list): pyinfra's data
from collections import defaultdict
kind = type(other.data)
odd = kind(other, lambda: defaultdict(lambda: "from-missing"))
assert compat._data_merged_once(odd) is odd
assert type(compat._data_merged_once(other.data)) is not kind
host.data.certsync_names = ["mail.example.com"]  # as a deploy's code assigns it
assert compat.assigned_data(host) == {"certsync_names": ["mail.example.com"]}

state.activate_host(host)
unchanged = add_op(state, server.shell, [], _ignore_errors=True)[host]
op_hash = compat.operation_hash(unchanged)
assert compat.ignores_errors(state, host, op_hash) is True
counts = state.get_meta_for_host(host)
assert (counts.ops, counts.ops_no_change, list(state.ops[host])) == (1, 1, [op_hash])
compat.drop_operation(state, host, unchanged)
assert (counts.ops, counts.ops_no_change, dict(state.ops[host])) == (0, 0, {})
assert state.get_op_order() == [op_hash]  # still in the order: `Skipped` on this host
changing = add_op(state, server.shell, ["true"])[host]
assert compat.ignores_errors(state, host, compat.operation_hash(changing)) is False
# the hash of the operation pyinfra evaluates now, as its callbacks name it
seen_hash = []
def remember():
    seen_hash.append(compat.current_operation_hash(host))
    yield from ()
from pyinfra.api import operation as make_operation
remembered = add_op(state, make_operation()(remember))[host]
assert seen_hash == [compat.operation_hash(remembered)], seen_hash


class Handled(Exception):
    pass


def fails(tag):
    raise Handled(tag)


seen = []
compat.on_greenlet_error(state, lambda context, error: seen.append(context.args) or True)
gevent.spawn(fails, "greenlet of mail-1").join()
assert seen == [("greenlet of mail-1",)], seen

settings = settings_from_data("mail-1", {"certsync_names": ["mail.example.com"]})
fact = CertsyncState()
command = fact.command(settings=settings, all_ports=True, carry=True).get_masked_value()
assert "<certsync host program, " in command and " bytes>" in command, command
assert "state --settings" in command and "--all-ports" in command, command
raw = fact.command(settings=settings, carry=True).get_raw_value()
assert len(raw) > len(command) and "<certsync host program" not in raw
installed = fact.command(settings=settings).get_masked_value()
assert "state --settings" in installed and "<certsync host program" not in installed
try:
    settings_from_data("mail-1", {"certsync_names": ["a.example"], "certsync_verify_ports": [0]})
except SettingsError as error:
    assert str(error).startswith("mail-1: certsync_verify_ports: 0"), error
else:
    raise AssertionError("port 0 accepted")
print(version("pyinfra"))
"""


def test_the_internals_certsync_wraps_work_with_this_pyinfra(capsys):
    exec(CHECKS, {})
    assert capsys.readouterr().out.strip()


def test_the_supported_range_is_the_declared_one():
    (declared,) = [dep for dep in declared_dependencies() if dep.startswith("pyinfra")]
    bounds = re.fullmatch(r"pyinfra>=([0-9.]+),<([0-9.]+)", declared)
    assert bounds, declared
    lowest, below = (tuple(int(part) for part in bound.split(".")) for bound in bounds.groups())
    assert (lowest, below) == (pyinfra_compat.LOWEST, pyinfra_compat.BELOW)


def test_the_cheaper_operation_order_is_pyinfras_own():
    """Operations are ordered (and named: their hash) by pyinfra's line numbers of the call
    stack; certsync's cheaper reading of the stack gives the very same numbers."""
    from types import SimpleNamespace

    from pyinfra.api import util

    from certsync.pyinfra_compat import _operation_order

    def order(function: Callable[[Any], list[int]], state: object) -> list[int]:
        return function(state)  # the same caller's frame for both (in pyinfra: pyinfra's own)

    for deploy_file in (__file__, None):
        state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=3)
        both = [order(f, state) for f in (_operation_order, util.get_operation_order_from_stack)]
        assert both[0] == both[1]
        assert len(both[0]) > 1


def test_global_arguments_are_pyinfras_own_after_caching():
    from pyinfra.api import arguments

    from certsync.pyinfra_compat import cheaper_operation_calls

    before = arguments.all_global_arguments()
    cheaper_operation_calls()
    for name in ("pyinfra.api.operation", "pyinfra.api.deploy"):
        popping = importlib.import_module(name).pop_global_arguments
        assert popping.__wrapped__ is arguments.pop_global_arguments, name
    assert importlib.import_module("pyinfra.api.operation").get_operation_order_from_stack is (
        pyinfra_compat._operation_order
    )
    first = arguments.all_global_arguments()
    first.append(("mutated", str))  # a caller's change to its list stays its own
    assert arguments.all_global_arguments() == before
