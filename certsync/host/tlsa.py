"""The TLSA records of a name as the host's resolver answers them and as every authoritative
server of its zone answers them, asked directly: what "published everywhere" is checked against.
Any doubt (a timeout, SERVFAIL, a server that does not answer authoritatively, a malformed
answer) is an `error`: the caller holds, it never guesses."""

from __future__ import annotations

import ipaddress
import time

from . import dns
from .record import Record

MAX_NS_NAMES = 8  # authoritative servers (NS targets) of a zone
MAX_ADDRESSES = 4  # addresses asked per NS target (A and AAAA)
MAX_WALK = 12  # NS questions asked to find the zone of a name
PORT = 53  # of resolvers and servers alike (the unit tests' servers listen on another)


class TlsaLookup(Record):
    owner: str
    exists: bool = False  # False: NXDOMAIN or NODATA at the resolver and at every server
    resolver_records: list[str] = []  # record texts the host's resolver answers
    authenticated: bool = False  # the resolver's answer had AD set
    servers: dict[str, list[str]] = {}  # authoritative server address -> its record texts
    ttl: int = 0  # the largest TTL of the TLSA RRset at the resolver and the servers
    error: str | None = None  # why the lookup is incomplete


def tlsa_owner(port: int, name: str) -> str:
    """`_25._tcp.mail.example.com.` for (25, `mail.example.com`). Raises ValueError for a
    wildcard name: TLSA records live at the names the MX records give, which `*.example.com`
    does not tell."""
    name = name.lower().rstrip(".")
    if "*" in name or not name:
        raise ValueError(f"no TLSA owner name for {name!r}")
    if not 0 < port < 65536:
        raise ValueError(f"no such port {port}")
    return f"_{port}._tcp.{name}."


def record_text(usage: int, selector: int, mtype: int, data: bytes) -> str:
    """A TLSA record's data as it is written in a zone: `3 1 1 <lower-case hex>`."""
    return f"{usage} {selector} {mtype} {data.hex()}"


def normal_text(record: str) -> str:
    """`record` as record_text writes it (spaces and case may differ in what a user gives)."""
    return " ".join(record.split()).lower()


def _records(answer: dns.Answer, owner: str) -> tuple[list[str], int]:
    """The TLSA record texts answered for `owner` and their largest TTL. A CNAME at the owner
    is an error: the records would live in another name, maybe another zone, than the one the
    operator (or the publish command) updates; certsync does not follow it."""
    texts: list[str] = []
    ttl = 0
    for rr in answer.answers:
        if rr.owner != owner:
            continue
        if rr.rtype == dns.CNAME:
            raise dns.DnsError(f"{owner} is a CNAME (to {rr.target}); not followed")
        if rr.rtype == dns.TLSA:
            if len(rr.rdata) < 4:
                raise dns.DnsError("bad answer: TLSA record too short")
            texts.append(record_text(rr.rdata[0], rr.rdata[1], rr.rdata[2], rr.rdata[3:]))
            ttl = max(ttl, rr.ttl)
    return sorted(set(texts)), ttl


class _Resolver:
    """The resolvers of resolv.conf: each question goes to the first that answers, each tried in
    turn with an equal share of the time left; one that answered is asked first from then on."""

    def __init__(self, servers: list[str], deadline: float) -> None:
        self.servers = servers
        self.deadline = deadline

    def ask(self, name: str, rtype: int) -> dns.Answer:
        errors = []
        for index, server in enumerate(list(self.servers)):
            share = (self.deadline - time.monotonic()) / (len(self.servers) - index)
            try:
                answer = dns.query(server, name, rtype, True, time.monotonic() + share, PORT)
            except dns.DnsError as error:
                errors.append(str(error))
                continue
            self.servers.remove(server)
            self.servers.insert(0, server)
            return answer
        raise dns.DnsError("; ".join(errors))


def _parent(name: str) -> str:
    """`example.com.` for `mail.example.com.`; `.` for `com.` and `.`."""
    return name.split(".", 1)[1] or "." if name != "." else "."


