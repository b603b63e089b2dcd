"""A DNS client of its own: one question over UDP (EDNS0), again over TCP when the answer is
truncated, all within a deadline. Every answer is hostile input: its size, its number of records,
its names (length, labels, compression pointers that must point backwards, a bounded number of
them) are bounded, and anything malformed raises DnsError, never another exception."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
import time

from .errors import printable, reason
from .record import Record

A = 1
NS = 2
CNAME = 5
SOA = 6
AAAA = 28
OPT = 41
TLSA = 52
CLASS_IN = 1

NOERROR = 0
NXDOMAIN = 3
RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED"}

UDP_PAYLOAD = 1232  # advertised in EDNS0 (the DNS flag day 2020 size)
MAX_MESSAGE = 65535
MAX_RRS = 200  # in all sections of one answer
MAX_NAME = 255  # octets on the wire
MAX_LABEL = 63
MAX_JUMPS = 32  # compression pointers followed for one name
RESEND = 1.0  # seconds between UDP retransmissions
MAX_RESOLVERS = 3
MAX_RESOLV_CONF = 65536

# Errors of a network this host has no route to (an IPv6 server on an IPv4-only host).
UNREACHABLE_ERRNOS = (
    errno.ENETUNREACH,
    errno.EAFNOSUPPORT,
    errno.EADDRNOTAVAIL,
    errno.EHOSTUNREACH,
)


class DnsError(Exception):
    """A question without a usable answer; str() is a short printable reason."""


class Unreachable(DnsError):
    """The server's network cannot be reached from this host (no route, no IPv6)."""


class RR(Record):
    owner: str  # lower case, with the trailing dot
    rtype: int
    ttl: int
    rdata: bytes
    target: str | None = None  # NS/CNAME: the name; SOA: the primary (MNAME); A/AAAA: the address


class Answer(Record):
    rcode: int  # NOERROR or NXDOMAIN (other codes raise DnsError)
    authoritative: bool  # AA
    authenticated: bool  # AD
    truncated: bool
    answers: list[RR] = []
    authority: list[RR] = []


def _bad(what: str) -> DnsError:
    return DnsError(f"bad answer: {what}")


def encode_name(name: str) -> bytes:
    """`name` (dots between labels, the trailing one optional) in wire format."""
    text = name.lower().rstrip(".") if name != "." else ""
    wire = b""
    for label in text.split(".") if text else []:
        raw = label.encode("ascii", errors="replace")
        if not 0 < len(raw) <= MAX_LABEL or raw != label.encode("utf-8"):
            raise DnsError(f"bad name: {printable(name[:300])}")
        wire += bytes([len(raw)]) + raw
    wire += b"\0"
    if len(wire) > MAX_NAME:
        raise DnsError(f"bad name: {printable(name[:300])}")
    return wire


def _label_text(label: bytes) -> str:
    """A label in presentation format: letters (lower-cased), digits, `-`, `_` and `*` as they are,
    `.` and `\\` escaped, any other byte as \\DDD."""
    out = []
    for byte in label.lower():
        char = chr(byte)
        if char.isascii() and (char.isalnum() or char in "-_*"):
            out.append(char)
        elif char in ".\\":
            out.append("\\" + char)
        else:
            out.append(f"\\{byte:03d}")
    return "".join(out)


