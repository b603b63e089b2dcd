"""certsync.host.tlsa: the TLSA lookup through a resolver and at each authoritative server, with
servers on 127.0.0.x (one port for all, set in tlsa.PORT)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certsync.host import dns, tlsa
from tests.unit.fakedns import FakeDns, Handler, Zone, framed, reply, rr, soa_rdata, tlsa_rdata

OWNER = "_25._tcp.mail.example.test."
OLD, NEW = "aa" * 32, "bb" * 32
OLD_TEXT, NEW_TEXT = f"3 1 1 {OLD}", f"3 1 1 {NEW}"
MARGIN = 0.5


def test_owner_and_text() -> None:
    assert tlsa.tlsa_owner(25, "Mail.Example.COM") == "_25._tcp.mail.example.com."
    assert tlsa.tlsa_owner(465, "mail.example.com.") == "_465._tcp.mail.example.com."
    with pytest.raises(ValueError):
        tlsa.tlsa_owner(25, "*.example.com")
    with pytest.raises(ValueError):
        tlsa.tlsa_owner(0, "mail.example.com")
    assert tlsa.record_text(3, 1, 1, bytes.fromhex("AB" * 32)) == "3 1 1 " + "ab" * 32


def zone(
    records: list[str], servers: tuple[str, ...] = ("127.0.0.1",), cname: bool = False
) -> Zone:
    data: dict[tuple[str, int], list[bytes]] = {
        ("example.test.", dns.SOA): [soa_rdata()],
        ("example.test.", dns.NS): [dns.encode_name(f"ns{i}.example.test.") for i in range(1, 3)][
            : len(servers)
        ],
        ("mail.example.test.", dns.A): [bytes([127, 0, 0, 99])],
    }
    for i, address in enumerate(servers, 1):
        data[(f"ns{i}.example.test.", dns.A)] = [bytes(int(b) for b in address.split("."))]
    if cname:
        data[(OWNER, dns.CNAME)] = [dns.encode_name("_25._tcp.elsewhere.test.")]
    if records:
        data[(OWNER, dns.TLSA)] = [tlsa_rdata(hexdata) for hexdata in records]
    return Zone("example.test.", data)


@contextlib.contextmanager
def servers(*zones: Handler) -> Iterator[list[FakeDns]]:
    """zones[i] served on 127.0.0.(i+1), one port for all, set as tlsa.PORT."""
    started: list[FakeDns] = []
    try:
        for attempt in range(20):
            try:
                for i, handler in enumerate(zones):
                    port = started[0].port if started else 0
                    started.append(FakeDns(handler, f"127.0.0.{i + 1}", port))
                break
            except OSError:  # the port taken on the next address: try another
                for server in started:
                    server.close()
                started = []
                if attempt == 19:
                    raise
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tlsa, "PORT", started[0].port)
            yield started
    finally:
        for server in started:
            server.close()


def resolv_conf(tmp_path: Path, *addresses: str) -> str:
    path = tmp_path / "resolv.conf"
    path.write_text("".join(f"nameserver {address}\n" for address in addresses))
    return str(path)


def lookup(conf: str, timeout: float = 3.0) -> tlsa.TlsaLookup:
    started = time.monotonic()
    found = tlsa.lookup_tlsa(OWNER, started + timeout, conf)
    assert time.monotonic() - started < timeout + MARGIN
    return found


def test_absent_name(tmp_path: Path) -> None:
    with servers(zone([])):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found == tlsa.TlsaLookup(owner=OWNER, exists=False, servers={"127.0.0.1": []})


def test_a_resolver_without_records_is_checked_at_the_servers(tmp_path: Path) -> None:
    """The resolver (127.0.0.2: a split view, a stale cache, a forged answer) says NXDOMAIN;
    the zone's server, asked directly, has the record: the name uses DANE."""

    def split_view(query: bytes, transport: str) -> bytes:
        if dns.read_name(query, 12)[0] == OWNER:
            soa = rr("example.test.", dns.SOA, soa_rdata())
            return reply(query, [], [soa], rcode=dns.NXDOMAIN, aa=False)
        return authoritative(query, transport)

    authoritative = zone([OLD])
    with servers(authoritative, split_view):
        found = lookup(resolv_conf(tmp_path, "127.0.0.2"))
    assert found.error is None and found.exists
    assert found.resolver_records == [] and found.servers == {"127.0.0.1": [OLD_TEXT]}
    assert not tlsa.published_everywhere(found, OLD_TEXT)


