"""`DnsServers`: Debian's knot as the authoritative DNS servers of the fleet's zones.

Two knotd on port 53 of the test's block: the primary on 127.0.s.153 (ns1.<zone>), which takes
TSIG-signed RFC 2136 updates, and a secondary on 127.0.s.154 (ns2.<zone>), which gets the zone by
NOTIFY and IXFR from it, as a real zone's servers do. Each zone has its SOA, both NS records, the
servers' A records and the A records the test gives, all with TTLs of TTL seconds. A test host
asks them through its /etc/resolv.conf (`resolv_conf()`; TestHost.write_resolv_conf).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from . import rundirs
from .hostspec import HostSpec
from .slot import loopback
from .waiting import port_open, wait_for

PRIMARY = loopback(153)
SECONDARY = loopback(154)
PORT = 53
TTL = 3  # seconds, of every record; the SOA's refresh and retry too
KEY_NAME = "certsync-test."
KEY_ALGORITHM = "hmac-sha256"
START_TIMEOUT = 10.0
SYNC_TIMEOUT = 20.0
NAME_RE = re.compile(r"(?:[a-z0-9_*-]{1,63}\.)+", re.ASCII)
TLSA_TEXT_RE = re.compile(r"[0-3] [01] [0-2] (?:[0-9a-f]{2})+", re.ASCII)


def zones_of(specs: Sequence[HostSpec]) -> dict[str, dict[str, str]]:
    """The fleet's zones (`hN.test.`) with the A records of each host's names (not wildcards)."""
    zones: dict[str, dict[str, str]] = {}
    for spec in specs:
        zone = zones.setdefault(spec.mail_domain + ".", {})
        for name in spec.cert_names:
            if not name.startswith("*."):
                zone[name.lower() + "."] = spec.address
    return zones


def resolv_conf(*addresses: str) -> str:
    """A resolv.conf asking these servers (the primary and the secondary by default)."""
    return "".join(f"nameserver {address}\n" for address in addresses or (PRIMARY, SECONDARY))


def _check_name(name: str) -> str:
    name = name.lower()
    name = name if name.endswith(".") else name + "."
    if not NAME_RE.fullmatch(name) or len(name) > 254:
        raise ValueError(f"not a DNS name: {name!r}")
    return name


class DnsServers:
    """Use as a context manager; `close()` stops both servers and removes the run directory."""

    def __init__(self, zones: Mapping[str, Mapping[str, str]]) -> None:
        """`zones`: zone apex -> {name: IPv4 address} of its A records."""
        self.zones = {_check_name(zone): dict(records) for zone, records in zones.items()}
        for zone, records in self.zones.items():
            for name in records:
                if _check_name(name) != zone and not _check_name(name).endswith("." + zone):
                    raise ValueError(f"{name} is not in zone {zone}")
        self.addresses = [PRIMARY, SECONDARY]
        self.secret = base64.b64encode(os.urandom(32)).decode()
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        rundirs.reap_stale_runs()
        for address in self.addresses:
            # knotd binds UDP with SO_REUSEPORT: a second one would share the port, not fail
            if port_open(address, PORT):
                raise RuntimeError(f"{address}:{PORT} is in use; is another DnsServers running?")
        self.run_dir = rundirs.new_run_dir("dns")
        # knsupdate -k and kdig -k read `algorithm:name:secret`; nsupdate -k (bind9) reads this
        self.tsig_key_file = self.run_dir / "tsig.key"
        self.tsig_key_file.write_text(f"{KEY_ALGORITHM}:{KEY_NAME}:{self.secret}\n")
        self.bind_key_file = self.run_dir / "tsig-bind.key"
        self.bind_key_file.write_text(
            f'key "{KEY_NAME}" {{\n\talgorithm {KEY_ALGORITHM};\n\tsecret "{self.secret}";\n}};\n'
        )

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> DnsServers:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        for address in self.addresses:
            self._write_config(address)
        self.start_server(PRIMARY)
        self.start_server(SECONDARY)
        self.wait_in_sync()

    def close(self) -> None:
        for address in list(self._processes):
            self.stop_server(address)
        rundirs.reap_run(self.run_dir)

    def dir_of(self, address: str) -> Path:
        return self.run_dir / ("primary" if address == PRIMARY else "secondary")

    def log_of(self, address: str) -> Path:
        return self.dir_of(address) / "knotd.log"

    def _write_config(self, address: str) -> None:
        folder = self.dir_of(address)
        (folder / "db").mkdir(parents=True, exist_ok=True)  # must exist before an update
        primary = address == PRIMARY
        lines = [
            "server:",
            f'    rundir: "{folder}"',
            f"    listen: {address}@{PORT}",
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "log:",
            "  - target: stderr",
            "    any: info",
            "database:",
            f'    storage: "{folder / "db"}"',
            "key:",
            f"  - id: {KEY_NAME}",
            f"    algorithm: {KEY_ALGORITHM}",
            f"    secret: {self.secret}",
            "remote:",
            "  - id: other",
            f"    address: {SECONDARY if primary else PRIMARY}@{PORT}",
            f"    via: {address}",  # else the kernel picks 127.0.0.1: not what the acl allows
            "acl:",
            f"  - id: update\n    key: {KEY_NAME}\n    action: update",
            f"  - id: transfer\n    address: {SECONDARY}\n    action: transfer",
            f"  - id: notify\n    address: {PRIMARY}\n    action: notify",
            "template:",
            "  - id: default",
            f'    storage: "{folder}"',
            '    file: "%s.zone"',
            "    zonefile-sync: -1",  # the journal keeps updates; the zone file stays as written
            "    journal-content: changes",
            "zone:",
        ]
        for zone in self.zones:
            if primary:
                (folder / f"{zone}zone").write_text(self._zone_text(zone))
                lines += [f"  - domain: {zone}", "    acl: [update, transfer]", "    notify: other"]
            else:
                lines += [f"  - domain: {zone}", "    master: other", "    acl: notify"]
        (folder / "knot.conf").write_text("\n".join(lines) + "\n")

    def _zone_text(self, zone: str) -> str:
        lines = [
            f"$TTL {TTL}",
            f"@ SOA ns1.{zone} hostmaster.{zone} 1 {TTL} {TTL} 600 {TTL}",
            f"@ NS ns1.{zone}",
            f"@ NS ns2.{zone}",
            f"ns1.{zone} A {PRIMARY}",
            f"ns2.{zone} A {SECONDARY}",
        ]
        lines += [f"{name} A {address}" for name, address in self.zones[zone].items()]
        return "\n".join(lines) + "\n"

    # -- one server ------------------------------------------------------------------------------
    def start_server(self, address: str) -> None:
        """Start (again) the knotd of `address` and wait until it answers for every zone."""
        folder = self.dir_of(address)
        with self.log_of(address).open("ab") as log:
            self._processes[address] = subprocess.Popen(
                ["knotd", "-c", str(folder / "knot.conf")],
                cwd=folder,
                env={**os.environ, rundirs.RUN_ENV: str(self.run_dir)},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        process = self._processes[address]

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"knotd {address} exited: {self.log_of(address).read_text()}")
            return all(self.serial(address, zone) is not None for zone in self.zones)

        wait_for(answers, START_TIMEOUT, f"knotd on {address} (log: {self.log_of(address)})")

    def stop_server(self, address: str) -> None:
        """Stop the knotd of `address` (its port then refuses: ICMP port unreachable)."""
        process = self._processes.pop(address, None)
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a stopped process dies only once resumed
            rundirs.kill_pids([process.pid])
            process.wait()

    @contextlib.contextmanager
    def silent(self, address: str) -> Iterator[None]:
        """The knotd of `address` stopped by SIGSTOP: its socket takes queries, nothing answers."""
        process = self._processes[address]
        os.kill(process.pid, signal.SIGSTOP)
        try:
            # the signal is delivered to each of its threads in turn (late on a loaded machine)
            wait_for(lambda: _all_threads_stopped(process.pid), 10, f"knotd of {address} stopped")
            yield
        finally:
            os.kill(process.pid, signal.SIGCONT)

    @contextlib.contextmanager
    def stopped(self, address: str) -> Iterator[None]:
        self.stop_server(address)
        try:
            yield
        finally:
            self.start_server(address)
            self.wait_in_sync()

    @contextlib.contextmanager
    def frozen(self, address: str = SECONDARY) -> Iterator[None]:
        """Zone changes stop reaching the secondary (knotc zone-freeze): it answers, stale."""
        self._knotc(address, "zone-freeze")
        try:
            yield
        finally:
            self._knotc(address, "zone-thaw")
            self.wait_in_sync()

    def _knotc(self, address: str, *command: str) -> None:
        socket_path = self.dir_of(address) / "knot.sock"
        subprocess.run(
            ["knotc", "-s", str(socket_path), "-t", "10", *command],
            check=True,
            capture_output=True,
            timeout=20,
        )

    # -- what the servers answer -------------------------------------------------------------------
    def _kdig(self, address: str, name: str, rtype: str) -> list[str] | None:
        """The records of `name` answered authoritatively by `address`, as kdig prints them;
        None when it does not answer (or not authoritatively)."""
        result = subprocess.run(
            [
                "kdig",
                f"@{address}",
                "-p",
                str(PORT),
                name,
                rtype,
                "+norecurse",
                "+time=1",
                "+retry=0",
                "+noall",
                "+header",
                "+answer",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
        out = result.stdout
        answered = "status: NOERROR" in out or "status: NXDOMAIN" in out
        if result.returncode != 0 or not answered or " aa" not in out:
            return None
        return [
            " ".join(line.split()[4:]).lower()
            for line in out.splitlines()
            if line and not line.startswith(";") and line.split()[3:4] == [rtype]
        ]

    def serial(self, address: str, zone: str) -> int | None:
        got = self._kdig(address, zone, "SOA")
        return int(got[0].split()[2]) if got else None

    def tlsa_records(self, address: str, owner: str) -> list[str] | None:
        """The `3 1 1 <hex>` texts `address` answers for `owner`; None when it does not answer."""
        return self._kdig(address, _check_name(owner), "TLSA")

    def wait_in_sync(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Until the secondary answers every zone with the primary's serial."""

        def in_sync() -> bool:
            for zone in self.zones:
                serial = self.serial(PRIMARY, zone)
                if serial is None or self.serial(SECONDARY, zone) != serial:
                    return False
            return True

        wait_for(in_sync, timeout, f"the secondary to have the primary's zones ({self.run_dir})")

    # -- updates ---------------------------------------------------------------------------------
    def zone_of(self, name: str) -> str:
        name = _check_name(name)
        for zone in sorted(self.zones, key=len, reverse=True):
            if name == zone or name.endswith("." + zone):
                return zone
        raise ValueError(f"{name} is in none of the zones {sorted(self.zones)}")

    def update(self, owner: str, lines: Iterable[str], wait: bool = True) -> None:
        """Send one RFC 2136 update (TSIG-signed, with knsupdate) of `owner`'s zone to the
        primary: `lines` are knsupdate's `update ...` lines. With `wait`, until the secondary
        has it too."""
        script = [f"server {PRIMARY} {PORT}", f"zone {self.zone_of(owner)}", *lines, "send", ""]
        result = subprocess.run(
            ["knsupdate", "-t", "5", "-r", "0", "-k", str(self.tsig_key_file)],
            input="\n".join(script),
            capture_output=True,
            text=True,
            timeout=20,
        )
        if result.returncode != 0:
            raise RuntimeError(f"knsupdate failed: {result.stdout}{result.stderr}")
        if wait:
            self.wait_in_sync()

    def add_tlsa(self, owner: str, record: str, ttl: int = TTL, wait: bool = True) -> None:
        """Publish TLSA `record` (`3 1 1 <hex>`) at `owner` (`_25._tcp.mail.h1.test.`)."""
        owner = _check_name(owner)
        self.update(owner, [f"update add {owner} {int(ttl)} TLSA {_check_record(record)}"], wait)

    def delete_tlsa(self, owner: str, record: str, wait: bool = True) -> None:
        owner = _check_name(owner)
        self.update(owner, [f"update delete {owner} TLSA {_check_record(record)}"], wait)


def _check_record(record: str) -> str:
    record = " ".join(record.split()).lower()
    if not TLSA_TEXT_RE.fullmatch(record):
        raise ValueError(f"not a TLSA record: {record!r}")
    return record


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of the process is stopped (state T in /proc/PID/task/*/stat)."""
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        states.append(stat[stat.rindex(")") + 2])
    return bool(states) and all(state == "T" for state in states)