def _zone_servers(resolver: _Resolver, owner: str) -> list[str]:
    """The NS targets of the zone holding `owner`: ask for NS from `owner` up, jumping to the
    zone apex an SOA in the authority section names."""
    name = owner
    for _ in range(MAX_WALK):
        if name == ".":
            break
        answer = resolver.ask(name, dns.NS)
        targets = [rr.target for rr in answer.answers if rr.rtype == dns.NS and rr.owner == name]
        if targets:
            return sorted({target for target in targets if target})
        soa = [rr.owner for rr in answer.authority if rr.rtype == dns.SOA]
        if not answer.answers and soa and soa[0] != name and name.endswith("." + soa[0]):
            name = soa[0]
        else:
            name = _parent(name)
    raise dns.DnsError(f"no NS records found for {owner}")


def _addresses(resolver: _Resolver, target: str) -> list[str]:
    found: list[str] = []
    for rtype in (dns.A, dns.AAAA):
        answer = resolver.ask(target, rtype)
        found += [rr.target for rr in answer.answers if rr.rtype == rtype and rr.target]
    if not found:
        raise dns.DnsError(f"authoritative server {target} has no address")
    for address in found:
        parsed = ipaddress.ip_address(address)
        if parsed.is_unspecified or parsed.is_multicast:
            raise dns.DnsError(f"authoritative server {target} has the address {address}")
    if len(found) > MAX_ADDRESSES:
        raise dns.DnsError(f"authoritative server {target} has more than {MAX_ADDRESSES} addresses")
    return sorted(set(found))


def _ask_server(address: str, owner: str, deadline: float) -> tuple[list[str], int]:
    answer = dns.query(address, owner, dns.TLSA, False, deadline, PORT)
    if not answer.authoritative:
        raise dns.DnsError(f"{address}: answer not authoritative")
    return _records(answer, owner)


def lookup_tlsa(owner: str, deadline: float, resolv_conf: str = "/etc/resolv.conf") -> TlsaLookup:
    """The TLSA records at `owner` (see tlsa_owner) from the resolvers of `resolv_conf` and from
    each authoritative server of its zone, all before `deadline` (a time.monotonic() instant).
    The servers are asked even when the resolver answers none: a resolver's "no records" (a
    stale cache, a split view, a forged answer) alone would install a key no record pins; the
    name is without DANE only when every server says so authoritatively. Never raises for DNS
    trouble: sets `error`."""
    owner = owner.lower().rstrip(".") + "."
    result = TlsaLookup(owner=owner)
    servers = dns.resolvers(resolv_conf)
    if not servers:
        result.error = f"no nameserver in {resolv_conf}"
        return result
    resolver = _Resolver(servers, deadline)
    try:
        answer = resolver.ask(owner, dns.TLSA)
        result.resolver_records, result.ttl = _records(answer, owner)
        result.authenticated = answer.authenticated
        result.exists = bool(result.resolver_records)
        targets = _zone_servers(resolver, owner)
        if len(targets) > MAX_NS_NAMES:
            raise dns.DnsError(f"more than {MAX_NS_NAMES} authoritative servers")
        for target in targets:
            addresses = _addresses(resolver, target)
            answered = False
            for address in addresses:
                try:
                    records, ttl = _ask_server(address, owner, deadline)
                except dns.Unreachable:
                    # no route from this host (an IPv6 address on an IPv4-only host): fine when
                    # another address of the same server answers
                    if address == addresses[-1] and not answered:
                        raise
                    continue
                answered = True
                result.servers[address] = records
                result.ttl = max(result.ttl, ttl)
                result.exists = result.exists or bool(records)
    except dns.DnsError as error:
        result.error = str(error)
    return result


def published_everywhere(lookup: TlsaLookup, record: str) -> bool:
    """Whether `record` (`3 1 1 <hex>`) is answered by the resolver and by every authoritative
    server (at least one), with nothing in doubt."""
    record = normal_text(record)
    return (
        lookup.error is None
        and record in lookup.resolver_records
        and bool(lookup.servers)
        and all(record in records for records in lookup.servers.values())
    )
