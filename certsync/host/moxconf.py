"""mox.conf (sconf: tab-indented `Key: value`, `- item` lists): which listeners serve a pair of
certificate files, on which addresses and ports. Read as untrusted text: unknown lines are
skipped, only IP addresses are used to connect to."""

from __future__ import annotations

import contextlib
import functools
import os

from .errors import printable
from .record import Record
from .settings import is_ip

TYPE_CHECKING = False  # typing's costs an import on every run
if TYPE_CHECKING:
    from typing import Any

# mox's services with TLS: (section in a listener, default port, how TLS starts on it).
TLS_SERVICES = (
    ("SMTP", 25, "smtp"),
    ("Submission", 587, "smtp"),
    ("Submissions", 465, "tls"),
    ("IMAP", 143, "imap"),
    ("IMAPS", 993, "tls"),
)
MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 16
MAX_TARGETS = 16  # where to check one name: mox listens on a few addresses and ports


class Target(Record):
    """Where to check what mox serves: address, port, and how TLS starts there."""

    address: str
    port: int
    protocol: str  # tls | smtp (STARTTLS) | imap (STARTTLS)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return printable(f"{host}:{self.port}")


@functools.lru_cache(maxsize=4)  # read for each name of a run
def parse_sconf(text: str) -> Any:
    """The nested dicts and lists of an sconf document (values stay strings)."""
    lines = []
    for raw in text.splitlines():
        if not raw.strip() or raw.strip().startswith("#"):
            continue
        depth = len(raw) - len(raw.lstrip("\t"))
        if depth <= MAX_DEPTH:  # mox.conf nests a few levels; deeper is not mox's
            lines.append((depth, raw.strip()))
    value, _ = _block(lines, 0, 0)
    return value


def _block(lines: list[tuple[int, str]], pos: int, depth: int) -> tuple[Any, int]:
    if pos < len(lines) and lines[pos][0] == depth and lines[pos][1].startswith("-"):
        items: list[Any] = []
        while pos < len(lines) and lines[pos][0] == depth and lines[pos][1].startswith("-"):
            rest = lines[pos][1][1:].strip()
            pos += 1
            if rest:
                items.append(rest)
            else:
                item, pos = _block(lines, pos, depth + 1)
                items.append(item)
        return items, pos
    mapping: dict[str, Any] = {}
    while pos < len(lines) and lines[pos][0] >= depth:
        line_depth, line = lines[pos]
        pos += 1
        if line_depth > depth:
            continue  # not where sconf allows it: skip
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        if rest.strip():
            mapping[key.strip()] = rest.strip()
        else:
            mapping[key.strip()], pos = _block(lines, pos, depth + 1)
    return mapping, pos


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _connect_address(ip: str) -> str | None:
    """Where to connect to a listener on `ip`: loopback for every address; an address of this
    host's own (mox.conf may be the mox user's: certsync connects nowhere else), or None."""
    if ip in ("0.0.0.0", ""):
        return "127.0.0.1"
    if ip == "::":
        return "::1"
    return ip if "%" not in ip and is_ip(ip) and is_local(ip) else None


def is_local(ip: str) -> bool:
    """Whether `ip` is one of this host's own addresses."""
    import ipaddress

    address = ipaddress.ip_address(ip)
    return any(address in network for network in local_networks())


@functools.cache
def local_networks() -> tuple[Any, ...]:
    """This host's own addresses, as the kernel has them (a bind test would not do: with
    ip_nonlocal_bind any address binds): the `host LOCAL` routes of /proc/net/fib_trie (127/8
    among them) and the addresses of /proc/net/if_inet6."""
    import ipaddress

    networks: list[Any] = []
    address = None
    with contextlib.suppress(OSError, ValueError), open("/proc/net/fib_trie") as trie:
        for line in trie:
            words = line.split()
            if words[:1] == ["|--"]:
                address = words[1]
            elif line.rstrip().endswith("host LOCAL") and address and words[0][:1] == "/":
                networks.append(ipaddress.ip_network(address + words[0], strict=False))
    with contextlib.suppress(OSError, ValueError), open("/proc/net/if_inet6") as inet6:
        for line in inet6:
            networks.append(ipaddress.ip_network(ipaddress.IPv6Address(bytes.fromhex(line[:32]))))
    return tuple(networks)


def _config_path(config_dir: str, value: Any) -> str:
    """A file named in mox.conf: relative ones are relative to mox.conf's folder (as mox reads)."""
    return os.path.normpath(os.path.join(config_dir, str(value)))


def listener_targets(
    config_text: str, config_dir: str, cert_file: str, key_file: str, ports: list[int]
) -> list[Target] | None:
    """The (address, port) pairs where mox serves the pair cert_file/key_file: every listener
    naming both in TLS KeyCerts, its IPs (loopback for 0.0.0.0 and ::), its enabled TLS services
    whose port is one of `ports`. None when no listener names the pair."""
    targets: list[Target] = []
    named = False
    for listener in _dict(_dict(parse_sconf(config_text)).get("Listeners")).values():
        listener = _dict(listener)
        key_certs = [_dict(kc) for kc in _list(_dict(listener.get("TLS")).get("KeyCerts"))]
        if not any(
            _config_path(config_dir, kc.get("CertFile", "")) == cert_file
            and _config_path(config_dir, kc.get("KeyFile", "")) == key_file
            for kc in key_certs
        ):
            continue
        named = True
        addresses = [a for a in map(_connect_address, map(str, _list(listener.get("IPs")))) if a]
        for section, default_port, protocol in TLS_SERVICES:
            service = _dict(listener.get(section))
            if service.get("Enabled") != "true":
                continue
            try:
                # mox's config.Port(port, fallback): 0 (or no Port) is the default port.
                port = int(service.get("Port", 0)) or default_port
            except ValueError:
                continue
            if port in ports:
                targets += [Target(address, port, protocol) for address in addresses]
    if not named:
        return None
    return sorted(set(targets), key=lambda t: (ports.index(t.port), t.address))[:MAX_TARGETS]


def protocol_of_port(port: int) -> str:
    """How TLS starts on a port when mox.conf does not say: STARTTLS on 25, 587 and 143."""
    return {25: "smtp", 587: "smtp", 143: "imap"}.get(port, "tls")
