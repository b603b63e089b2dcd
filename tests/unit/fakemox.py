"""mox as the host program sees it, in a tmp dir: a TLS server on 127.0.0.1 serving the pairs its
files held at its last (re)start, chosen by SNI as mox does; the command that restarts it; a
`mox config test` that exits as told; a mox.conf whose listener names its files.

A restart is a real command (a small script) that asks the server over a control socket to load
its files again. A pair that does not load makes it serve nothing, as `mox serve` exits then.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from tests.unit.certs import stored_name

RESTART_SCRIPT = """import socket, sys
with socket.create_connection(("127.0.0.1", {port}), timeout=30) as control:
    control.sendall(b"restart\\n")
    reply = control.makefile("rb").readline()
if reply != b"ok\\n":
    print("Job for mox.service failed because the control process exited with error code.")
    sys.exit(1)
"""


def served_sha256(port: int, server_name: str) -> str | None:
    """sha256 of the leaf a TLS handshake on 127.0.0.1:port gets with this SNI; None when
    nothing answers (the test's own client, not the host program's probe)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return hashlib.sha256(der).hexdigest() if der else None


def sni_for(name: str) -> str:
    """A host name the certificate name covers (a wildcard's: one label under it)."""
    return "imap" + name[1:] if name.startswith("*.") else name


class FakeMox:
    def __init__(
        self, folder: Path, cert_dir: Path, names: list[str], submission: bool = False
    ) -> None:
        self.folder = folder
        self.cert_dir = cert_dir
        self.names = names
        self.restarts = 0
        self.failing_restarts = 0  # how many of the next restarts fail, changing nothing
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._control = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        # with `submission`: SMTP submission too (STARTTLS after mox's `220` greeting)
        self._submission = socket.create_server(("127.0.0.1", 0)) if submission else None
        self.submission_port = self._submission.getsockname()[1] if self._submission else None
        folder.mkdir(parents=True, exist_ok=True)
        restart = folder / "restart.py"
        restart.write_text(RESTART_SCRIPT.format(port=self._control.getsockname()[1]))
        self.restart_command = f"{sys.executable} -I -S {restart}"
        self.mox_binary = folder / "mox"
        self.config_test()
        self.mox_config = folder / "mox.conf"
        self.mox_config.write_text(self._mox_conf())
        accept_each(self._server, self._serve)
        accept_each(self._control, self._answer_restart)
        if self._submission is not None:
            accept_each(self._submission, self._serve_submission)

    def _mox_conf(self) -> str:
        key_certs = "".join(
            f"\t\t\t\t-\n\t\t\t\t\tCertFile: {self.cert_dir}/{stored_name(name)}.crt\n"
            f"\t\t\t\t\tKeyFile: {self.cert_dir}/{stored_name(name)}.key\n"
            for name in self.names
        )
        return (
            "Listeners:\n\tpublic:\n\t\tIPs:\n\t\t\t- 127.0.0.1\n"
            f"\t\tTLS:\n\t\t\tKeyCerts:\n{key_certs}"
            f"\t\tIMAPS:\n\t\t\tEnabled: true\n\t\t\tPort: {self.port}\n"
            + (
                f"\t\tSubmission:\n\t\t\tEnabled: true\n\t\t\tPort: {self.submission_port}\n"
                if self.submission_port
                else ""
            )
        )

    def config_test(self, exit_status: int = 0, output: bytes = b"") -> None:
        """What `mox config test` prints and how it exits from now on; every call's arguments
        are appended to config-test.calls."""
        (self.folder / "config-test.out").write_bytes(output)
        self.mox_binary.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "$*" >> {self.folder}/config-test.calls\n'
            f"cat {self.folder}/config-test.out\n"
            f"exit {exit_status}\n"
        )
        self.mox_binary.chmod(0o755)

    @property
    def config_test_calls(self) -> list[str]:
        calls = self.folder / "config-test.calls"
        return calls.read_text().splitlines() if calls.exists() else []

    def start(self) -> None:
        """Load every name's pair from its files, as `mox serve` does at start (as root,
        following links); if one does not load, serve nothing."""
        contexts = {}
        try:
            for name in self.names:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                stored = self.cert_dir / stored_name(name)
                context.load_cert_chain(f"{stored}.crt", f"{stored}.key")
                context.sni_callback = self._choose
                contexts[name] = context
        except (OSError, ssl.SSLError):
            contexts = {}
        with self._lock:
            self._contexts = contexts

    def new_process(self) -> None:
        """A restart as mox's own: a new process, so a new listening socket on the same port (a
        new inode in /proc/net/tcp), loading the files again. (The restart command's restart
        keeps the socket: what the sync checks is what is served, not how.)"""
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread: it ends
        self._server.close()
        self._server = socket.create_server(("127.0.0.1", self.port))
        accept_each(self._server, self._serve)
        if self._submission is not None:
            with contextlib.suppress(OSError):
                self._submission.shutdown(socket.SHUT_RDWR)
            self._submission.close()
            self._submission = socket.create_server(("127.0.0.1", self.submission_port))
            accept_each(self._submission, self._serve_submission)
        self.start()

    def served(self, name: str) -> str | None:
        """sha256 of the leaf served now for `name`; None when nothing is served."""
        return served_sha256(self.port, sni_for(name))

    def close(self) -> None:
        for sock in (self._server, self._control, self._submission):
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _choose(self, connection: ssl.SSLObject, server_name: str | None, _: object) -> None:
        for name, context in self._contexts.items():
            domain = name[2:] if name.startswith("*.") else None
            under = (server_name or "").partition(".")[2]
            if server_name == name or (domain and under == domain):
                connection.context = context
                return

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            contexts = list(self._contexts.values())
        if contexts:
            contexts[0].wrap_socket(conn, server_side=True).close()

    def _serve_submission(self, conn: socket.socket) -> None:
        """SMTP submission's STARTTLS, as mox: a mox that serves nothing says nothing."""
        with self._lock:
            contexts = list(self._contexts.values())
        if not contexts:
            return
        reader = conn.makefile("rb")
        conn.sendall(b"220 fake mox ESMTP\r\n")
        reader.readline()  # EHLO
        conn.sendall(b"250-fake mox\r\n250 STARTTLS\r\n")
        reader.readline()  # STARTTLS
        conn.sendall(b"220 go ahead\r\n")
        contexts[0].wrap_socket(conn, server_side=True).close()

    def _answer_restart(self, conn: socket.socket) -> None:
        conn.makefile("rb").readline()
        self.restarts += 1
        if self.failing_restarts:
            self.failing_restarts -= 1
            conn.sendall(b"failed\n")
            return
        self.start()
        conn.sendall(b"ok\n")


