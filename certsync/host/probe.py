"""What mox serves: the leaf certificate a TLS handshake gets on a port, and its sha256."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import socket
import ssl

from .moxconf import Target

# smtplib's errors are OSErrors; imaplib's are turned into OSErrors below.
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
    """The DER of the leaf certificate served at `target`, with `server_name` as SNI."""
    context = _client_context()
    if target.protocol == "smtp":
        der = _smtp_starttls(target, server_name, context, timeout)
    elif target.protocol == "imap":
        der = _imap_starttls(target, server_name, context, timeout)
    else:
        raw = socket.create_connection((target.address, target.port), timeout=timeout)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("no certificate served")
    return der


def _smtp_starttls(
    target: Target, server_name: str, context: ssl.SSLContext, timeout: float
) -> bytes | None:
    import smtplib  # only here: it pulls in the email package

    with smtplib.SMTP(
        target.address, target.port, local_hostname="certsync.invalid", timeout=timeout
    ) as smtp:
        smtp._host = server_name  # type: ignore[attr-defined]  # smtplib sends it as SNI
        smtp.starttls(context=context)
        return smtp.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]


def _imap_starttls(
    target: Target, server_name: str, context: ssl.SSLContext, timeout: float
) -> bytes | None:
    import imaplib

    try:
        imap = imaplib.IMAP4(target.address, target.port, timeout=timeout)
        try:
            imap.host = server_name
            imap.starttls(ssl_context=context)
            return imap.sock.getpeercert(binary_form=True)  # type: ignore[attr-defined]
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                imap.logout()
    except imaplib.IMAP4.error as error:
        raise OSError(f"IMAP: {error}") from error
