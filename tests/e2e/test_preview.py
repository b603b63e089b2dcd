"""The preview (`--dry`) on the real fleet: a renewal shows mox's certificate and Caddy's side by
side and the DANE record of the new key; names in sync take one line per host, one per name with
`-v`; the warning about running mox's binary as root only where an install will run it."""

from __future__ import annotations

import re

from tests.e2e.deployrun import caddy_fingerprint, deploy, preview
from tests.fleet.x509util import spki_sha256

TRUST_WARNING = "running /home/mox/mox as root for `mox config test` trusts"


def certsync_lines(run, host) -> list[str]:
    """The lines the preview shows for `host` (pyinfra's own excepted)."""
    prefix = f"[{host.name}] "
    lines = [line.strip()[len(prefix) :] for line in run.output.splitlines()]
    return [
        line
        for line, raw in zip(lines, run.output.splitlines(), strict=True)
        if raw.strip().startswith(prefix) and not re.match(r"(Connected|Ready|Loaded fact)", line)
    ]


def test_preview_shows_changes_side_by_side_and_names_in_sync_in_one_line(fleet, pki, inventory):
    assert deploy(inventory).returncode == 0
    in_sync = preview(inventory)
    for host in fleet:
        assert certsync_lines(in_sync, host) == [f"in sync: {', '.join(sorted(host.cert_names))}"]
    verbose = preview(inventory, "-v")
    three = fleet.hosts[2]
    lines = certsync_lines(verbose, three)
    for name in three.cert_names:
        assert any(re.match(rf"{re.escape(name)}: in sync: sha256=", line) for line in lines)
    assert any(line.startswith(f"warning: {TRUST_WARNING}") for line in lines)

    host = fleet.hosts[0]
    name = host.cert_names[0]
    old = caddy_fingerprint(pki, name)
    new_cert = pki.renew(name)
    fleet.copy_caddy_storage(pki)
    new = caddy_fingerprint(pki, name)

    shown = preview(inventory)

    assert shown.returncode == 0, shown.output
    lines = certsync_lines(shown, host)
    assert lines[0].startswith(f"warning: {TRUST_WARNING}")  # the install runs mox's binary
    assert lines[1].startswith(f"{name}: install: sha256={new[:16]} ")
    rows = {line.split()[1]: line for line in lines[2:8]}
    assert re.fullmatch(rf"{re.escape(name)}:\s+mox now\s+Caddy's \(\S+\)", lines[2])
    assert re.search(rf"certificate\s+sha256={old[:16]}\s+sha256={new[:16]}$", rows["certificate"])
    not_after = f"{new_cert.not_valid_after_utc:%Y-%m-%d}"
    days = r"\(\d+ days left\)"
    assert re.search(rf"not after\s+\S+ {days}\s+{not_after} {days}$", lines[4])
    assert re.search(rf"names\s+{re.escape(name)}\s+{re.escape(name)}$", lines[5])
    assert re.search(r"issuer\s+CN=Pebble Intermediate CA \w+\s+CN=Pebble", lines[6])
    assert re.search(r"private key\s+CHANGES$", lines[7])
    assert lines[8] == (
        f"{name}: the private key changes; if it has TLSA records (DANE), publish"
        f" _25._tcp.{name}. IN TLSA 3 1 1 {spki_sha256(new_cert)}"
    )
    for other in fleet.hosts[1:]:  # in sync: one line each, no warning
        assert certsync_lines(shown, other) == [f"in sync: {', '.join(sorted(other.cert_names))}"]
