"""A DNS server on 127.0.0.x for the unit tests: UDP and TCP on one port, answering each query
with what a test's function returns (well-formed or hostile bytes, or nothing at all), and a
builder of answers (`reply`) and of a small zone's answers (`Zone`)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

from certsync.host import dns

# (query, transport "udp"/"tcp") -> the datagrams to send (UDP), or the bytes to send (TCP,
# length prefix included: see framed); None: stay silent
Handler = Callable[[bytes, str], "list[bytes] | bytes | None"]


def question(query: bytes) -> bytes:
    """The question section of `query`, as bytes."""
    _, end = dns.read_name(query, 12)
    return query[12 : end + 4]


def rr(name: str, rtype: int, rdata: bytes, ttl: int = 60, rclass: int = 1) -> bytes:
    return dns.encode_name(name) + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


def tlsa_rdata(hexdata: str, usage: int = 3, selector: int = 1, mtype: int = 1) -> bytes:
    return bytes([usage, selector, mtype]) + bytes.fromhex(hexdata)


def soa_rdata(primary: str = "ns1.example.test.") -> bytes:
    return (
        dns.encode_name(primary)
        + dns.encode_name("hostmaster.example.test.")
        + struct.pack("!5I", 1, 60, 60, 600, 5)
    )


def reply(
    query: bytes,
    answers: list[bytes] | None = None,
    authority: list[bytes] | None = None,
    *,
    rcode: int = 0,
    aa: bool = True,
    ad: bool = False,
    tc: bool = False,
    query_id: bytes | None = None,
    body: bytes | None = None,
) -> bytes:
    """An answer to `query`: its id and question, these records; `body` replaces what follows
    the header (for hostile answers), with the counts as given by answers/authority."""
    answers = answers or []
    authority = authority or []
    flags = 0x8000 | query[2] << 8 & 0x0100 | rcode
    flags |= (0x0400 if aa else 0) | (0x0020 if ad else 0) | (0x0200 if tc else 0)
    header = (query_id or query[:2]) + struct.pack("!5H", flags, 1, len(answers), len(authority), 0)
    if body is not None:
        return header + body
    return header + question(query) + b"".join(answers) + b"".join(authority)


def framed(message: bytes) -> bytes:
    return struct.pack("!H", len(message)) + message


class Zone:
    """Answers as an authoritative server of `apex` (and a resolver knowing only it) gives them:
    records by (name, type), NODATA for a name that exists with other types (or has names under
    it), NXDOMAIN for the others, with the SOA in the authority section."""

    def __init__(self, apex: str, records: dict[tuple[str, int], list[bytes]]) -> None:
        self.apex = apex
        self.records = records
        self.aa = True

    def __call__(self, query: bytes, transport: str) -> bytes:
        name, end = dns.read_name(query, 12)
        (rtype,) = struct.unpack_from("!H", query, end)
        if (name, dns.CNAME) in self.records:  # not followed: the resolver gives the alias only
            rtype = dns.CNAME
        found = [rr(name, rtype, rdata) for rdata in self.records.get((name, rtype), [])]
        answer = reply(query, found, aa=self.aa)
        if not found:
            exists = any(owner == name or owner.endswith("." + name) for owner, _ in self.records)
            soa = [rr(self.apex, dns.SOA, soa_rdata())]
            answer = reply(query, [], soa, rcode=0 if exists else dns.NXDOMAIN, aa=self.aa)
        return framed(answer) if transport == "tcp" else answer


class FakeDns:
    """UDP and TCP on `address`:`port` (port 0: a free one, the same for both)."""

    def __init__(self, handler: Handler, address: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.queries: list[tuple[str, bytes]] = []
        self.address = address
        self._tcp = socket.create_server((address, port))
        self.port = self._tcp.getsockname()[1]
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind((address, self.port))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _answer(self, query: bytes, transport: str) -> list[bytes] | bytes | None:
        self.queries.append((transport, query))
        try:
            return self.handler(query, transport)
        except Exception:  # a query the test did not expect: stay silent
            return None

    def _serve_udp(self) -> None:
        self._udp.settimeout(0.1)
        while not self._stop.is_set():
            try:
                query, peer = self._udp.recvfrom(65535)
            except (TimeoutError, OSError):
                continue
            got = self._answer(query, "udp")
            for datagram in [got] if isinstance(got, bytes) else got or []:
                self._udp.sendto(datagram, peer)

    def _serve_tcp(self) -> None:
        self._tcp.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._tcp.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                try:
                    (length,) = struct.unpack("!H", conn.recv(2))
                    query = conn.recv(length)
                    got = self._answer(query, "tcp")
                    if got is None:
                        self._stop.wait(3)  # silent, the connection open
                    else:
                        conn.sendall(got if isinstance(got, bytes) else b"".join(got))
                except (OSError, struct.error):
                    continue

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._udp.close()
        self._tcp.close()


@contextlib.contextmanager
def serving(handler: Handler, address: str = "127.0.0.1", port: int = 0) -> Iterator[FakeDns]:
    server = FakeDns(handler, address, port)
    try:
        yield server
    finally:
        server.close()
