"""The `certsync` command (installed with the package):

    certsync status INVENTORY [--limit HOST|GROUP]... [--json]

reads every targeted host's state (read-only, one command per host) and checks what is true now.
Exit status: 0 every check holds, 1 a check fails, 2 a usage or settings error, or a host that
could not be checked (unreachable, its state unreadable: named in the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from pyinfra.api.exceptions import PyinfraError

from certsync.fleetread import UsageError, load_state, read_hosts
from certsync.hostdata import SettingsError, settings_of_hosts
from certsync.status import EXIT_UNKNOWN, as_json, as_table, exit_status, fleet_report


def status(inventory: str, limits: Sequence[str], json_output: bool) -> int:
    try:
        state = load_state(inventory, limits)
        settings = {
            host: checked
            for host, checked in settings_of_hosts(state).items()
            if checked.names  # a host without certificate names is not certsync's
        }
    except (UsageError, SettingsError) as error:
        print(f"certsync status: {error}", file=sys.stderr)
        return EXIT_UNKNOWN
    except PyinfraError as error:  # the inventory itself
        print(f"certsync status: {inventory}: {error}", file=sys.stderr)
        return EXIT_UNKNOWN
    if not settings:
        print("certsync status: no targeted host has certificate names", file=sys.stderr)
        return EXIT_UNKNOWN
    states = read_hosts(state, settings)
    now = dt.datetime.now(dt.timezone.utc)
    report = fleet_report(settings, states, now)
    sys.stdout.write(as_json(report) + "\n" if json_output else as_table(report, states, now))
    return exit_status(report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="certsync", description="certsync: mox's certificates equal to Caddy's."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "status",
        help="check every host and name of an inventory (read-only)",
        description="Per host and name: Caddy's certificate, mox's files, mox.conf, what mox"
        " serves, the cron job. Exit 0 all hold, 1 a check fails, 2 usage error or a host that"
        " could not be checked.",
    )
    check.add_argument("inventory", help="the pyinfra inventory file (group_data/ beside it)")
    check.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="HOST|GROUP",
        help="only these hosts or groups (repeatable; host names may use * as pyinfra's)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)  # a usage error exits 2
    return status(args.inventory, args.limit, args.json)


if __name__ == "__main__":
    sys.exit(main())
