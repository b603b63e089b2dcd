"""certsync as a pyinfra deploy: add it to your own with one call.

from certsync.deploy import certsync_deploy
certsync_deploy()                               # every setting from host and group data
certsync_deploy(caddy_data_dir="/srv/caddy")    # defaults of your own (data still wins)
"""

from __future__ import annotations

from typing import Any

from pyinfra import host, logger, state
from pyinfra.api import deploy

from certsync import statusrun
from certsync.hostdata import SettingsError, settings_of_host
from certsync.operations import read_ahead, synced
from certsync.pyinfra_compat import (
    cheaper_operation_calls,
    current_state,
    drop_operation,
    operation_hash,
)
from certsync.rollout import called, calling, fail_no_wait_hosts, join

cheaper_operation_calls()  # two operation calls per host: pyinfra's own cost of each, smaller


@deploy("certsync")
def certsync_deploy(**defaults: Any) -> None:
    """
    Keep mox's certificate files equal to Caddy's on this host, canary group first.

    + defaults: settings (without the ``certsync_`` prefix) for hosts whose data does not set
      them, e.g. ``names=["mail.example.com"]``; certsync's own defaults fill in the rest

    The host's settings come from its own data as it is at this call (with what the deploy's code
    assigned to ``host.data`` before it), checked here: pyinfra runs every host's deploy code
    before the first operation. The operations it calls (``certsync.operations.synced``) take the
    same arguments.
    """
    status = statusrun.current()
    if status is not None:  # `certsync status`: read the host's state, run nothing
        status.read_host(defaults)
        return
    run = current_state()
    if run.is_executing:
        raise SettingsError(
            f"{host.name}: certsync_deploy() is called while pyinfra runs operations (from an"
            " operation such as python.call): call it from the deploy's code"
        )
    settings = settings_of_host(run, host, defaults)
    if not settings.names:
        host.log("certsync: no certificate names (certsync_names): left alone", logger.info)
        return
    join(run, host, settings)  # refuses what this run's hosts so far make impossible
    fail_no_wait_hosts(run)
    read_ahead(settings)
    calling(run, host, settings)
    canary = settings.canary_group in host.groups
    # Both operations on every host, in this order (rollout.py): each a no-op where it does not
    # apply. The sync's wait is bounded (a host cannot stretch it); so is the gate's.
    timeout = settings.sync_timeout_seconds
    first = synced(name="sync canary hosts", stage="canary", _timeout=timeout, **defaults)
    if not canary:
        skipped(first)
    then = synced(name="sync", stage="others", _timeout=timeout, **defaults)
    called(run, host, settings, defaults, operation_hash(first), operation_hash(then))
    if canary:
        skipped(then)


def skipped(meta: Any) -> None:
    """The operation stays in this host's operation order (rollout.py) but is not this host's:
    pyinfra says `Skipped` for it, as for an operation the host did not call."""
    drop_operation(state, host, meta)
