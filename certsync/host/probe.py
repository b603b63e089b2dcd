"""What mox serves: the leaf certificate a TLS handshake gets on a port, and its sha256."""

from __future__ import annotations

import functools
import hashlib
import socket
import ssl
import time

from . import wire
from .moxconf import Target

# what a probe raises when nothing (or no certificate) answers (ConnectionError is an OSError)
PROBE_ERRORS = (OSError, ssl.SSLError, EOFError)


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
        raw.settimeout(wire.left(deadline))
        with _client_context().wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate served")
    return der


# STARTTLS by hand: only these few lines of smtplib and imaplib are needed.


def _smtp_starttls(sock: socket.socket, deadline: float) -> None:
    wire.expect(sock, deadline, b"220")
    wire.command(sock, deadline, "EHLO certsync.invalid", b"250")
    wire.command(sock, deadline, "STARTTLS", b"220")


def _imap_starttls(sock: socket.socket, deadline: float) -> None:
    greeting = wire.line(sock, deadline)
    if not greeting.startswith(b"* OK"):
        raise ConnectionError(f"IMAP: {wire.said(greeting)}")
    sock.sendall(b"c1 STARTTLS\r\n")
    for _ in range(wire.MAX_REPLY_LINES):
        line = wire.line(sock, deadline)
        if line.startswith(b"c1 "):
            if not line.startswith(b"c1 OK"):
                raise ConnectionError(f"IMAP: {wire.said(line)}")
            return
    raise ConnectionError("IMAP: a reply of too many lines")
