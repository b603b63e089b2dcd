"""The `certsync` command (installed with the package):

    certsync status INVENTORY [DEPLOY] [pyinfra's options] [--json]

reads every targeted host's state (read-only, one command per host) and checks what is true now.
It reads the hosts, data and config as `pyinfra INVENTORY DEPLOY` does, from the working folder
(pyinfra's own command line reads them: certsync/fleetread.py), with the defaults DEPLOY (else the
working folder's deploy.py) gives certsync_deploy(). Exit status: 0 every check holds, 1 a check
fails, 2 a usage or settings error, or a host that could not be checked (unreachable, its state
unreadable: named in the report).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence

from certsync.fleetread import PyinfraOptions, UsageError, read_fleet
from certsync.status import EXIT_UNKNOWN, as_json, as_table, exit_status, fleet_report


def status(inventory: str, deploy: str | None, options: PyinfraOptions, json_output: bool) -> int:
    try:
        fleet = read_fleet(inventory, deploy, options)
    except UsageError as error:
        print(f"certsync status: {error}", file=sys.stderr)
        return EXIT_UNKNOWN
    if not fleet.states:
        print("certsync status: no host matched, or none has certificate names", file=sys.stderr)
        return EXIT_UNKNOWN
    now = dt.datetime.now(dt.timezone.utc)
    report = fleet_report(fleet.settings, fleet.states, now)
    sys.stdout.write(as_json(report) + "\n" if json_output else as_table(report, fleet.states, now))
    return exit_status(report)


def _pyinfra_options(check: argparse.ArgumentParser) -> None:
    """pyinfra's own options that status passes on to it, named as pyinfra names them."""
    for flag, metavar, what in (
        ("--limit", "HOST|GROUP", "only these hosts or groups"),
        ("--exclude", "HOST|GROUP", "not these hosts or groups (pyinfra 3.10)"),
        ("--data", "KEY=VALUE", "override data values"),
        ("--group-data", "FOLDER", "more group data"),
    ):
        check.add_argument(flag, action="append", default=[], metavar=metavar, help=what)
    check.add_argument("--config", default="config.py", help="pyinfra's config file")
    check.add_argument("--chdir", help="the working folder to read from")
    check.add_argument("--user", "--ssh-user", dest="user", help="SSH user to connect as")
    check.add_argument("--key", "--ssh-key", dest="key", help="SSH private key file")
    check.add_argument("--port", "--ssh-port", dest="port", type=int, help="SSH port")
    check.add_argument("--sudo", action="store_true", help="read with sudo")
    check.add_argument("--sudo-user", help="which user to sudo to")
    check.add_argument("--use-sudo-password", action="store_true", help="sudo asks a password")
    check.add_argument("--su-user", help="which user to su to")
    check.add_argument("--parallel", type=int, help="how many hosts at once")
    check.add_argument("-v", dest="verbose", action="count", default=0, help="pyinfra's progress")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="certsync", description="certsync: mox's certificates equal to Caddy's."
    )
    parser.add_argument(
        "command",
        choices=["status"],
        help="status: check every host and name of an inventory (read-only)",
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="the command's arguments")
    command = parser.parse_args(argv)  # a usage error exits 2
    check = argparse.ArgumentParser(
        prog="certsync status",
        description="Per host and name: Caddy's certificate, mox's files, mox.conf, what mox"
        " serves, the cron job, and DANE (each TLSA RRset has the record of the key mox serves)."
        " Hosts, data and config are read as `pyinfra INVENTORY DEPLOY`"
        " reads them, from the working folder; nothing of the deploy runs. Exit 0 all hold,"
        " 1 a check fails, 2 usage error or a host that could not be checked.",
    )
    check.add_argument(
        "inventory", help="pyinfra's inventory: a file, host names (h1,h2), @local, @docker/..."
    )
    check.add_argument(
        "deploy",
        nargs="?",
        help="the deploy file whose certsync_deploy(...) defaults apply"
        " (default: deploy.py of the working folder, when there is one)",
    )
    _pyinfra_options(check)
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    args = check.parse_intermixed_args(command.arguments)  # options anywhere, as pyinfra's
    options = PyinfraOptions(
        data=args.data,
        group_data=args.group_data,
        config=args.config,
        chdir=args.chdir,
        limit=args.limit,
        exclude=args.exclude,
        user=args.user,
        key=args.key,
        port=args.port,
        sudo=args.sudo,
        sudo_user=args.sudo_user,
        use_sudo_password=args.use_sudo_password,
        su_user=args.su_user,
        parallel=args.parallel,
        verbose=args.verbose,
    )
    return status(args.inventory, args.deploy, options, args.json)


if __name__ == "__main__":
    sys.exit(main())