def read_name(message: bytes, offset: int) -> tuple[str, int]:
    """The name at `offset` (lower case, trailing dot) and the offset just past it."""
    labels: list[str] = []
    wire_length = 1
    end = None
    start = offset  # where the labels now read begin: a pointer must point before it
    jumps = 0
    while True:
        if offset >= len(message):
            raise _bad("name past the end")
        length = message[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(message):
                raise _bad("name past the end")
            target = int.from_bytes(message[offset : offset + 2], "big") & 0x3FFF
            if end is None:
                end = offset + 2
            jumps += 1
            if target >= start or target < 12 or jumps > MAX_JUMPS:
                raise _bad("compression loop")
            offset = start = target
            continue
        if length & 0xC0:
            raise _bad("label too long")
        if length == 0:
            break
        label = message[offset + 1 : offset + 1 + length]
        if len(label) < length:
            raise _bad("name past the end")
        wire_length += length + 1
        if wire_length > MAX_NAME:
            raise _bad("name too long")
        labels.append(_label_text(label))
        offset += 1 + length
    return ".".join(labels) + ".", end if end is not None else offset + 1


def _rr(message: bytes, offset: int) -> tuple[RR, int, int]:
    """The resource record at `offset`, its class, and the offset past it."""
    owner, offset = read_name(message, offset)
    if offset + 10 > len(message):
        raise _bad("record past the end")
    rtype, rclass, ttl, length = struct.unpack_from("!HHIH", message, offset)
    offset += 10
    rdata = message[offset : offset + length]
    if len(rdata) < length:
        raise _bad("record data past the end")
    end = offset + length
    target = None
    if rtype in (NS, CNAME, SOA):
        target, past = read_name(message, offset)
        if rtype == SOA:
            _, past = read_name(message, past)
            past += 20
        if past != end:
            raise _bad(f"record data of type {rtype} of the wrong length")
    elif rtype in (A, AAAA):
        if len(rdata) != (4 if rtype == A else 16):
            raise _bad(f"address of the wrong length ({len(rdata)})")
        target = str(ipaddress.ip_address(rdata))
    ttl = 0 if ttl > 0x7FFFFFFF else ttl  # RFC 2181 §8
    return RR(owner, rtype, ttl, rdata, target), rclass, end


def parse(message: bytes, query_id: int, name: str, rtype: int) -> Answer:
    """The answer to question (`name`, `rtype`) with id `query_id` in `message`."""
    if len(message) < 12:
        raise _bad("shorter than a header")
    if len(message) > MAX_MESSAGE:
        raise _bad("too long")
    got_id, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", message)
    if got_id != query_id:
        raise _bad("wrong id")
    if not flags & 0x8000 or (flags >> 11) & 0xF:
        raise _bad("not an answer to a query")
    rcode = flags & 0xF
    if qdcount == 0 and rcode not in (NOERROR, NXDOMAIN):  # some servers refuse without it
        raise DnsError(RCODES.get(rcode, f"rcode {rcode}"))
    if qdcount != 1:
        raise _bad("question not echoed")
    if ancount + nscount + arcount > MAX_RRS:
        raise _bad("too many records")
    qname, offset = read_name(message, 12)
    if offset + 4 > len(message):
        raise _bad("question past the end")
    if (qname, struct.unpack_from("!HH", message, offset)) != (
        name.lower().rstrip(".") + ".",
        (rtype, CLASS_IN),
    ):
        raise _bad("another question echoed")
    offset += 4
    sections: list[list[RR]] = [[], [], []]
    for section, count in zip(sections, (ancount, nscount, arcount)):
        for _ in range(count):
            rr, rclass, offset = _rr(message, offset)
            if rr.rtype != OPT and rclass != CLASS_IN:
                raise _bad(f"record of class {rclass}")
            section.append(rr)
    if offset != len(message):
        raise _bad("trailing bytes")
    if rcode not in (NOERROR, NXDOMAIN):
        raise DnsError(RCODES.get(rcode, f"rcode {rcode}"))
    return Answer(
        rcode=rcode,
        authoritative=bool(flags & 0x0400),
        authenticated=bool(flags & 0x0020),
        truncated=bool(flags & 0x0200),
        answers=sections[0],
        authority=sections[1],
    )


def build_query(query_id: int, name: str, rtype: int, recursion: bool) -> bytes:
    # flags: RD when asked; AD set asks for the AD bit in the answer (RFC 6840 §5.7)
    flags = (0x0100 if recursion else 0) | 0x0020
    header = struct.pack("!6H", query_id, flags, 1, 0, 0, 1)
    opt = b"\0" + struct.pack("!HHIH", OPT, UDP_PAYLOAD, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", rtype, CLASS_IN) + opt


def _left(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise socket.timeout("timed out")
    return remaining


def _udp(address: tuple[str, int], packet: bytes, deadline: float) -> bytes:
    """The first datagram from the server that carries the query's id (others are ignored: a
    spoofed or late answer), sending the query again every RESEND seconds."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(address)  # the kernel drops datagrams from other sources
        while True:
            sock.send(packet)
            resend = min(deadline, time.monotonic() + RESEND)
            while time.monotonic() < resend:
                sock.settimeout(max(0.001, resend - time.monotonic()))
                try:
                    got = sock.recv(MAX_MESSAGE)
                except socket.timeout:
                    break
                if got[:2] == packet[:2]:
                    return got
            _left(deadline)


def _recv_exactly(sock: socket.socket, count: int, deadline: float) -> bytes:
    got = b""
    while len(got) < count:
        sock.settimeout(_left(deadline))
        chunk = sock.recv(count - len(got))
        if not chunk:
            raise _bad(f"connection closed after {len(got)} of {count} bytes")
        got += chunk
    return got


def _tcp(address: tuple[str, int], packet: bytes, deadline: float) -> bytes:
    with socket.create_connection(address, timeout=_left(deadline)) as sock:
        sock.settimeout(_left(deadline))
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        (length,) = struct.unpack("!H", _recv_exactly(sock, 2, deadline))
        return _recv_exactly(sock, length, deadline)


def query(
    server: str, name: str, rtype: int, recursion: bool, deadline: float, port: int = 53
) -> Answer:
    """Ask `server` for the `rtype` records of `name` (RD set when `recursion`), over UDP and
    over TCP when the answer is truncated, all before `deadline` (a time.monotonic() instant).
    Returns NOERROR and NXDOMAIN answers; raises DnsError for anything else."""
    query_id = int.from_bytes(os.urandom(2), "big")
    packet = build_query(query_id, name, rtype, recursion)
    address = (server, port)
    try:
        answer = parse(_udp(address, packet, deadline), query_id, name, rtype)
        if answer.truncated:
            answer = parse(_tcp(address, packet, deadline), query_id, name, rtype)
            if answer.truncated:
                raise _bad("truncated over TCP")
    except DnsError as error:
        raise type(error)(f"{server}: {error}") from None
    except socket.timeout:
        raise DnsError(f"{server}: timed out") from None
    except OSError as error:
        kind = Unreachable if error.errno in UNREACHABLE_ERRNOS else DnsError
        raise kind(f"{server}: {reason(error)}") from None
    except (ValueError, UnicodeError) as error:  # a server address that is no address
        raise DnsError(f"{printable(server[:100])}: {error}") from None
    return answer


def resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """The addresses of the first MAX_RESOLVERS `nameserver` lines of resolv.conf (what is no
    IP address is skipped); an empty list when there are none or the file cannot be read."""
    try:
        with open(path, "rb") as file:
            text = file.read(MAX_RESOLV_CONF).decode("utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            ipaddress.ip_address(words[1])
        except ValueError:
            continue
        found.append(words[1])
        if len(found) == MAX_RESOLVERS:
            break
    return found