def accept_each(sock: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """In a thread, until `sock` is closed: hand each connection to `handle` (5 s timeout, a
    client that goes away is no error), then close it."""

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                handle(conn)

    threading.Thread(target=loop, daemon=True).start()


def write_mox_files(
    cert_dir: Path,
    name: str,
    cert: bytes | None,
    key: bytes | None,
    ids: tuple[int, int],
    layout: bool = True,
) -> None:
    """mox's files for `name` as a previous sync leaves them: owner mox, 0644 and 0600, in a
    0700 folder owned by mox; with both files and `layout`, links into a generation folder as
    certsync makes them (certsync/host/layout.py), else regular files (as certsync before its
    layout, or mox's own setup, left them); a None file is not written."""
    cert_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chown(cert_dir, *ids)
    stored = stored_name(name)
    folder = cert_dir
    if layout and cert is not None and key is not None:
        gen = f"..{stored}.g{os.urandom(8).hex()}"
        folder = cert_dir / gen
        folder.mkdir(mode=0o700)
        os.chown(folder, *ids)
        temp = cert_dir / f"..{stored}.data.new"
        temp.symlink_to(gen)
        os.lchown(temp, *ids)
        temp.rename(cert_dir / f"..{stored}.data")
        for entry in cert_dir.glob(f"..{stored}.g*"):
            if entry.name != gen:
                shutil.rmtree(entry)
    for suffix, data, mode in ((".crt", cert, 0o644), (".key", key, 0o600)):
        if data is not None:
            path = folder / f"{stored}{suffix}"
            path.write_bytes(data)
            os.chown(path, *ids)
            path.chmod(mode)
            if folder != cert_dir:
                link = cert_dir / f"{stored}{suffix}"
                link.unlink(missing_ok=True)
                link.symlink_to(f"..{stored}.data/{stored}{suffix}")
                os.lchown(link, *ids)