def test_published_at_both_servers(tmp_path: Path) -> None:
    both = ("127.0.0.1", "127.0.0.2")
    with servers(zone([OLD, NEW], both), zone([NEW, OLD], both)) as fakes:
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found.error is None and found.exists
    assert found.resolver_records == [OLD_TEXT, NEW_TEXT]
    assert found.servers == {"127.0.0.1": [OLD_TEXT, NEW_TEXT], "127.0.0.2": [OLD_TEXT, NEW_TEXT]}
    assert found.ttl == 60
    assert tlsa.published_everywhere(found, NEW_TEXT.upper().replace(" ", "  "))
    assert not tlsa.published_everywhere(found, "3 1 1 " + "cc" * 32)
    # the second server was asked directly, without recursion, for the TLSA records only
    asked = [query for _, query in fakes[1].queries]
    assert len(asked) == 1 and asked[0][2] & 0x01 == 0


def test_missing_at_one_server(tmp_path: Path) -> None:
    both = ("127.0.0.1", "127.0.0.2")
    with servers(zone([OLD, NEW], both), zone([OLD], both)):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found.error is None
    assert found.servers["127.0.0.2"] == [OLD_TEXT]
    assert tlsa.published_everywhere(found, OLD_TEXT)
    assert not tlsa.published_everywhere(found, NEW_TEXT)


def test_missing_at_the_resolver(tmp_path: Path) -> None:
    """The resolver (127.0.0.2, not in the NS set) still has the old RRset."""
    with servers(zone([OLD, NEW]), zone([OLD])):
        found = lookup(resolv_conf(tmp_path, "127.0.0.2"))
    assert found.resolver_records == [OLD_TEXT]
    assert found.servers == {"127.0.0.1": [OLD_TEXT, NEW_TEXT]}
    assert not tlsa.published_everywhere(found, NEW_TEXT)


def test_not_authoritative(tmp_path: Path) -> None:
    lame = zone([OLD], ("127.0.0.1", "127.0.0.2"))
    lame.aa = False
    with servers(zone([OLD], ("127.0.0.1", "127.0.0.2")), lame):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found.error == "127.0.0.2: answer not authoritative"
    assert not tlsa.published_everywhere(found, OLD_TEXT)


def test_cname_at_owner(tmp_path: Path) -> None:
    with servers(zone([], cname=True)):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found.error is not None and "CNAME" in found.error


def test_no_nameserver(tmp_path: Path) -> None:
    found = lookup(resolv_conf(tmp_path))
    assert found.error == f"no nameserver in {tmp_path / 'resolv.conf'}"


def test_silent_authoritative_server(tmp_path: Path) -> None:
    both = ("127.0.0.1", "127.0.0.2")
    with servers(zone([OLD], both), lambda query, transport: None):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"), timeout=1.5)
    assert found.error == "127.0.0.2: timed out"
    assert found.exists and not tlsa.published_everywhere(found, OLD_TEXT)


def test_servfail_and_silent_resolvers(tmp_path: Path) -> None:
    def servfail(query: bytes, transport: str) -> bytes:
        answer = reply(query, rcode=2)
        return framed(answer) if transport == "tcp" else answer

    with servers(zone([OLD]), servfail, lambda query, transport: None):
        # the first that answers, each in turn
        found = lookup(resolv_conf(tmp_path, "127.0.0.3", "127.0.0.2", "127.0.0.1"), 4.0)
        assert found.error is None and found.servers == {"127.0.0.1": [OLD_TEXT]}
        found = lookup(resolv_conf(tmp_path, "127.0.0.3", "127.0.0.2"), 1.5)
    assert found.error == "127.0.0.3: timed out; 127.0.0.2: SERVFAIL"


def test_no_ns_found(tmp_path: Path) -> None:
    nameless = zone([OLD])
    del nameless.records[("example.test.", dns.NS)]
    with servers(nameless):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found.error == f"no NS records found for {OWNER}"


@pytest.mark.parametrize("address", ["0.0.0.0", "224.0.0.1"])
def test_an_unspecified_or_multicast_server_address_is_an_error(
    tmp_path: Path, address: str
) -> None:
    """0.0.0.0 reaches this host's own servers; a multicast address may answer from anyone."""
    with servers(zone([OLD], ("127.0.0.1", address))):
        found = lookup(resolv_conf(tmp_path, "127.0.0.1"))
    assert found.error == f"authoritative server ns2.example.test. has the address {address}"
    assert not tlsa.published_everywhere(found, OLD_TEXT)
