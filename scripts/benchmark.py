"""How long the certsync deploy takes on local fleets of N SSH hosts (figures only, no pass/fail).

    python3 -m scripts.benchmark [--hosts 3 10] [--repeat 3]

Run as root after scripts/setup.sh. Brings up pebble + Caddy once, then per N a fleet of N hosts
(tests/fleet, loopback only), and prints:
  - the wall time of the first, converging deploy (`pyinfra -y inventory deploy.py`);
  - the wall time of an in-sync deploy (median of --repeat runs);
  - the commands each host ran in an in-sync deploy, as pyinfra prints them (-vv) and as the
    host's sshd logged its sessions;
  - the host program's own time for an in-sync `certsync.py sync` on one host (median of --repeat),
    measured inside the host, so that neither SSH nor pyinfra is counted.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from tests.e2e.deployrun import DeployRun, deploy
from tests.fleet import Fleet, Pki, TestHost, default_host_specs, missing_components

COMMAND_RE = re.compile(r"^\[(?P<host>[^\]]+)\]\s+>>> ", re.M)
SESSION_RE = re.compile(r"Starting session: ")
PROGRAM = "/usr/local/lib/certsync/certsync.pyz"
CONFIG = "/etc/certsync/config.json"
DEPLOY_TIMEOUT = 600.0


def timed_deploy(inventory: Path, *args: str) -> tuple[float, DeployRun]:
    started = time.monotonic()
    run = deploy(inventory, *args, timeout=DEPLOY_TIMEOUT)
    took = time.monotonic() - started
    if run.returncode != 0:
        tail = "\n".join(run.output.splitlines()[-30:])
        raise SystemExit(f"benchmark: the deploy failed (exit {run.returncode}):\n{tail}")
    return took, run


def program_seconds(host: TestHost) -> float:
    """One in-sync `sync` of the host program, timed inside the host."""
    result = host.run(
        f"s=$(date +%s%N); python3 {PROGRAM} sync --config {CONFIG} >/dev/null 2>&1; r=$?;"
        ' e=$(date +%s%N); echo "$r $((e - s))"',
        check=True,
    )
    status, nanoseconds = result.stdout.split()
    if status != "0":
        raise SystemExit(f"benchmark: certsync.py sync exited {status} on {host.name}")
    return int(nanoseconds) / 1e9


def measure(pki: Pki, count: int, repeat: int) -> None:
    print(f"\n== {count} hosts ==", flush=True)
    with Fleet(count, pki=pki) as fleet, tempfile.TemporaryDirectory() as tmp:
        names = [host.name for host in fleet]
        inventory = fleet.write_inventory(
            Path(tmp) / "inventory.py", groups={"canary": names[:1], "mail": names}
        )
        print(f"  fleet start                        {fleet.timings['fleet_start']:7.2f} s")
        first, _ = timed_deploy(inventory)
        print(f"  first deploy (converges)           {first:7.2f} s", flush=True)

        in_sync: list[float] = []
        sessions: dict[str, int] = {}
        commands: Counter[str] = Counter()
        for attempt in range(repeat):
            offsets = {host.name: host.sshd_log.stat().st_size for host in fleet}
            verbose = attempt == repeat - 1  # count on the last run; -vv costs a little output
            took, run = timed_deploy(inventory, *(["-vv"] if verbose else []))
            in_sync.append(took)
            if verbose:
                commands = Counter(m.group("host") for m in COMMAND_RE.finditer(run.output))
                for host in fleet:
                    with host.sshd_log.open("rb") as log:
                        log.seek(offsets[host.name])
                        sessions[host.name] = len(SESSION_RE.findall(log.read().decode()))
        print(
            f"  in-sync deploy (median of {repeat})        {statistics.median(in_sync):7.2f} s"
            f"   (runs: {', '.join(f'{t:.2f}' for t in in_sync)})"
        )
        per_host = sorted(set(commands[name] for name in names))
        per_host_sessions = sorted(set(sessions.values()))
        print(f"  commands per host, in-sync (-vv)   {' / '.join(map(str, per_host)):>7}")
        print(f"  SSH sessions per host, in-sync     {' / '.join(map(str, per_host_sessions)):>7}")

        host = max(fleet, key=lambda h: len(h.cert_names))
        pid = host.mox_pid()
        seconds = [program_seconds(host) for _ in range(repeat)]
        restarted = " (mox was restarted!)" if host.mox_pid() != pid else ""
        print(
            f"  host program in-sync sync, {host.name} ({len(host.cert_names)} names),"
            f" median of {repeat}: {statistics.median(seconds):.3f} s{restarted}",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hosts", type=int, nargs="+", default=[3, 10], help="fleet sizes (default: 3 10)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="in-sync runs to take the median of")
    args = parser.parse_args()
    if any(count < 1 or count > 50 for count in args.hosts) or not 1 <= args.repeat <= 20:
        parser.error("--hosts: 1 to 50 each; --repeat: 1 to 20")
    missing = missing_components()
    if missing:
        print(f"benchmark: cannot run here: {'; '.join(missing)}", file=sys.stderr)
        return 2
    names = [name for spec in default_host_specs(max(args.hosts)) for name in spec.cert_names]
    with Pki() as pki:
        started = time.monotonic()
        pki.issue(names)
        print(f"pebble + Caddy: {len(names)} certificates in {time.monotonic() - started:.1f} s")
        for count in args.hosts:
            measure(pki, count, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
