"""Reading the certsync state of an inventory's hosts outside a deploy (for `certsync status`):
the inventory, its group data and the config.py beside it (status runs from any folder, where
pyinfra's CLI reads config.py from the folder it runs in), then per host one connection and
one read-only command, certsync's state fact, run as the deploy runs it (stateread: `_sudo` and
the reason when it fails).
An unreachable host or a failed read is that host's alone, with its reason."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import gevent
from pyinfra.api import Config, Host, Inventory, State
from pyinfra.api.exceptions import ConnectError, PyinfraError
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

from certsync.host.errors import printable
from certsync.hostdata import HostSettings
from certsync.stateread import read_state

CONFIG_FILE = "config.py"  # pyinfra's, beside the inventory: SUDO and the like apply here too


class UsageError(Exception):
    """The inventory or the limit cannot be used; the message says why."""


def load_state(inventory_file: str, limits: Sequence[str]) -> State:
    """A pyinfra State of the inventory (with the group data beside it, and its config.py) that
    targets the hosts and groups of `limits` (all when empty)."""
    from pyinfra_cli.inventory import make_inventory
    from pyinfra_cli.util import exec_file

    path = Path(inventory_file)
    if not path.is_file():
        raise UsageError(f"{inventory_file}: no such inventory file")
    folder = str(path.resolve().parent)
    state = State()
    config = Config()
    with ctx_state.use(state), ctx_config.use(config):
        if (Path(folder) / CONFIG_FILE).is_file():
            exec_file(str(Path(folder) / CONFIG_FILE))
        inventory = make_inventory(str(path.resolve()), cwd=folder)
    limit = _limit(inventory, limits) if limits else None
    state.init(inventory, config, initial_limit=limit)
    return state


def _limit(inventory: Inventory, patterns: Sequence[str]) -> list[Host]:
    """The hosts of each group or host name pattern, as pyinfra's --limit selects them."""
    hosts: list[Host] = []
    for pattern in patterns:
        try:
            found = list(inventory.get_group(pattern))
        except PyinfraError:  # NoGroupError
            found = [host for host in inventory if fnmatch(host.name, pattern)]
        if not found:
            raise UsageError(f"--limit {pattern}: no such host or group in the inventory")
        hosts += [host for host in found if host not in hosts]
    return hosts


def read_host(state: State, host: Host, settings: HostSettings) -> dict[str, Any] | str:
    """The host's state, every verify port probed, or why it could not be read."""
    with ctx_state.use(state), ctx_host.use(host), ctx_inventory.use(state.inventory):
        try:
            host.connect(show_errors=False, raise_exceptions=True)
        except ConnectError as error:
            return f"unreachable: {printable(str(error))}"
        try:
            return read_state(host, settings, settings.installed_files, False, all_ports=True)
        finally:
            host.disconnect()


def read_hosts(state: State, settings: dict[str, HostSettings]) -> dict[str, dict[str, Any] | str]:
    """Every host's state (or why not), read in parallel, in inventory order."""
    hosts = [host for host in state.inventory if host.name in settings]
    jobs = {
        host.name: state.pool.spawn(read_host, state, host, settings[host.name]) for host in hosts
    }
    gevent.joinall(list(jobs.values()))
    return {name: job.get() for name, job in jobs.items()}
