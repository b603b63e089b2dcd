"""What mox serves: the leaf certificate a TLS handshake gets on a port, and its sha256."""

from __future__ import annotations

import functools
import hashlib
import socket
import ssl
import time

from .errors import printable
from .moxconf import Target

# what a probe raises when nothing (or no certificate) answers (ConnectionError is an OSError)
PROBE_ERRORS = (OSError, ssl.SSLError, EOFError)
MAX_REPLY_LINES = 100


def served_fingerprint(target: Target, server_name: str, timeout: float = 5.0) -> str:
    """sha256 of the leaf certificate served at `target`, with `server_name` as SNI; raises one
    of PROBE_ERRORS when nothing (or no certificate) answers."""
    return hashlib.sha256(served_certificate(target, server_name, timeout)).hexdigest()


@functools.cache
def _client_context() -> ssl.SSLContext:
    """One TLS client context for every probe of a run (making one costs a few ms)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # identity is checked by fingerprint
    return context


def served_certificate(target: Target, server_name: str, timeout: float = 5.0) -> bytes:
    """The DER of the leaf certificate served at `target`, with `server_name` as SNI, within
    `timeout` seconds in all (a server that trickles bytes does not hold a sync up)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((target.address, target.port), timeout=timeout) as raw:
        if target.protocol == "smtp":
            _smtp_starttls(raw, deadline)
        elif target.protocol == "imap":
            _imap_starttls(raw, deadline)
        raw.settimeout(_left(deadline))
        with _client_context().wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate served")
    return der


# STARTTLS by hand: smtplib (with the email package) and imaplib cost more to import than the
# rest of a run that finds nothing to do, and only these few lines of them are needed.


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no TLS handshake within the time allowed")
    return left


def _line(sock: socket.socket, deadline: float) -> bytes:
    """One line the server sent, read a byte at a time (nothing may be read past it: the TLS
    handshake follows)."""
    line = b""
    while not line.endswith(b"\n"):
        sock.settimeout(_left(deadline))
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"connection closed after {line[:80]!r}")
        line += byte
        if len(line) > 4096:
            raise ConnectionError("line too long")
    return line


def _said(line: bytes) -> str:
    return printable(line.decode(errors="replace").strip()[:200])


def _smtp_reply(sock: socket.socket, code: bytes, deadline: float) -> None:
    """Read an SMTP reply (its lines `250-...` then `250 ...`); it must have `code`."""
    for _ in range(MAX_REPLY_LINES):
        line = _line(sock, deadline)
        if not line.startswith(code):
            raise ConnectionError(f"SMTP: {_said(line)}")
        if line[3:4] != b"-":
            return
    raise ConnectionError("SMTP: a reply of too many lines")


def _smtp_starttls(sock: socket.socket, deadline: float) -> None:
    _smtp_reply(sock, b"220", deadline)
    sock.sendall(b"EHLO certsync.invalid\r\n")
    _smtp_reply(sock, b"250", deadline)
    sock.sendall(b"STARTTLS\r\n")
    _smtp_reply(sock, b"220", deadline)


def _imap_starttls(sock: socket.socket, deadline: float) -> None:
    greeting = _line(sock, deadline)
    if not greeting.startswith(b"* OK"):
        raise ConnectionError(f"IMAP: {_said(greeting)}")
    sock.sendall(b"c1 STARTTLS\r\n")
    for _ in range(MAX_REPLY_LINES):
        line = _line(sock, deadline)
        if line.startswith(b"c1 "):
            if not line.startswith(b"c1 OK"):
                raise ConnectionError(f"IMAP: {_said(line)}")
            return
    raise ConnectionError("IMAP: a reply of too many lines")
