"""What certsync costs, measured on a local fleet of N SSH hosts (figures only, no pass/fail).

    python3 -m scripts.benchmark [--hosts 20,50] [--repeat 5] [--no-renewal]

Run as root after scripts/setup.sh. For each fleet size of --hosts, brings up pebble + Caddy and
a fleet of N hosts (tests/fleet, loopback only), converges it once, then prints, each with its
median over --repeat runs:
  1. the in-sync deploy's wall time divided by `pyinfra INVENTORY exec -- true`'s, runs
     interleaved (goal: at most 1.2), and beside each the controller's CPU: the pyinfra
     process's own user + system time, from its resource usage (goal: the deploy's at most 1.1
     times `exec -- true`'s); and a third command, interleaved with those two: `exec --
     /usr/bin/python3 -I -S -c pass`'s wall time divided by `exec -- true`'s, the floor of a state
     read in Python (python3 starting on every host, nothing more; no goal); and a fourth, the
     least any state read in Python does (python3 starts, imports os, prints one line of 3 kB
     read from a file), against `exec -- true` too;
  2. the commands and SSH sessions per host in an in-sync deploy (from pyinfra's -vv output and
     from each host's sshd log), and the CPU time of the state read on one host (goal: one
     command, under 25 ms of CPU);
  3. a full rotation (every host installs a new certificate: the first deploy), for the fleet,
     and per host (one host's sync of a renewed certificate, timed inside the host);
  4. how long mox answers no TLS on port 993 during a sync (a probe in a tight loop; goal: under
     2 s);
  5. the host program's in-sync run, what the cron job runs (wall and CPU, inside the host;
     goal: under 100 ms wall);
  6. renewal to served: from the moment Caddy has written a new certificate until mox serves
     it, with the default cron schedule and a real cron daemon, no deploy (goal: under 15 min).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import shlex
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from statistics import median

import pyinfra

import certsync
from certsync.facts import CertsyncState
from certsync.host.settings import BY_NAME
from certsync.hostdata import settings_from_data
from certsync.program import NOT_INSTALLED
from tests.e2e.deployrun import ROOT, caddy_fingerprint, served_fingerprints
from tests.fleet import Fleet, Pki, TestHost, default_host_specs, missing_components
from tests.fleet.waiting import wait_for

COMMAND_RE = re.compile(r"^\[(?P<host>[^\]]+)\]\s+>>> ", re.M)
SESSION_RE = re.compile(r"Starting session: ")
PROGRAM = "/usr/local/lib/certsync/certsync.pyz"
SYNC = f"/usr/bin/python3 -I -S {PROGRAM} sync --config /etc/certsync/config.json"
CRON_SYNC = f"{SYNC} --cron"  # what the cron job runs (operations.cron_file)
DEPLOY_TIMEOUT = 900.0
PYTHON_START = ["/usr/bin/python3", "-I", "-S", "-c", "pass"]  # as the state read starts python3
# The least any state read in Python does: start python3, import os, read a file and print, as
# the state read does, one line of about as many bytes (config.json, about 1 kB, three times, its
# newlines made spaces). pyinfra's exec joins its arguments into one shell command.
LEAST_READ = [
    *PYTHON_START[:-1],
    shlex.quote(
        "import os; fd = os.open('/etc/certsync/config.json', os.O_RDONLY);"
        " os.write(1, os.read(fd, 1 << 16).replace(b'\\n', b' ') * 3 + b'\\n')"
    ),
]

# Runs a command N times inside a host; prints the wall and CPU (user + system, the command and
# its children) seconds of each run, from wait4's resource usage.
TIMER = """
import json, os, subprocess, sys, time
runs = []
for _ in range(int(sys.argv[1])):
    started = time.monotonic()
    process = subprocess.Popen(sys.argv[2], shell=True, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"exit {os.waitstatus_to_exitcode(status)}: {sys.argv[2][:200]}")
    runs.append((time.monotonic() - started, usage.ru_utime + usage.ru_stime))
