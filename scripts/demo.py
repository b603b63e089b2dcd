"""The certsync demo: a local fleet of SSH hosts running real mox, certificates from real Caddy.

Run by scripts/demo.sh (as root, after setup): brings up pebble + Caddy and N hosts, then runs
the deploy as an operator would: preview (--dry), rollout (canary mail-1 first), a second run that
changes nothing, and shows per host and name the certificate mox serves next to Caddy's.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fleet import Fleet, Pki, default_host_specs, missing_components, served_certificate
from tests.fleet.x509util import sha256_fingerprint

ROOT = Path(__file__).resolve().parent.parent
PORTS = (993, 465, 587)


def pyinfra(inventory: Path, *args: str) -> int:
    argv = ["pyinfra", *args, str(inventory), "deploy.py"]
    print(f"\n$ {shlex.join(argv)}", flush=True)
    return subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL).returncode


def show_served(fleet: Fleet, pki: Pki) -> bool:
    print("\nWhat mox serves now, next to Caddy's certificate:")
    all_equal = True
    for host in fleet:
        for name in host.cert_names:
            caddy = sha256_fingerprint(pki.certificate(name))
            for port in PORTS:
                served = sha256_fingerprint(served_certificate(host.address, port, name))
                equal = served == caddy
                all_equal &= equal
                mark = "equal to Caddy's" if equal else f"DIFFERS from Caddy's {caddy[:16]}"
                print(f"  {host.name} {host.address}:{port} {name}: {served[:16]}  {mark}")
    return all_equal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=3, help="how many hosts (default 3)")
    args = parser.parse_args()
    missing = missing_components()
    if missing:
        print(f"demo: cannot run here: {'; '.join(missing)}", file=sys.stderr)
        return 2
    specs = default_host_specs(args.hosts)
    names = [name for spec in specs for name in spec.cert_names]
    with Pki() as pki:
        print(f"Started pebble and Caddy {pki.caddy_version_text}; certificates for:", *names)
        pki.issue(names)
        print(f"Starting {args.hosts} SSH hosts, each with its own mox ...")
        try:
            fleet = Fleet(specs, pki=pki)
        except RuntimeError as error:  # a port the hosts need is taken: a system sshd on *:22
            print(f"demo: cannot start the hosts: {error}", file=sys.stderr)
            return 2
        with fleet, tempfile.TemporaryDirectory() as tmp:
            inventory = fleet.write_inventory(
                Path(tmp) / "inventory.py",
                groups={
                    "canary": [fleet.hosts[0].name],
                    "mail": [host.name for host in fleet.hosts[1:]],
                },
            )
            print(f"Inventory: {inventory}\n{inventory.read_text()}")
            show_served(fleet, pki)
            pyinfra(inventory, "--dry")
            status = pyinfra(inventory, "-y")
            in_sync = show_served(fleet, pki)
            print("\nA second run finds every host in sync and changes nothing:")
            again = pyinfra(inventory, "-y")
            print("\nDemo done; the fleet is taken down." if in_sync else "\nDemo: NOT in sync.")
            return status or again or (0 if in_sync else 1)


if __name__ == "__main__":
    sys.exit(main())
