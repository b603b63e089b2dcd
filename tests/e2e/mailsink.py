"""A real SMTP server (tests/smtpsink.py) on this test process's own loopback block, keeping every
message it is given, as the alert mail's relay (`certsync_alert_smtp`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from tests.fleet.slot import loopback
from tests.smtpsink import Received, SmtpSink, smtp_sink

__all__ = ["ADDRESS", "Received", "SmtpSink", "mail_sink"]

ADDRESS = loopback(5)  # 127.0.s.1 is pebble's and Caddy's, 127.0.s.(10+i) host i's


@contextlib.contextmanager
def mail_sink() -> Iterator[SmtpSink]:
    """`with mail_sink() as sink:` an SMTP server listens on `sink.relay` until the block ends."""
    with smtp_sink(ADDRESS) as sink:
        yield sink
