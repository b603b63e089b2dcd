"""certsync.host.dns: answers from a server on 127.0.0.1, well-formed and hostile; whatever a
server sends, the client returns an Answer or raises DnsError, within its deadline."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import time
from pathlib import Path

import pytest

from certsync.host import dns
from tests.unit.fakedns import framed, question, reply, rr, serving, soa_rdata, tlsa_rdata

OWNER = "_25._tcp.mail.example.test."
KEY = "ab" * 32
MARGIN = 0.5  # seconds past its deadline a call may take to return


def ask(port: int, name: str = OWNER, rtype: int = dns.TLSA, timeout: float = 2.0) -> dns.Answer:
    return dns.query("127.0.0.1", name, rtype, True, time.monotonic() + timeout, port=port)


def udp_only(make):  # type: ignore[no-untyped-def]
    return lambda query, transport: make(query) if transport == "udp" else None


def refused(port: int, match: str, timeout: float = 2.0) -> float:
    """Ask; the call must raise DnsError matching `match` within timeout + MARGIN: its time."""
    started = time.monotonic()
    with pytest.raises(dns.DnsError, match=match):
        ask(port, timeout=timeout)
    took = time.monotonic() - started
    assert took < timeout + MARGIN
    return took


def test_tlsa_records_and_flags() -> None:
    record = rr(OWNER.upper(), dns.TLSA, tlsa_rdata(KEY), ttl=300)
    with serving(udp_only(lambda q: reply(q, [record], aa=True, ad=True))) as server:
        answer = ask(server.port)
    assert (answer.rcode, answer.authoritative, answer.authenticated) == (0, True, True)
    assert answer.answers == [dns.RR(OWNER, dns.TLSA, 300, tlsa_rdata(KEY))]
    assert answer.authority == []


def test_flags_unset() -> None:
    with serving(udp_only(lambda q: reply(q, [], aa=False, ad=False))) as server:
        answer = ask(server.port)
    assert (answer.authoritative, answer.authenticated, answer.truncated) == (False, False, False)


def test_recursion_desired_as_asked() -> None:
    with serving(udp_only(lambda q: reply(q))) as server:
        dns.query("127.0.0.1", OWNER, dns.TLSA, False, time.monotonic() + 2, port=server.port)
        ask(server.port)
    assert [query[2] & 0x01 for _, query in server.queries] == [0, 1]


def test_nxdomain_and_nodata() -> None:
    soa = rr("example.test.", dns.SOA, soa_rdata())
    with serving(udp_only(lambda q: reply(q, [], [soa], rcode=dns.NXDOMAIN))) as server:
        nxdomain = ask(server.port)
    with serving(udp_only(lambda q: reply(q, [], [soa]))) as server:
        nodata = ask(server.port)
    assert (nxdomain.rcode, nxdomain.answers) == (dns.NXDOMAIN, [])
    assert (nodata.rcode, nodata.answers) == (dns.NOERROR, [])
    assert nodata.authority[0].owner == "example.test."
    assert nodata.authority[0].target == "ns1.example.test."


@pytest.mark.parametrize("rcode, name", [(2, "SERVFAIL"), (5, "REFUSED"), (1, "FORMERR")])
def test_error_rcodes(rcode: int, name: str) -> None:
    with serving(udp_only(lambda q: reply(q, rcode=rcode))) as server:
        refused(server.port, f"^127.0.0.1: {name}$")


def test_refused_without_question() -> None:
    with serving(udp_only(lambda q: q[:2] + struct.pack("!5H", 0x8005, 0, 0, 0, 0))) as server:
        refused(server.port, "^127.0.0.1: REFUSED$")


def test_truncated_over_tcp_too() -> None:
    def handler(query: bytes, transport: str) -> bytes:
        return reply(query, tc=True) if transport == "udp" else framed(reply(query, tc=True))

    with serving(handler) as server:
        refused(server.port, "truncated over TCP")


def test_compressed_names_and_addresses() -> None:
    """Names pointing back at the question (as servers compress them) and A/AAAA decoded."""

    def answer(query: bytes) -> bytes:
        pointer = b"\xc0\x0c"  # the question's name
        ns = pointer + struct.pack("!HHIH", dns.NS, 1, 60, 6) + b"\x03ns1" + pointer
        a = pointer + struct.pack("!HHIH", dns.A, 1, 60, 4) + bytes([127, 0, 0, 9])
        aaaa = pointer + struct.pack("!HHIH", dns.AAAA, 1, 60, 16) + bytes(15) + b"\x01"
        return reply(query, [b"", b"", b""], body=question(query) + ns + a + aaaa)

    with serving(udp_only(answer)) as server:
        got = ask(server.port, "Example.TEST", dns.NS)
    assert [(r.owner, r.rtype, r.target) for r in got.answers] == [
        ("example.test.", dns.NS, "ns1.example.test."),
        ("example.test.", dns.A, "127.0.0.9"),
        ("example.test.", dns.AAAA, "::1"),
    ]


def hostile(body_after_question: bytes, count: int = 1) -> dns.Answer | None:
    """Serve one answer: the question, then these bytes, with `count` answers declared."""

    def answer(query: bytes) -> bytes:
        return reply(query, [b""] * count, body=question(query) + body_after_question)

    with serving(udp_only(answer)) as server:
        return ask(server.port)


RDATA = tlsa_rdata(KEY)
GOOD_RR = b"\xc0\x0c" + struct.pack("!HHIH", dns.TLSA, 1, 60, len(RDATA)) + RDATA


@pytest.mark.parametrize(
    "body, count, match",
    [
        (GOOD_RR[:20], 1, "record data past the end"),
        (GOOD_RR[:5], 1, "record past the end"),
        (b"\xc0", 1, "name past the end"),
        (b"\xc0\x40" + GOOD_RR[2:], 1, "compression loop"),  # 0x40: past the pointer
        (b"\x01a\xc0\x2e" + GOOD_RR[2:], 1, "compression loop"),  # to itself
        (b"\xc0\x05" + GOOD_RR[2:], 1, "compression loop"),  # into the header
        (b"\x40" + b"a" * 64 + b"\0" + GOOD_RR[2:], 1, "label too long"),
        ((b"\x3f" + b"a" * 63) * 5 + b"\0" + GOOD_RR[2:], 1, "name too long"),
        (GOOD_RR, 3, "past the end"),
        (GOOD_RR + b"\0garbage", 1, "trailing bytes"),
        (GOOD_RR, 1000, "too many records"),
        (b"\xc0\x0c" + struct.pack("!HHIH", dns.TLSA, 3, 60, 4) + RDATA[:4], 1, "class 3"),
        (b"\xc0\x0c" + struct.pack("!HHIH", dns.A, 1, 60, 5) + b"\x7f\0\0\1\1", 1, "wrong length"),
        (b"\xc0\x0c" + struct.pack("!HHIH", dns.NS, 1, 60, 2) + b"\x01a\0", 1, "wrong length"),
    ],
)
def test_hostile_answers(body: bytes, count: int, match: str) -> None:
    with pytest.raises(dns.DnsError, match=f"^127.0.0.1: bad answer: .*{match}"):
        hostile(body, count)


def test_compression_pointers_chained_backwards() -> None:
    """A pointer to a name that itself ends in a pointer further back is fine."""
    # question name at 12; the answer's owner: "x" then a pointer to the question
    got = hostile(GOOD_RR)
    assert got is not None and got.answers[0].owner == OWNER


def test_loop_through_two_pointers() -> None:
    def answer(query: bytes) -> bytes:
        start = 12 + len(question(query))
        # two names pointing at each other: the first (at start) points to the second
        first = b"\x01a" + struct.pack("!H", 0xC000 | start + 4)
        second = b"\x01b" + struct.pack("!H", 0xC000 | start)
        owner_ptr = struct.pack("!H", 0xC000 | start + 4)
        rr_bytes = owner_ptr + struct.pack("!HHIH", dns.TLSA, 1, 60, len(RDATA)) + RDATA
        return reply(query, [b""], body=question(query) + first + second + rr_bytes)

    with serving(udp_only(answer)) as server:
        refused(server.port, "bad answer")


def test_short_and_wrong_messages() -> None:
    with serving(udp_only(lambda q: q[:2] + b"\x81\x80")) as server:
        refused(server.port, "shorter than a header")
    with serving(udp_only(lambda q: q)) as server:  # the query sent back: QR unset
        refused(server.port, "not an answer")


def test_wrong_question_echoed() -> None:
    other = dns.encode_name("_443._tcp.mail.example.test.") + struct.pack("!HH", dns.TLSA, 1)
    with serving(udp_only(lambda q: reply(q, body=other))) as server:
        refused(server.port, "another question echoed")
    with serving(udp_only(lambda q: reply(q, body=question(q)[:-4] + b"\0\1\0\1"))) as server:
        refused(server.port, "another question echoed")


def test_wrong_id_is_ignored() -> None:
    """An answer with another id is not the answer (maybe spoofed): the right one is waited for;
    when only wrong ones come, the call times out within its deadline."""

    def spoofed_first(query: bytes) -> list[bytes]:
        wrong = bytes([query[0] ^ 0xFF, query[1]])
        return [reply(query, query_id=wrong, rcode=dns.NXDOMAIN), reply(query)]

    with serving(udp_only(spoofed_first)) as server:
        assert ask(server.port).rcode == dns.NOERROR
    with serving(udp_only(lambda q: reply(q, query_id=bytes([q[0] ^ 1, q[1]])))) as server:
        refused(server.port, "timed out", timeout=1.5)


def test_truncated_answer_is_asked_again_over_tcp() -> None:
    record = rr(OWNER, dns.TLSA, tlsa_rdata(KEY))

    def handler(query: bytes, transport: str) -> bytes:
        if transport == "udp":
            return reply(query, tc=True)
        return framed(reply(query, [record]))

    with serving(handler) as server:
        answer = ask(server.port)
    assert [transport for transport, _ in server.queries] == ["udp", "tcp"]
    assert answer.answers[0].rdata == tlsa_rdata(KEY)
    assert not answer.truncated


@pytest.mark.parametrize(
    "send, match",
    [
        (lambda m: struct.pack("!H", len(m) + 100) + m, "connection closed after"),
        (lambda m: struct.pack("!H", len(m) - 3) + m[:-3], "past the end"),
        (lambda m: framed(m) + b"junk", None),  # bytes after the message: never read
        (lambda m: b"\x00", "connection closed after 1 of 2"),
    ],
)
def test_tcp_length_prefix(send, match: str | None) -> None:  # type: ignore[no-untyped-def]
    record = rr(OWNER, dns.TLSA, tlsa_rdata(KEY))

    def handler(query: bytes, transport: str) -> bytes:
        return reply(query, tc=True) if transport == "udp" else send(reply(query, [record]))

    with serving(handler) as server:
        if match is None:
            assert ask(server.port).answers[0].rdata == tlsa_rdata(KEY)
        else:
            refused(server.port, match)


def test_tcp_length_prefix_longer_than_sent_connection_open() -> None:
    def handler(query: bytes, transport: str) -> list[bytes] | bytes | None:
        if transport == "udp":
            return reply(query, tc=True)
        return None  # FakeDns keeps the connection open, silent

    with serving(handler) as server:
        refused(server.port, "timed out", timeout=1.0)


def test_silent_server_bounded_by_deadline() -> None:
    with serving(lambda query, transport: None) as server:
        took = refused(server.port, "^127.0.0.1: timed out$", timeout=2.5)
    assert took >= 2.4
    assert len(server.queries) >= 2  # the query was sent again meanwhile


def test_deadline_already_past() -> None:
    with serving(udp_only(lambda q: reply(q))) as server:
        refused(server.port, "timed out", timeout=0)


def test_nothing_listening() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused(port, "^127.0.0.1: ")


@pytest.mark.parametrize("name", ["a" * 64 + ".test", ("a" * 60 + ".") * 5, "mäil.test", "a..b"])
def test_bad_names_asked(name: str) -> None:
    with pytest.raises(dns.DnsError, match="bad name"):
        dns.query("127.0.0.1", name, dns.TLSA, True, time.monotonic() + 1, port=9)


def test_resolvers(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_bytes(
        b"# comment\n; nameserver 127.0.0.7\nsearch example.test\n"
        b"nameserver 127.0.0.53 # systemd-resolved\n"
        b"nameserver not-an-address\nnameserver\n\xff\xfe garbage\n"
        b"nameserver ::1\nnameserver 127.0.0.2\nnameserver 127.0.0.3\n"
    )
    assert dns.resolvers(str(conf)) == ["127.0.0.53", "::1", "127.0.0.2"]
    conf.write_text("options trust-ad\n")
    assert dns.resolvers(str(conf)) == []
    assert dns.resolvers(str(tmp_path / "missing")) == []
    assert dns.resolvers(str(tmp_path)) == []  # a folder


def valid_answer(query_id: int) -> bytes:
    query = dns.build_query(query_id, OWNER, dns.TLSA, True)
    soa = rr("example.test.", dns.SOA, soa_rdata())
    ns = b"\xc0\x0c" + struct.pack("!HHIH", dns.CNAME, 1, 60, 4) + b"\x01x\xc0\x0c"
    answer = reply(query, [GOOD_RR, GOOD_RR, ns], [soa], ad=True)
    return answer


def test_fuzz_only_dns_error() -> None:
    """Random bytes and mutations of a valid answer: parse returns or raises DnsError only."""
    rng = random.Random(14)
    base = valid_answer(0x1234)
    assert len(dns.parse(base, 0x1234, OWNER, dns.TLSA).answers) == 3
    outcomes = {"answer": 0, "error": 0}
    for round_ in range(20000):
        if round_ % 4 == 0:
            message = bytearray(b"\x12\x34")
            message += bytes(rng.randrange(256) for _ in range(rng.randrange(120)))
        else:
            message = bytearray(base)
            for _ in range(rng.randrange(1, 6)):
                if len(message) < 3:
                    break
                what = rng.randrange(4)
                spot = rng.randrange(2, len(message))
                if what == 0:
                    message[spot] = rng.randrange(256)
                elif what == 1:
                    del message[spot:]
                elif what == 2:
                    message[spot:spot] = bytes(rng.randrange(256) for _ in range(3))
                else:
                    message[spot] = rng.choice([0xC0, 0x3F, 0x40, 0x00, 0xFF])
        try:
            dns.parse(bytes(message), 0x1234, OWNER, dns.TLSA)
            outcomes["answer"] += 1
        except dns.DnsError:
            outcomes["error"] += 1
    assert outcomes["answer"] > 100 and outcomes["error"] > 10000, outcomes


def test_fuzz_over_the_wire() -> None:
    """Mutated answers sent by a server: query returns or raises DnsError, in bounds."""
    rng = random.Random(52)

    def mutated(query: bytes, transport: str) -> bytes:
        good = bytearray(valid_answer(int.from_bytes(query[:2], "big")))
        for _ in range(rng.randrange(1, 4)):
            good[rng.randrange(2, len(good))] = rng.randrange(256)
        return framed(bytes(good)) if transport == "tcp" else bytes(good)

    with serving(mutated) as server:
        for _ in range(200):
            started = time.monotonic()
            with contextlib.suppress(dns.DnsError):
                ask(server.port, timeout=0.3)
            assert time.monotonic() - started < 0.3 + MARGIN