print(json.dumps(runs))
"""


def timed(argv: list[str]) -> tuple[float, str]:
    took, _, output = timed_cpu(argv)
    return took, output


def timed_cpu(argv: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the process itself: user + system from wait4, output)."""
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        killer = threading.Timer(DEPLOY_TIMEOUT, process.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            killer.cancel()
        took = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace")
    if process.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise SystemExit(
            f"benchmark: {shlex.join(argv)} failed (exit {process.returncode}):\n{tail}"
        )
    return took, usage.ru_utime + usage.ru_stime, output


def in_host(host: TestHost, command: str, runs: int) -> tuple[list[float], list[float]]:
    """(wall seconds, CPU seconds) of `runs` runs of `command` inside the host."""
    result = host.run(
        f"/usr/bin/python3 -c {shlex.quote(TIMER)} {runs} {shlex.quote(command)}", timeout=600
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark: on {host.name}: {result.stderr.strip()}")
    pairs = json.loads(result.stdout)
    return [wall for wall, _ in pairs], [cpu for _, cpu in pairs]


def state_command(host: TestHost) -> str:
    """The state read's command, as the deploy's fact runs it on this host (which has this
    version installed: it would otherwise only say so, and be read again carrying it)."""
    settings = settings_from_data(host.name, host.inventory_data())
    command = str(CertsyncState().command(settings=settings).get_raw_value())
    answer = host.run(command, timeout=600)
    if answer.returncode != 0 or answer.stdout.strip() == NOT_INSTALLED:
        raise SystemExit(f"benchmark: the state read on {host.name}: {answer.stdout[:200]}")
    return command


def tls_gap(host: TestHost, during: Callable[[], object]) -> float:
    """The longest time port 993 gave no TLS handshake while `during` ran (probe in a loop)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stop = threading.Event()
    answers: list[float] = []

    def probe() -> None:
        while not stop.is_set():
            try:
                with (
                    socket.create_connection((host.address, 993), timeout=1) as raw,
                    context.wrap_socket(raw, server_hostname=host.cert_names[0]),
                ):
                    answers.append(time.monotonic())
            except OSError:
                time.sleep(0.005)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        time.sleep(0.5)
        during()
        time.sleep(0.5)
    finally:
        stop.set()
        thread.join()
    return max(later - earlier for earlier, later in zip(answers, answers[1:], strict=False))


def renew_on(host: TestHost, pki: Pki, name: str) -> None:
    pki.renew(name)
    host.copy_caddy_storage(pki)


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    return (
        f"{model}, {os.cpu_count()} cores, Linux {platform.release()}, Python"
        f" {platform.python_version()} (hosts: /usr/bin/python3), pyinfra {pyinfra.__version__}"
    )


def measure(pki: Pki, count: int, repeat: int, renewal: bool) -> None:
    print(f"machine: {machine()}")
    print(f"fleet: {count} hosts, {repeat} runs per figure (medians)\n", flush=True)
    with Fleet(count, pki=pki) as fleet, tempfile.TemporaryDirectory() as tmp:
        names = [host.name for host in fleet]
        inventory = str(
            fleet.write_inventory(
                Path(tmp) / "inventory.py", groups={"canary": names[:1], "mail": names}
            )
        )
        deploy = ["pyinfra", "-y", inventory, "deploy.py"]
        first, _ = timed(deploy)

        in_sync, exec_true, exec_python, exec_least, in_sync_cpu, exec_cpu = [], [], [], [], [], []
        for _ in range(repeat):
            took, used, _ = timed_cpu(deploy)
            in_sync.append(took)
            in_sync_cpu.append(used)
            took, used, _ = timed_cpu(["pyinfra", "-y", inventory, "exec", "--", "true"])
            exec_true.append(took)
            exec_cpu.append(used)
            took, _, _ = timed_cpu(["pyinfra", "-y", inventory, "exec", "--", *PYTHON_START])
            exec_python.append(took)
            took, _, _ = timed_cpu(["pyinfra", "-y", inventory, "exec", "--", *LEAST_READ])
            exec_least.append(took)
        print(
            f"1. in-sync deploy {median(in_sync):.2f} s / `exec -- true` {median(exec_true):.2f} s"
            f" = {median(in_sync) / median(exec_true):.2f}   (goal <= 1.2)\n"
            f"   controller CPU: deploy {median(in_sync_cpu):.2f} s / `exec -- true`"
            f" {median(exec_cpu):.2f} s = {median(in_sync_cpu) / median(exec_cpu):.2f}"
            "   (goal <= 1.1)\n"
            f"   floor of a state read in Python: `exec -- {' '.join(PYTHON_START)}`"
            f" {median(exec_python):.2f} s / `exec -- true` {median(exec_true):.2f} s"
            f" = {median(exec_python) / median(exec_true):.2f}\n"
            "   the least a state read in Python does (start python3, import os, print a line of"
            f" 3 kB): {median(exec_least):.2f} s / `exec -- true` {median(exec_true):.2f} s"
            f" = {median(exec_least) / median(exec_true):.2f}",
            flush=True,
        )

        offsets = {host.name: host.sshd_log.stat().st_size for host in fleet}
        _, output = timed([*deploy[:2], "-vv", *deploy[2:]])
        commands = Counter(match.group("host") for match in COMMAND_RE.finditer(output))
        sessions = []
        for host in fleet:
            with host.sshd_log.open("rb") as log:
                log.seek(offsets[host.name])
                sessions.append(len(SESSION_RE.findall(log.read().decode(errors="replace"))))
        host = max(fleet, key=lambda h: len(h.cert_names))
        _, state_cpu = in_host(host, state_command(host), repeat)
        print(
            f"2. per host, in sync: {'/'.join(map(str, sorted(set(commands.values()))))} command,"
            f" {'/'.join(map(str, sorted(set(sessions))))} SSH session; state read CPU on"
            f" {host.name} ({len(host.cert_names)} names): {median(state_cpu) * 1000:.0f} ms"
            "   (goal: 1 command, < 25 ms)"
        )

        one = fleet.hosts[-1]
        rotation = []
        for _ in range(repeat):
            renew_on(one, pki, one.cert_names[0])
            rotation += in_host(one, SYNC, 1)[0]
        print(
            f"3. full rotation: fleet {first:.1f} s (first deploy, {count} hosts);"
            f" one host {median(rotation):.2f} s (sync of a renewed certificate, inside the host)"
        )

        gaps = []
        for _ in range(repeat):
            renew_on(one, pki, one.cert_names[0])
            gaps.append(tls_gap(one, lambda: one.run(SYNC, check=True)))
        print(f"4. mox answers no TLS on 993 during a sync: {median(gaps):.2f} s   (goal < 2 s)")

        wall, cpu = in_host(one, CRON_SYNC, repeat)
        print(
            f"5. host program, in-sync run ({one.name}, {len(one.cert_names)} names):"
            f" {median(wall) * 1000:.0f} ms wall, {median(cpu) * 1000:.0f} ms CPU"
            "   (goal < 100 ms wall)"
        )
        schedule = BY_NAME["cron_schedule"].default
        if not renewal:
            print(f"6. renewal to served: skipped (--no-renewal); default schedule {schedule!r}")
            return
        one.start_cron()
        name = one.cert_names[0]
        renew_on(one, pki, name)
        renewed = time.monotonic()
        wait_for(
            lambda: set(served_fingerprints(one, name).values()) == {caddy_fingerprint(pki, name)},
            20 * 60,
            f"cron on {one.name} to serve the renewal",
            interval=1,
        )
        print(
            f"6. renewal to served, schedule {schedule!r}, real cron:"
            f" {time.monotonic() - renewed:.0f} s   (goal < 15 min)",
            flush=True,
        )


def fleet_sizes(text: str) -> list[int]:
    sizes = [int(word) for word in text.split(",")]
    if not all(1 <= size <= 50 for size in sizes):
        raise argparse.ArgumentTypeError("fleet sizes from 1 to 50")
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--hosts",
        type=fleet_sizes,
        default=[20],
        help="fleet sizes, comma-separated, each measured on its own fleet (default: 20)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (default: 5)")
    parser.add_argument(
        "--no-renewal", action="store_true", help="skip figure 6 (it waits for the cron job)"
    )
    args = parser.parse_args()
    if not 1 <= args.repeat <= 20:
        parser.error("--repeat: 1 to 20")
    # the controller as pip installs it, with its bytecode (where PYTHONDONTWRITEBYTECODE is
    # set, each run would compile certsync's modules again: ~35 ms of the controller's CPU)
    compileall.compile_dir(Path(certsync.__file__).parent, quiet=1)
    missing = missing_components()
    if missing:
        print(f"benchmark: cannot run here: {'; '.join(missing)}", file=sys.stderr)
        return 2
    with Pki() as pki:
        largest = max(args.hosts)
        pki.issue(name for spec in default_host_specs(largest) for name in spec.cert_names)
        for index, count in enumerate(args.hosts):
            if index:
                print(flush=True)
            measure(pki, count, args.repeat, not args.no_renewal)
    return 0


if __name__ == "__main__":
    sys.exit(main())
