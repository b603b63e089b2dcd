"""SMTP (and the IMAP greeting) spoken by hand, within a deadline for the whole conversation, a
line at a time and a bounded number of lines: the servers certsync talks to (mox's own ports, the
alert relay on the same host) are not trusted to end their replies. (smtplib bounds neither, and
with the email package it costs more to import than the rest of a run that finds nothing to do.)"""

from __future__ import annotations

import contextlib
import socket
import time

from .errors import printable

MAX_LINE_BYTES = 4096
MAX_REPLY_LINES = 100


def left(deadline: float) -> float:
    """Seconds left until `deadline` (time.monotonic()); raises TimeoutError once it passed."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("no answer within the time allowed")
    return remaining


def line(sock: socket.socket, deadline: float) -> bytes:
    """One line the server sent, read a byte at a time (nothing may be read past it: a TLS
    handshake may follow)."""
    got = b""
    while not got.endswith(b"\n"):
        sock.settimeout(left(deadline))
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"connection closed after {got[:80]!r}")
        got += byte
        if len(got) > MAX_LINE_BYTES:
            raise ConnectionError("line too long")
    return got


def said(text: bytes) -> str:
    """A line the server sent, fit for a log line."""
    return printable(text.decode(errors="replace").strip()[:200])


def reply(sock: socket.socket, deadline: float) -> tuple[bytes, str]:
    """An SMTP reply (its lines `250-...` then `250 ...`): its code and its first line."""
    first = b""
    for _ in range(MAX_REPLY_LINES):
        got = line(sock, deadline)
        first = first or got
        if not got[:3].isdigit() or got[:3] != first[:3]:
            raise ConnectionError(f"SMTP: {said(got)}")
        if got[3:4] != b"-":
            return first[:3], said(first)
    raise ConnectionError("SMTP: a reply of too many lines")


def expect(sock: socket.socket, deadline: float, *codes: bytes) -> None:
    """Read a reply; it must have one of `codes`."""
    code, first = reply(sock, deadline)
    if code not in codes:
        raise ConnectionError(f"SMTP: {first}")


def say(sock: socket.socket, deadline: float, text: str) -> None:
    """Send one command line."""
    sock.settimeout(left(deadline))
    sock.sendall(text.encode("ascii") + b"\r\n")


def command(sock: socket.socket, deadline: float, text: str, *codes: bytes) -> None:
    """Send one command line and read its reply, which must have one of `codes`."""
    say(sock, deadline, text)
    expect(sock, deadline, *codes)


def send(
    address: tuple[str, int],
    helo: str,
    sender: str,
    recipients: list[str],
    message: bytes,
    timeout: float,
) -> list[str]:
    """Deliver `message` (CRLF lines, 7-bit) to the SMTP server at `address`, all within
    `timeout` seconds; the recipients it refused (raises when it took none, or on any error)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(address, timeout=timeout) as sock:
        expect(sock, deadline, b"220")
        command(sock, deadline, f"EHLO {helo}", b"250")
        command(sock, deadline, f"MAIL FROM:<{sender}>", b"250")
        refused = []
        for recipient in recipients:
            say(sock, deadline, f"RCPT TO:<{recipient}>")
            code, first = reply(sock, deadline)
            if code[:1] in (b"4", b"5"):
                refused.append(recipient)
            elif code not in (b"250", b"251"):
                raise ConnectionError(f"SMTP: {first}")
        if len(refused) == len(recipients):
            raise ConnectionError(f"SMTP: every recipient refused ({', '.join(refused)})")
        command(sock, deadline, "DATA", b"354")
        stuffed = b"".join(
            b"." + text if text.startswith(b".") else text
            for text in message.splitlines(keepends=True)
        )
        if not stuffed.endswith(b"\r\n"):
            stuffed += b"\r\n"
        sock.settimeout(left(deadline))
        sock.sendall(stuffed + b".\r\n")
        expect(sock, deadline, b"250")
        with contextlib.suppress(OSError):  # the message was taken
            command(sock, deadline, "QUIT", b"221")
    return refused
