"""certsync as a pyinfra deploy: add it to your own with one call.

from certsync.deploy import certsync_deploy
certsync_deploy()                               # every setting from host and group data
certsync_deploy(caddy_data_dir="/srv/caddy")    # defaults of your own (data still wins)
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from pyinfra import host, logger, state
from pyinfra.api import State, deploy

from certsync import statusrun
from certsync.hostdata import HostSettings, settings_of_hosts, targeted_hosts
from certsync.operations import synced
from certsync.pyinfra_compat import (
    cheaper_operation_calls,
    current_state,
    drop_operation,
    operation_hash,
)
from certsync.rollout import (
    canary_gate,
    check_one_canary_group,
    fail_no_wait_hosts,
    refuse_modes_that_cannot_wait,
)

GATE_MARGIN_SECONDS = 60
cheaper_operation_calls()  # two operation calls per host: pyinfra's own cost of each, smaller
# per run (State) and defaults: every targeted host's settings
_checked: WeakKeyDictionary[State, dict[str, dict[str, HostSettings]]] = WeakKeyDictionary()


def _settings_of_fleet(defaults: dict[str, Any]) -> dict[str, HostSettings]:
    """Every targeted host's settings, checked once per run before anything runs on any host."""
    of_run = _checked.setdefault(current_state(), {})
    key = repr(sorted(defaults.items()))
    if key not in of_run:
        fleet = settings_of_hosts(state, defaults)
        check_one_canary_group(fleet)
        of_run[key] = fleet
    return of_run[key]


@deploy("certsync")
def certsync_deploy(**defaults: Any) -> None:
    """
    Keep mox's certificate files equal to Caddy's on this host, canary group first.

    + defaults: settings (without the ``certsync_`` prefix) for hosts whose data does not set
      them, e.g. ``names=["mail.example.com"]``; certsync's own defaults fill in the rest
    """
    status = statusrun.current()
    if status is not None:  # `certsync status`: read the host's state, run nothing
        status.read_host(defaults)
        return
    fleet = _settings_of_fleet(defaults)
    settings = fleet[host.name]
    if not settings.names:
        host.log("certsync: no certificate names (certsync_names): left alone", logger.info)
        return
    group = settings.canary_group
    synced_hosts = [h for h in targeted_hosts(state) if fleet[h.name].names]
    canaries = [h for h in synced_hosts if group in h.groups]
    refuse_modes_that_cannot_wait(state, synced_hosts, canaries, group)
    fail_no_wait_hosts(state)
    canary = group in host.groups
    # Both operations on every host, in this order (rollout.py): each a no-op where it does not
    # apply. The sync's wait is bounded (a host cannot stretch it); so is the gate's.
    timeout = settings.sync_timeout_seconds
    meta = synced(name="sync canary hosts", settings=settings, skip=not canary, _timeout=timeout)
    if not canary:
        skipped(meta)
    wait = max((fleet[h.name].sync_timeout_seconds for h in canaries), default=0)
    wait += max((fleet[h.name].state_timeout_seconds for h in canaries), default=0)
    gate = canary_gate(state, canaries, operation_hash(meta), wait + GATE_MARGIN_SECONDS)
    meta = synced(name="sync", settings=settings, hold_back=gate, skip=canary, _timeout=timeout)
    if canary:
        skipped(meta)


def skipped(meta: Any) -> None:
    """The operation stays in this host's operation order (rollout.py) but is not this host's:
    pyinfra says `Skipped` for it, as for an operation the host did not call."""
    drop_operation(state, host, meta)
